//! Static memberships imported from a spreadsheet export: each row names a
//! group and a user, by `user_id` or by any unique users column (`email`,
//! `username`, `institutional_id`, ...). Nothing is rejected silently:
//! every row is either a membership or a line of the [`ImportReport`].

use crate::data::{Column, CsvOptions, DataError, OpenTable, Table, TextRows};
use roaring::RoaringBitmap;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// How the rows of a memberships file name their users.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum MatchBy {
    /// By `user_id`.
    #[default]
    UserId,
    /// By this users column, compared ignoring letter case.
    Column(String),
}

impl MatchBy {
    /// The column the memberships file and the users table share.
    pub fn column(&self) -> &str {
        match self {
            MatchBy::UserId => "user_id",
            MatchBy::Column(name) => name,
        }
    }
}

/// One usable row: a group key and an identifier, not yet matched.
#[derive(Clone, Debug)]
struct Row {
    line: usize,
    group: String,
    identifier: String,
}

/// A memberships file read row by row.
#[derive(Clone, Debug)]
pub struct MembershipRows {
    path: PathBuf,
    match_by: MatchBy,
    rows: Vec<Row>,
    rows_read: usize,
    problems: Vec<Problem>,
}

/// What is wrong with a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Every cell empty.
    Blank,
    /// Too few or too many cells, no group, no identifier, a group key that
    /// cannot be one, or a `user_id` that is not a whole number.
    Malformed,
    /// The identifier matches no user.
    UnknownIdentifier,
    /// The same user in the same group again.
    Duplicate,
    /// The group has a rule: its members come from the rule, not a file.
    RuleGroup,
}

impl ProblemKind {
    fn label(self) -> &'static str {
        match self {
            ProblemKind::Blank => "blank",
            ProblemKind::Malformed => "malformed",
            ProblemKind::UnknownIdentifier => "unknown identifier",
            ProblemKind::Duplicate => "duplicate",
            ProblemKind::RuleGroup => "rule group",
        }
    }
}

/// A row that gave no membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The line a spreadsheet shows (CSV), or the 1-based row (Parquet).
    pub line: usize,
    /// What kind of problem.
    pub kind: ProblemKind,
    /// The details, e.g. the identifier that matched no user.
    pub detail: String,
}

/// What an import read, matched and refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// The memberships file.
    pub file: String,
    /// The column users were matched by.
    pub matched_by: String,
    /// Data rows in the file.
    pub rows_read: usize,
    /// Rows that gave a membership.
    pub rows_matched: usize,
    /// Members of each static group.
    pub groups: BTreeMap<String, u64>,
    /// Every row that gave none, by line.
    pub problems: Vec<Problem>,
}

/// The largest number of bad rows a run accepts: a count, or a share of
/// the rows read (`5%`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BadRowLimit {
    /// At most this many.
    Count(usize),
    /// At most this percentage of the rows read.
    Percent(f64),
}

impl std::str::FromStr for BadRowLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<BadRowLimit, String> {
        let bad = || format!("`{text}` is not a count (`10`) or a share of the rows (`5%`)");
        match text.strip_suffix('%') {
            Some(percent) => percent
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .map(BadRowLimit::Percent)
                .ok_or_else(bad),
            None => text.trim().parse().map(BadRowLimit::Count).map_err(|_| bad()),
        }
    }
}

impl ImportReport {
    /// Rows that gave no membership.
    pub fn bad_rows(&self) -> usize {
        self.problems.len()
    }

    /// Whether the bad rows stay within `limit`.
    pub fn within(&self, limit: BadRowLimit) -> bool {
        match limit {
            BadRowLimit::Count(n) => self.bad_rows() <= n,
            BadRowLimit::Percent(p) => self.bad_rows() as f64 <= self.rows_read as f64 * p / 100.0,
        }
    }

    /// The report as text, one problem per line.
    pub fn render(&self) -> String {
        let mut out = format!(
            "import of {} (users matched by `{}`): {} rows read, {} matched, {} bad\n",
            self.file,
            self.matched_by,
            self.rows_read,
            self.rows_matched,
            self.bad_rows()
        );
        let mut counts: BTreeMap<ProblemKind, usize> = BTreeMap::new();
        for p in &self.problems {
            *counts.entry(p.kind).or_default() += 1;
        }
        for (kind, n) in counts {
            out += &format!("  {}: {n}\n", kind.label());
        }
        for p in &self.problems {
            out += &format!("  line {}: {}: {}\n", p.line, p.kind.label(), p.detail);
        }
        for (group, members) in &self.groups {
            out += &format!("  group `{group}`: {members} members\n");
        }
        out
    }
}

