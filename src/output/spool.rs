//! Groups kept for the outputs a run writes once every group is evaluated:
//! in memory up to a budget, then in an unnamed temporary file beside the
//! output. A run over millions of users and thousands of groups then holds
//! a window of groups at a time, not every group's members until the end
//! (15,000 groups of 10M users are 16 GB of bitmaps).

use super::{GroupRows, OutputError, directory_of};
use crate::diff::GroupChange;
use roaring::RoaringBitmap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The bytes of bitmaps a spool holds in memory before it moves them to its
/// file: at 1M users and 1,000 groups every membership fits.
const SPOOL_MEMORY: u64 = 512 << 20;

/// Groups' members, or their changes, in the order they were added; each
/// group's rows are read back when an output's window reaches it.
pub(crate) struct GroupSpool {
    groups: Vec<Spooled>,
    /// The output the spool is for: its file goes beside it, and its errors
    /// name it.
    output: PathBuf,
    /// Serialised bytes of the bitmaps held in memory.
    held: u64,
    budget: u64,
    /// Created when the bitmaps outgrow the budget; deleted by the system
    /// when closed, however the process ends.
    file: Option<File>,
    /// The bytes written to `file`.
    end: u64,
}

/// One group in a spool.
struct Spooled {
    key: String,
    /// Its members, or its added and removed members.
    rows: u64,
    kept: Kept,
}

enum Kept {
    Members(RoaringBitmap),
    Change(GroupChange),
    /// At `offset` in the file: the members, or the added then the removed
    /// members, serialised one after the other, `lengths` bytes each.
    InFile {
        offset: u64,
        lengths: Vec<u64>,
        change: bool,
    },
}

/// One group's rows, as a spool or a caller's slice gives them to a writer.
pub(super) enum Loaded<'a> {
    Borrowed(GroupRows<'a>),
    Members(RoaringBitmap),
    Change(GroupChange),
}

impl Loaded<'_> {
    pub(super) fn rows(&self) -> GroupRows<'_> {
        match self {
            Loaded::Borrowed(rows) => *rows,
            Loaded::Members(members) => GroupRows::Members(members),
            Loaded::Change(change) => GroupRows::Changes(change),
        }
    }
}

/// The groups of an output, by index: each one's key and row count at
/// hand, its rows loaded when written.
pub(super) trait GroupSource: Sync {
    fn len(&self) -> usize;
    fn key(&self, group: usize) -> &str;
    fn rows(&self, group: usize) -> u64;
    fn load(&self, group: usize) -> std::io::Result<Loaded<'_>>;
}

impl GroupSource for Vec<(&str, GroupRows<'_>)> {
    fn len(&self) -> usize {
        <[_]>::len(self)
    }

    fn key(&self, group: usize) -> &str {
        self[group].0
    }

    fn rows(&self, group: usize) -> u64 {
        self[group].1.len()
    }

    fn load(&self, group: usize) -> std::io::Result<Loaded<'_>> {
        Ok(Loaded::Borrowed(self[group].1))
    }
}

impl GroupSource for GroupSpool {
    fn len(&self) -> usize {
        self.groups.len()
    }

    fn key(&self, group: usize) -> &str {
        &self.groups[group].key
    }

    fn rows(&self, group: usize) -> u64 {
        self.groups[group].rows
    }

    fn load(&self, group: usize) -> std::io::Result<Loaded<'_>> {
        let spooled = &self.groups[group];
        Ok(match &spooled.kept {
            Kept::Members(members) => Loaded::Borrowed(GroupRows::Members(members)),
            Kept::Change(change) => Loaded::Borrowed(GroupRows::Changes(change)),
            Kept::InFile {
                offset,
                lengths,
                change,
            } => {
                let file = self.file.as_ref().expect("a spool with groups in its file has one");
                let mut bytes = vec![0; lengths.iter().sum::<u64>() as usize];
                file.read_exact_at(&mut bytes, *offset)?;
                let mut rest = bytes.as_slice();
                let mut next = || -> std::io::Result<RoaringBitmap> {
                    // Written by this process just before: no need to check
                    // it again.
                    RoaringBitmap::deserialize_unchecked_from(&mut rest)
                };
                if *change {
                    Loaded::Change(GroupChange {
                        key: spooled.key.clone(),
                        added: next()?,
                        removed: next()?,
                    })
                } else {
                    Loaded::Members(next()?)
                }
            }
        })
    }
}

impl GroupSpool {
    /// An empty spool for the output at `output`.
    pub(crate) fn new(output: &Path) -> GroupSpool {
        GroupSpool::with_budget(output, SPOOL_MEMORY)
    }

    /// A spool that moves each group to its file as it comes.
    #[cfg(test)]
    pub(super) fn spilling(output: &Path) -> GroupSpool {
        GroupSpool::with_budget(output, 0)
    }

