//! The four inputs of a run (users, enrollments, org tree, static
//! memberships): opened for their schema, validated per spec §4-5, then loaded
//! with only the columns the checked rules use.

use crate::checked::CheckedRules;
use crate::data::{Column, CsvOptions, DataError, NULL_CODE, OpenTable, READ_AHEAD, Table, TextColumn};
use crate::eval::UsersByPair;
pub use crate::import::MatchBy;
use crate::import::{ImportReport, MembershipRows};
use crate::schema::{Schema, ValueType};
use rayon::prelude::*;
use roaring::RoaringBitmap;
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

mod row_ids;
use row_ids::{IdWords, RowIndex, ids_of_rows};

/// Where the inputs are.
#[derive(Clone, Debug, Default)]
pub struct InputPaths {
    /// Users (required for anything that reads data).
    pub users: PathBuf,
    /// Enrollments, if any.
    pub enrollments: Option<PathBuf>,
    /// Org tree, if any.
    pub org: Option<PathBuf>,
    /// Static memberships, if any.
    pub memberships: Option<PathBuf>,
    /// How the memberships name their users.
    pub match_by: MatchBy,
    /// How CSV inputs write dates that are not ISO, by input and column.
    pub date_formats: Vec<DateFormat>,
    /// The text encoding of CSV inputs when not UTF-8, by its WHATWG label
    /// (`windows-1252`).
    pub encoding: Option<String>,
}

/// How one CSV column writes its dates: `users.start_date=%d/%m/%Y`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DateFormat {
    /// The input: `users`, `enrollments`, `org` or `memberships`.
    pub input: String,
    /// The column's name.
    pub column: String,
    /// The format, in `chrono`'s syntax (`%d/%m/%Y`).
    pub format: String,
}

impl std::str::FromStr for DateFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<DateFormat, String> {
        let usage = || format!("`{text}`: write INPUT.COLUMN=FORMAT, e.g. `users.start_date=%d/%m/%Y`");
        let (input, rest) = text.split_once('.').ok_or_else(usage)?;
        let (column, format) = rest.split_once('=').ok_or_else(usage)?;
        if !INPUT_ROLES.contains(&input) {
            return Err(format!(
                "`{input}` is not an input: write one of {}",
                INPUT_ROLES.join(", ")
            ));
        }
        if column.is_empty() || format.is_empty() {
            return Err(usage());
        }
        if chrono::format::StrftimeItems::new(format).any(|item| matches!(item, chrono::format::Item::Error)) {
            return Err(format!(
                "`{format}` is not a date format: write it like `%d/%m/%Y` (%d day, %m month, %Y year)"
            ));
        }
        Ok(DateFormat {
            input: input.to_string(),
            column: column.to_string(),
            format: format.to_string(),
        })
    }
}

/// The inputs, as the command line's options and `--date-format` name them.
const INPUT_ROLES: [&str; 4] = ["users", "enrollments", "org", "memberships"];

impl InputPaths {
    /// How to read the CSV file of input `role`.
    fn csv_options(&self, role: &str) -> CsvOptions {
        CsvOptions {
            role: role.to_string(),
            date_formats: self
                .date_formats
                .iter()
                .filter(|f| f.input == role)
                .map(|f| (f.column.clone(), f.format.clone()))
                .collect(),
            encoding: self.encoding.clone(),
        }
    }
}

/// Inputs opened and validated enough to give the checker a schema.
pub struct OpenInputs {
    users: OpenTable,
    user_id_column: usize,
    enrollments: Option<OpenTable>,
    org: Option<OrgTree>,
    memberships: Option<MembershipRows>,
}

/// Inputs loaded for evaluation. Rows of the users table are addressed by
/// their position ("row"), in the order of their user ids whatever the
/// file's order; [`Dataset::user_ids`] maps rows to user ids.
pub struct Dataset {
    /// The users table, with the columns the rules use.
    pub users: Table,
    /// The user id of each users row, ascending.
    pub user_ids: Vec<u32>,
    /// The enrollments, if given.
    pub enrollments: Option<Enrollments>,
    /// The org tree, if given.
    pub org: Option<OrgTree>,
    /// Members of static groups, as users rows.
    pub static_groups: BTreeMap<String, RoaringBitmap>,
    /// What the memberships import matched and refused, if one was given.
    pub import_report: Option<ImportReport>,
    row_of_id: RowIndex,
    /// Where the dense user ids lie, built on first use: big sets of rows
    /// map to ids through it.
    id_words: OnceLock<IdWords>,
}

