//! The log engine: one append-only file `{generation:016x}.mlog` in the store directory.
//!
//! Each group commit appends one frame (see [`super::codec`]). Compaction writes the live
//! state to `{generation+1}.mlog.tmp`, syncs it, renames it into place, syncs the directory and
//! only then deletes the old generation, so at every instant the highest-numbered `.mlog` file
//! is a complete store. At open, lower generations (left by a crash between the rename and the
//! delete) and `.tmp` files are deleted.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::codec::{self, Frame, Op, FRAME_HEADER_LEN, HEADER_LEN};
use super::core::{Engine, Mirror};
use super::StoreError;

/// Frames of a rewrite are cut at about this size.
const REWRITE_FRAME: usize = 1 << 20;

pub(crate) struct SegLog {
    dir: PathBuf,
    generation: u64,
    path: PathBuf,
    file: File,
    /// Bytes of valid data (header + whole frames).
    len: u64,
    /// Reused frame buffer.
    frame: Vec<u8>,
}

fn seg_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{generation:016x}.mlog"))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, "syncing directory", e))
}

/// Writes a complete segment `generation` holding `frames` via a temporary file and a rename.
fn write_segment(
    dir: &Path,
    generation: u64,
    frames: &[u8],
) -> Result<(PathBuf, File), StoreError> {
    let path = seg_path(dir, generation);
    let tmp = path.with_extension("mlog.tmp");
    let result = (|| {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| StoreError::io(&tmp, "creating", e))?;
        io::Write::write_all(&mut f, &codec::header(generation))
            .and_then(|()| io::Write::write_all(&mut f, frames))
            .map_err(|e| StoreError::io(&tmp, "writing", e))?;
        f.sync_all()
            .map_err(|e| StoreError::io(&tmp, "syncing", e))?;
        fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, "renaming into place", e))?;
        sync_dir(dir)?;
        Ok(f)
    })();
    match result {
        Ok(f) => Ok((path, f)),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

impl SegLog {
    /// Opens the newest generation in `dir`, or creates generation 1. Does not read records
    /// yet (that is [`Engine::replay`]).
    pub(crate) fn open(dir: &Path) -> Result<SegLog, StoreError> {
        let mut gens = Vec::new();
        let entries = fs::read_dir(dir).map_err(|e| StoreError::io(dir, "listing", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(dir, "listing", e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".mlog.tmp") {
                let _ = fs::remove_file(entry.path());
            } else if let Some(stem) = name.strip_suffix(".mlog") {
                match u64::from_str_radix(stem, 16) {
                    Ok(g) if stem.len() == 16 => gens.push(g),
                    _ => {
                        return Err(StoreError::Corrupt {
                            path: entry.path(),
                            reason: "unexpected file name for a store segment".into(),
                        })
                    }
                }
            }
        }
        gens.sort_unstable();
        let Some(&generation) = gens.last() else {
            let (path, file) = write_segment(dir, 1, &[])?;
            return Ok(SegLog {
                dir: dir.to_path_buf(),
                generation: 1,
                path,
                file,
                len: HEADER_LEN as u64,
                frame: Vec::new(),
            });
        };
        let path = seg_path(dir, generation);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, "opening", e))?;
        for &old in &gens[..gens.len() - 1] {
            let p = seg_path(dir, old);
            fs::remove_file(&p).map_err(|e| StoreError::io(&p, "removing old generation", e))?;
        }
        Ok(SegLog {
            dir: dir.to_path_buf(),
            generation,
            path,
            file,
            len: 0,
            frame: Vec::new(),
        })
    }

    fn truncate_back(&mut self) {
        if let Err(e) = self.file.set_len(self.len) {
            log::error!(
                "store {}: truncating after a failed write: {e}",
                self.path.display()
            );
        }
    }
}

impl Engine for SegLog {
    fn replay(&mut self, f: &mut dyn FnMut(Op, usize)) -> Result<Vec<String>, StoreError> {
        let data = fs::read(&self.path).map_err(|e| StoreError::io(&self.path, "reading", e))?;
        let generation = codec::check_header(&data).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            reason: e.0,
        })?;
        if generation != self.generation {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                reason: format!(
                    "header says generation {generation}, file name says {}",
                    self.generation
                ),
            });
        }
        let mut at = HEADER_LEN;
        let mut dropped = Vec::new();
        loop {
            match codec::next_frame(&data[at..]) {
                Frame::End => break,
                Frame::Ok(payload, len) => {
                    codec::read_ops(payload, &mut *f).map_err(|e| StoreError::Corrupt {
                        path: self.path.clone(),
                        reason: format!("record in the frame at offset {at}: {e}"),
                    })?;
                    at += len;
                }
                Frame::Bad(why) => {
                    let lost = data.len() - at;
                    dropped.push(format!(
                        "{}: dropped the last {lost} byte(s) from offset {at} ({why}): the tail \
                         of a write interrupted by a crash, never acknowledged as durable",
                        self.path.display()
                    ));
                    self.file
                        .set_len(at as u64)
                        .and_then(|()| self.file.sync_all())
                        .map_err(|e| StoreError::io(&self.path, "truncating a torn tail", e))?;
                    break;
                }
            }
        }
        self.len = at as u64;
        Ok(dropped)
    }

    fn append(&mut self, _ops: &[Op], encoded: &[u8], sync: bool) -> Result<(), StoreError> {
        self.frame.clear();
        self.frame.reserve(encoded.len() + FRAME_HEADER_LEN);
        codec::put_frame(&mut self.frame, encoded);
        if let Err(e) = self.file.write_all_at(&self.frame, self.len) {
            self.truncate_back();
            return Err(StoreError::io(&self.path, "appending", e));
        }
        if sync {
            if let Err(e) = self.file.sync_data() {
                self.truncate_back();
                return Err(StoreError::io(&self.path, "syncing", e));
            }
        }
        self.len += self.frame.len() as u64;
        if self.frame.capacity() > 4 * REWRITE_FRAME {
            self.frame = Vec::new();
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.file
            .sync_data()
            .map_err(|e| StoreError::io(&self.path, "syncing", e))
    }

    fn rewrite(&mut self, mirror: &Mirror) -> Result<(), StoreError> {
        let mut frames = Vec::new();
        let mut payload = Vec::with_capacity(REWRITE_FRAME);
        mirror.for_each_op(|op| {
            codec::put_op(&mut payload, &op);
            if payload.len() >= REWRITE_FRAME {
                codec::put_frame(&mut frames, &payload);
                payload.clear();
            }
        });
        if !payload.is_empty() {
            codec::put_frame(&mut frames, &payload);
        }
        let generation = self.generation + 1;
        let (path, file) = write_segment(&self.dir, generation, &frames)?;
        let old = std::mem::replace(&mut self.path, path);
        self.file = file;
        self.generation = generation;
        self.len = (HEADER_LEN + frames.len()) as u64;
        if let Err(e) = fs::remove_file(&old) {
            // Harmless: the next open deletes generations below the newest.
            log::warn!("store {}: removing old generation: {e}", old.display());
        }
        Ok(())
    }

    fn disk_bytes(&self) -> u64 {
        self.len
    }

    fn wants_ops(&self) -> bool {
        false
    }
}
