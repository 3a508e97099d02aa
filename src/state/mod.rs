//! The committed state: every retained run's record and the members of each
//! group it committed, kept in a redb database in the state directory.
//!
//! redb commits a write transaction atomically (copy-on-write B-trees behind
//! a checksummed root), so a process killed at any moment leaves either the
//! previous committed run or the new one. Members are stored in the roaring
//! portable format, which CRoaring, pyroaring, Java and Go read as is. A
//! group whose members did not change shares its stored bitmap with the
//! previous run, and one that changed a little stores only the change (a
//! delta on the previous bitmap), so history costs only what changed.

use crate::diff::{GroupChange, changes};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use roaring::RoaringBitmap;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

mod blobs;
mod digest;
mod lock;
mod packs;
mod records;
mod writer;

use digest::{DigestSecret, serialize};
use lock::{holder, take_lock};
pub use records::{GroupRecord, GroupToCommit, InputFingerprint, RunRecord};
pub use writer::RunWriter;

/// The layout of the tables below. A state written with a higher number is
/// refused, never misread. Version 2 stores bitmaps in parts; version 3
/// adds deltas, bitmaps stored as the change from another; version 4 keeps
/// new bitmaps in pack files (`packs`). Older states are still read, and
/// become version 4 with their next commit.
pub const FORMAT_VERSION: u64 = 4;

/// The read cache and write buffer of the database.
const STATE_CACHE_BYTES: usize = 128 << 20;

/// The database file inside the state directory.
pub const DATABASE_FILE: &str = "state.redb";
/// The lock file that names the process holding the state.
pub const LOCK_FILE: &str = "LOCK";

/// `format_version`, `next_run`, `next_blob`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Run id → the run's record, as JSON.
const RUNS: TableDefinition<u64, &str> = TableDefinition::new("runs");
/// (run id, group key) → the blob holding the members it committed.
const MEMBERS: TableDefinition<(u64, &str), u64> = TableDefinition::new("members");
/// Blob id → a bitmap in the roaring portable format, whole (version 1).
const BLOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("blobs");
/// (Blob id, part) → the bitmap's bytes, cut into parts just under 256 KiB
/// (versions 2 and 3; version 4 writes packs and still reads these).
const BLOB_PARTS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("blob_parts");
/// Blob id → where its bytes are in the packs (version 4): the pack, the
/// offset and the length.
const BLOB_PLACES: TableDefinition<u64, packs::Place> = TableDefinition::new("blob_places");
/// Delta blob id → its base blob, and how many deltas the chain from a
/// whole bitmap up to it holds, itself included (version 3). A delta's
/// bytes are its members XOR its base's members: a group of 4M members
/// that gained and lost a few thousand stores those, not 1.2 MB again. A
/// delta counts as a reference to its base in `BLOB_REFS`.
const BLOB_BASES: TableDefinition<u64, (u64, u32)> = TableDefinition::new("blob_bases");
/// The longest chain of deltas: a group's members are read as its whole
/// bitmap and every delta on it, so past this a run stores them whole.
const MAX_DELTA_CHAIN: u32 = 16;
/// Blob id → how many `MEMBERS` entries and deltas point at it.
const BLOB_REFS: TableDefinition<u64, u64> = TableDefinition::new("blob_refs");
/// Blob id → the digest of the portable bytes of its members (for a whole
/// bitmap, of its bytes), keyed with [`DIGEST_SECRET`]. A run compares it
/// with the digest of a group's new members and reads the stored bitmap
/// only when they differ: an unchanged group costs a hash of its members
/// instead of a read of its stored bitmap (13 GB for 15,000 groups over
/// 10M users). Blobs without a digest (states written before this table)
/// get one when a run reads them; an older dyngroups ignores the table, and
/// since blob ids are never reused a digest it leaves behind describes no
/// other blob.
const BLOB_DIGESTS: TableDefinition<u64, BlobDigest> = TableDefinition::new("blob_member_digests");
/// The SHA-256 digests earlier versions kept instead; the next commit drops
/// them, since hashing 13 GB with SHA-256 took a sixth of a large run.
const SHA256_BLOB_DIGESTS: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("blob_digests");
/// `xxh3` → the random secret the digests of [`BLOB_DIGESTS`] are keyed
/// with, made when a state first stores a digest.
const DIGEST_SECRET: TableDefinition<&str, &[u8]> = TableDefinition::new("digest_secret");