/// The enrollments table, each row tied to a users row.
pub struct Enrollments {
    /// The table, with the columns the rules use.
    pub table: Table,
    /// Per enrollment row, the users row, or [`NO_USER`].
    pub user_rows: Vec<u32>,
    /// Rows whose user id is missing or not in the users table (ignored).
    pub unknown_users: usize,
    /// Per column of `table`, built on first use: see
    /// [`Dataset::user_counts_by_value`].
    user_counts: Vec<OnceLock<Option<UserCountsByValue>>>,
    /// The users of each pair of values of two columns, built at load by
    /// [`Dataset::build_indexes`] only: see [`Dataset::users_by_pair`].
    users_by_pair: OnceLock<Option<UsersByPair>>,
}

/// Per distinct value of an enrollments text column, by value code: how
/// many rows with that value each user has, by users row.
pub type UserCountsByValue = Vec<Vec<AtomicU16>>;

/// An enrollments text column with at most this many distinct values gets
/// [`UserCountsByValue`] (a status, not a course: 2 bytes per user and
/// value).
const MAX_VALUES_FOR_USER_COUNTS: usize = 16;

/// Marks an enrollment row whose user is not in the users table.
pub const NO_USER: u32 = u32::MAX;

impl OpenInputs {
    /// Opens every input given, reading schemas, the org tree and the static
    /// memberships, and checking required columns.
    pub fn open(paths: &InputPaths) -> Result<OpenInputs, DataError> {
        let open = |path: &Path, role: &str| OpenTable::open_with(path, &paths.csv_options(role));
        let users = open(&paths.users, "users")?;
        let enrollments = paths
            .enrollments
            .as_deref()
            .map(|p| open(p, "enrollments"))
            .transpose()?;
        let org = paths.org.as_deref().map(|p| open(p, "org")).transpose()?;
        let memberships = paths
            .memberships
            .as_deref()
            .map(|path| MembershipRows::read(path, paths.match_by.clone(), &paths.csv_options("memberships")))
            .transpose()?;
        OpenInputs::assemble(users, enrollments, org, memberships)
    }

    /// Validates opened tables (from files or memory) as the four inputs.
    pub fn from_tables(
        users: OpenTable,
        enrollments: Option<OpenTable>,
        org: Option<OpenTable>,
        memberships: Option<OpenTable>,
    ) -> Result<OpenInputs, DataError> {
        let memberships = memberships
            .map(|table| MembershipRows::from_table(table, MatchBy::UserId))
            .transpose()?;
        OpenInputs::assemble(users, enrollments, org, memberships)
    }

    fn assemble(
        users: OpenTable,
        enrollments: Option<OpenTable>,
        org: Option<OpenTable>,
        memberships: Option<MembershipRows>,
    ) -> Result<OpenInputs, DataError> {
        let user_id_column = users.required("user_id", ValueType::Number)?;
        if let Some(table) = &enrollments {
            for (name, t) in [
                ("user_id", ValueType::Number),
                ("course", ValueType::Text),
                ("status", ValueType::Text),
            ] {
                table.required(name, t)?;
            }
        }
        let org = org.map(OrgTree::from_table).transpose()?;
        Ok(OpenInputs {
            users,
            user_id_column,
            enrollments,
            org,
            memberships,
        })
    }

    /// What the checker needs to know.
    pub fn schema(&self) -> Schema {
        Schema {
            users: self.users.schema().clone(),
            enrollments: self.enrollments.as_ref().map(|e| e.schema().clone()),
            branches: self.org.as_ref().map(|o| o.codes.iter().cloned().collect()),
            static_groups: self
                .memberships
                .as_ref()
                .map(|m| m.group_keys().map(String::from).collect()),
        }
    }

    /// Decodes what `rules` use and ties the tables together.
    pub fn load(self, rules: &CheckedRules) -> Result<Dataset, DataError> {
        let (user_columns, enrollment_columns) = rules.columns_used();
        let rule_groups: BTreeSet<String> = rules.groups.iter().map(|g| g.key.clone()).collect();
        self.load_columns(user_columns, enrollment_columns, &rule_groups)
    }

