//! Both backends must give the loop the same edge-triggered events. Each test runs on epoll
//! and on io_uring; where the kernel refuses io_uring the io_uring half is skipped, unless
//! `MIDGE_REQUIRE_IO_URING` is set (CI sets it), when it fails.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::time::Duration;

use mio::net::UnixStream;
use mio::{Interest, Token};

use super::*;
use std::sync::Arc;

const WAKER: Token = Token(usize::MAX);
const SHORT: Duration = Duration::from_millis(50);
const LONG: Duration = Duration::from_secs(5);

fn backends() -> Vec<(Reactor, Registry, Arc<Waker>)> {
    let mut all = vec![Reactor::new(IoBackend::Epoll, WAKER).unwrap()];
    match Reactor::new(IoBackend::IoUring, WAKER) {
        Ok(r) => all.push(r),
        Err(e) if std::env::var_os("MIDGE_REQUIRE_IO_URING").is_none() => {
            eprintln!("io_uring half skipped: {e}");
        }
        Err(e) => panic!("MIDGE_REQUIRE_IO_URING is set and io_uring fails: {e}"),
    }
    all
}

/// Polls until an event for `token` comes (true) or `wait` passes with none (false).
fn sees(reactor: &mut Reactor, token: Token, wait: Duration) -> bool {
    let mut events = Events::with_capacity(64);
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        reactor.poll(&mut events, Some(left)).unwrap();
        if events.iter().any(|e| e.token() == token) {
            return true;
        }
        if left.is_zero() {
            return false;
        }
    }
}

fn drain(s: &mut UnixStream) -> usize {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return total,
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn data_raises_one_edge_then_none_until_more_arrives() {
    for (mut reactor, registry, _w) in backends() {
        let name = reactor.name();
        let (mut a, mut b) = UnixStream::pair().unwrap();
        registry
            .register(&mut a, Token(7), Interest::READABLE)
            .unwrap();
        assert!(
            !sees(&mut reactor, Token(7), SHORT),
            "{name}: nothing sent yet"
        );
        b.write_all(b"hello").unwrap();
        assert!(sees(&mut reactor, Token(7), LONG), "{name}: data arrived");
        assert_eq!(drain(&mut a), 5);
        assert!(
            !sees(&mut reactor, Token(7), SHORT),
            "{name}: drained, no new edge"
        );
        b.write_all(b"again").unwrap();
        assert!(
            sees(&mut reactor, Token(7), LONG),
            "{name}: new data, new edge"
        );
    }
}

#[test]
fn reregister_reports_readiness_that_is_already_there() {
    for (mut reactor, registry, _w) in backends() {
        let name = reactor.name();
        let (mut a, mut b) = UnixStream::pair().unwrap();
        registry
            .register(&mut a, Token(1), Interest::READABLE)
            .unwrap();
        b.write_all(b"unread").unwrap();
        assert!(sees(&mut reactor, Token(1), LONG), "{name}");
        assert!(
            !sees(&mut reactor, Token(1), SHORT),
            "{name}: edge, not level"
        );
        // A loop that stopped reading early (its fairness budget) re-arms, under a new
        // token too (a connection moving to the lingering set).
        registry
            .reregister(&mut a, Token(2), Interest::READABLE)
            .unwrap();
        assert!(sees(&mut reactor, Token(2), LONG), "{name}: re-armed");
    }
}

#[test]
fn writable_interest_and_the_peers_close_are_reported() {
    for (mut reactor, registry, _w) in backends() {
        let name = reactor.name();
        let (mut a, b) = UnixStream::pair().unwrap();
        registry
            .register(&mut a, Token(3), Interest::READABLE | Interest::WRITABLE)
            .unwrap();
        let mut events = Events::with_capacity(8);
        reactor.poll(&mut events, Some(LONG)).unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.token() == Token(3) && e.is_writable()),
            "{name}: room to write"
        );
        drop(b);
        let deadline = std::time::Instant::now() + LONG;
        let mut closed = false;
        while !closed && std::time::Instant::now() < deadline {
            reactor.poll(&mut events, Some(SHORT)).unwrap();
            closed = events
                .iter()
                .any(|e| e.token() == Token(3) && e.is_read_closed());
        }
        assert!(closed, "{name}: the peer's close is an event");
    }
}

#[test]
fn a_deregistered_socket_is_silent_and_closes_when_dropped() {
    for (mut reactor, registry, _w) in backends() {
        let name = reactor.name();
        let (mut a, mut b) = UnixStream::pair().unwrap();
        registry
            .register(&mut a, Token(4), Interest::READABLE)
            .unwrap();
        reactor
            .poll(&mut Events::default(), Some(Duration::ZERO))
            .unwrap();
        registry.deregister(&mut a).unwrap();
        b.write_all(b"x").unwrap();
        assert!(!sees(&mut reactor, Token(4), SHORT), "{name}: deregistered");
        assert_eq!(drain(&mut a), 1);
        drop(a);
        // The poll request held the socket open until its removal was submitted (by the
        // poll above): the peer must now see the end of the stream.
        // SAFETY: the descriptor is taken out of `b`, which no longer owns it.
        let mut b = unsafe { std::os::unix::net::UnixStream::from_raw_fd(b.into_raw_fd()) };
        b.set_nonblocking(false).unwrap();
        b.set_read_timeout(Some(LONG)).unwrap();
        assert_eq!(b.read(&mut [0u8; 1]).unwrap(), 0, "{name}: end of stream");
    }
}