impl MembershipRows {
    /// Reads a memberships file: CSV line by line (so blank and ragged lines
    /// are reported, not fatal), Parquet through its columns.
    /// `options` say how to read a CSV file's text.
    pub fn read(path: &Path, match_by: MatchBy, options: &CsvOptions) -> Result<MembershipRows, DataError> {
        let is_parquet = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "parquet" | "parq" | "pq"));
        if is_parquet {
            return MembershipRows::from_table(OpenTable::open(path)?, match_by);
        }
        let lines = csv_lines(path, &match_by, options)?;
        Ok(MembershipRows::classify_all(path, match_by, lines))
    }

    /// Reads memberships from an opened table (Parquet, or in memory).
    pub fn from_table(table: OpenTable, match_by: MatchBy) -> Result<MembershipRows, DataError> {
        let path = table.path().to_path_buf();
        let lines = table_lines(table, &match_by)?;
        Ok(MembershipRows::classify_all(&path, match_by, lines))
    }

    fn classify_all(path: &Path, match_by: MatchBy, lines: Vec<Line>) -> MembershipRows {
        let mut out = MembershipRows {
            path: path.to_path_buf(),
            match_by,
            rows: Vec::new(),
            rows_read: lines.len(),
            problems: Vec::new(),
        };
        for line in lines {
            out.classify(line);
        }
        out
    }

    fn classify(&mut self, (line, cells): (usize, Result<[String; 2], String>)) {
        let mut problem = |kind, detail: String| self.problems.push(Problem { line, kind, detail });
        match cells {
            Err(detail) if detail.is_empty() => problem(ProblemKind::Blank, "no cells".into()),
            Err(detail) => problem(ProblemKind::Malformed, detail),
            Ok([group, _]) if group.is_empty() => problem(ProblemKind::Malformed, "no group".into()),
            Ok([_, identifier]) if identifier.is_empty() => {
                problem(ProblemKind::Malformed, format!("no `{}`", self.match_by.column()))
            }
            Ok([group, _]) if !crate::ast::is_group_key(&group) => problem(
                ProblemKind::Malformed,
                format!("`{group}` is not a group key (letters, digits, `_`, `-`)"),
            ),
            Ok([_, identifier]) if self.match_by == MatchBy::UserId && parse_user_id(&identifier).is_none() => problem(
                ProblemKind::Malformed,
                format!("`{identifier}` is not a user id (a whole number below 2^32)"),
            ),
            Ok([group, identifier]) => self.rows.push(Row {
                line,
                group,
                identifier,
            }),
        }
    }

    /// The static groups the file names (for the checker).
    pub fn group_keys(&self) -> impl Iterator<Item = &str> {
        self.rows.iter().map(|r| r.group.as_str())
    }

    /// The users column the rows are matched by, if not `user_id`.
    pub fn match_column(&self) -> Option<&str> {
        match &self.match_by {
            MatchBy::UserId => None,
            MatchBy::Column(name) => Some(name),
        }
    }

    /// Matches the rows against the users: `row_of_id` for `user_id`, else
    /// the loaded `match_column` of `users`. Rows naming one of
    /// `rule_groups` are refused. Returns each static group's members as
    /// users rows, and the report.
    pub fn resolve(
        self,
        users: &Table,
        match_column: Option<usize>,
        row_of_id: impl Fn(u32) -> Option<u32>,
        is_rule_group: impl Fn(&str) -> bool,
    ) -> Result<(BTreeMap<String, RoaringBitmap>, ImportReport), DataError> {
        let by_value = match match_column {
            Some(column) => Some(unique_values(users, column)?),
            None => None,
        };
        let mut problems = self.problems;
        let mut groups: BTreeMap<String, RoaringBitmap> = BTreeMap::new();
        let mut first_line: HashMap<(&str, u32), usize> = HashMap::new();
        let mut matched = 0;
        for row in &self.rows {
            if is_rule_group(&row.group) {
                problems.push(Problem {
                    line: row.line,
                    kind: ProblemKind::RuleGroup,
                    detail: format!("`{}` has a rule; its members come from the rule", row.group),
                });
                continue;
            }
            let user = match &by_value {
                Some(values) => values.get(&row.identifier.to_lowercase()).copied(),
                None => parse_user_id(&row.identifier).and_then(&row_of_id),
            };
            let Some(user) = user else {
                problems.push(Problem {
                    line: row.line,
                    kind: ProblemKind::UnknownIdentifier,
                    detail: format!("no user has {} `{}`", self.match_by.column(), row.identifier),
                });
                continue;
            };
            if let Some(first) = first_line.insert((row.group.as_str(), user), row.line) {
                problems.push(Problem {
                    line: row.line,
                    kind: ProblemKind::Duplicate,
                    detail: format!("`{}` is already in `{}` (line {first})", row.identifier, row.group),
                });
                continue;
            }
            groups.entry(row.group.clone()).or_default().insert(user);
            matched += 1;
        }
        problems.sort_by_key(|p| p.line);
        let report = ImportReport {
            file: self.path.display().to_string(),
            matched_by: self.match_by.column().to_string(),
            rows_read: self.rows_read,
            rows_matched: matched,
            groups: groups.iter().map(|(k, v)| (k.clone(), v.len())).collect(),
            problems,
        };
        Ok((groups, report))
    }
}