    /// Decodes every column rules can test, for rules not known yet (a
    /// prompt where admins type them). `rule_groups` are the rule groups'
    /// keys, which memberships rows may not name.
    pub fn load_all(self, rule_groups: &BTreeSet<String>) -> Result<Dataset, DataError> {
        let usable = |schema: &crate::schema::TableSchema| -> BTreeSet<usize> {
            (0..schema.columns.len())
                .filter(|&c| matches!(schema.columns[c].column_type, crate::schema::ColumnType::Usable(_)))
                .collect()
        };
        let users = usable(self.users.schema());
        let enrollments = self
            .enrollments
            .as_ref()
            .map(|e| usable(e.schema()))
            .unwrap_or_default();
        self.load_columns(users, enrollments, rule_groups)
    }

    fn load_columns(
        self,
        user_columns: BTreeSet<usize>,
        enrollment_columns: BTreeSet<usize>,
        rule_groups: &BTreeSet<String>,
    ) -> Result<Dataset, DataError> {
        let mut wanted: Vec<usize> = user_columns.into_iter().collect();
        wanted.push(self.user_id_column);
        let match_column = match self.memberships.as_ref().and_then(|m| m.match_column()) {
            Some(name) => {
                let index = self.users.schema().names().position(|n| n == name).ok_or_else(|| {
                    DataError::column(
                        self.users.path(),
                        name,
                        "is missing: the memberships are matched by it (`--match-by`)",
                    )
                })?;
                wanted.push(index);
                Some(index)
            }
            None => None,
        };
        wanted.sort_unstable();
        wanted.dedup();
        // The users and enrollments decode side by side; enrollments are
        // tied to users rows once both are in.
        let enrollments = self
            .enrollments
            .map(|table| -> Result<(OpenTable, Vec<usize>, usize), DataError> {
                let user_id_column = table.required("user_id", ValueType::Number)?;
                let mut wanted: Vec<usize> = enrollment_columns.iter().copied().collect();
                wanted.push(user_id_column);
                Ok((table, wanted, user_id_column))
            })
            .transpose()?;
        let (users, enrollments) = rayon::join(
            || self.users.load(&wanted),
            || {
                enrollments
                    .map(|(table, wanted, user_id_column)| Ok((table.load(&wanted)?, user_id_column)))
                    .transpose()
            },
        );
        let (users, user_ids) = users_by_id(users?, self.user_id_column)?;
        let row_of_id = RowIndex::new(&user_ids);
        let enrollments = enrollments?
            .map(|(table, user_id_column)| {
                let mut tied = tie_enrollments(table, user_id_column, &row_of_id)?;
                // Once tied, the ids are only data if a rule reads them:
                // 800 MB of numbers for 100M enrollments.
                if !enrollment_columns.contains(&user_id_column) {
                    tied.table.columns[user_id_column] = None;
                }
                Ok(tied)
            })
            .transpose()?;
        let (static_groups, import_report) = match self.memberships {
            Some(memberships) => {
                let (groups, report) = memberships.resolve(
                    &users,
                    match_column,
                    |id| row_of_id.row(id),
                    |key| rule_groups.contains(key),
                )?;
                (groups, Some(report))
            }
            None => (BTreeMap::new(), None),
        };
        Ok(Dataset {
            users,
            user_ids,
            enrollments,
            org: self.org,
            static_groups,
            import_report,
            row_of_id,
            id_words: OnceLock::new(),
        })
    }
}

/// A users column of at least this many distinct values gets them sorted
/// at load ([`TextColumn::build_sorted_values`]): with fewer, a test that
/// compares every value takes well under a millisecond.
const MIN_VALUES_TO_SORT: usize = 1 << 16;