/// A 128-bit XXH3 digest of a bitmap's portable bytes, keyed with a secret
/// drawn from the operating system for each state. Two digests that agree
/// mean the stored members are reused without a look, so a collision
/// would silently keep stale members. With 128 bits a chance collision is
/// out of reach, and XXH3 is no cryptographic hash, but aiming at a
/// collision needs the secret, which is kept beside the members it guards.
/// XXH3 hashes about 15 GB/s on one core here, SHA-256 1.3 GB/s.
type BlobDigest = u128;

/// A failure to read or write the state. Whatever it is, the last committed
/// run stays intact.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another process holds the state.
    #[error("the state in {dir} is in use by {holder}; wait for it to finish, or stop it")]
    Locked {
        /// The state directory.
        dir: String,
        /// Who holds it, as that process wrote it in the lock file.
        holder: String,
    },
    /// The state was written by a newer dyngroups.
    #[error(
        "the state in {dir} has format version {found}, but this dyngroups reads only up to version {supported}; \
         use a newer dyngroups, or a new `--state` directory"
    )]
    NewerFormat {
        /// The state directory.
        dir: String,
        /// The version found.
        found: u64,
        /// The newest version this build reads.
        supported: u64,
    },
    /// There is no state yet.
    #[error("no committed run in {dir}: `dyngroups run --state {dir}` commits the first one")]
    Missing {
        /// The state directory.
        dir: String,
    },
    /// A run id that is not retained.
    #[error("run {id} is not in the state in {dir}; `dyngroups history` lists the retained runs")]
    UnknownRun {
        /// The state directory.
        dir: String,
        /// The id asked for.
        id: u64,
    },
    /// A dry run was asked to commit.
    #[error("a dry run of the state in {dir} commits nothing")]
    DryRun {
        /// The state directory.
        dir: String,
    },
    /// The database or a stored bitmap cannot be read.
    #[error("the state in {dir} is corrupt: {reason}")]
    Corrupt {
        /// The state directory.
        dir: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing the state directory failed.
    #[error("cannot use the state in {dir}: {reason}")]
    Io {
        /// The state directory.
        dir: String,
        /// Why.
        reason: String,
    },
}

/// An open state directory, held by this process until dropped.
pub struct State {
    dir: PathBuf,
    db: Database,
    /// Held for the lifetime of the state: the advisory lock is the file's.
    _lock: File,
}

