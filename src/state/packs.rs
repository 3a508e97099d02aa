//! Stored bitmaps kept in pack files beside the database (version 4).
//!
//! A run appends the bitmaps it stores to one pack, `packs/<run id>.pack`,
//! and the database keeps each bitmap's place in it. The pack is synced
//! before the commit that names it, so a committed place always points at
//! bytes on disk; a pack no committed run names (a run stopped before its
//! commit, or a pack whose bitmaps were all pruned or moved) is deleted
//! after the next commit. Bitmaps kept in redb were written twice and read
//! back once: at commit redb checksums every page it wrote through a
//! mutable page, and reads back and rewrites the pages its write buffer
//! had already flushed (16 GB of members cost 32 GB of writes and 17 GB of
//! reads).

use crate::faults::count_write;
use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;

/// The directory of packs inside the state directory.
const PACKS_DIR: &str = "packs";

/// Where a stored bitmap's bytes are: the pack (the id of the run that
/// wrote it), the offset in it and the length.
pub(super) type Place = (u64, u64, u64);

/// Each batch of bitmaps in a pack starts at a multiple of this, and takes
/// a whole number of these: the block size direct writes need (512 or 4096
/// bytes on the disks we know). The bitmaps of a batch lie back to back.
const PACK_BLOCK: usize = 4096;

/// `O_DIRECT` of Linux, whose value differs between architectures; where
/// it is not known here, packs are written through the page cache.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "x86", target_arch = "riscv64")
))]
const O_DIRECT: Option<i32> = Some(0o40000);
#[cfg(all(target_os = "linux", any(target_arch = "aarch64", target_arch = "arm")))]
const O_DIRECT: Option<i32> = Some(0o200000);
#[cfg(not(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "riscv64",
        target_arch = "aarch64",
        target_arch = "arm"
    )
)))]
const O_DIRECT: Option<i32> = None;

/// Batches queued for the pack's writing thread beyond the one it writes:
/// enough to keep the disk busy while the next batch is diffed.
const QUEUED_BATCHES: usize = 2;

/// A pack being written by run `id`: batches of bitmaps end to end, each
/// batch one extent of whole blocks, written in order by a thread of its
/// own, around the page cache where the file system allows. Through the
/// page cache, a first run's 16 GB went at 260-300 MB/s once 2 GB were
/// dirty, the writing threads busy in the kernel's copy; direct, from the
/// evaluation's threads, at 0.65 GB/s, each write holding a core's worth
/// of evaluation. A thread of its own keeps the disk busy while both cores
/// evaluate.
pub(super) struct PackWriter {
    id: u64,
    /// The pack, for the sync before the commit.
    file: File,
    /// The bytes placed so far: whole blocks.
    placed: u64,
    /// The writing thread, until [`PackWriter::finish`] or a drop stops it.
    thread: Option<PackThread>,
}

struct PackThread {
    extents: SyncSender<Extent>,
    /// Buffers the thread has written, to fill again. (A receiver alone
    /// is not `Sync`, and a run writer is shared by the threads that diff.)
    spare: Mutex<Receiver<Vec<u8>>>,
    handle: JoinHandle<std::io::Result<()>>,
}

/// A batch's bytes, at `offset` in the pack: `buffer[start..start + len]`,
/// which starts on a block in memory too (direct writes need both).
struct Extent {
    offset: u64,
    buffer: Vec<u8>,
    start: usize,
    len: usize,
}