impl Dataset {
    /// Builds now the per-value postings of every text column that gets
    /// them, the bitsets of the frequent values of users columns, the order
    /// of the values of users columns of many distinct values, and the
    /// per-value user counts of every enrollments column that gets them,
    /// and every user's row and id, which a rule otherwise builds on its
    /// first use: an interactive session pays once at load, not on some
    /// first rule.
    pub fn build_indexes(&self) {
        if let RowIndex::Map { dense_rows, .. } = &self.row_of_id {
            self.id_words(*dense_rows);
        }
        let enrollment_columns = self.enrollments.iter().flat_map(|e| &e.table.columns);
        // Per text column, whether it is a users column. Enrollments
        // columns get no bitsets at load: theirs would cover 100M rows for
        // a rare `in` list.
        let texts: Vec<(&TextColumn, bool)> = self
            .users
            .columns
            .iter()
            .map(|c| (c, true))
            .chain(enrollment_columns.map(|c| (c, false)))
            .filter_map(|(c, of_users)| match c {
                Some(Column::Text(text)) => Some((text, of_users)),
                _ => None,
            })
            .collect();
        texts.par_iter().for_each(|&(text, of_users)| {
            text.postings();
            if of_users {
                text.frequent_value_bits();
            }
            if of_users && text.values.len() >= MIN_VALUES_TO_SORT {
                // A column whose codes are its rows never looks its rows up.
                if !text.codes_are_rows() {
                    text.row_of_unique_value();
                }
                text.build_sorted_values();
            }
        });
        if let Some(enrollments) = &self.enrollments {
            for (column, decoded) in enrollments.table.columns.iter().enumerate() {
                if decoded.is_some() {
                    self.user_counts_by_value(column);
                }
            }
            enrollments
                .users_by_pair
                .get_or_init(|| UsersByPair::of_whole_columns(enrollments, self.user_count()));
        }
    }

    /// The users of each pair of values of the enrollments text column of
    /// most distinct values (a course) and the first of at most 64 (a
    /// status), if [`Dataset::build_indexes`] built them: `enrolled("C")`
    /// and `completed("C")` then gather one pair's users, where a single
    /// rule would otherwise intersect the rows of a course with those of a
    /// status (tens of millions) and look up the user of each.
    pub(crate) fn users_by_pair(&self) -> Option<&UsersByPair> {
        self.enrollments.as_ref()?.users_by_pair.get()?.as_ref()
    }

    /// For an enrollments text column of few distinct values (at most
    /// 16), how many rows of each value each user has; `None` for other
    /// columns, or if a user has more than 65,535 rows of one value. Built
    /// once, on first use, in one parallel pass over the rows: counting the
    /// rows of one value (`count(enrollment(status == "completed")) >= 3`)
    /// then reads one array instead of tallying tens of millions of rows.
    pub fn user_counts_by_value(&self, column: usize) -> Option<&UserCountsByValue> {
        let enrollments = self.enrollments.as_ref()?;
        let Column::Text(text) = enrollments.table.column(column) else {
            return None;
        };
        if text.values.len() > MAX_VALUES_FOR_USER_COUNTS {
            return None;
        }
        crate::data::built_once(&enrollments.user_counts[column], || {
            count_users_by_value(text, &enrollments.user_rows, self.user_count())
        })
        .as_ref()
    }

    /// Number of users.
    pub fn user_count(&self) -> usize {
        self.user_ids.len()
    }

    /// The users row of a user id, if the user exists.
    pub fn row_of(&self, user_id: u32) -> Option<u32> {
        self.row_of_id.row(user_id)
    }

    /// Whether every users row is its user id, so sets of rows need no
    /// mapping to ids.
    pub fn ids_are_rows(&self) -> bool {
        matches!(self.row_of_id, RowIndex::Identity(_))
    }

    /// Users rows → user ids.
    pub fn rows_to_ids(&self, rows: &RoaringBitmap) -> RoaringBitmap {
        match &self.row_of_id {
            RowIndex::Identity(_) => rows.clone(),
            RowIndex::Map { dense_rows, .. } => {
                ids_of_rows(&self.user_ids, *dense_rows, self.id_words(*dense_rows), rows)
            }
        }
    }

    /// Where the dense user ids lie, built on first use.
    fn id_words(&self, dense_rows: usize) -> &IdWords {
        crate::data::built_once(&self.id_words, || IdWords::new(&self.user_ids[..dense_rows]))
    }

    /// Like [`Dataset::rows_to_ids`], taking the rows (a bitmap, or one
    /// shared by an `Arc`): when every id is its row they are returned as
    /// they are, with no copy.
    pub fn rows_into_ids<R: Borrow<RoaringBitmap> + From<RoaringBitmap>>(&self, rows: R) -> R {
        match self.row_of_id {
            RowIndex::Identity(_) => rows,
            RowIndex::Map { .. } => R::from(self.rows_to_ids(rows.borrow())),
        }
    }
}

