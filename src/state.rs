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

use crate::diff::{ChangeCount, GroupChange, changes};
use crate::faults::count_write;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The layout of the tables below. A state written with a higher number is
/// refused, never misread. Version 2 stores bitmaps in parts; version 3
/// adds deltas, bitmaps stored as the change from another. Older states
/// are still read, and become version 3 with their next commit.
pub const FORMAT_VERSION: u64 = 3;

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
/// (Blob id, part) → the bitmap's bytes from `part * PART_BYTES` on, at most
/// `PART_BYTES` of them (version 2).
const BLOB_PARTS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("blob_parts");
/// The bytes of one blob part. redb gives a value a power-of-two number of
/// pages: a 1.2 MB bitmap (10M users) stored whole takes 2 MiB of file and
/// of writes, while parts just under 256 KiB fill their pages.
const PART_BYTES: usize = 256 * 1024 - 1024;
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

/// A fingerprint of one input file of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFingerprint {
    /// What the file was: `rules`, `users`, `enrollments`, `org` or `memberships`.
    pub role: String,
    /// The path as given.
    pub path: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// SHA-256 of its content, in hex.
    pub sha256: String,
}

impl InputFingerprint {
    /// Reads and hashes a file.
    pub fn of(role: &str, path: &Path) -> std::io::Result<InputFingerprint> {
        let mut file = File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            hasher.update(&buffer[..n]);
        }
        Ok(InputFingerprint {
            role: role.to_string(),
            path: path.display().to_string(),
            bytes,
            sha256: hex(&hasher.finalize()),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a committed run recorded of one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The group's key.
    pub key: String,
    /// Its display name at the time.
    pub name: String,
    /// `rule` for a group of the rules file, `static` for one of the
    /// memberships input. Records written before static groups were
    /// committed have no kind: they hold rule groups only.
    #[serde(default = "rule_kind")]
    pub kind: String,
    /// Its status keyword at the time.
    pub status: String,
    /// Members committed.
    pub members: u64,
    /// Users added since the previous run.
    pub added: u64,
    /// Users removed since the previous run.
    pub removed: u64,
}

fn rule_kind() -> String {
    "rule".to_string()
}

/// The record of a committed run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id: 1 for the first run of a state, then counting up.
    pub id: u64,
    /// The date `today` meant (YYYY-MM-DD).
    pub as_of: String,
    /// When it was committed (RFC 3339, UTC).
    pub committed_at: String,
    /// The input files, the rules file first.
    pub inputs: Vec<InputFingerprint>,
    /// The committed groups, by key.
    pub groups: Vec<GroupRecord>,
}

impl RunRecord {
    /// The groups of this run that came from the memberships input with
    /// members, and that a run with `statics_now` (the static groups of its
    /// memberships input) and `rule_keys` (its rules file's groups) would
    /// remove: a missing or broken memberships export looks like this.
    pub fn static_groups_missing(
        &self,
        statics_now: impl Fn(&str) -> bool,
        rule_keys: impl Fn(&str) -> bool,
    ) -> Vec<&GroupRecord> {
        self.groups
            .iter()
            .filter(|g| g.kind == "static" && g.members > 0)
            .filter(|g| !statics_now(&g.key) && !rule_keys(&g.key))
            .collect()
    }
}

/// One group a run commits.
#[derive(Clone, Copy, Debug)]
pub struct GroupToCommit<'a> {
    /// The group's key.
    pub key: &'a str,
    /// Its display name.
    pub name: &'a str,
    /// `rule` for a group of the rules file, `static` for one of the
    /// memberships input.
    pub kind: &'a str,
    /// Its status keyword.
    pub status: &'a str,
    /// The members it commits.
    pub members: &'a RoaringBitmap,
    /// A group added earlier in this run that commits exactly these
    /// members (the same rule), if the caller knows one: the digest that
    /// tells whether the members changed is then taken from it, not hashed
    /// again. Large rules files repeat rules often.
    pub same_members_as: Option<&'a str>,
}