impl State {
    /// Opens the state in `dir`, creating the directory and an empty state
    /// if there is none, and takes its lock.
    pub fn open_or_create(dir: &Path) -> Result<State, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, &e))?;
        State::open_in(dir)
    }

    /// Opens an existing state in `dir` and takes its lock.
    pub fn open(dir: &Path) -> Result<State, StateError> {
        if !dir.join(DATABASE_FILE).is_file() {
            return Err(StateError::Missing {
                dir: dir.display().to_string(),
            });
        }
        State::open_in(dir)
    }

    fn open_in(dir: &Path) -> Result<State, StateError> {
        let lock = take_lock(dir)?;
        // redb caches 1 GiB by default; a run reads each stored bitmap once
        // and writes each once, so a small cache loses little and spares
        // memory for the evaluation.
        let db = Database::builder()
            .set_cache_size(STATE_CACHE_BYTES)
            .create(dir.join(DATABASE_FILE))
            .map_err(|e| db_error(dir, e))?;
        let state = State {
            dir: dir.to_path_buf(),
            db,
            _lock: lock,
        };
        state.check_format()?;
        Ok(state)
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn dir_name(&self) -> String {
        self.dir.display().to_string()
    }

    fn error(&self, e: impl Into<redb::Error>) -> StateError {
        db_error(&self.dir, e)
    }

    fn corrupt(&self, reason: impl std::fmt::Display) -> StateError {
        StateError::Corrupt {
            dir: self.dir_name(),
            reason: reason.to_string(),
        }
    }

    /// Writes the format version into a new state; refuses a newer one.
    fn check_format(&self) -> Result<(), StateError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let found = match read.open_table(META) {
            Ok(meta) => meta
                .get("format_version")
                .map_err(|e| self.error(e))?
                .map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(self.error(e)),
        };
        drop(read);
        match found {
            Some(found) if found > FORMAT_VERSION => Err(StateError::NewerFormat {
                dir: self.dir_name(),
                found,
                supported: FORMAT_VERSION,
            }),
            Some(_) => Ok(()),
            None => {
                let write = self.db.begin_write().map_err(|e| self.error(e))?;
                {
                    let mut meta = write.open_table(META).map_err(|e| self.error(e))?;
                    meta.insert("format_version", FORMAT_VERSION)
                        .map_err(|e| self.error(e))?;
                    meta.insert("next_run", 1).map_err(|e| self.error(e))?;
                    meta.insert("next_blob", 1).map_err(|e| self.error(e))?;
                    write.open_table(RUNS).map_err(|e| self.error(e))?;
                    write.open_table(MEMBERS).map_err(|e| self.error(e))?;
                    write.open_table(BLOBS).map_err(|e| self.error(e))?;
                    write.open_table(BLOB_PARTS).map_err(|e| self.error(e))?;
                    write.open_table(BLOB_PLACES).map_err(|e| self.error(e))?;
                    write.open_table(BLOB_REFS).map_err(|e| self.error(e))?;
                    write.open_table(BLOB_DIGESTS).map_err(|e| self.error(e))?;
                    write.open_table(BLOB_BASES).map_err(|e| self.error(e))?;
                }
                write.commit().map_err(|e| self.error(e))
            }
        }
    }

    /// Every retained run, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>, StateError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let runs = read.open_table(RUNS).map_err(|e| self.error(e))?;
        let mut out = Vec::new();
        for entry in runs.iter().map_err(|e| self.error(e))? {
            let (_, json) = entry.map_err(|e| self.error(e))?;
            out.push(serde_json::from_str(json.value()).map_err(|e| self.corrupt(e))?);
        }
        Ok(out)
    }

    /// The last committed run, if any.
    pub fn last_run(&self) -> Result<Option<RunRecord>, StateError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let runs = read.open_table(RUNS).map_err(|e| self.error(e))?;
        let last = runs.last().map_err(|e| self.error(e))?;
        last.map(|(_, json)| serde_json::from_str(json.value()).map_err(|e| self.corrupt(e)))
            .transpose()
    }

    /// The record of run `id`.
    pub fn run(&self, id: u64) -> Result<RunRecord, StateError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let runs = read.open_table(RUNS).map_err(|e| self.error(e))?;
        let json = runs.get(id).map_err(|e| self.error(e))?.ok_or(StateError::UnknownRun {
            dir: self.dir_name(),
            id,
        })?;
        serde_json::from_str(json.value()).map_err(|e| self.corrupt(e))
    }

    /// The members group `key` committed in run `id`, in the roaring
    /// portable format; `None` if that run did not commit the group.
    pub fn members_portable(&self, id: u64, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let Some(blob) = self.committed_blob(&read, id, key)? else {
            return Ok(None);
        };
        let what = format!("run {id} group `{key}`");
        if self.base_of(&read, blob)?.is_some() {
            return Ok(Some(serialize(&self.blob_members(&read, blob, &what)?)));
        }
        Ok(Some(self.whole_blob_bytes(&read, blob, &what)?))
    }

    /// The members group `key` committed in run `id`; `None` if that run did
    /// not commit the group.
    pub fn members(&self, id: u64, key: &str) -> Result<Option<RoaringBitmap>, StateError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let Some(blob) = self.committed_blob(&read, id, key)? else {
            return Ok(None);
        };
        Ok(Some(self.blob_members(
            &read,
            blob,
            &format!("run {id} group `{key}`"),
        )?))
    }

    /// The blob run `id` stored for group `key`, if it committed the group.
    fn committed_blob(&self, read: &redb::ReadTransaction, id: u64, key: &str) -> Result<Option<u64>, StateError> {
        let members = read.open_table(MEMBERS).map_err(|e| self.error(e))?;
        Ok(members.get((id, key)).map_err(|e| self.error(e))?.map(|b| b.value()))
    }

    /// The members the last committed run committed for each of `keys` that
    /// it has (what `paused`, `add_only` and `remove_only` groups build on).
    pub fn last_members<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<BTreeMap<String, RoaringBitmap>, StateError> {
        let Some(last) = self.last_run()? else {
            return Ok(BTreeMap::new());
        };
        let mut out = BTreeMap::new();
        for key in keys {
            if let Some(members) = self.members(last.id, key)? {
                out.insert(key.to_string(), members);
            }
        }
        Ok(out)
    }

    /// Starts the next run: groups are added to it a batch at a time, each
    /// diffed against the last committed run and stored, and nothing is
    /// visible until [`RunWriter::commit`]. With `carry_over`, the last
    /// run's groups that this run does not add are kept as they were (a run
    /// of only some groups); otherwise they are gone.
    pub fn begin_run(&self, carry_over: bool) -> Result<RunWriter<'_>, StateError> {
        self.start_run(carry_over, true)
    }

    /// Like [`State::begin_run`], but nothing is stored: the changes are
    /// found as a real run would find them (`--dry-run`), and the run cannot
    /// be committed.
    pub fn begin_dry_run(&self, carry_over: bool) -> Result<RunWriter<'_>, StateError> {
        self.start_run(carry_over, false)
    }

    /// The secret of the state's member digests. A run that stores makes
    /// one if the state has none yet; a dry run then uses a throwaway one,
    /// which matches no stored digest since none was stored without one.
    fn digest_secret(&self, write: Option<&redb::WriteTransaction>) -> Result<DigestSecret, StateError> {
        let fresh = || {
            DigestSecret::random().map_err(|e| StateError::Io {
                dir: self.dir_name(),
                reason: format!("the system gives no random secret for digests: {e}"),
            })
        };
        const KEY: &str = "xxh3";
        let Some(write) = write else {
            let read = self.db.begin_read().map_err(|e| self.error(e))?;
            let stored = match read.open_table(DIGEST_SECRET) {
                Ok(table) => table.get(KEY).map_err(|e| self.error(e))?.map(|v| v.value().into()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(self.error(e)),
            };
            return stored.map_or_else(fresh, |secret| Ok(DigestSecret(secret)));
        };
        let mut table = write.open_table(DIGEST_SECRET).map_err(|e| self.error(e))?;
        if let Some(secret) = table.get(KEY).map_err(|e| self.error(e))? {
            return Ok(DigestSecret(secret.value().into()));
        }
        let secret = fresh()?;
        table.insert(KEY, &*secret.0).map_err(|e| self.error(e))?;
        Ok(secret)
    }

    /// The changes from retained run `from` to retained run `to`.
    pub fn changes_between(&self, from: u64, to: u64) -> Result<Vec<GroupChange>, StateError> {
        let (from, to) = (self.run(from)?, self.run(to)?);
        let after: Vec<(String, RoaringBitmap)> = to
            .groups
            .iter()
            .map(|g| Ok((g.key.clone(), self.members(to.id, &g.key)?.unwrap_or_default())))
            .collect::<Result<_, StateError>>()?;
        let after: Vec<(&str, &RoaringBitmap)> = after.iter().map(|(k, m)| (k.as_str(), m)).collect();
        let before: Vec<String> = from.groups.into_iter().map(|g| g.key).collect();
        changes(
            &before,
            |key| Ok(self.members(from.id, key)?.unwrap_or_default()),
            &after,
        )
    }
}