/// What is wrong with a `user_id` cell that is not a user id, in the users
/// and the enrollments alike.
fn not_a_user_id(value: f64) -> String {
    format!("`{value}` is not a user id (a whole number from 0 to 4294967295)")
}

/// A user id cell: a whole number in `0..2^32`.
pub(crate) fn user_id_value(value: f64) -> Option<u32> {
    // The cast saturates (NaN gives 0), so it returns to the same number
    // only for whole numbers in range: no call to `trunc`, which is a
    // library call on baseline x86-64 and most of the cost of checking
    // 100M enrollments.
    let id = value as u32;
    (f64::from(id) == value).then_some(id)
}

/// The users table with its rows in the order of their user ids, and those
/// ids. Exports come in any order (by name, by department); with rows
/// ascending with ids, a set of rows maps to its ids in one pass and no
/// sort, for every group of every run. Errors name rows as the file holds
/// them.
fn users_by_id(mut users: Table, column: usize) -> Result<(Table, Vec<u32>), DataError> {
    let Column::Number(values) = users.column(column) else {
        unreachable!("user_id was checked to be a number column");
    };
    let error =
        |row: usize, message: String| DataError::column(&users.path, "user_id", message).at_row(users.row_label(row));
    let mut ids = Vec::with_capacity(values.len());
    for (row, &value) in values.iter().enumerate() {
        if value.is_nan() {
            return Err(error(row, "is empty; every user needs a user id".to_string()));
        }
        ids.push(user_id_value(value).ok_or_else(|| error(row, not_a_user_id(value)))?);
    }
    // Ids that ascend are distinct, and in order already.
    if ids.is_sorted_by(|a, b| a < b) {
        return Ok((users, ids));
    }
    let mut by_id: Vec<u64> = ids
        .par_iter()
        .enumerate()
        .map(|(row, &id)| (u64::from(id) << 32) | row as u64)
        .collect();
    by_id.par_sort_unstable();
    let row_of = |key: u64| key as u32;
    let id_of = |key: u64| (key >> 32) as u32;
    // Of the rows that repeat an earlier row's id, the first in the file.
    let repeat = by_id
        .par_windows(2)
        .filter(|pair| id_of(pair[0]) == id_of(pair[1]))
        .map(|pair| row_of(pair[1]))
        .min();
    if let Some(row) = repeat {
        let id = ids[row as usize];
        return Err(error(row as usize, format!("user id {id} appears twice")));
    }
    let order: Vec<u32> = by_id.par_iter().map(|&key| row_of(key)).collect();
    let ids = by_id.par_iter().map(|&key| id_of(key)).collect();
    users.reorder_rows(&order);
    Ok((users, ids))
}

/// See [`Dataset::user_counts_by_value`].
fn count_users_by_value(text: &TextColumn, user_rows: &[u32], users: usize) -> Option<UserCountsByValue> {
    let counts: UserCountsByValue = (0..text.values.len())
        .map(|_| (0..users).into_par_iter().map(|_| AtomicU16::new(0)).collect())
        .collect();
    let overflow = AtomicBool::new(false);
    match ranges_of_whole_users(user_rows, 4 * rayon::current_num_threads()) {
        // No two tasks count rows of one user: a load and a store, where
        // an atomic addition per row took most of the pass.
        Some(ranges) => ranges.into_par_iter().for_each(|rows| {
            count_rows(&counts, &text.codes[rows.clone()], &user_rows[rows], &overflow, |c| {
                let before = c.load(Ordering::Relaxed);
                c.store(before.wrapping_add(1), Ordering::Relaxed);
                before
            });
        }),
        None => {
            let pieces = text.codes.par_chunks(1 << 16).zip(user_rows.par_chunks(1 << 16));
            pieces.for_each(|(codes, user_rows)| {
                count_rows(&counts, codes, user_rows, &overflow, |c| {
                    c.fetch_add(1, Ordering::Relaxed)
                });
            });
        }
    }
    (!overflow.into_inner()).then_some(counts)
}

