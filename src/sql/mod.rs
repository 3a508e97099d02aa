//! Checked rules → SQL for DuckDB, PostgreSQL, Spark SQL or ClickHouse, for users whose
//! data lives in a warehouse or outgrows one machine.
//!
//! The SQL means what spec §3 says, not what SQL would say by default:
//! every atom is wrapped so that a missing value makes it false instead of
//! unknown (so `NOT` is a complement, as in the engine), NaN counts as
//! missing, text is compared lowercased (with `İ` lowercased as Rust does),
//! `<` on text compares bytes, `count(...)` counts zero for users without
//! rows, and `in_branch` follows the org tree with a recursive query. How
//! the queries read the tables: `plan.rs`. Every
//! text literal is escaped for its dialect, so a rule can never change the
//! shape of the query; a regex is translated only when the dialect's regex
//! engine means the same thing, and rejected with a reason otherwise.

use crate::ast::{CmpOp, DateOffset, DateUnit, GroupStatus};
use crate::checked::{CheckedRules, ColumnTest, GroupRef, Predicate, Scalar, Test};
use crate::schema::{ColumnType, Schema, TableSchema, ValueType};
use plan::Plan;
use std::collections::BTreeSet;
use std::fmt::Write;

mod plan;
mod regex;
pub use regex::translate_regex;

/// The SQL engine the text is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// DuckDB 1.x.
    DuckDb,
    /// PostgreSQL 11 or later.
    Postgres,
    /// Spark SQL 3.5 or later; `in_branch` needs `WITH RECURSIVE`, which
    /// Spark 3.5 cannot parse (tested: 4.3).
    Spark,
    /// ClickHouse 24.4 or later, for `WITH RECURSIVE` (tested: 26.9,
    /// embedded as chDB 4.4).
    ClickHouse,
}

/// Where the tables are, and which day `today` is.
#[derive(Clone, Debug)]
pub struct SqlOptions {
    /// The engine.
    pub dialect: Dialect,
    /// Users: `user_id` and the columns rules test.
    pub users_table: String,
    /// Enrollments: `user_id`, `course`, `status`, ...
    pub enrollments_table: String,
    /// The org tree: `branch`, `parent`.
    pub org_table: String,
    /// Static memberships: `group` and `user_id` (or the `match_by` column).
    pub memberships_table: String,
    /// What the last run committed, `group` and `user_id`: read only by
    /// `paused`, `add_only` and `remove_only` groups.
    pub committed_table: String,
    /// The users column static memberships name users by, compared ignoring
    /// case; `None` for `user_id`.
    pub match_by: Option<String>,
    /// `today`: a fixed date, or `None` for the day the query runs.
    pub as_of: Option<chrono::NaiveDate>,
    /// Groups to leave out, by key (those [`untranslatable_groups`] names):
    /// the queries are those of rules without them, and a changes query
    /// leaves their committed members as they are.
    pub skip: BTreeSet<String>,
    /// The most columns one select may have: the queries compute each test
    /// and group as a column of a scan of users, and split the groups into
    /// chunks, each a scan of its own, to stay under this.
    pub max_columns: usize,
}

impl SqlOptions {
    /// The default table names (`users`, `enrollments`, `org`,
    /// `memberships`, `committed`), `today` the day the query runs.
    pub fn new(dialect: Dialect) -> SqlOptions {
        SqlOptions {
            dialect,
            users_table: "users".into(),
            enrollments_table: "enrollments".into(),
            org_table: "org".into(),
            memberships_table: "memberships".into(),
            committed_table: "committed".into(),
            match_by: None,
            as_of: None,
            skip: BTreeSet::new(),
            max_columns: match dialect {
                // PostgreSQL allows 1,664 columns in a select.
                Dialect::Postgres => 1_500,
                Dialect::DuckDb | Dialect::Spark | Dialect::ClickHouse => 4_000,
            },
        }
    }
}

/// Why rules could not be written as SQL.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// A `matches` pattern the dialect's regex engine would read differently.
    #[error("group `{group}`: the pattern {pattern:?} cannot be written for {dialect}: {reason}")]
    Regex {
        /// The group's key.
        group: String,
        /// The pattern as written.
        pattern: String,
        /// The dialect's name.
        dialect: &'static str,
        /// What differs, and what to write instead.
        reason: String,
    },
    /// A text literal the dialect cannot hold.
    #[error("group `{group}`: the text {text:?} cannot be written for {dialect}: {reason}")]
    Text {
        /// The group's key.
        group: String,
        /// The text.
        text: String,
        /// The dialect's name.
        dialect: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A table or column name that is not a plain identifier.
    #[error("table name {0:?} is not a plain name: use letters, digits and `_`, optionally `schema.table`")]
    TableName(String),
    /// The users table has no column named by `match_by`.
    #[error("users have no column `{0}` to match static memberships by")]
    MatchBy(String),
    /// `--group` named a key the rules do not define.
    #[error("no group `{0}` in the rules")]
    UnknownGroup(String),
}