fn parse_user_id(text: &str) -> Option<u32> {
    text.parse::<u32>()
        .ok()
        .or_else(|| text.parse::<f64>().ok().and_then(super::dataset::user_id_value))
}

/// Lowercased value → users row; an error if two users share a value.
fn unique_values(users: &Table, column: usize) -> Result<HashMap<String, u32>, DataError> {
    let cells = users.column(column);
    let mut out: HashMap<String, u32> = HashMap::with_capacity(users.rows);
    for row in 0..users.rows {
        let Some(value) = cells.cell_text(row) else { continue };
        if let Some(first) = out.insert(value.to_lowercase(), row as u32) {
            return Err(DataError::column(
                &users.path,
                users.column_name(column),
                format!(
                    "`{value}` is also on row {}: memberships can be matched only by a column whose values are unique",
                    users.row_label(first as usize)
                ),
            )
            .at_row(users.row_label(row)));
        }
    }
    Ok(out)
}

type Line = (usize, Result<[String; 2], String>);

/// Each CSV data line's `group` and identifier cells; `Err("")` for a blank
/// line, `Err(why)` for a ragged one.
fn csv_lines(path: &Path, match_by: &MatchBy, options: &CsvOptions) -> Result<Vec<Line>, DataError> {
    let table = TextRows::read(path, options)?;
    let column = |name: &str| required(path, &table.header, name);
    let (group, identifier) = (column("group")?, column(match_by.column())?);
    Ok(table
        .rows
        .into_iter()
        .map(|(line, cells)| {
            let cells_result = if cells.iter().all(String::is_empty) {
                Err(String::new())
            } else if cells.len() != table.header.len() {
                Err(format!(
                    "{} cells, but the header has {}",
                    cells.len(),
                    table.header.len()
                ))
            } else {
                Ok([cells[group].clone(), cells[identifier].clone()])
            };
            (line, cells_result)
        })
        .collect())
}

fn table_lines(table: OpenTable, match_by: &MatchBy) -> Result<Vec<Line>, DataError> {
    let path = &table.path().to_path_buf();
    let names: Vec<String> = table.schema().names().map(String::from).collect();
    let (group, identifier) = (
        required(path, &names, "group")?,
        required(path, &names, match_by.column())?,
    );
    let table = table.load(&[group, identifier])?;
    let text = |column: &Column, row| column.cell_text(row).unwrap_or_default();
    Ok((0..table.rows)
        .map(|row| {
            let cells = [text(table.column(group), row), text(table.column(identifier), row)];
            let line = table.row_label(row);
            if cells.iter().all(String::is_empty) {
                (line, Err(String::new()))
            } else {
                (line, Ok(cells))
            }
        })
        .collect())
}

fn required(path: &Path, header: &[String], name: &str) -> Result<usize, DataError> {
    header.iter().position(|h| h == name).ok_or_else(|| {
        DataError::column(
            path,
            name,
            format!(
                "is missing: a memberships file needs `group` and `{name}`; it has {}",
                header.iter().map(|h| format!("`{h}`")).collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_row_limits_parse_as_counts_or_shares() {
        assert_eq!("3".parse::<BadRowLimit>(), Ok(BadRowLimit::Count(3)));
        assert_eq!("2.5%".parse::<BadRowLimit>(), Ok(BadRowLimit::Percent(2.5)));
        assert!("-1".parse::<BadRowLimit>().is_err());
        assert!("120%".parse::<BadRowLimit>().is_err());
    }
}