/// Counts the rows of `codes` and `user_rows` into `counts` with `add`,
/// which returns the count before; marks `overflow` past `u16::MAX`.
fn count_rows(
    counts: &UserCountsByValue,
    codes: &[u32],
    user_rows: &[u32],
    overflow: &AtomicBool,
    add: impl Fn(&AtomicU16) -> u16,
) {
    for (&code, &user) in codes.iter().zip(user_rows) {
        if code != NULL_CODE && user != NO_USER && add(&counts[code as usize][user as usize]) == u16::MAX {
            overflow.store(true, Ordering::Relaxed);
        }
    }
}

/// About `tasks` ranges of rows, together every row, no two of which hold
/// rows of one user, if the rows come user by user (ascending users rows,
/// rows of no user anywhere); `None` if they do not.
fn ranges_of_whole_users(user_rows: &[u32], tasks: usize) -> Option<Vec<std::ops::Range<usize>>> {
    // Per piece, its first and last user, or none; `Err` if unordered.
    let pieces: Vec<Option<(u32, u32)>> = user_rows
        .par_chunks(1 << 16)
        .map(|piece| {
            let mut known = piece.iter().copied().filter(|&u| u != NO_USER);
            let Some(first) = known.next() else {
                return Ok(None);
            };
            let last = known.try_fold(first, |last, u| if u >= last { Ok(u) } else { Err(()) })?;
            Ok(Some((first, last)))
        })
        .collect::<Result<_, ()>>()
        .ok()?;
    let bounds: Vec<(u32, u32)> = pieces.into_iter().flatten().collect();
    if !bounds.windows(2).all(|w| w[0].1 <= w[1].0) {
        return None;
    }
    let mut starts = vec![0];
    for task in 1..tasks {
        let mut start = (user_rows.len() * task / tasks).max(starts[starts.len() - 1]);
        // A user's rows stay in the task of the row before `start`.
        if let Some(&before) = user_rows[..start].iter().rev().find(|&&u| u != NO_USER) {
            while start < user_rows.len() && (user_rows[start] == before || user_rows[start] == NO_USER) {
                start += 1;
            }
        }
        starts.push(start);
    }
    starts.push(user_rows.len());
    Some(starts.windows(2).map(|w| w[0]..w[1]).collect())
}

/// Ties each enrollment row to its users row, in parallel.
fn tie_enrollments(table: Table, user_id_column: usize, users: &RowIndex) -> Result<Enrollments, DataError> {
    let Column::Number(values) = table.column(user_id_column) else {
        unreachable!("user_id was checked to be a number column");
    };
    // Checked, then mapped through an indexed collect that writes each row
    // in place: collecting `Result`s took 1.5 s for 100M enrollments, these
    // two passes 0.5 s. Only a bad file pays for finding the first bad row.
    let is_bad = |value: f64| !value.is_nan() && user_id_value(value).is_none();
    if values.par_iter().any(|&value| is_bad(value)) {
        let row = values
            .iter()
            .position(|&value| is_bad(value))
            .expect("a bad value was seen");
        let message = not_a_user_id(values[row]);
        return Err(DataError::column(&table.path, "user_id", message).at_row(table.row_label(row)));
    }
    // Enrollments come by course, so each one's user is a read that misses
    // the cache: asked for ahead, many misses are in flight at once.
    let user_rows: Vec<u32> = values
        .par_iter()
        .enumerate()
        .map(|(n, &value)| {
            if let Some(ahead) = values.get(n + READ_AHEAD).and_then(|&v| user_id_value(v)) {
                users.prefetch(ahead);
            }
            match user_id_value(value) {
                Some(id) => users.row(id).unwrap_or(NO_USER),
                None => NO_USER,
            }
        })
        .collect();
    let unknown_users = user_rows.par_iter().filter(|&&u| u == NO_USER).count();
    Ok(Enrollments {
        user_counts: table.columns.iter().map(|_| OnceLock::new()).collect(),
        users_by_pair: OnceLock::new(),
        table,
        user_rows,
        unknown_users,
    })
}

/// The org tree: branch codes and their parents.
#[derive(Debug, Clone)]
pub struct OrgTree {
    /// Branch codes as written.
    pub codes: Vec<String>,
    /// Index of each branch's parent, `None` for a root.
    pub parents: Vec<Option<usize>>,
    by_lowercase: HashMap<String, usize>,
}