fn io_error(dir: &Path, e: &std::io::Error) -> StateError {
    let reason = match e.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        std::io::ErrorKind::StorageFull => "no space left on the device".to_string(),
        std::io::ErrorKind::NotADirectory => "a part of the path is not a directory".to_string(),
        _ => e.to_string(),
    };
    StateError::Io {
        dir: dir.display().to_string(),
        reason,
    }
}

fn db_error(dir: &Path, e: impl Into<redb::Error>) -> StateError {
    let dir_name = dir.display().to_string();
    match e.into() {
        redb::Error::DatabaseAlreadyOpen => StateError::Locked {
            holder: holder(dir),
            dir: dir_name,
        },
        redb::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => StateError::Corrupt {
            dir: dir_name,
            reason: format!("{DATABASE_FILE}: {e}"),
        },
        redb::Error::Io(e) => io_error(dir, &e),
        redb::Error::Corrupted(reason) => StateError::Corrupt { dir: dir_name, reason },
        redb::Error::UpgradeRequired(version) => StateError::Corrupt {
            dir: dir_name,
            reason: format!("{DATABASE_FILE} has database file format {version}, which this build cannot read"),
        },
        other => StateError::Corrupt {
            dir: dir_name,
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::ChangeCount;
    use std::collections::{HashMap, HashSet};

    /// A state of versions 1 to 3 (bitmaps whole in `BLOBS`, or in parts)
    /// reads back; its next run shares an unchanged group's bitmap, stores
    /// a changed one in a pack,
    /// pruning the first run drops only the bitmap no run uses, and the
    /// SHA-256 digests of earlier versions give way to keyed ones.
    #[test]
    fn a_version_1_state_is_read_and_carried_on() {
        let dir = tempfile::tempdir().unwrap();
        let kept: RoaringBitmap = (0..100_000).step_by(3).collect();
        let before: RoaringBitmap = (5..9).collect();
        {
            let db = Database::create(dir.path().join(DATABASE_FILE)).unwrap();
            let write = db.begin_write().unwrap();
            {
                let mut meta = write.open_table(META).unwrap();
                for (name, value) in [("format_version", 1), ("next_run", 2), ("next_blob", 3)] {
                    meta.insert(name, value).unwrap();
                }
                let group = |key: &str, members: &RoaringBitmap| GroupRecord {
                    key: key.into(),
                    name: key.into(),
                    kind: "rule".into(),
                    status: "active".into(),
                    members: members.len(),
                    added: members.len(),
                    removed: 0,
                };
                let record = RunRecord {
                    id: 1,
                    as_of: "2026-11-21".into(),
                    committed_at: "2026-11-21T00:00:00Z".into(),
                    inputs: Vec::new(),
                    groups: vec![group("changed", &before), group("kept", &kept)],
                };
                let json = serde_json::to_string(&record).unwrap();
                write.open_table(RUNS).unwrap().insert(1, json.as_str()).unwrap();
                let mut members = write.open_table(MEMBERS).unwrap();
                let mut blobs = write.open_table(BLOBS).unwrap();
                let mut parts = write.open_table(BLOB_PARTS).unwrap();
                let mut refs = write.open_table(BLOB_REFS).unwrap();
                for (blob, key) in [(1, "kept"), (2, "changed")] {
                    members.insert((1, key), blob).unwrap();
                    refs.insert(blob, 1).unwrap();
                }
                blobs.insert(1, serialize(&kept).as_slice()).unwrap();
                // As versions 2 and 3 stored bitmaps: in parts.
                let changed_bytes = serialize(&before);
                for (part, bytes) in (0..).zip(changed_bytes.chunks(7)) {
                    parts.insert((2, part), bytes).unwrap();
                }
                let mut sha256 = write.open_table(SHA256_BLOB_DIGESTS).unwrap();
                sha256.insert(1, &[7; 32]).unwrap();
            }
            write.commit().unwrap();
        }

        let state = State::open(dir.path()).unwrap();
        assert_eq!(state.members(1, "kept").unwrap(), Some(kept.clone()));
        let changed: RoaringBitmap = (0..5_000_000).step_by(2).collect();
        let mut run = state.begin_run(false).unwrap();
        let changes = run
            .add_with_changes(&[
                GroupToCommit::active("kept", &kept),
                GroupToCommit::active("changed", &changed),
            ])
            .unwrap();
        assert!(changes[0].is_empty());
        assert_eq!(
            (&changes[1].added, &changes[1].removed),
            (&(&changed - &before), &(&before - &changed))
        );
        run.commit("2026-11-22", Vec::new(), 1).unwrap();

        assert_eq!(state.runs().unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), [2]);
        assert_eq!(state.members(2, "kept").unwrap(), Some(kept));
        assert_eq!(state.members(2, "changed").unwrap(), Some(changed));
        let read = state.db.begin_read().unwrap();
        let blobs = read.open_table(BLOBS).unwrap();
        assert!(blobs.get(1).unwrap().is_some(), "shared with run 2");
        let parts = read.open_table(BLOB_PARTS).unwrap();
        assert_eq!(
            redb::ReadableTableMetadata::len(&parts).unwrap(),
            0,
            "used by run 1 only"
        );
        let meta = read.open_table(META).unwrap();
        assert_eq!(meta.get("format_version").unwrap().unwrap().value(), FORMAT_VERSION);
        let digests = read.open_table(BLOB_DIGESTS).unwrap();
        let secret = state.digest_secret(None).unwrap();
        assert_eq!(
            digests.get(1).unwrap().map(|d| d.value()),
            Some(secret.digest_of(state.members(2, "kept").unwrap().as_ref().unwrap())),
            "found when run 2 read it"
        );
        assert!(matches!(
            read.open_table(SHA256_BLOB_DIGESTS),
            Err(redb::TableError::TableDoesNotExist(_))
        ));
    }

    /// A group whose members match its stored digest is not read back: with
    /// its stored bytes garbled, a run that keeps its members succeeds, and
    /// one that changes them finds the garbage.
    #[test]
    fn a_group_whose_digest_matches_is_not_read_back() {
        let kept: RoaringBitmap = (0..200_000).step_by(7).collect();
        let before: RoaringBitmap = (10..20).collect();
        let (_dir, state) = state_with_one_run(&[("kept", &kept), ("changed", &before)]);
        let kept_blob = {
            let read = state.db.begin_read().unwrap();
            read.open_table(MEMBERS)
                .unwrap()
                .get((1, "kept"))
                .unwrap()
                .unwrap()
                .value()
        };
        let (pack, offset, _) = {
            let read = state.db.begin_read().unwrap();
            let places = read.open_table(BLOB_PLACES).unwrap();
            places.get(kept_blob).unwrap().unwrap().value()
        };
        let pack = std::fs::OpenOptions::new()
            .write(true)
            .open(state.dir.join(format!("packs/{pack}.pack")))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&pack, b"garbage", offset).unwrap();

        let after: RoaringBitmap = (15..30).collect();
        let mut run = state.begin_run(false).unwrap();
        let counts = run
            .add(&[
                GroupToCommit::active("kept", &kept),
                GroupToCommit::active("changed", &after),
            ])
            .unwrap();
        assert_eq!(counts[0], ChangeCount::none("kept"));
        assert_eq!((counts[1].added, counts[1].removed), (10, 5));
        run.commit("2026-11-22", Vec::new(), 5).unwrap();

        let mut run = state.begin_run(false).unwrap();
        let fewer: RoaringBitmap = (0..100_000).step_by(7).collect();
        let error = run.add(&[GroupToCommit::active("kept", &fewer)]).err();
        assert!(matches!(error, Some(StateError::Corrupt { .. })), "{error:?}");
    }

    /// A new state, in a directory that lives as long as the returned
    /// handle, with one committed run of active `groups`.
    /// Packs hold the bitmaps the retained runs use, and not many more: a
    /// pack left by a run that never committed goes with the next commit,
    /// a pack whose bitmaps were all pruned goes, and one mostly pruned
    /// has its live bitmaps moved into the newest pack; every retained
    /// group reads back all along.
    #[test]
    fn packs_hold_what_the_retained_runs_use() {
        let kept: RoaringBitmap = (0..300_000).step_by(3).collect();
        // Most of the first pack is `moving`, which the second run prunes.
        let first: RoaringBitmap = (0..1_000_000).step_by(2).collect();
        let (dir, state) = state_with_one_run(&[("kept", &kept), ("moving", &first)]);
        let pack_bytes = || -> u64 {
            packs::pack_sizes(dir.path())
                .unwrap()
                .iter()
                .map(|(_, size)| size)
                .sum()
        };
        let stored_bytes = |run: u64| -> u64 {
            ["kept", "moving"]
                .iter()
                .map(|key| state.members(run, key).unwrap().unwrap().serialized_size() as u64)
                .sum()
        };
        for round in 2..8u32 {
            // A run that stores and is dropped before its commit.
            let abandoned: RoaringBitmap = (round..400_000).step_by(2).collect();
            let mut run = state.begin_run(false).unwrap();
            run.add(&[GroupToCommit::active("moving", &abandoned)]).unwrap();
            drop(run);

            let moving: RoaringBitmap = (round..300_000).step_by(round as usize).collect();
            let mut run = state.begin_run(false).unwrap();
            run.add(&[
                GroupToCommit::active("kept", &kept),
                GroupToCommit::active("moving", &moving),
            ])
            .unwrap();
            let record = run.commit("2026-11-22", Vec::new(), 1).unwrap();
            assert_eq!(state.members(record.id, "kept").unwrap(), Some(kept.clone()));
            assert_eq!(state.members(record.id, "moving").unwrap(), Some(moving));
            let live = stored_bytes(record.id);
            assert!(
                pack_bytes() <= 2 * live,
                "round {round}: {} bytes of packs for {live}",
                pack_bytes()
            );
        }
        let read = state.db.begin_read().unwrap();
        let named: HashSet<u64> = read
            .open_table(BLOB_PLACES)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| e.unwrap().1.value().0)
            .collect();
        let on_disk: HashSet<u64> = packs::pack_sizes(dir.path())
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(on_disk, named);
    }

    fn state_with_one_run(groups: &[(&str, &RoaringBitmap)]) -> (tempfile::TempDir, State) {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open_or_create(dir.path()).unwrap();
        let mut run = state.begin_run(false).unwrap();
        let groups: Vec<GroupToCommit> = groups
            .iter()
            .map(|(key, members)| GroupToCommit::active(key, members))
            .collect();
        run.add(&groups).unwrap();
        run.commit("2026-11-21", Vec::new(), 5).unwrap();
        (dir, state)
    }

    /// A group that names, in `same_members_as`, a group added before it in
    /// the run takes that group's digest instead of hashing its members.
    /// The caller vouches that the members are the same; here they are not,
    /// so that the test sees which digest was used.
    #[test]
    fn a_group_with_the_same_members_takes_the_digest_of_the_first() {
        let members: RoaringBitmap = (0..100_000).step_by(3).collect();
        let (_dir, state) = state_with_one_run(&[("first", &members), ("second", &members)]);

        let changed: RoaringBitmap = (0..100_000).step_by(5).collect();
        let same_as_first = |key, members| GroupToCommit {
            same_members_as: Some("first"),
            ..GroupToCommit::active(key, members)
        };
        let mut run = state.begin_run(false).unwrap();
        run.add(&[GroupToCommit::active("first", &members)]).unwrap();
        let counts = run
            .add(&[same_as_first("second", &changed), same_as_first("third", &changed)])
            .unwrap();
        assert_eq!(
            counts[0],
            ChangeCount::none("second"),
            "the digest of `first` was taken"
        );
        assert_eq!(counts[1].added, changed.len(), "a new group is stored whole");
        // A key never added gives no digest: the members are hashed.
        let counts = run
            .add(&[GroupToCommit {
                same_members_as: Some("unknown"),
                ..GroupToCommit::active("fourth", &changed)
            }])
            .unwrap();
        assert_eq!(counts[0].added, changed.len());
        run.commit("2026-11-22", Vec::new(), 5).unwrap();
    }

    /// Commits one run of `groups`, keeping `keep` runs.
    fn commit(state: &State, groups: &[(&str, &RoaringBitmap)], keep: usize) {
        let groups: Vec<_> = groups
            .iter()
            .map(|(key, members)| GroupToCommit::active(key, members))
            .collect();
        let mut run = state.begin_run(false).unwrap();
        run.add(&groups).unwrap();
        run.commit("2026-11-22", Vec::new(), keep).unwrap();
    }

    /// The blob run `id` stored for `key`, and its base and chain if it is
    /// a delta.
    fn stored_blob(state: &State, id: u64, key: &str) -> (u64, Option<(u64, u32)>) {
        let read = state.db.begin_read().unwrap();
        let blob = read
            .open_table(MEMBERS)
            .unwrap()
            .get((id, key))
            .unwrap()
            .unwrap()
            .value();
        (blob, state.base_of(&read, blob).unwrap())
    }

    /// Every blob's reference count is the number of runs' groups and deltas
    /// pointing at it, and only referenced blobs have bytes, digests and
    /// bases.
    fn assert_references_hold(state: &State) {
        let read = state.db.begin_read().unwrap();
        let mut expected: HashMap<u64, u64> = HashMap::new();
        for entry in read.open_table(MEMBERS).unwrap().iter().unwrap() {
            *expected.entry(entry.unwrap().1.value()).or_default() += 1;
        }
        for entry in read.open_table(BLOB_BASES).unwrap().iter().unwrap() {
            *expected.entry(entry.unwrap().1.value().0).or_default() += 1;
        }
        let refs: HashMap<u64, u64> = read
            .open_table(BLOB_REFS)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| e.map(|(blob, count)| (blob.value(), count.value())).unwrap())
            .collect();
        assert_eq!(refs, expected);
        let places: HashSet<u64> = read
            .open_table(BLOB_PLACES)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value())
            .collect();
        let digests: HashSet<u64> = read
            .open_table(BLOB_DIGESTS)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value())
            .collect();
        let referenced: HashSet<u64> = refs.keys().copied().collect();
        assert_eq!(places, referenced, "bytes of exactly the referenced blobs");
        assert_eq!(digests, referenced, "digests of exactly the referenced blobs");
        for entry in read.open_table(BLOB_BASES).unwrap().iter().unwrap() {
            assert!(
                referenced.contains(&entry.unwrap().0.value()),
                "a base of an unreferenced blob"
            );
        }
    }

    /// A group that changes a little each run stores only the change, up to
    /// `MAX_DELTA_CHAIN` deltas, then whole again; every retained run reads
    /// back its own members, through pruning that keeps the bases its
    /// deltas need and drops the rest.
    #[test]
    fn a_group_that_changes_a_little_is_stored_as_a_delta() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open_or_create(dir.path()).unwrap();
        let keep = 5;
        let mut history = Vec::new();
        let mut first_blob = None;
        let mut members: RoaringBitmap = (0..1_000_000).step_by(3).collect();
        for run in 1..=2 * MAX_DELTA_CHAIN as u64 + 4 {
            if run > 1 {
                members.remove(3 * run as u32);
                members.insert(2_000_000 + run as u32);
            }
            let moved: RoaringBitmap = (run as u32 * 20_000..run as u32 * 20_000 + 10_000).collect();
            commit(&state, &[("daily", &members), ("moved", &moved)], keep);
            history.push(members.clone());
            let (blob, base) = stored_blob(&state, run, "daily");
            first_blob.get_or_insert(blob);
            let expected_chain = (run as u32 - 1) % (MAX_DELTA_CHAIN + 1);
            assert_eq!(
                base.map(|(_, chain)| chain),
                (expected_chain > 0).then_some(expected_chain),
                "run {run}"
            );
            if let Some((base, _)) = base {
                let delta = &history[history.len() - 2] ^ &members;
                assert_eq!(
                    state.blob_bytes(&state.db.begin_read().unwrap(), blob).unwrap(),
                    Some(serialize(&delta))
                );
                assert_eq!(base, stored_blob(&state, run - 1, "daily").0);
            }
            let (_, moved_base) = stored_blob(&state, run, "moved");
            assert_eq!(moved_base, None, "a group that moved entirely is stored whole");
            assert_references_hold(&state);
            for id in run.saturating_sub(keep as u64 - 1).max(1)..=run {
                let expected = &history[id as usize - 1];
                assert_eq!(
                    state.members(id, "daily").unwrap().as_ref(),
                    Some(expected),
                    "run {id} after {run}"
                );
                let portable = state.members_portable(id, "daily").unwrap().unwrap();
                assert_eq!(portable, serialize(expected));
            }
        }
        let read = state.db.begin_read().unwrap();
        assert_eq!(
            state.blob_bytes(&read, first_blob.unwrap()).unwrap(),
            None,
            "a chain no run needs is gone"
        );
    }
}