    fn with_budget(output: &Path, budget: u64) -> GroupSpool {
        GroupSpool {
            groups: Vec::new(),
            output: output.to_path_buf(),
            held: 0,
            budget,
            file: None,
            end: 0,
        }
    }

    /// Keeps a group's members.
    pub(crate) fn push_members(&mut self, key: &str, members: RoaringBitmap) -> Result<(), OutputError> {
        let rows = members.len();
        self.push(key, rows, Kept::Members(members))
    }

    /// Keeps a group's change.
    pub(crate) fn push_change(&mut self, change: GroupChange) -> Result<(), OutputError> {
        let rows = change.added.len() + change.removed.len();
        let key = change.key.clone();
        self.push(&key, rows, Kept::Change(change))
    }

    /// Every change kept, in the order kept, for an output that needs them
    /// all at once.
    pub(crate) fn changes(&self) -> Result<Vec<GroupChange>, OutputError> {
        (0..self.groups.len())
            .map(|group| match self.load(group).map_err(|e| self.error(&e))? {
                Loaded::Borrowed(GroupRows::Changes(change)) => Ok(change.clone()),
                Loaded::Change(change) => Ok(change),
                Loaded::Borrowed(GroupRows::Members(_)) | Loaded::Members(_) => {
                    unreachable!("a spool of changes keeps changes")
                }
            })
            .collect()
    }

    fn push(&mut self, key: &str, rows: u64, kept: Kept) -> Result<(), OutputError> {
        self.held += bitmaps(&kept).map(RoaringBitmap::serialized_size).sum::<usize>() as u64;
        self.groups.push(Spooled {
            key: key.to_string(),
            rows,
            kept,
        });
        if self.held > self.budget {
            self.spill().map_err(|e| self.error(&e))?;
        }
        Ok(())
    }

    /// Moves every bitmap held in memory to the file.
    fn spill(&mut self) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(tempfile::tempfile_in(directory_of(&self.output))?);
        }
        let file = self.file.as_ref().expect("created above");
        for spooled in &mut self.groups {
            if matches!(spooled.kept, Kept::InFile { .. }) {
                continue;
            }
            let mut bytes = Vec::new();
            let mut lengths = Vec::new();
            for bitmap in bitmaps(&spooled.kept) {
                let before = bytes.len();
                bitmap.serialize_into(&mut bytes)?;
                lengths.push((bytes.len() - before) as u64);
            }
            file.write_all_at(&bytes, self.end)?;
            spooled.kept = Kept::InFile {
                offset: self.end,
                lengths,
                change: matches!(spooled.kept, Kept::Change(_)),
            };
            self.end += bytes.len() as u64;
        }
        self.held = 0;
        Ok(())
    }

    fn error(&self, e: &dyn std::fmt::Display) -> OutputError {
        OutputError {
            path: self.output.display().to_string(),
            reason: format!("cannot keep its groups beside it until the run ends: {e}"),
        }
    }
}

/// The bitmaps a group keeps in memory.
fn bitmaps(kept: &Kept) -> impl Iterator<Item = &RoaringBitmap> {
    let (first, second) = match kept {
        Kept::Members(members) => (Some(members), None),
        Kept::Change(change) => (Some(&change.added), Some(&change.removed)),
        Kept::InFile { .. } => (None, None),
    };
    first.into_iter().chain(second)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spilled or held, a spool gives back what it was given, in order: with
    /// no budget every group goes to the file; with a small one the first
    /// group does and the small ones after it stay in memory.
    #[test]
    fn groups_come_back_as_kept_from_memory_and_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.csv");
        let sets: Vec<RoaringBitmap> = vec![
            (0..100_000).step_by(3).collect(),
            RoaringBitmap::new(),
            [7, 70_000, u32::MAX].into_iter().collect(),
        ];
        for budget in [0, 10_000, u64::MAX] {
            let mut members = GroupSpool::with_budget(&output, budget);
            let mut changes = GroupSpool::with_budget(&output, budget);
            for (i, set) in sets.iter().enumerate() {
                members.push_members(&format!("g{i}"), set.clone()).unwrap();
                changes
                    .push_change(GroupChange::between(&format!("g{i}"), &sets[(i + 1) % 3], set))
                    .unwrap();
            }
            assert_eq!(members.file.is_some(), budget < u64::MAX, "budget {budget}");
            for (i, set) in sets.iter().enumerate() {
                assert_eq!(members.key(i), format!("g{i}"));
                assert_eq!(members.rows(i), set.len());
                let loaded = members.load(i).unwrap();
                let GroupRows::Members(back) = loaded.rows() else {
                    panic!("members kept as members");
                };
                assert_eq!(back, set, "group {i}, budget {budget}");
            }
            let expected: Vec<GroupChange> = (0..3)
                .map(|i| GroupChange::between(&format!("g{i}"), &sets[(i + 1) % 3], &sets[i]))
                .collect();
            assert_eq!(changes.changes().unwrap(), expected, "budget {budget}");
        }
    }
}