impl OrgTree {
    /// Validates an org tree table (`branch`, `parent` columns).
    pub fn from_table(table: OpenTable) -> Result<OrgTree, DataError> {
        let path = &table.path().to_path_buf();
        let branch_column = table.required("branch", ValueType::Text)?;
        let parent_column = match table.schema().resolve("parent") {
            crate::schema::Resolution::Found(i) => i,
            _ => {
                return Err(DataError::file(
                    path,
                    "missing required column `parent` (empty for a root)",
                ));
            }
        };
        let table = table.load(&[branch_column, parent_column])?;
        let branches = text_cells(&table, branch_column);
        let parents = text_cells(&table, parent_column);
        let mut by_lowercase = HashMap::new();
        let mut codes = Vec::new();
        for (row, branch) in branches.iter().enumerate() {
            let at = |m: String| DataError::column(path, "branch", m).at_row(table.row_label(row));
            let branch = branch
                .clone()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| at("is empty".into()))?;
            if by_lowercase.insert(branch.to_lowercase(), row).is_some() {
                return Err(at(format!("branch `{branch}` appears twice")));
            }
            codes.push(branch);
        }
        let mut parent_of = Vec::with_capacity(codes.len());
        for (row, parent) in parents.iter().enumerate() {
            parent_of.push(match parent.as_deref().filter(|p| !p.is_empty()) {
                None => None,
                Some(p) => Some(*by_lowercase.get(&p.to_lowercase()).ok_or_else(|| {
                    DataError::column(path, "parent", format!("`{p}` is not a branch of the tree"))
                        .at_row(table.row_label(row))
                })?),
            });
        }
        let tree = OrgTree {
            codes,
            parents: parent_of,
            by_lowercase,
        };
        if let Some(branch) = tree.branch_in_cycle() {
            return Err(DataError::column(
                path,
                "parent",
                format!("branch `{}` is its own ancestor", tree.codes[branch]),
            ));
        }
        Ok(tree)
    }

    /// The branch with this code (ignoring case).
    pub fn branch(&self, code: &str) -> Option<usize> {
        self.by_lowercase.get(&code.to_lowercase()).copied()
    }

    /// Whether `branch` is `ancestor` or one of its descendants.
    pub fn is_within(&self, mut branch: usize, ancestor: usize) -> bool {
        loop {
            if branch == ancestor {
                return true;
            }
            match self.parents[branch] {
                Some(parent) => branch = parent,
                None => return false,
            }
        }
    }

    fn branch_in_cycle(&self) -> Option<usize> {
        // Walking up more steps than there are branches means a cycle.
        (0..self.codes.len()).find(|&start| {
            let mut at = Some(start);
            for _ in 0..=self.codes.len() {
                match at {
                    Some(b) => at = self.parents[b],
                    None => return false,
                }
            }
            true
        })
    }
}