#[test]
fn events_of_a_closed_socket_never_reach_the_one_that_reuses_its_number() {
    for (mut reactor, registry, _w) in backends() {
        let name = reactor.name();
        let (mut a, mut a_peer) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        registry
            .register(&mut a, Token(5), Interest::READABLE)
            .unwrap();
        reactor
            .poll(&mut Events::default(), Some(Duration::ZERO))
            .unwrap();
        a_peer.write_all(b"old").unwrap();
        registry.deregister(&mut a).unwrap();
        drop(a_peer);
        // The new socket takes the old one's number with dup2, which closes the old socket
        // and reuses its number in one step: a plain close-then-open would race with the
        // other tests of this binary, which open descriptors on their own threads.
        let (fresh, mut c_peer) = UnixStream::pair().unwrap();
        // SAFETY: `fd` is `a`'s descriptor; `a` is forgotten, so only `c` owns it after dup2.
        let mut c = unsafe {
            assert_eq!(libc::dup2(fresh.as_raw_fd(), fd), fd, "dup2");
            std::mem::forget(a);
            UnixStream::from_raw_fd(fd)
        };
        drop(fresh);
        registry
            .register(&mut c, Token(6), Interest::READABLE)
            .unwrap();
        let mut events = Events::with_capacity(8);
        reactor.poll(&mut events, Some(SHORT)).unwrap();
        assert!(
            events.iter().all(|e| e.token() != Token(5)),
            "{name}: a stale event for the old socket"
        );
        c_peer.write_all(b"new").unwrap();
        assert!(sees(&mut reactor, Token(6), LONG), "{name}");
        let _ = drain(&mut c);
    }
}

#[test]
fn the_waker_ends_a_wait_from_another_thread() {
    for (mut reactor, _registry, waker) in backends() {
        let name = reactor.name();
        assert!(!sees(&mut reactor, WAKER, SHORT), "{name}: not woken yet");
        let t = std::thread::spawn(move || {
            std::thread::sleep(SHORT);
            waker.wake().unwrap();
            waker
        });
        assert!(sees(&mut reactor, WAKER, LONG), "{name}: woken");
        let waker = t.join().unwrap();
        waker.wake().unwrap();
        assert!(
            sees(&mut reactor, WAKER, LONG),
            "{name}: every wake is an edge"
        );
    }
}

#[test]
fn a_send_batch_writes_each_socket_what_it_takes_in_order() {
    let mut batch = SendBatch::default();
    let (a, mut a_peer) = UnixStream::pair().unwrap();
    let (b, mut b_peer) = UnixStream::pair().unwrap();
    // A buffer far larger than a socket takes: the send writes part of it, as send(2) would.
    let big = vec![7u8; 16 << 20];
    batch.push(10, a.as_raw_fd(), b"first");
    batch.push(20, b.as_raw_fd(), &big);
    batch.push(30, a.as_raw_fd(), b"second");
    // SAFETY: the buffers live until the end of the test.
    let Some(written) = (unsafe { batch.send() }) else {
        assert!(
            std::env::var_os("MIDGE_REQUIRE_IO_URING").is_none(),
            "no io_uring for sends"
        );
        return;
    };
    let written: Vec<(usize, usize)> = written.collect();
    assert_eq!(written[0], (10, 5));
    assert_eq!(written[1].0, 20);
    assert!(
        written[1].1 > 0 && written[1].1 < big.len(),
        "{:?}",
        written[1]
    );
    assert_eq!(written[2], (30, 6));
    let mut got = [0u8; 11];
    a_peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"firstsecond");
    assert_eq!(drain(&mut b_peer), written[1].1);
    // A closed peer: an error is "nothing written"; the caller's own write meets it.
    drop(a_peer);
    batch.clear();
    batch.push(1, a.as_raw_fd(), b"x");
    batch.push(2, b.as_raw_fd(), b"y");
    // SAFETY: as above.
    let written: Vec<_> = unsafe { batch.send() }.unwrap().collect();
    assert_eq!(written, vec![(1, 0), (2, 1)]);
}

/// A socket pair whose first end is registered as `token` and receiving.
fn receiving_pair(registry: &Registry, token: Token) -> (UnixStream, UnixStream) {
    let (mut a, b) = UnixStream::pair().unwrap();
    registry
        .register(&mut a, token, Interest::READABLE)
        .unwrap();
    assert!(registry.receive(&a, token, false).unwrap());
    (a, b)
}