impl SqlError {
    /// The group whose rule cannot be written, for the errors that have one.
    pub fn group(&self) -> Option<&str> {
        match self {
            SqlError::Regex { group, .. } | SqlError::Text { group, .. } => Some(group),
            _ => None,
        }
    }
}

/// The groups whose SQL cannot be written for the dialect, by key, each
/// with why, in the rules' order: a group whose `member_of` names one of
/// them cannot be written either.
pub fn untranslatable_groups(
    rules: &CheckedRules,
    schema: &Schema,
    options: &SqlOptions,
) -> Result<Vec<(String, SqlError)>, SqlError> {
    let writer = Writer::new(rules, schema, options)?;
    Ok((0..rules.groups.len())
        .filter_map(|g| {
            let refused = Plan::new(&writer, &[g]).err()?;
            Some((rules.groups[g].key.clone(), refused))
        })
        .collect())
}

/// The SQL returning one group's members.
#[derive(Clone, Debug)]
pub struct GroupQuery {
    /// The group's key.
    pub key: String,
    /// A query of one column, `user_id`, ordered.
    pub sql: String,
}

/// One query per group (all, or those in `keys`): the user ids the group
/// commits in a run (a draft: its evaluated members, as a preview).
pub fn group_queries(
    rules: &CheckedRules,
    schema: &Schema,
    options: &SqlOptions,
    keys: &[String],
) -> Result<Vec<GroupQuery>, SqlError> {
    let writer = Writer::new(rules, schema, options)?;
    let wanted: Vec<usize> = if keys.is_empty() {
        (0..rules.groups.len())
            .filter(|&g| !options.skip.contains(&rules.groups[g].key))
            .collect()
    } else {
        keys.iter()
            .map(|key| {
                rules
                    .groups
                    .iter()
                    .position(|g| &g.key == key)
                    .ok_or_else(|| SqlError::UnknownGroup(key.clone()))
            })
            .collect::<Result<_, _>>()?
    };
    wanted
        .into_iter()
        .map(|g| {
            let sql = writer.query(&[g], |chunks, _| {
                Ok(format!(
                    "SELECT user_id FROM {} WHERE g{g}\nORDER BY user_id",
                    chunks[0].0
                ))
            })?;
            Ok(GroupQuery {
                key: rules.groups[g].key.clone(),
                sql,
            })
        })
        .collect()
}

/// One query returning `(group, user_id)` for what every group commits in
/// a run (drafts commit nothing), in no particular order: the rows are
/// meant for a table, and ordering hundreds of millions of them would cost
/// more than computing them.
pub fn combined_query(rules: &CheckedRules, schema: &Schema, options: &SqlOptions) -> Result<String, SqlError> {
    let writer = Writer::new(rules, schema, options)?;
    writer.query(&writer.committing(), |chunks, ctes| writer.members(chunks, ctes))
}

/// One query returning `(group, user_id, change)` rows, `change` being
/// `add` or `remove`: what a run commits against the `committed` table (the
/// members the last run committed), as `dyngroups run --diff-out` writes
/// them, in no particular order. A group of `committed` that the
/// rules no longer have loses every member.
pub fn changes_query(rules: &CheckedRules, schema: &Schema, options: &SqlOptions) -> Result<String, SqlError> {
    let writer = Writer::new(rules, schema, options)?;
    writer.query(&writer.committing(), |chunks, ctes| {
        let group = writer.identifier("group");
        let change = writer.identifier("change");
        let mut committed = format!("SELECT {group}, user_id FROM {}", writer.tables.committed);
        if !writer.skip.is_empty() {
            let skipped: Vec<String> = writer
                .skip
                .iter()
                .map(|key| writer.text(key, key))
                .collect::<Result<_, _>>()?;
            write!(committed, " WHERE {group} NOT IN ({})", skipped.join(", ")).expect("writing to a String");
        }
        let members = format!(
            "SELECT {group}, user_id FROM (\n{}\n) AS members",
            writer.members(chunks, ctes)?
        );
        // ClickHouse's bare EXCEPT keeps repeated rows unless configured.
        let except = match writer.dialect {
            Dialect::ClickHouse => "EXCEPT DISTINCT",
            _ => "EXCEPT",
        };
        Ok(format!(
            "SELECT {group}, user_id, 'add' AS {change} FROM (\n{members}\n{except}\n{committed}\n) AS added\n\
             UNION ALL\n\
             SELECT {group}, user_id, 'remove' AS {change} FROM (\n{committed}\n{except}\n{members}\n) AS removed"
        ))
    })
}

/// Checked table names, ready to print.
struct Tables {
    users: String,
    enrollments: String,
    org: String,
    memberships: String,
    committed: String,
}

