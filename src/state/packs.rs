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

/// The directory of packs inside the state directory.
const PACKS_DIR: &str = "packs";

/// Where a stored bitmap's bytes are: the pack (the id of the run that
/// wrote it), the offset in it and the length.
pub(super) type Place = (u64, u64, u64);

/// Each bitmap in a pack starts at a multiple of this, and takes a whole
/// number of these: the block size direct writes need (512 or 4096 bytes
/// on the disks we know).
const PACK_BLOCK: u64 = 4096;

/// The bytes a bitmap of `length` bytes takes in a pack.
pub(super) fn pack_footprint(length: u64) -> u64 {
    length.next_multiple_of(PACK_BLOCK)
}

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

/// A pack being written by run `id`: bitmaps end to end, each at a place
/// handed out in order and written there by any thread, around the page
/// cache where the file system allows. Through the page cache, a first
/// run's 16 GB went at 260-300 MB/s once 2 GB were dirty, the writing
/// threads busy in the kernel's copy; direct, at 0.65 GB/s.
pub(super) struct PackWriter {
    id: u64,
    file: File,
    /// The same file opened for direct writes, where it could be.
    direct: Option<File>,
    /// The bytes placed so far.
    placed: u64,
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
        Ok(PackWriter {
            id,
            file,
            direct,
            placed: 0,
        })
    }

    /// The place of the next `length` bytes.
    pub fn place(&mut self, length: usize) -> Place {
        let place = (self.id, self.placed, length as u64);
        self.placed += pack_footprint(length as u64);
        place
    }

    /// Writes a bitmap's bytes at the place [`PackWriter::place`] gave,
    /// padded with zeros to whole blocks.
    pub fn write_at(&self, (_, offset, _): Place, bytes: &[u8]) -> std::io::Result<()> {
        let footprint = pack_footprint(bytes.len() as u64) as usize;
        // A direct write's buffer must start on a block too.
        let block = PACK_BLOCK as usize;
        let mut buffer = vec![0u8; footprint + block];
        let start = buffer.as_ptr().align_offset(block);
        let padded = &mut buffer[start..start + footprint];
        padded[..bytes.len()].copy_from_slice(bytes);
        // A disk whose blocks are larger than `PACK_BLOCK` refuses the
        // direct write; the page cache takes it then. Every bitmap has
        // blocks of its own, so the two never share one.
        match &self.direct {
            Some(direct) => match direct.write_all_at(padded, offset) {
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => self.file.write_all_at(padded, offset)?,
                written => written?,
            },
            None => self.file.write_all_at(padded, offset)?,
        }
        count_write();
        Ok(())
    }

    /// Places and writes a bitmap's bytes.
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<Place> {
        let place = self.place(bytes.len());
        self.write_at(place, bytes)?;
        Ok(place)
    }

    /// Syncs the pack: call it before the commit that names its places.
    pub fn finish(self) -> std::io::Result<()> {
        self.file.sync_all()?;
        count_write();
        Ok(())
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