/// The io_uring reactor, when this kernel has it (see `backends`).
fn uring() -> Option<(Reactor, Registry, Arc<Waker>)> {
    backends()
        .into_iter()
        .find(|(r, _, _)| r.name() == "io_uring")
}

/// Polls until every receiving socket in `tokens` delivered `want[i]` bytes (or its end),
/// appending what each received, in order.
fn collect(reactor: &mut Reactor, registry: &Registry, got: &mut [Vec<u8>], want: &[usize]) {
    let mut events = Events::with_capacity(1024);
    let deadline = std::time::Instant::now() + LONG;
    while got.iter().zip(want).any(|(g, w)| g.len() < *w) {
        assert!(std::time::Instant::now() < deadline, "input missing");
        reactor.poll(&mut events, Some(SHORT)).unwrap();
        for e in events.iter() {
            match registry.input(e) {
                Input::Data(bytes) => got[e.token().0].extend_from_slice(bytes),
                Input::Readiness => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[test]
fn a_receiving_socket_delivers_its_bytes_in_order_then_its_end() {
    let Some((mut reactor, registry, _w)) = uring() else {
        return;
    };
    let (_a, mut b) = receiving_pair(&registry, Token(0));
    b.write_all(b"hello ").unwrap();
    let mut got = vec![Vec::new()];
    collect(&mut reactor, &registry, &mut got, &[6]);
    b.write_all(b"world").unwrap();
    collect(&mut reactor, &registry, &mut got, &[11]);
    assert_eq!(got[0], b"hello world");
    drop(b);
    let mut events = Events::with_capacity(8);
    let deadline = std::time::Instant::now() + LONG;
    loop {
        assert!(std::time::Instant::now() < deadline, "no end of stream");
        reactor.poll(&mut events, Some(SHORT)).unwrap();
        if events
            .iter()
            .any(|e| matches!(registry.input(e), Input::End(None)))
        {
            break;
        }
    }
}

#[test]
fn more_input_than_the_buffers_hold_arrives_whole_and_in_order() {
    let Some((mut reactor, registry, _w)) = uring() else {
        return;
    };
    // 48 sockets with as much queued as each takes (about 90 KiB on a Unix socket): twice
    // the ring's 2 MiB of buffers, so receives run out and are armed again, while events
    // of their earlier completions wait to be handled.
    let mut pairs = Vec::new();
    let mut sent = Vec::new();
    for i in 0..48 {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        registry
            .register(&mut a, Token(i), Interest::READABLE)
            .unwrap();
        let mut n = 0usize;
        loop {
            let chunk: Vec<u8> = (n..n + 1000).map(|x| (x * 7 + i) as u8).collect();
            match b.write(&chunk) {
                Ok(w) => n += w,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        sent.push(n);
        pairs.push((a, b));
    }
    for (i, (a, _)) in pairs.iter().enumerate() {
        assert!(registry.receive(a, Token(i), false).unwrap());
    }
    assert!(sent.iter().sum::<usize>() > 4 << 20, "{sent:?}");
    let mut got = vec![Vec::new(); 48];
    collect(&mut reactor, &registry, &mut got, &sent);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.len(), sent[i]);
        assert!(
            g.iter().enumerate().all(|(x, &v)| v == (x * 7 + i) as u8),
            "socket {i}: bytes out of order"
        );
    }
}

#[test]
fn input_of_a_socket_deregistered_since_the_wait_is_stale() {
    let Some((mut reactor, registry, _w)) = uring() else {
        return;
    };
    let (mut a, mut b) = receiving_pair(&registry, Token(0));
    b.write_all(b"old").unwrap();
    let mut events = Events::with_capacity(8);
    let deadline = std::time::Instant::now() + LONG;
    while events.is_empty() {
        assert!(std::time::Instant::now() < deadline);
        reactor.poll(&mut events, Some(SHORT)).unwrap();
    }
    // Closed (and its number free for the next socket) before its turn handles the event.
    registry.deregister(&mut a).unwrap();
    drop(a);
    for e in events.iter() {
        assert!(matches!(registry.input(e), Input::Stale), "{e:?}");
    }
}

#[test]
fn a_receiving_socket_still_reports_room_to_write_when_asked() {
    let Some((mut reactor, registry, _w)) = uring() else {
        return;
    };
    let (mut a, _b) = receiving_pair(&registry, Token(0));
    assert!(
        !sees(&mut reactor, Token(0), SHORT),
        "no write interest yet"
    );
    registry
        .reregister(&mut a, Token(0), Interest::READABLE | Interest::WRITABLE)
        .unwrap();
    let mut events = Events::with_capacity(8);
    reactor.poll(&mut events, Some(LONG)).unwrap();
    assert!(events
        .iter()
        .any(|e| e.token() == Token(0) && e.is_writable()));
}