impl<'a> GroupToCommit<'a> {
    /// An active rule group whose display name is its key.
    pub fn active(key: &'a str, members: &'a RoaringBitmap) -> GroupToCommit<'a> {
        GroupToCommit {
            key,
            name: key,
            kind: "rule",
            status: "active",
            members,
            same_members_as: None,
        }
    }
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

    /// The bytes of a stored bitmap, which must be there.
    fn whole_blob_bytes(&self, read: &redb::ReadTransaction, blob: u64, what: &str) -> Result<Vec<u8>, StateError> {
        self.blob_bytes(read, blob)?
            .ok_or_else(|| self.corrupt(format_args!("{what} points at a missing bitmap")))
    }

    /// The base of a delta blob and the length of its chain; `None` for a
    /// whole bitmap.
    fn base_of(&self, read: &redb::ReadTransaction, blob: u64) -> Result<Option<(u64, u32)>, StateError> {
        match read.open_table(BLOB_BASES) {
            Ok(bases) => Ok(bases.get(blob).map_err(|e| self.error(e))?.map(|b| b.value())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// The members a blob stands for: its whole bitmap, or its chain's whole
    /// bitmap XOR every delta up to it. `what` names it in errors.
    fn blob_members(&self, read: &redb::ReadTransaction, blob: u64, what: &str) -> Result<RoaringBitmap, StateError> {
        let mut deltas = Vec::new();
        let mut whole = blob;
        while let Some((base, _)) = self.base_of(read, whole)? {
            if deltas.len() > MAX_DELTA_CHAIN as usize {
                return Err(self.corrupt(format_args!("{what}: its chain of deltas does not end")));
            }
            deltas.push(whole);
            whole = base;
        }
        let bitmap = |blob: u64| -> Result<RoaringBitmap, StateError> {
            let bytes = self.whole_blob_bytes(read, blob, what)?;
            RoaringBitmap::deserialize_from(bytes.as_slice()).map_err(|e| self.corrupt(format_args!("{what}: {e}")))
        };
        let mut members = bitmap(whole)?;
        for delta in deltas.into_iter().rev() {
            members ^= bitmap(delta)?;
        }
        Ok(members)
    }

    /// A stored bitmap's bytes: its parts in order, or the whole bitmap a
    /// version-1 state stored.
    fn blob_bytes(&self, read: &redb::ReadTransaction, blob: u64) -> Result<Option<Vec<u8>>, StateError> {
        let mut bytes = Vec::new();
        match read.open_table(BLOB_PARTS) {
            Ok(parts) => {
                for part in parts.range((blob, 0)..=(blob, u32::MAX)).map_err(|e| self.error(e))? {
                    let (_, value) = part.map_err(|e| self.error(e))?;
                    bytes.extend_from_slice(value.value());
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.error(e)),
        }
        if !bytes.is_empty() {
            return Ok(Some(bytes));
        }
        match read.open_table(BLOBS) {
            Ok(blobs) => Ok(blobs.get(blob).map_err(|e| self.error(e))?.map(|v| v.value().to_vec())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
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

    fn start_run(&self, carry_over: bool, storing: bool) -> Result<RunWriter<'_>, StateError> {
        let last = self.last_run()?;
        let write = storing
            .then(|| self.db.begin_write().map_err(|e| self.error(e)))
            .transpose()?;
        let (mut id, mut next_blob) = (1, 1);
        if let Some(write) = &write {
            let meta = write.open_table(META).map_err(|e| self.error(e))?;
            let counter = |name: &str| -> Result<u64, StateError> {
                Ok(meta.get(name).map_err(|e| self.error(e))?.map_or(1, |v| v.value()))
            };
            (id, next_blob) = (counter("next_run")?, counter("next_blob")?);
        }
        let digest_secret = self.digest_secret(write.as_ref())?;
        Ok(RunWriter {
            state: self,
            last_keys: last
                .iter()
                .flat_map(|l| l.groups.iter().map(|g| g.key.clone()))
                .collect(),
            last,
            write,
            id,
            next_blob,
            groups: BTreeMap::new(),
            carry_over,
            digest_secret,
            digests: HashMap::new(),
        })
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

/// A run being written: each group is diffed against the last committed run
/// and stored as it is added, so a run never holds every group's members
/// at once. Dropped without [`RunWriter::commit`], it leaves the state as
/// it was.
pub struct RunWriter<'s> {
    state: &'s State,
    /// The last committed run, if any.
    last: Option<RunRecord>,
    last_keys: HashSet<String>,
    /// `None` in a dry run.
    write: Option<redb::WriteTransaction>,
    /// The id this run commits as.
    id: u64,
    next_blob: u64,
    /// The groups added so far, by key.
    groups: BTreeMap<String, GroupRecord>,
    carry_over: bool,
    digest_secret: DigestSecret,
    /// The digests of the members of groups added so far that were hashed,
    /// by key, for the groups that name them in `same_members_as`.
    digests: HashMap<String, BlobDigest>,
}

impl RunWriter<'_> {
    /// Adds groups to the run (each key once per run) and returns how many
    /// members each gained and lost since the last committed run. The
    /// previous members are read and the changed bitmaps serialised in
    /// parallel; a group whose members did not change shares the stored
    /// bitmap of the last run.
    pub fn add(&mut self, groups: &[GroupToCommit<'_>]) -> Result<Vec<ChangeCount>, StateError> {
        Ok(self
            .add_groups(groups, false)?
            .into_iter()
            .map(|(count, _)| count)
            .collect())
    }

    /// Adds groups like [`RunWriter::add`], and returns each group's change
    /// itself: the members it gained and lost.
    pub fn add_with_changes(&mut self, groups: &[GroupToCommit<'_>]) -> Result<Vec<GroupChange>, StateError> {
        Ok(self
            .add_groups(groups, true)?
            .into_iter()
            .map(|(_, change)| change.expect("changes asked for"))
            .collect())
    }

    fn add_groups(
        &mut self,
        groups: &[GroupToCommit<'_>],
        with_changes: bool,
    ) -> Result<Vec<(ChangeCount, Option<GroupChange>)>, StateError> {
        use rayon::prelude::*;
        let state = self.state;
        let storing = self.write.is_some();
        let previous = self.previous_blobs(groups)?;
        let digests = &self.digests;
        let diffed: Vec<Diffed> = groups
            .par_iter()
            .zip(&previous)
            .map(|(group, previous)| {
                let known_digest = group.same_members_as.and_then(|key| digests.get(key).copied());
                state.diff_and_serialize(
                    group,
                    *previous,
                    &self.digest_secret,
                    known_digest,
                    with_changes,
                    storing,
                )
            })
            .collect::<Result<_, StateError>>()?;
        if let Some(write) = &self.write {
            let mut members = write.open_table(MEMBERS).map_err(|e| state.error(e))?;
            let mut parts = write.open_table(BLOB_PARTS).map_err(|e| state.error(e))?;
            let mut refs = write.open_table(BLOB_REFS).map_err(|e| state.error(e))?;
            let mut digests = write.open_table(BLOB_DIGESTS).map_err(|e| state.error(e))?;
            let mut bases = write.open_table(BLOB_BASES).map_err(|e| state.error(e))?;
            let id = self.id;
            for (group, Diffed { stored, .. }) in groups.iter().zip(&diffed) {
                let blob = match stored {
                    Stored::New { bytes, digest, base } => {
                        let blob = self.next_blob;
                        self.next_blob += 1;
                        for (part, chunk) in (0u32..).zip(bytes.chunks(PART_BYTES)) {
                            parts.insert((blob, part), chunk).map_err(|e| state.error(e))?;
                            count_write();
                        }
                        digests.insert(blob, digest).map_err(|e| state.error(e))?;
                        if let Some((base, chain)) = *base {
                            bases.insert(blob, (base, chain)).map_err(|e| state.error(e))?;
                            state.add_ref(&mut refs, base)?;
                        }
                        blob
                    }
                    Stored::Previous { blob, found_digest } => {
                        if let Some(digest) = found_digest {
                            digests.insert(*blob, digest).map_err(|e| state.error(e))?;
                        }
                        *blob
                    }
                    Stored::Nothing => unreachable!("a stored run stores every group"),
                };
                state.add_ref(&mut refs, blob)?;
                members.insert((id, group.key), blob).map_err(|e| state.error(e))?;
                count_write();
            }
        }
        let mut changes = Vec::with_capacity(groups.len());
        for (
            group,
            Diffed {
                count, change, digest, ..
            },
        ) in groups.iter().zip(diffed)
        {
            if let Some(digest) = digest {
                self.digests.insert(group.key.to_string(), digest);
            }
            self.groups.insert(
                group.key.to_string(),
                GroupRecord {
                    key: group.key.to_string(),
                    name: group.name.to_string(),
                    kind: group.kind.to_string(),
                    status: group.status.to_string(),
                    members: group.members.len(),
                    added: count.added,
                    removed: count.removed,
                },
            );
            changes.push((count, change));
        }
        Ok(changes)
    }

    /// The groups of the last committed run that this run has not added,
    /// each losing every member; none when the run carries them over.
    /// Call it once every group is added.
    pub fn gone(&self) -> Result<Vec<GroupChange>, StateError> {
        use rayon::prelude::*;
        let Some(last) = self.last.as_ref().filter(|_| !self.carry_over) else {
            return Ok(Vec::new());
        };
        let empty = RoaringBitmap::new();
        last.groups
            .par_iter()
            .filter(|g| !self.groups.contains_key(&g.key))
            .map(|g| {
                let before = self.state.members(last.id, &g.key)?.unwrap_or_default();
                Ok(GroupChange::between(&g.key, &before, &empty))
            })
            .collect()
    }

    /// Commits the run atomically as the newest run, as of `as_of`
    /// (YYYY-MM-DD) from `inputs` (the rules file first), and drops the
    /// oldest runs beyond the newest `keep`. Returns the committed record.
    pub fn commit(self, as_of: &str, inputs: Vec<InputFingerprint>, keep: usize) -> Result<RunRecord, StateError> {
        let state = self.state;
        let Some(write) = self.write else {
            return Err(StateError::DryRun { dir: state.dir_name() });
        };
        let mut groups = self.groups;
        let record = {
            let mut meta = write.open_table(META).map_err(|e| state.error(e))?;
            let mut runs = write.open_table(RUNS).map_err(|e| state.error(e))?;
            let mut members = write.open_table(MEMBERS).map_err(|e| state.error(e))?;
            let mut refs = write.open_table(BLOB_REFS).map_err(|e| state.error(e))?;
            let id = self.id;
            if self.carry_over
                && let Some(last) = &self.last
            {
                for group in &last.groups {
                    if groups.contains_key(&group.key) {
                        continue;
                    }
                    let blob = state.last_blob(&members, Some(last), &group.key)?;
                    state.add_ref(&mut refs, blob)?;
                    members
                        .insert((id, group.key.as_str()), blob)
                        .map_err(|e| state.error(e))?;
                    count_write();
                    groups.insert(
                        group.key.clone(),
                        GroupRecord {
                            added: 0,
                            removed: 0,
                            ..group.clone()
                        },
                    );
                }
            }
            let record = RunRecord {
                id,
                as_of: as_of.to_string(),
                committed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                inputs,
                groups: groups.into_values().collect(),
            };
            let json = serde_json::to_string(&record).expect("a run record serialises");
            runs.insert(id, json.as_str()).map_err(|e| state.error(e))?;
            count_write();
            meta.insert("next_run", id + 1).map_err(|e| state.error(e))?;
            meta.insert("next_blob", self.next_blob).map_err(|e| state.error(e))?;
            meta.insert("format_version", FORMAT_VERSION)
                .map_err(|e| state.error(e))?;
            state.prune(&mut runs, &mut members, &write, &mut refs, keep)?;
            record
        };
        write.delete_table(SHA256_BLOB_DIGESTS).map_err(|e| state.error(e))?;
        count_write();
        write.commit().map_err(|e| state.error(e))?;
        count_write();
        Ok(record)
    }

    /// For each group, the blob the last run stored for it, if any.
    fn previous_blobs(&self, groups: &[GroupToCommit<'_>]) -> Result<Vec<Option<PreviousBlob>>, StateError> {
        let state = self.state;
        let Some(last) = &self.last else {
            return Ok(vec![None; groups.len()]);
        };
        let read = state.db.begin_read().map_err(|e| state.error(e))?;
        let members = read.open_table(MEMBERS).map_err(|e| state.error(e))?;
        let digests = match read.open_table(BLOB_DIGESTS) {
            Ok(digests) => Some(digests),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(state.error(e)),
        };
        groups
            .iter()
            .map(|group| {
                if !self.last_keys.contains(group.key) {
                    return Ok(None);
                }
                let blob = members
                    .get((last.id, group.key))
                    .map_err(|e| state.error(e))?
                    .ok_or_else(|| state.corrupt(format_args!("run {} lacks group `{}`", last.id, group.key)))?
                    .value();
                let digest = match &digests {
                    Some(digests) => digests.get(blob).map_err(|e| state.error(e))?.map(|d| d.value()),
                    None => None,
                };
                let chain = state.base_of(&read, blob)?.map_or(0, |(_, chain)| chain);
                Ok(Some(PreviousBlob { blob, digest, chain }))
            })
            .collect()
    }
}

impl State {
    /// How `group` changed since its `previous` blob, and what to store for
    /// it. The stored bitmap is read only when its digest is unknown or
    /// differs from the new members'. `known_digest` is the digest of the
    /// new members when another group's hashing already gave it.
    fn diff_and_serialize(
        &self,
        group: &GroupToCommit<'_>,
        previous: Option<PreviousBlob>,
        secret: &DigestSecret,
        known_digest: Option<BlobDigest>,
        with_changes: bool,
        storing: bool,
    ) -> Result<Diffed, StateError> {
        let reuse = |blob, found_digest| match storing {
            true => Stored::Previous { blob, found_digest },
            false => Stored::Nothing,
        };
        // Hashed once: compared with the stored digest, then stored with
        // the new blob.
        let new_digest = std::cell::OnceCell::new();
        if let Some(known) = known_digest {
            new_digest.set(known).expect("an empty cell");
        }
        let digest = || *new_digest.get_or_init(|| secret.digest_of(group.members));
        let (before, found_digest) = match previous {
            None => (RoaringBitmap::new(), None),
            Some(p) if p.digest.is_some_and(|d| d == digest()) => {
                let change = with_changes.then(|| GroupChange::none(group.key));
                return Ok(Diffed {
                    count: ChangeCount::none(group.key),
                    change,
                    stored: reuse(p.blob, None),
                    digest: new_digest.get().copied(),
                });
            }
            Some(p) => {
                let read = self.db.begin_read().map_err(|e| self.error(e))?;
                let before = self.blob_members(&read, p.blob, &format!("group `{}`", group.key))?;
                let found_digest = p.digest.is_none().then(|| secret.digest_of(&before));
                (before, found_digest)
            }
        };
        let count = ChangeCount::between(group.key, &before, group.members);
        let change = with_changes.then(|| GroupChange::between(group.key, &before, group.members));
        let stored = match previous {
            Some(p) if count.is_empty() => reuse(p.blob, found_digest),
            _ if storing => {
                // A delta when it is at most half the whole bitmap and the
                // chain has room: members that changed a little.
                let delta = previous
                    .filter(|p| p.chain < MAX_DELTA_CHAIN)
                    .map(|p| (p, &before ^ group.members))
                    .filter(|(_, delta)| 2 * delta.serialized_size() <= group.members.serialized_size());
                let (bytes, base) = match delta {
                    Some((p, delta)) => (serialize(&delta), Some((p.blob, p.chain + 1))),
                    None => (serialize(group.members), None),
                };
                Stored::New {
                    bytes,
                    digest: digest(),
                    base,
                }
            }
            _ => Stored::Nothing,
        };
        Ok(Diffed {
            count,
            change,
            stored,
            digest: new_digest.get().copied(),
        })
    }

    /// The blob the last run stored for `key`.
    fn last_blob(
        &self,
        members: &redb::Table<(u64, &str), u64>,
        last: Option<&RunRecord>,
        key: &str,
    ) -> Result<u64, StateError> {
        let last = last.ok_or_else(|| self.corrupt(format_args!("group `{key}` has no earlier run")))?;
        members
            .get((last.id, key))
            .map_err(|e| self.error(e))?
            .map(|v| v.value())
            .ok_or_else(|| self.corrupt(format_args!("run {} lacks group `{key}`", last.id)))
    }

    fn add_ref(&self, refs: &mut redb::Table<u64, u64>, blob: u64) -> Result<(), StateError> {
        let count = refs.get(blob).map_err(|e| self.error(e))?.map_or(0, |v| v.value());
        refs.insert(blob, count + 1).map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Drops the oldest runs beyond the newest `keep`, and bitmaps no run
    /// uses.
    fn prune(
        &self,
        runs: &mut redb::Table<u64, &str>,
        members: &mut redb::Table<(u64, &str), u64>,
        write: &redb::WriteTransaction,
        refs: &mut redb::Table<u64, u64>,
        keep: usize,
    ) -> Result<(), StateError> {
        let mut blobs = write.open_table(BLOBS).map_err(|e| self.error(e))?;
        let mut parts = write.open_table(BLOB_PARTS).map_err(|e| self.error(e))?;
        let mut digests = write.open_table(BLOB_DIGESTS).map_err(|e| self.error(e))?;
        let mut bases = write.open_table(BLOB_BASES).map_err(|e| self.error(e))?;
        let retained = runs.len().map_err(|e| self.error(e))?;
        let surplus = retained.saturating_sub(keep.max(1) as u64);
        let old: Vec<u64> = runs
            .iter()
            .map_err(|e| self.error(e))?
            .take(surplus as usize)
            .map(|entry| entry.map(|(k, _)| k.value()).map_err(|e| self.error(e)))
            .collect::<Result<_, _>>()?;
        for old_id in old {
            let entries: Vec<(String, u64)> = members
                .range((old_id, "")..(old_id + 1, ""))
                .map_err(|e| self.error(e))?
                .map(|entry| {
                    entry
                        .map(|(k, v)| (k.value().1.to_string(), v.value()))
                        .map_err(|e| self.error(e))
                })
                .collect::<Result<_, _>>()?;
            for (key, blob) in entries {
                members.remove((old_id, key.as_str())).map_err(|e| self.error(e))?;
                // A blob no one uses goes, and with it its reference to its
                // base, which may then go too.
                let mut released = Some(blob);
                while let Some(blob) = released.take() {
                    let count = refs.get(blob).map_err(|e| self.error(e))?.map_or(0, |v| v.value());
                    if count <= 1 {
                        refs.remove(blob).map_err(|e| self.error(e))?;
                        blobs.remove(blob).map_err(|e| self.error(e))?;
                        digests.remove(blob).map_err(|e| self.error(e))?;
                        parts
                            .retain_in((blob, 0)..=(blob, u32::MAX), |_, _| false)
                            .map_err(|e| self.error(e))?;
                        released = bases.remove(blob).map_err(|e| self.error(e))?.map(|b| b.value().0);
                    } else {
                        refs.insert(blob, count - 1).map_err(|e| self.error(e))?;
                    }
                    count_write();
                }
            }
            runs.remove(old_id).map_err(|e| self.error(e))?;
        }
        Ok(())
    }
}

/// What adding one group to a run found.
struct Diffed {
    count: ChangeCount,
    /// The change itself, when asked for.
    change: Option<GroupChange>,
    stored: Stored,
    /// The digest of the new members, if they were hashed (or it was known).
    digest: Option<BlobDigest>,
}

/// What a run stores for one group.
enum Stored {
    /// A new blob: a whole bitmap, or a delta on `base` (blob id, and the
    /// chain's length with this delta).
    New {
        bytes: Vec<u8>,
        digest: BlobDigest,
        base: Option<(u64, u32)>,
    },
    /// The blob the last run stored, unchanged; `found_digest` is its digest
    /// when the state did not have it yet.
    Previous {
        blob: u64,
        found_digest: Option<BlobDigest>,
    },
    /// Nothing: a dry run.
    Nothing,
}

/// The blob the last run stored for a group, its digest if known, and the
/// length of its chain of deltas (0 for a whole bitmap).
#[derive(Clone, Copy)]
struct PreviousBlob {
    blob: u64,
    digest: Option<BlobDigest>,
    chain: u32,
}

/// The secret a state's member digests are keyed with.
struct DigestSecret(Box<[u8]>);

impl DigestSecret {
    /// The length of XXH3's default secret.
    const BYTES: usize = 192;

    fn random() -> Result<DigestSecret, getrandom::Error> {
        let mut secret = vec![0; Self::BYTES].into_boxed_slice();
        getrandom::fill(&mut secret)?;
        Ok(DigestSecret(secret))
    }

    /// The digest of `members`' portable bytes, fed to the hash as they are
    /// written, so hashing an unchanged group allocates nothing.
    fn digest_of(&self, members: &RoaringBitmap) -> BlobDigest {
        let mut hasher = DigestWriter(
            twox_hash::xxhash3_128::Hasher::with_seed_and_secret(0, self.0.clone())
                .expect("the secret is as long as XXH3's default one"),
        );
        members.serialize_into(&mut hasher).expect("hashing cannot fail");
        hasher.0.finish_128()
    }
}

struct DigestWriter(twox_hash::xxhash3_128::Hasher);

impl Write for DigestWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.write(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn serialize(members: &RoaringBitmap) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(members.serialized_size());
    members
        .serialize_into(&mut bytes)
        .expect("writing to a Vec cannot fail");
    bytes
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

/// Who holds the lock, as the holder wrote it.
fn holder(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(LOCK_FILE))
        .ok()
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "another process".to_string())
}

/// Takes the state's advisory lock, or says who holds it. The lock goes with
/// the process, so a killed run never leaves it behind.
fn take_lock(dir: &Path) -> Result<File, StateError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error(dir, &e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(StateError::Locked {
                dir: dir.display().to_string(),
                holder: holder(dir),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_error(dir, &e)),
    }
    let description = format!(
        "dyngroups (pid {}) since {}",
        std::process::id(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(description.as_bytes()))
        .map_err(|e| io_error(dir, &e))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A version-1 state (each bitmap whole in `BLOBS`) reads back; its next
    /// run shares an unchanged group's bitmap, stores a changed one in parts,
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
                let mut refs = write.open_table(BLOB_REFS).unwrap();
                for (blob, key, bitmap) in [(1, "kept", &kept), (2, "changed", &before)] {
                    members.insert((1, key), blob).unwrap();
                    blobs.insert(blob, serialize(bitmap).as_slice()).unwrap();
                    refs.insert(blob, 1).unwrap();
                }
                let mut sha256 = write.open_table(SHA256_BLOB_DIGESTS).unwrap();
                sha256.insert(1, &[7; 32]).unwrap();
            }
            write.commit().unwrap();
        }

        let state = State::open(dir.path()).unwrap();
        assert_eq!(state.members(1, "kept").unwrap(), Some(kept.clone()));
        // Half of five million ids: three parts.
        let changed: RoaringBitmap = (0..5_000_000).step_by(2).collect();
        assert!(changed.serialized_size() > 2 * PART_BYTES);
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
        assert!(blobs.get(2).unwrap().is_none(), "used by run 1 only");
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
        let write = state.db.begin_write().unwrap();
        write
            .open_table(BLOB_PARTS)
            .unwrap()
            .insert((kept_blob, 0), b"garbage".as_slice())
            .unwrap();
        write.commit().unwrap();

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
        let parts: HashSet<u64> = read
            .open_table(BLOB_PARTS)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value().0)
            .collect();
        let digests: HashSet<u64> = read
            .open_table(BLOB_DIGESTS)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value())
            .collect();
        let referenced: HashSet<u64> = refs.keys().copied().collect();
        assert_eq!(parts, referenced, "bytes of exactly the referenced blobs");
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