struct Writer<'a> {
    rules: &'a CheckedRules,
    schema: &'a Schema,
    dialect: Dialect,
    tables: Tables,
    match_by: Option<String>,
    as_of: Option<chrono::NaiveDate>,
    /// Groups left out, by key.
    skip: BTreeSet<String>,
    /// The most columns of one select.
    max_columns: usize,
}

/// Flags packed into one signed `BIGINT`, all but its sign bit.
const WORD_BITS: usize = 63;

/// Which table a column test reads: the users row `u`, or an enrollments
/// row `e` inside `enrollment(...)`.
#[derive(Clone, Copy)]
enum Row {
    User,
    Enrollment,
}

impl<'a> Writer<'a> {
    fn new(rules: &'a CheckedRules, schema: &'a Schema, options: &SqlOptions) -> Result<Writer<'a>, SqlError> {
        let table = |name: &str| {
            let plain = |part: &str| {
                let mut chars = part.chars();
                chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            };
            let parts: Vec<&str> = name.split('.').collect();
            if parts.len() <= 3 && parts.iter().all(|p| plain(p)) {
                Ok(name.to_string())
            } else {
                Err(SqlError::TableName(name.to_string()))
            }
        };
        if let Some(column) = &options.match_by
            && !schema.users.names().any(|n| n == column)
        {
            return Err(SqlError::MatchBy(column.clone()));
        }
        Ok(Writer {
            rules,
            schema,
            dialect: options.dialect,
            tables: Tables {
                users: table(&options.users_table)?,
                enrollments: table(&options.enrollments_table)?,
                org: table(&options.org_table)?,
                memberships: table(&options.memberships_table)?,
                committed: table(&options.committed_table)?,
            },
            match_by: options.match_by.clone(),
            as_of: options.as_of,
            skip: options.skip.clone(),
            max_columns: options.max_columns,
        })
    }

    /// The groups a run commits: all but drafts and those skipped.
    fn committing(&self) -> Vec<usize> {
        (0..self.rules.groups.len())
            .filter(|&g| {
                let group = &self.rules.groups[g];
                group.status != GroupStatus::Draft && !self.skip.contains(&group.key)
            })
            .collect()
    }

    /// A `SELECT` of the `(group, user_id)` rows of every chunk, unordered;
    /// the CTEs it reads go to `ctes`.
    fn members(&self, chunks: &[(String, Vec<usize>)], ctes: &mut Vec<String>) -> Result<String, SqlError> {
        let mut selects = Vec::new();
        for (c, (chunk, groups)) in chunks.iter().enumerate() {
            match self.dialect {
                Dialect::DuckDb => selects.extend(self.packed_members(c, chunk, groups, ctes)?),
                Dialect::Postgres | Dialect::Spark | Dialect::ClickHouse => selects.push(self.unpivot(chunk, groups)?),
            }
        }
        if selects.is_empty() {
            // No group commits: an empty result of the right shape.
            return Ok(format!(
                "SELECT {} AS {}, user_id FROM {} WHERE 1 = 0",
                self.text("", "")?,
                self.identifier("group"),
                self.tables.users
            ));
        }
        Ok(selects.join("\nUNION ALL\n"))
    }

    /// The `(group, user_id)` rows of `chunk`'s `groups`, for DuckDB: one
    /// `SELECT` per group, over the groups packed 63 to a `BIGINT` in
    /// materialized CTEs of two columns. DuckDB copies every column of a
    /// materialized CTE each time it is read, and builds a list per row
    /// slowly, so neither a `SELECT` per group of the wide chunk nor an
    /// `unnest` of the keys keeps up.
    fn packed_members(
        &self,
        c: usize,
        chunk: &str,
        groups: &[usize],
        ctes: &mut Vec<String>,
    ) -> Result<Vec<String>, SqlError> {
        let words: Vec<&[usize]> = groups.chunks(WORD_BITS).collect();
        let packed: Vec<String> = words
            .iter()
            .enumerate()
            .map(|(w, word)| {
                let bits: Vec<String> = word
                    .iter()
                    .enumerate()
                    .map(|(bit, g)| format!("(CAST(g{g} AS BIGINT) << {bit})"))
                    .collect();
                format!("\n    ({}) AS w{w}", bits.join(" | "))
            })
            .collect();
        ctes.push(format!(
            "packed{c} AS MATERIALIZED (\n  SELECT user_id,{}\n  FROM {chunk}\n)",
            packed.join(",")
        ));
        let mut selects = Vec::new();
        for (w, word) in words.iter().enumerate() {
            ctes.push(format!(
                "packed{c}_{w} AS MATERIALIZED (SELECT user_id, w{w} FROM packed{c})"
            ));
            for (bit, &g) in word.iter().enumerate() {
                let key = &self.rules.groups[g].key;
                selects.push(format!(
                    "SELECT {} AS {}, user_id FROM packed{c}_{w} WHERE (w{w} & {}) <> 0",
                    self.text(key, key)?,
                    self.identifier("group"),
                    1u64 << bit
                ));
            }
        }
        Ok(selects)
    }

    fn dialect_name(&self) -> &'static str {
        match self.dialect {
            Dialect::DuckDb => "DuckDB",
            Dialect::Postgres => "PostgreSQL",
            Dialect::Spark => "Spark SQL",
            Dialect::ClickHouse => "ClickHouse",
        }
    }

    /// `WITH` the set-based plan of the groups `outputs` and those they
    /// read, then the `body` written over its chunks (which may add CTEs).
    fn query(
        &self,
        outputs: &[usize],
        body: impl FnOnce(&[(String, Vec<usize>)], &mut Vec<String>) -> Result<String, SqlError>,
    ) -> Result<String, SqlError> {
        let mut layout = Plan::new(self, outputs)?.layout(outputs, self.max_columns)?;
        let body = body(&layout.chunks, &mut layout.ctes)?;
        if layout.ctes.is_empty() {
            return Ok(body);
        }
        let recursive = if layout.recursive { " RECURSIVE" } else { "" };
        Ok(format!("WITH{recursive}\n{}\n{body}", layout.ctes.join(",\n")))
    }

    /// The `(group, user_id)` rows of `chunk`'s groups `groups`: one row
    /// per group column that holds. PostgreSQL unnests a list of the keys
    /// that hold; Spark turns the columns into (key, holds) rows with
    /// `stack`, which ran in 67 s where an `explode` of such a list took
    /// 97 s (100k users, 1,000 groups); ClickHouse filters one constant
    /// array of keys by an array of the columns.
    fn unpivot(&self, chunk: &str, groups: &[usize]) -> Result<String, SqlError> {
        let group = self.identifier("group");
        let key = |g: usize| self.text(&self.rules.groups[g].key, &self.rules.groups[g].key);
        if self.dialect == Dialect::ClickHouse {
            let keys = groups.iter().map(|&g| key(g)).collect::<Result<Vec<_>, SqlError>>()?;
            let columns: Vec<String> = groups.iter().map(|g| format!("g{g}")).collect();
            return Ok(format!(
                "SELECT k AS {group}, user_id FROM (SELECT user_id, arrayJoin(arrayFilter((key, holds) -> holds, [{}], [{}])) AS k FROM {chunk}) AS {chunk}_keys",
                keys.join(", "),
                columns.join(", ")
            ));
        }
        if self.dialect == Dialect::Spark {
            let pairs = groups
                .iter()
                .map(|&g| Ok(format!("{}, g{g}", key(g)?)))
                .collect::<Result<Vec<_>, SqlError>>()?;
            return Ok(format!(
                "SELECT k AS {group}, user_id FROM (SELECT user_id, stack({}, {}) AS (k, holds) FROM {chunk}) AS {chunk}_keys WHERE holds",
                groups.len(),
                pairs.join(", ")
            ));
        }
        let keys = groups
            .iter()
            .map(|&g| Ok(format!("CASE WHEN g{g} THEN {} END", key(g)?)))
            .collect::<Result<Vec<_>, SqlError>>()?;
        Ok(format!(
            "SELECT k AS {group}, user_id FROM (SELECT user_id, unnest(ARRAY[{}]) AS k FROM {chunk}) AS {chunk}_keys WHERE k IS NOT NULL",
            keys.join(", ")
        ))
    }

    /// `org_paths(branch, ancestor)`: every branch of the org tree with
    /// itself and each of its ancestors, lowercased. DuckDB and PostgreSQL
    /// drop repeated rows (`UNION`), so a cycle in the table ends the
    /// recursion; Spark and ClickHouse allow only `UNION ALL` there, and
    /// stop a cycle at their recursion limit with an error.
    fn org_paths_cte(&self) -> String {
        let union = match self.dialect {
            Dialect::DuckDb | Dialect::Postgres => "UNION",
            Dialect::Spark | Dialect::ClickHouse => "UNION ALL",
        };
        let org = &self.tables.org;
        let branch = self.lower(&format!("o.{}", self.identifier("branch")));
        let parent = self.lower(&format!("o.{}", self.identifier("parent")));
        format!(
            "org_paths(branch, ancestor) AS (\n  SELECT {branch}, {branch} FROM {org} o\n  {union}\n  \
             SELECT p.branch, {parent} FROM org_paths p JOIN {org} o ON {branch} = p.ancestor\n  \
             WHERE o.{} IS NOT NULL\n)",
            self.identifier("parent")
        )
    }

    /// A test on the users row `u` (a column or a static group): true or
    /// false, never unknown.
    fn predicate(&self, p: &Predicate, g: usize) -> Result<String, SqlError> {
        Ok(match p {
            Predicate::Column(test) => self.column_test(test, Row::User, g)?,
            Predicate::MemberOf(GroupRef::Static(key)) => {
                let key = self.text(key, &self.rules.groups[g].key)?;
                let group = self.identifier("group");
                let m = &self.tables.memberships;
                match &self.match_by {
                    None => {
                        format!("COALESCE(u.user_id IN (SELECT m.user_id FROM {m} m WHERE m.{group} = {key}), FALSE)")
                    }
                    Some(column) => {
                        let column = self.identifier(column);
                        format!(
                            "COALESCE({} IN (SELECT {} FROM {m} m WHERE m.{group} = {key}), FALSE)",
                            self.lower(&format!("u.{column}")),
                            self.lower(&format!("m.{column}"))
                        )
                    }
                }
            }
            other => unreachable!("planned as columns, not a test of the users row: {other:?}"),
        })
    }

    /// A condition on the enrollments row `e`: true or false, never unknown.
    fn enrollment_condition(&self, p: &Predicate, g: usize) -> Result<String, SqlError> {
        connectives(p, &mut |leaf| match leaf {
            Predicate::Column(test) => self.column_test(test, Row::Enrollment, g),
            other => unreachable!("the checker allows only column tests in enrollment(...): {other:?}"),
        })
    }

    fn column_test(&self, test: &ColumnTest, row: Row, g: usize) -> Result<String, SqlError> {
        let (alias, table): (&str, &TableSchema) = match row {
            Row::User => ("u", &self.schema.users),
            Row::Enrollment => (
                "e",
                self.schema
                    .enrollments
                    .as_ref()
                    .expect("enrollment columns were checked"),
            ),
        };
        let column = &table.columns[test.column];
        let value = format!("{alias}.{}", self.identifier(&column.name));
        let value_type = match column.column_type {
            ColumnType::Usable(t) => t,
            ColumnType::Unusable(_) => unreachable!("the checker rejects tests on unusable columns"),
        };
        let key = &self.rules.groups[g].key;
        // A test that may be unknown in SQL; wrapped so unknown is false.
        let known = |condition: String| format!("COALESCE({condition}, FALSE)");
        Ok(match (value_type, &test.test) {
            (ValueType::Text, Test::IsEmpty) => format!("({value} IS NULL OR {value} = '')"),
            (ValueType::Number, Test::IsEmpty) => {
                let number = self.number(&value);
                format!("({value} IS NULL OR {})", self.is_nan(&number))
            }
            (_, Test::IsEmpty) => format!("({value} IS NULL)"),
            (ValueType::Text, Test::Matches(pattern)) => known(self.matches(&value, pattern.source(), key)?),
            (ValueType::Text, text_test) => {
                let lowered = self.lower(&value);
                known(self.text_test(&lowered, text_test, key)?)
            }
            (ValueType::Number, test) => {
                let number = self.number(&value);
                let holds = match test {
                    Test::Compare(op, Scalar::Number(n)) => format!("{number} {} {}", sql_op(*op), self.double(*n)),
                    Test::In(items) => {
                        let items: Vec<String> = items
                            .iter()
                            .filter_map(|i| {
                                if let Scalar::Number(n) = i {
                                    Some(self.double(*n))
                                } else {
                                    None
                                }
                            })
                            .collect();
                        self.one_of(&number, &items)
                    }
                    other => unreachable!("not a number test: {other:?}"),
                };
                known(format!("(NOT {} AND {holds})", self.is_nan(&number)))
            }
            (ValueType::Date, test) => {
                let day = match self.dialect {
                    // ClickHouse's `Date` holds 1970 to 2149 only.
                    Dialect::ClickHouse => format!("toDate32({value})"),
                    _ => format!("CAST({value} AS DATE)"),
                };
                known(match test {
                    Test::Compare(op, date) => format!("{day} {} {}", sql_op(*op), self.date(date)),
                    Test::In(items) => {
                        let items: Vec<String> = items.iter().map(|d| self.date(d)).collect();
                        self.one_of(&day, &items)
                    }
                    other => unreachable!("not a date test: {other:?}"),
                })
            }
            (ValueType::Boolean, Test::IsTrue) => known(format!("{value} = TRUE")),
            (ValueType::Boolean, Test::Compare(_, Scalar::Bool(b))) => {
                known(format!("{value} = {}", if *b { "TRUE" } else { "FALSE" }))
            }
            (ValueType::Boolean, other) => unreachable!("not a boolean test: {other:?}"),
        })
    }

    /// A test on lowercased text (the literals are lowercased already).
    fn text_test(&self, lowered: &str, test: &Test, key: &str) -> Result<String, SqlError> {
        Ok(match test {
            Test::Compare(op, Scalar::Text(t)) => {
                let t = self.text(t, key)?;
                match (self.dialect, op) {
                    // PostgreSQL orders text by the database's collation;
                    // the spec orders by UTF-8 bytes.
                    (Dialect::Postgres, CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge) => {
                        format!("{lowered} COLLATE \"C\" {} {t}", sql_op(*op))
                    }
                    _ => format!("{lowered} {} {t}", sql_op(*op)),
                }
            }
            Test::In(items) => {
                let items = items
                    .iter()
                    .filter_map(|i| {
                        if let Scalar::Text(t) = i {
                            Some(self.text(t, key))
                        } else {
                            None
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                self.one_of(lowered, &items)
            }
            Test::Contains(t) => {
                let t = self.text(t, key)?;
                match self.dialect {
                    Dialect::DuckDb => format!("contains({lowered}, {t})"),
                    Dialect::Postgres => format!("strpos({lowered}, {t}) > 0"),
                    Dialect::Spark => format!("instr({lowered}, {t}) > 0"),
                    Dialect::ClickHouse => format!("position({lowered}, {t}) > 0"),
                }
            }
            Test::StartsWith(t) => {
                let t = self.text(t, key)?;
                match self.dialect {
                    Dialect::DuckDb | Dialect::Postgres => format!("starts_with({lowered}, {t})"),
                    Dialect::Spark => format!("startswith({lowered}, {t})"),
                    Dialect::ClickHouse => format!("startsWith({lowered}, {t})"),
                }
            }
            Test::EndsWith(suffix) => {
                let t = self.text(suffix, key)?;
                match self.dialect {
                    Dialect::DuckDb => format!("ends_with({lowered}, {t})"),
                    Dialect::Postgres => format!("right({lowered}, {}) = {t}", suffix.chars().count()),
                    Dialect::Spark => format!("endswith({lowered}, {t})"),
                    Dialect::ClickHouse => format!("endsWith({lowered}, {t})"),
                }
            }
            other => unreachable!("not a text test: {other:?}"),
        })
    }

    fn matches(&self, value: &str, pattern: &str, key: &str) -> Result<String, SqlError> {
        let translated = translate_regex(pattern, self.dialect).map_err(|reason| SqlError::Regex {
            group: key.to_string(),
            pattern: pattern.to_string(),
            dialect: self.dialect_name(),
            reason,
        })?;
        let translated = self.text(&translated, key)?;
        Ok(match self.dialect {
            Dialect::DuckDb => format!("regexp_matches({value}, {translated})"),
            Dialect::Postgres => format!("{value} ~ {translated}"),
            Dialect::Spark => format!("{value} RLIKE {translated}"),
            Dialect::ClickHouse => format!("match({value}, {translated})"),
        })
    }

    /// `value` equals one of `items`. DuckDB plans an `IN` list of six or
    /// more items as a join, one per test and in series, where a list
    /// lookup is a plain function of the row.
    fn one_of(&self, value: &str, items: &[String]) -> String {
        match self.dialect {
            Dialect::DuckDb => format!("list_contains([{}], {value})", items.join(", ")),
            Dialect::Postgres | Dialect::Spark | Dialect::ClickHouse => format!("{value} IN ({})", items.join(", ")),
        }
    }

    /// Lowercase as `str::to_lowercase` does. The engines lowercase one code
    /// point at a time; the one difference that can be mended in SQL is
    /// `İ`, which Rust lowercases to `i` + combining dot above.
    /// ClickHouse's `lowerUTF8` maps whole strings as Rust does (ICU).
    fn lower(&self, value: &str) -> String {
        match self.dialect {
            Dialect::ClickHouse => format!("lowerUTF8({value})"),
            _ => format!("lower(replace({value}, '\u{130}', 'i\u{307}'))"),
        }
    }

    fn number(&self, value: &str) -> String {
        match self.dialect {
            Dialect::Postgres => format!("CAST({value} AS DOUBLE PRECISION)"),
            Dialect::DuckDb | Dialect::Spark => format!("CAST({value} AS DOUBLE)"),
            // A CAST of a null to a type that is not `Nullable` fails.
            Dialect::ClickHouse => format!("toFloat64({value})"),
        }
    }

    fn is_nan(&self, number: &str) -> String {
        match self.dialect {
            Dialect::Postgres => format!("{number} = CAST('NaN' AS DOUBLE PRECISION)"),
            Dialect::DuckDb | Dialect::Spark => format!("isnan({number})"),
            Dialect::ClickHouse => format!("isNaN({number})"),
        }
    }

    /// Whether `condition` holds for any row of a `GROUP BY`, as a
    /// column that a `LEFT JOIN` leaves null for a missing key (ClickHouse
    /// gives a missing row's columns their type's default, which for a
    /// `Nullable` type is null).
    fn any_row(&self, condition: &str) -> String {
        match self.dialect {
            Dialect::ClickHouse => format!("toNullable(max({condition}))"),
            _ => format!("bool_or({condition})"),
        }
    }

    /// A `BIGINT` of a `GROUP BY` whose bit `i` is set when `conditions[i]`
    /// holds for any row (at most [`WORD_BITS`] conditions, so that it is
    /// never negative).
    fn any_row_bits(&self, conditions: &[String]) -> String {
        let bits: Vec<String> = conditions
            .iter()
            .enumerate()
            .map(|(bit, c)| format!("CASE WHEN {c} THEN CAST({} AS BIGINT) ELSE 0 END", 1u64 << bit))
            .collect();
        // The bits of one row are distinct, so their sum is their union.
        let row = bits.join(" + ");
        match self.dialect {
            Dialect::ClickHouse => format!("groupBitOr({row})"),
            _ => format!("bit_or({row})"),
        }
    }

    /// Whether bit `bit` of the `BIGINT` `word` is set.
    fn bit_set(&self, word: &str, bit: usize) -> String {
        match self.dialect {
            Dialect::ClickHouse => format!("bitTest({word}, {bit})"),
            _ => format!("({word} & CAST({} AS BIGINT)) <> 0", 1u64 << bit),
        }
    }

    /// A finite number, exactly: Rust prints the shortest text that reads
    /// back as the same f64.
    fn double(&self, n: f64) -> String {
        self.number(&format!("{n:?}"))
    }

    /// A date literal, or `today ± N` relative to the as-of date or to the
    /// day the query runs.
    fn date(&self, value: &Scalar) -> String {
        let Scalar::Date(days, from_today) = value else {
            unreachable!("not a date: {value:?}")
        };
        let fixed = |date: chrono::NaiveDate| match self.dialect {
            // A `DATE` literal there is a `Date`, 1970 to 2149, saturated.
            Dialect::ClickHouse => format!("toDate32('{}')", date.format("%Y-%m-%d")),
            _ => format!("DATE '{}'", date.format("%Y-%m-%d")),
        };
        let Some(DateOffset { amount, unit }) = from_today else {
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
            return fixed(epoch + chrono::TimeDelta::days(i64::from(*days)));
        };
        let today = match (self.as_of, self.dialect) {
            (Some(as_of), _) => fixed(as_of),
            (None, Dialect::Spark) => "current_date()".into(),
            (None, Dialect::ClickHouse) => "toDate32(today())".into(),
            (None, _) => "CURRENT_DATE".into(),
        };
        let (amount, months) = match unit {
            DateUnit::Days => (*amount, false),
            DateUnit::Weeks => (amount * 7, false),
            DateUnit::Months => (*amount, true),
            DateUnit::Years => (amount * 12, true),
        };
        match (self.dialect, months) {
            (_, _) if amount == 0 => today,
            (Dialect::Spark, true) => format!("add_months({today}, {amount})"),
            (Dialect::Spark, false) => format!("date_add({today}, {amount})"),
            (Dialect::ClickHouse, true) => format!("addMonths({today}, {amount})"),
            (Dialect::ClickHouse, false) => format!("addDays({today}, {amount})"),
            // Month steps clamp to the month's last day in both engines.
            (Dialect::DuckDb, true) => format!("CAST({today} + INTERVAL ({amount}) MONTH AS DATE)"),
            (Dialect::Postgres, true) => format!("CAST({today} + {amount} * INTERVAL '1 month' AS DATE)"),
            (_, false) => format!("({today} + {amount})"),
        }
    }

    /// A quoted identifier.
    fn identifier(&self, name: &str) -> String {
        match self.dialect {
            Dialect::Spark => format!("`{}`", name.replace('`', "``")),
            // Backslash escapes hold in ClickHouse's quoted names too.
            Dialect::ClickHouse => format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`")),
            Dialect::DuckDb | Dialect::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }

    /// A text literal that reads back as exactly `text`.
    fn text(&self, text: &str, key: &str) -> Result<String, SqlError> {
        let refuse = |reason| SqlError::Text {
            group: key.to_string(),
            text: text.to_string(),
            dialect: self.dialect_name(),
            reason,
        };
        match self.dialect {
            Dialect::DuckDb | Dialect::Postgres if text.contains('\0') => {
                Err(refuse("text values there cannot hold the NUL character"))
            }
            // Standard strings: only the quote is special.
            Dialect::DuckDb | Dialect::Postgres => Ok(format!("'{}'", text.replace('\'', "''"))),
            // Spark reads backslash escapes in literals; write every
            // character that is not plain ASCII as \uXXXX.
            Dialect::Spark => {
                let mut out = String::from("'");
                for c in text.chars() {
                    match c {
                        ' '..='~' if c != '\'' && c != '\\' => out.push(c),
                        _ => {
                            let mut units = [0u16; 2];
                            for unit in c.encode_utf16(&mut units) {
                                write!(out, "\\u{unit:04X}").expect("writing to a String");
                            }
                        }
                    }
                }
                out.push('\'');
                Ok(out)
            }
            // ClickHouse reads backslash escapes too, and takes any bytes:
            // control characters as \xHH, the rest as UTF-8.
            Dialect::ClickHouse => {
                let mut out = String::from("'");
                for c in text.chars() {
                    match c {
                        '\'' | '\\' => {
                            out.push('\\');
                            out.push(c);
                        }
                        c if c.is_ascii_control() => write!(out, "\\x{:02X}", c as u32).expect("writing to a String"),
                        c => out.push(c),
                    }
                }
                out.push('\'');
                Ok(out)
            }
        }
    }
}

/// `p` as SQL: its constants, `and`, `or` and `not` written here, every
/// other predicate by `leaf`.
fn connectives(
    p: &Predicate,
    leaf: &mut dyn FnMut(&Predicate) -> Result<String, SqlError>,
) -> Result<String, SqlError> {
    let mut join = |ps: &[Predicate], op: &str| -> Result<String, SqlError> {
        let parts = ps.iter().map(|p| connectives(p, leaf)).collect::<Result<Vec<_>, _>>()?;
        Ok(format!("({})", parts.join(op)))
    };
    Ok(match p {
        Predicate::Const(true) => "TRUE".into(),
        Predicate::Const(false) => "FALSE".into(),
        Predicate::And(ps) => join(ps, " AND ")?,
        Predicate::Or(ps) => join(ps, " OR ")?,
        Predicate::Not(p) => format!("(NOT {})", connectives(p, leaf)?),
        other => leaf(other)?,
    })
}

fn sql_op(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "=",
        CmpOp::Ne => "<>",
        CmpOp::Lt => "<",
        CmpOp::Le => "<=",
        CmpOp::Gt => ">",
        CmpOp::Ge => ">=",
    }
}

fn id_list(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dialect: Dialect, as_of: Option<chrono::NaiveDate>) -> (CheckedRules, Schema, SqlOptions) {
        let rules = CheckedRules {
            groups: Vec::new(),
            evaluation_order: Vec::new(),
            as_of: chrono::NaiveDate::from_ymd_opt(2024, 3, 31).unwrap(),
        };
        let mut options = SqlOptions::new(dialect);
        options.as_of = as_of;
        (rules, Schema::default(), options)
    }

    #[test]
    fn spark_literals_escape_everything_but_plain_ascii() {
        let (rules, schema, options) = writer(Dialect::Spark, None);
        let w = Writer::new(&rules, &schema, &options).unwrap();
        assert_eq!(w.text("a'b\\c", "g").unwrap(), "'a\\u0027b\\u005Cc'");
        assert_eq!(w.text("\n😀", "g").unwrap(), "'\\u000A\\uD83D\\uDE00'");
        assert_eq!(w.identifier("a`b"), "`a``b`");
        let (rules, schema, options) = writer(Dialect::Postgres, None);
        let w = Writer::new(&rules, &schema, &options).unwrap();
        assert_eq!(w.text("it's \\", "g").unwrap(), "'it''s \\'");
        assert!(w.text("nul\0", "g").is_err());
    }

    #[test]
    fn relative_dates_follow_the_query_day_unless_pinned() {
        let minus = |amount, unit| Scalar::Date(0, Some(DateOffset { amount, unit }));
        let (rules, schema, options) = writer(Dialect::DuckDb, None);
        let w = Writer::new(&rules, &schema, &options).unwrap();
        assert_eq!(w.date(&minus(-90, DateUnit::Days)), "(CURRENT_DATE + -90)");
        assert_eq!(
            w.date(&minus(-1, DateUnit::Years)),
            "CAST(CURRENT_DATE + INTERVAL (-12) MONTH AS DATE)"
        );
        assert_eq!(w.date(&Scalar::Date(19_782, None)), "DATE '2024-02-29'");
        let pinned = chrono::NaiveDate::from_ymd_opt(2024, 3, 31);
        let (rules, schema, options) = writer(Dialect::Spark, pinned);
        let w = Writer::new(&rules, &schema, &options).unwrap();
        assert_eq!(
            w.date(&minus(-1, DateUnit::Months)),
            "add_months(DATE '2024-03-31', -1)"
        );
        assert_eq!(w.date(&minus(2, DateUnit::Weeks)), "date_add(DATE '2024-03-31', 14)");
    }

    #[test]
    fn table_names_must_be_plain() {
        let (rules, schema, mut options) = writer(Dialect::DuckDb, None);
        options.users_table = "analytics.users".into();
        assert!(Writer::new(&rules, &schema, &options).is_ok());
        options.users_table = "users; DROP TABLE x".into();
        assert!(matches!(
            Writer::new(&rules, &schema, &options),
            Err(SqlError::TableName(_))
        ));
    }
}
