//! What a committed run records: its groups, its inputs' fingerprints.

use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::path::Path;

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