impl PackWriter {
    /// Creates run `id`'s pack in the state directory `dir`, replacing any
    /// pack a run with the same id left behind without committing.
    pub fn create(dir: &Path, id: u64) -> std::io::Result<PackWriter> {
        let packs = dir.join(PACKS_DIR);
        std::fs::create_dir_all(&packs)?;
        let path = pack_path(dir, id);
        let file = File::create(&path)?;
        // Some file systems (tmpfs) refuse direct writes.
        let direct = O_DIRECT.and_then(|flag| {
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(flag)
                .open(&path)
                .ok()
        });
        // The pack's name must outlive a crash once a commit names it.
        File::open(&packs)?.sync_all()?;
        let buffered = file.try_clone()?;
        let (extents, queued) = std::sync::mpsc::sync_channel::<Extent>(QUEUED_BATCHES);
        let (written, spare) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(format!("pack {id}"))
            .spawn(move || -> std::io::Result<()> {
                for extent in queued {
                    let bytes = &extent.buffer[extent.start..extent.start + extent.len];
                    // A disk whose blocks are larger than `PACK_BLOCK`
                    // refuses the direct write; the page cache takes it
                    // then. Every batch has blocks of its own, so the two
                    // never share one.
                    match &direct {
                        Some(direct) => match direct.write_all_at(bytes, extent.offset) {
                            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                                buffered.write_all_at(bytes, extent.offset)?
                            }
                            written => written?,
                        },
                        None => buffered.write_all_at(bytes, extent.offset)?,
                    }
                    count_write();
                    // The writer may be gone; the buffer is then dropped.
                    let _ = written.send(extent.buffer);
                }
                Ok(())
            })?;
        Ok(PackWriter {
            id,
            file,
            placed: 0,
            thread: Some(PackThread {
                extents,
                spare: Mutex::new(spare),
                handle,
            }),
        })
    }

    /// Places `bitmaps` back to back after the bytes placed so far and
    /// hands them to the writing thread; returns their places. The bytes
    /// are on disk once [`PackWriter::finish`] returns.
    pub fn write_batch(&mut self, bitmaps: &[&[u8]]) -> std::io::Result<Vec<Place>> {
        let total: usize = bitmaps.iter().map(|b| b.len()).sum();
        let len = total.next_multiple_of(PACK_BLOCK);
        let Some(thread) = self.thread.as_ref() else {
            return Err(std::io::Error::other(
                "the pack's writing thread stopped at an earlier error",
            ));
        };
        // A buffer the thread is done with, if one is big enough: a fresh
        // one is zeroed by the kernel page by page.
        let spare = thread.spare.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut buffer = spare
            .try_iter()
            .find(|b| b.len() >= len + PACK_BLOCK)
            .unwrap_or_else(|| vec![0; len + PACK_BLOCK]);
        drop(spare);
        let start = buffer.as_ptr().align_offset(PACK_BLOCK);
        let mut places = Vec::with_capacity(bitmaps.len());
        let mut at = start;
        for bitmap in bitmaps {
            buffer[at..at + bitmap.len()].copy_from_slice(bitmap);
            places.push((self.id, self.placed + (at - start) as u64, bitmap.len() as u64));
            at += bitmap.len();
        }
        buffer[at..start + len].fill(0);
        let extent = Extent {
            offset: self.placed,
            buffer,
            start,
            len,
        };
        let sent = thread.extents.send(extent).is_ok();
        if !sent {
            // The thread stopped at a failed write: its error is the answer.
            return Err(self
                .stop()
                .err()
                .unwrap_or_else(|| std::io::Error::other("the pack's writing thread stopped")));
        }
        self.placed += len as u64;
        Ok(places)
    }

    /// Waits for the writing thread to write what it was given.
    fn stop(&mut self) -> std::io::Result<()> {
        let Some(PackThread { extents, handle, .. }) = self.thread.take() else {
            return Ok(());
        };
        drop(extents);
        handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// Writes what was placed and syncs the pack: call it before the
    /// commit that names its places.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.stop()?;
        self.file.sync_all()?;
        count_write();
        Ok(())
    }
}

impl Drop for PackWriter {
    /// A run dropped before its commit still waits for its writes: a run
    /// that takes the same id next truncates the same file.
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn pack_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(PACKS_DIR).join(format!("{id}.pack"))
}

/// The bytes at `place` in the packs of the state directory `dir`.
pub(super) fn read_place(dir: &Path, (pack, offset, length): Place) -> std::io::Result<Vec<u8>> {
    let file = File::open(pack_path(dir, pack))?;
    let mut bytes = vec![0; length as usize];
    file.read_exact_at(&mut bytes, offset)?;
    Ok(bytes)
}

/// The size of each pack in `dir` by id.
pub(super) fn pack_sizes(dir: &Path) -> std::io::Result<Vec<(u64, u64)>> {
    let packs = dir.join(PACKS_DIR);
    let entries = match std::fs::read_dir(&packs) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut sizes = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".pack"))
            .and_then(|n| n.parse().ok())
        {
            sizes.push((id, entry.metadata()?.len()));
        }
    }
    Ok(sizes)
}

/// Deletes the packs in `dir` that no committed place names.
pub(super) fn sweep(dir: &Path, named: &HashSet<u64>) -> std::io::Result<()> {
    for (id, _) in pack_sizes(dir)? {
        if !named.contains(&id) {
            std::fs::remove_file(pack_path(dir, id))?;
            count_write();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bitmaps of a batch lie back to back, so small ones share blocks;
    /// each batch starts on a block; every place reads back its bytes.
    #[test]
    fn batches_lie_back_to_back_in_whole_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let mut pack = PackWriter::create(dir.path(), 7).unwrap();
        let small: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        let big = vec![0xAB; 3 * PACK_BLOCK + 1];
        let mut written = Vec::new();
        for batch in [
            small.iter().collect::<Vec<_>>(),
            vec![&big],
            small[..1].iter().collect(),
        ] {
            let bitmaps: Vec<&[u8]> = batch.iter().map(|b| b.as_slice()).collect();
            let places = pack.write_batch(&bitmaps).unwrap();
            written.extend(places.into_iter().zip(batch.into_iter().cloned()));
        }
        pack.finish().unwrap();
        // 20 small bitmaps (2,190 bytes) in one block, the big one in four,
        // the last batch in one.
        assert_eq!(pack_sizes(dir.path()).unwrap(), [(7, 6 * PACK_BLOCK as u64)]);
        let offsets: Vec<u64> = written.iter().map(|((_, offset, _), _)| *offset).collect();
        assert_eq!(&offsets[..3], [0, 100, 201]);
        assert_eq!(&offsets[20..], [PACK_BLOCK as u64, 5 * PACK_BLOCK as u64]);
        for (place, bytes) in written {
            assert_eq!(read_place(dir.path(), place).unwrap(), bytes, "{place:?}");
        }
    }
}