fn text_cells(table: &Table, column: usize) -> Vec<Option<String>> {
    match table.column(column) {
        Column::Text(t) => (0..t.codes.len()).map(|r| t.get(r).map(str::to_string)).collect(),
        _ => unreachable!("column was checked to be text"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whole numbers from 0 to 2^32 - 1 are user ids; fractions, negative
    /// numbers, numbers past the range and non-numbers are not.
    #[test]
    fn user_ids_are_whole_numbers_that_fit_32_bits() {
        for (value, id) in [
            (0.0, Some(0)),
            (-0.0, Some(0)),
            (1.0, Some(1)),
            (4_294_967_295.0, Some(u32::MAX)),
        ] {
            assert_eq!(user_id_value(value), id, "{value}");
        }
        for value in [
            -1.0,
            0.5,
            7.25,
            4_294_967_296.0,
            4_294_967_295.5,
            1e300,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            assert_eq!(user_id_value(value), None, "{value}");
        }
    }

    #[test]
    fn user_counts_count_each_users_rows_of_each_value() {
        let rows = [
            (Some("a"), 0),
            (Some("b"), 0),
            (Some("a"), 2),
            (None, 2),
            (Some("a"), NO_USER),
            (Some("a"), 0),
        ];
        let text: TextColumn = rows.iter().map(|(v, _)| v.map(String::from)).collect();
        let user_rows: Vec<u32> = rows.iter().map(|(_, u)| *u).collect();
        let counts = count_users_by_value(&text, &user_rows, 3).unwrap();
        let load = |code: usize| {
            counts[code]
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        };
        assert_eq!((load(0), load(1)), (vec![2, 0, 1], vec![1, 0, 0]));
    }

    #[test]
    fn ranges_of_whole_users_keep_each_users_rows_in_one_range() {
        // Users ascend, with rows of no user among them, at the ends too,
        // and long runs of one user across where the ranges would split.
        let mut user_rows = vec![NO_USER, NO_USER];
        for user in 0..40u32 {
            let rows = if user % 7 == 3 { 300 } else { 1 + user % 3 };
            user_rows.extend(std::iter::repeat_n(user, rows as usize));
            if user % 5 == 0 {
                user_rows.push(NO_USER);
            }
        }
        user_rows.extend([NO_USER; 3]);
        for tasks in [1, 2, 3, 8, 64, 2_000] {
            let ranges = ranges_of_whole_users(&user_rows, tasks).expect("users ascend");
            let mut task_of_user = HashMap::new();
            let mut next = 0;
            for (task, rows) in ranges.iter().enumerate() {
                assert_eq!(rows.start, next, "{tasks} tasks: ranges cover every row in order");
                next = rows.end;
                for &user in user_rows[rows.clone()].iter().filter(|&&u| u != NO_USER) {
                    assert_eq!(
                        *task_of_user.entry(user).or_insert(task),
                        task,
                        "{tasks} tasks: user {user}"
                    );
                }
            }
            assert_eq!(next, user_rows.len());
        }
        assert!(ranges_of_whole_users(&[0, 1, NO_USER, 1, 2], 2).is_some());
        assert!(ranges_of_whole_users(&[0, 2, NO_USER, 1], 2).is_none());
        let far_apart: Vec<u32> = (0..200_000u32).rev().collect();
        assert!(
            ranges_of_whole_users(&far_apart, 2).is_none(),
            "pieces each in order, but not together"
        );
    }

    #[test]
    fn user_counts_alike_whether_rows_come_user_by_user_or_not() {
        let rows: Vec<(Option<&str>, u32)> = (0..300_000u32)
            .map(|r| {
                let value = ["a", "b", "c"][(r % 3) as usize];
                let user = if r % 11 == 0 { NO_USER } else { r / 7 };
                ((r % 13 != 0).then_some(value), user)
            })
            .collect();
        let users = 300_000 / 7 + 1;
        let counts_of = |rows: &[(Option<&str>, u32)]| {
            let text: TextColumn = rows.iter().map(|(v, _)| v.map(String::from)).collect();
            let user_rows: Vec<u32> = rows.iter().map(|(_, u)| *u).collect();
            let counts = count_users_by_value(&text, &user_rows, users).expect("no overflow");
            let mut by_value: Vec<(String, Vec<u16>)> = (0..text.values.len())
                .map(|code| {
                    let loaded = counts[code].iter().map(|c| c.load(Ordering::Relaxed)).collect();
                    (text.values.get(code).to_string(), loaded)
                })
                .collect();
            by_value.sort();
            by_value
        };
        let in_order = counts_of(&rows);
        let mut shuffled = rows.clone();
        shuffled.reverse();
        shuffled.swap(0, 150_000);
        assert_eq!(in_order, counts_of(&shuffled));
        let mut expected = vec![vec![0u16; users]; 3];
        for (value, user) in &rows {
            if let (Some(value), true) = (value, *user != NO_USER) {
                expected[(value.as_bytes()[0] - b'a') as usize][*user as usize] += 1;
            }
        }
        let found: Vec<Vec<u16>> = in_order.into_iter().map(|(_, counts)| counts).collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn user_counts_give_up_past_what_a_count_holds() {
        let rows =
            |n: usize| -> (TextColumn, Vec<u32>) { ((0..n).map(|_| Some("a".to_string())).collect(), vec![1; n]) };
        let (text, user_rows) = rows(65_535);
        let counts = count_users_by_value(&text, &user_rows, 2).unwrap();
        assert_eq!(counts[0][1].load(Ordering::Relaxed), 65_535);
        let (text, user_rows) = rows(65_536);
        assert!(count_users_by_value(&text, &user_rows, 2).is_none());
    }
}
