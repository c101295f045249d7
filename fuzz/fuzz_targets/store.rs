//! Store recovery: arbitrary bytes as the store's log file must open to a state or to an error
//! naming the file, never a panic or an abort. A state that opened must also survive a
//! compaction and a reopen with the same contents.
//!
//! The first input byte picks how the rest becomes the file:
//! - even: the rest is the whole file (header included);
//! - odd: a valid header, then the rest cut into `u16 length + payload` chunks, each written
//!   as a frame with a correct checksum (so the fuzzer reaches the record decoder and the
//!   replay instead of stopping at the checksum), and whatever is left as a torn tail.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use midge::store::{self, codec, Recovered, SyncPolicy};

/// One directory per process, emptied before each input; on tmpfs when there is one.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        base.join(format!("midge-fuzz-store-{}", std::process::id()))
    })
}

fn file_bytes(data: &[u8]) -> Option<Vec<u8>> {
    let (&mode, rest) = data.split_first()?;
    if mode % 2 == 0 {
        return Some(rest.to_vec());
    }
    let mut out = codec::header(1).to_vec();
    let mut rest = rest;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        if rest.len() < 2 + len {
            break;
        }
        codec::put_frame(&mut out, &rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    out.extend_from_slice(rest);
    Some(out)
}

/// Per session: client id, queued entries, incoming QoS 2 ids.
type SessionShape = (String, usize, Vec<u16>);

/// What must not change across a compaction: topics and counts (messages hold
/// wall-clock-derived instants, which do).
fn shape(r: &Recovered) -> (Vec<String>, Vec<SessionShape>) {
    let mut retained: Vec<String> = r
        .retained
        .iter()
        .map(|m| format!("{:?}", m.topic))
        .collect();
    retained.sort();
    let mut sessions: Vec<SessionShape> = r
        .sessions
        .iter()
        .map(|s| {
            (
                s.client_id.as_str().to_owned(),
                s.queued.len(),
                s.incoming_qos2.clone(),
            )
        })
        .collect();
    sessions.sort();
    (retained, sessions)
}

fuzz_target!(|data: &[u8]| {
    let Some(bytes) = file_bytes(data) else {
        return;
    };
    let dir = dir();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("0000000000000001.mlog"), &bytes).unwrap();
    let first = match store::open(dir, SyncPolicy::Os) {
        Ok(s) => s,
        Err(e) => {
            assert!(e.to_string().contains("store "), "{e}");
            return;
        }
    };
    let recovered = match first.load() {
        Ok(r) => r,
        Err(e) => {
            assert!(e.to_string().contains("store "), "{e}");
            return;
        }
    };
    first.compact().expect("compacting a recovered store");
    drop(first);
    let second = store::open(dir, SyncPolicy::Os).expect("reopening a compacted store");
    let again = second.load().expect("loading a compacted store");
    assert_eq!(
        shape(&recovered),
        shape(&again),
        "compaction changed the state"
    );
    drop(second);
    let _ = std::fs::remove_dir_all(dir);
});
