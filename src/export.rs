//! What admins export from the committed state: the list of groups, a
//! group's members with user columns, the users not in a group, and the
//! groups one user is in.

use crate::data::{DataError, OpenTable};
use crate::output::TextTable;
use crate::state::{RunRecord, State, StateError};
use roaring::RoaringBitmap;
use std::collections::HashMap;
use std::path::Path;

/// A failure of an export: of the state, or of the users file.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The state.
    #[error(transparent)]
    State(#[from] StateError),
    /// The users file.
    #[error(transparent)]
    Data(#[from] DataError),
}

/// Every group of a run: key, name, kind, status, members, and the last
/// kept run that changed its members.
pub fn groups_table(state: &State, run: &RunRecord) -> Result<TextTable, StateError> {
    // The newest kept run up to `run` that changed each group, found in one
    // pass over the runs (newest first), not one pass per group.
    let mut last_change: HashMap<&str, &RunRecord> = HashMap::new();
    let runs = state.runs()?;
    for earlier in runs.iter().rev().filter(|r| r.id <= run.id) {
        for g in earlier.groups.iter().filter(|g| g.added > 0 || g.removed > 0) {
            last_change.entry(g.key.as_str()).or_insert(earlier);
        }
    }
    let rows = run
        .groups
        .iter()
        .map(|g| {
            let changed = last_change.get(g.key.as_str());
            vec![
                Some(g.key.clone()),
                Some(g.name.clone()),
                Some(g.kind.clone()),
                Some(g.status.clone()),
                Some(g.members.to_string()),
                changed.map(|r| r.id.to_string()),
                changed.map(|r| r.committed_at.clone()),
            ]
        })
        .collect();
    Ok(TextTable {
        header: [
            "group",
            "name",
            "kind",
            "status",
            "members",
            "last_change_run",
            "last_change_at",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    })
}

/// Users of `ids` (all users when `None`, less `excluded`), one row each in
/// users-file order: `user_id` then the `columns` asked for.
pub fn user_rows(
    users: &Path,
    columns: &[String],
    ids: Option<&RoaringBitmap>,
    excluded: Option<&RoaringBitmap>,
) -> Result<TextTable, DataError> {
    let table = OpenTable::open(users)?;
    let mut wanted = vec![table.required("user_id", crate::schema::ValueType::Number)?];
    for name in columns {
        let index = table.schema().names().position(|n| n == name).ok_or_else(|| {
            DataError::column(
                users,
                name,
                format!(
                    "is not a column of the users file; it has {}",
                    table
                        .schema()
                        .names()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        wanted.push(index);
    }
    let table = table.load(&wanted)?;
    let mut rows = Vec::new();
    for row in 0..table.rows {
        let Some(id) = table
            .column(wanted[0])
            .cell_text(row)
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        if ids.is_some_and(|ids| !ids.contains(id)) || excluded.is_some_and(|ex| ex.contains(id)) {
            continue;
        }
        rows.push(wanted.iter().map(|&c| table.column(c).cell_text(row)).collect());
    }
    let mut header = vec!["user_id".to_string()];
    header.extend(columns.iter().cloned());
    Ok(TextTable { header, rows })
}

/// Why a user is in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The group's rule matches the user.
    Rule,
    /// The group's `include` list names the user.
    Include,
    /// The memberships input lists the user.
    Static,
}

impl Why {
    /// The word shown to admins.
    pub fn word(self) -> &'static str {
        match self {
            Why::Rule => "rule",
            Why::Include => "include",
            Why::Static => "static",
        }
    }
}

/// The groups `user` is in after `run`, with why. `includes` gives each
/// rule group's `include` list, when the rules file is at hand.
pub fn groups_of(
    state: &State,
    run: &RunRecord,
    user: u32,
    includes: &HashMap<String, Vec<u64>>,
) -> Result<Vec<(String, String, Why)>, StateError> {
    let mut out = Vec::new();
    for group in &run.groups {
        let members = state.members(run.id, &group.key)?.unwrap_or_default();
        if !members.contains(user) {
            continue;
        }
        let why = if group.kind == "static" {
            Why::Static
        } else if includes
            .get(&group.key)
            .is_some_and(|ids| ids.contains(&u64::from(user)))
        {
            Why::Include
        } else {
            Why::Rule
        };
        out.push((group.key.clone(), group.name.clone(), why));
    }
    Ok(out)
}
