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
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The directory of packs inside the state directory.
const PACKS_DIR: &str = "packs";

/// Where a stored bitmap's bytes are: the pack (the id of the run that
/// wrote it), the offset in it and the length.
pub(super) type Place = (u64, u64, u64);

/// A pack being written by run `id`: bitmaps end to end, each at a place
/// handed out in order and written there by any thread. The kernel's copy
/// of written bytes into its page cache ran at about 270 MB/s on one core
/// here once gigabytes were dirty, so one writer held a first run's store
/// at that speed; writers on every core go as fast as the cores copy.
pub(super) struct PackWriter {
    id: u64,
    file: File,
    /// The bytes placed so far.
    placed: u64,
}

impl PackWriter {
    /// Creates run `id`'s pack in the state directory `dir`, replacing any
    /// pack a run with the same id left behind without committing.
    pub fn create(dir: &Path, id: u64) -> std::io::Result<PackWriter> {
        let packs = dir.join(PACKS_DIR);
        std::fs::create_dir_all(&packs)?;
        let file = File::create(pack_path(dir, id))?;
        // The pack's name must outlive a crash once a commit names it.
        File::open(&packs)?.sync_all()?;
        Ok(PackWriter { id, file, placed: 0 })
    }

    /// The place of the next `length` bytes.
    pub fn place(&mut self, length: usize) -> Place {
        let place = (self.id, self.placed, length as u64);
        self.placed += length as u64;
        place
    }

    /// Writes a bitmap's bytes at the place [`PackWriter::place`] gave.
    pub fn write_at(&self, (_, offset, _): Place, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(bytes, offset)?;
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
