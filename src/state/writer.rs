//! Writing a run: each group diffed against the last committed run and
//! stored as a share, a delta or whole; the commit, and pruning old runs.

use super::digest::{DigestSecret, serialize};
use super::packs::{self, PackWriter};
use super::records::{GroupRecord, GroupToCommit, InputFingerprint, RunRecord};
use super::{
    BLOB_BASES, BLOB_DIGESTS, BLOB_PARTS, BLOB_PLACES, BLOB_REFS, BLOBS, BlobDigest, FORMAT_VERSION, MAX_DELTA_CHAIN,
    MEMBERS, META, RUNS, SHA256_BLOB_DIGESTS, State, StateError, io_error,
};
use crate::diff::{ChangeCount, GroupChange};
use crate::faults::count_write;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use roaring::RoaringBitmap;
use std::collections::{BTreeMap, HashMap, HashSet};

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
    /// The pack of the bitmaps this run stores, once it stores one.
    pack: Option<PackWriter>,
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
            let mut places = write.open_table(BLOB_PLACES).map_err(|e| state.error(e))?;
            let mut refs = write.open_table(BLOB_REFS).map_err(|e| state.error(e))?;
            let mut digests = write.open_table(BLOB_DIGESTS).map_err(|e| state.error(e))?;
            let mut bases = write.open_table(BLOB_BASES).map_err(|e| state.error(e))?;
            let id = self.id;
            // The batch's new bitmaps go to the pack back to back, written
            // by its thread while the next batch is evaluated.
            let new_bitmaps: Vec<&[u8]> = diffed
                .iter()
                .filter_map(|d| match &d.stored {
                    Stored::New { bytes, .. } => Some(bytes.as_slice()),
                    _ => None,
                })
                .collect();
            let mut new_places = match new_bitmaps.is_empty() {
                true => Vec::new(),
                false => open_pack(&mut self.pack, state, id)?
                    .write_batch(&new_bitmaps)
                    .map_err(|e| io_error(&state.dir, &e))?,
            }
            .into_iter();
            for (group, Diffed { stored, .. }) in groups.iter().zip(&diffed) {
                let blob = match stored {
                    Stored::New { digest, base, .. } => {
                        let blob = self.next_blob;
                        self.next_blob += 1;
                        let place = new_places.next().expect("a place for each new bitmap");
                        places.insert(blob, place).map_err(|e| state.error(e))?;
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
        let mut pack = self.pack;
        let named = state.compact_packs(&write, &mut pack, self.id)?;
        if let Some(pack) = pack {
            pack.finish().map_err(|e| io_error(&state.dir, &e))?;
        }
        write.delete_table(SHA256_BLOB_DIGESTS).map_err(|e| state.error(e))?;
        count_write();
        write.commit().map_err(|e| state.error(e))?;
        count_write();
        // Best effort: a pack left behind is deleted after a later commit.
        let _ = packs::sweep(&state.dir, &named);
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
        let mut places = write.open_table(BLOB_PLACES).map_err(|e| self.error(e))?;
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
                        places.remove(blob).map_err(|e| self.error(e))?;
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

impl State {
    pub(super) fn start_run(&self, carry_over: bool, storing: bool) -> Result<RunWriter<'_>, StateError> {
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
            pack: None,
        })
    }

    /// Moves the bitmaps of packs that are more than half dead (their
    /// other bitmaps pruned) into run `id`'s pack, so the packs hold at
    /// most about twice the bytes the retained runs use. Returns the packs
    /// the run's places name once it commits; the rest go after the commit.
    fn compact_packs(
        &self,
        write: &redb::WriteTransaction,
        pack: &mut Option<PackWriter>,
        id: u64,
    ) -> Result<HashSet<u64>, StateError> {
        let mut places = write.open_table(BLOB_PLACES).map_err(|e| self.error(e))?;
        let all: Vec<(u64, packs::Place)> = places
            .iter()
            .map_err(|e| self.error(e))?
            .map(|entry| {
                entry
                    .map(|(blob, place)| (blob.value(), place.value()))
                    .map_err(|e| self.error(e))
            })
            .collect::<Result<_, _>>()?;
        let mut live: HashMap<u64, u64> = HashMap::new();
        for (_, (pack, _, length)) in &all {
            *live.entry(*pack).or_default() += *length;
        }
        let sparse: HashSet<u64> = packs::pack_sizes(&self.dir)
            .map_err(|e| io_error(&self.dir, &e))?
            .into_iter()
            .filter(|&(pack, size)| pack != id && live.get(&pack).is_some_and(|&live| 2 * live < size))
            .map(|(pack, _)| pack)
            .collect();
        let moving: Vec<(u64, Vec<u8>)> = all
            .iter()
            .filter(|(_, place)| sparse.contains(&place.0))
            .map(|&(blob, place)| {
                packs::read_place(&self.dir, place)
                    .map(|bytes| (blob, bytes))
                    .map_err(|e| self.corrupt(format_args!("bitmap {blob} in pack {}: {e}", place.0)))
            })
            .collect::<Result<_, _>>()?;
        if !moving.is_empty() {
            let bitmaps: Vec<&[u8]> = moving.iter().map(|(_, bytes)| bytes.as_slice()).collect();
            let moved = open_pack(pack, self, id)?
                .write_batch(&bitmaps)
                .map_err(|e| io_error(&self.dir, &e))?;
            for ((blob, _), place) in moving.iter().zip(moved) {
                places.insert(*blob, place).map_err(|e| self.error(e))?;
            }
        }
        let mut named: HashSet<u64> = live.into_keys().filter(|pack| !sparse.contains(pack)).collect();
        if pack.is_some() {
            named.insert(id);
        }
        Ok(named)
    }
}

/// Run `id`'s pack, created when it stores its first bitmap.
fn open_pack<'p>(pack: &'p mut Option<PackWriter>, state: &State, id: u64) -> Result<&'p mut PackWriter, StateError> {
    if pack.is_none() {
        *pack = Some(PackWriter::create(&state.dir, id).map_err(|e| io_error(&state.dir, &e))?);
    }
    Ok(pack.as_mut().expect("a pack"))
}
