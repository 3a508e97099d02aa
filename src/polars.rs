//! Checked rules → a Python module of Polars expressions, for users whose
//! data lives in Polars data frames, and for comparing dyngroups with Polars
//! on the same rules (`benches/peers`).
//!
//! The module means what spec §3 says, as the SQL of [`crate::sql`] does:
//! every atom is filled so that a missing value makes it false (so `not` is
//! a complement), NaN counts as missing, text is compared lowercased with
//! Polars' `str.to_lowercase` (Rust's `str::to_lowercase`, as in the
//! engine), `matches` runs the pattern with Polars' regex engine (Rust's
//! `regex` crate, as in the engine), `count(...)` counts zero for users
//! without rows, and `in_branch` follows the org tree. Every group is one
//! expression of one wide `select`; the enrollment conditions of all groups
//! are tallied per user in one `group_by`, and each text column is
//! lowercased once. Dates are those of the rules' as-of date. Every text is
//! written as a JSON string, which Python reads as the same text.

use crate::ast::{CmpOp, GroupStatus};
use crate::checked::{CheckedRules, ColumnTest, GroupRef, Predicate, Scalar, Test};
use crate::schema::{ColumnType, Schema, TableSchema, ValueType};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Why rules could not be written for Polars.
#[derive(Debug, thiserror::Error)]
pub enum PolarsError {
    /// The users table has no column named by `match_by`.
    #[error("users have no column `{0}` to match static memberships by")]
    MatchBy(String),
}

/// The Python module: `members(users, enrollments=None, org=None,
/// memberships=None, committed=None)` takes Polars data frames (or lazy
/// frames) and returns a data frame of `user_id` and one boolean column per
/// group a run commits (drafts commit nothing), named by the group's key.
/// `memberships` (`group`, `user_id` or the `match_by` column) is read by
/// `member_of` a static group; `committed` (`group`, `user_id`, what the
/// last run committed) by `paused`, `add_only` and `remove_only` groups.
pub fn polars_module(rules: &CheckedRules, schema: &Schema, match_by: Option<&str>) -> Result<String, PolarsError> {
    if let Some(column) = match_by
        && !schema.users.names().any(|n| n == column)
    {
        return Err(PolarsError::MatchBy(column.to_string()));
    }
    let mut writer = Writer {
        rules,
        schema,
        match_by,
        lowered: [BTreeMap::new(), BTreeMap::new()],
        tallies: Vec::new(),
        branches: Vec::new(),
    };
    let mut groups = String::new();
    for &g in &rules.evaluation_order {
        let membership = writer.membership(g);
        writeln!(
            groups,
            "    g{g} = {membership}  # {}",
            python_text(&rules.groups[g].key)
        )
        .expect("writing to a String");
    }
    let selected: Vec<String> = (0..rules.groups.len())
        .filter(|&g| rules.groups[g].status != GroupStatus::Draft)
        .map(|g| format!("g{g}.alias({})", python_text(&rules.groups[g].key)))
        .collect();
    Ok(writer.module(&groups, &selected))
}

/// Which frame an expression reads: users, or enrollments inside
/// `enrollment(...)`.
#[derive(Clone, Copy)]
enum Frame {
    Users = 0,
    Enrollments = 1,
}

struct Writer<'a> {
    rules: &'a CheckedRules,
    schema: &'a Schema,
    match_by: Option<&'a str>,
    /// Per frame: column index → the name of its lowercased copy.
    lowered: [BTreeMap<usize, String>; 2],
    /// The enrollment conditions counted per user (`None`: every row), in
    /// the order of their tally columns.
    tallies: Vec<Option<String>>,
    /// The lowercased branch codes `in_branch` names, in the order of their
    /// subtree variables.
    branches: Vec<String>,
}

impl Writer<'_> {
    /// The whole module around the groups' expressions.
    fn module(&self, groups: &str, selected: &[String]) -> String {
        // The user ids as one type in every frame, and the lowercased copies.
        let prepared = |frame: Frame, table: Option<&TableSchema>| -> Vec<String> {
            let lowered = self.lowered[frame as usize].iter().map(|(&column, name)| {
                let column = &table.expect("lowered columns exist").columns[column].name;
                format!("pl.col({}).str.to_lowercase().alias(\"{name}\")", python_text(column))
            });
            std::iter::once("pl.col(\"user_id\").cast(pl.Int64)".to_string())
                .chain(lowered)
                .collect()
        };
        let mut body = String::new();
        let users = arguments(&prepared(Frame::Users, Some(&self.schema.users)), 2);
        writeln!(body, "    users = users.lazy().with_columns({users})").expect("writing to a String");
        if !self.tallies.is_empty() {
            let counted: Vec<String> = self
                .tallies
                .iter()
                .enumerate()
                .map(|(k, condition)| match condition {
                    None => format!("pl.len().alias(\"{TALLY}{k}\")"),
                    Some(condition) => format!("({condition}).sum().alias(\"{TALLY}{k}\")"),
                })
                .collect();
            let enrollments = arguments(&prepared(Frame::Enrollments, self.schema.enrollments.as_ref()), 3);
            let counted = arguments(&counted, 3);
            writeln!(
                body,
                "    tallies = (\n        enrollments.lazy()\n        .with_columns({enrollments})\n        .group_by(\"user_id\")\n        .agg({counted})\n    )"
            )
            .expect("writing to a String");
            writeln!(
                body,
                "    users = users.join(tallies, on=\"user_id\", how=\"left\").with_columns(\n        pl.col(r\"^{TALLY}\\d+$\").fill_null(0)\n    )"
            )
            .expect("writing to a String");
        }
        for (n, code) in self.branches.iter().enumerate() {
            writeln!(body, "    b{n} = _subtree(org, {})", python_text(code)).expect("writing to a String");
        }
        body.push_str(groups);
        let selected: Vec<String> = std::iter::once("pl.col(\"user_id\")".to_string())
            .chain(selected.iter().cloned())
            .collect();
        writeln!(body, "    return users.select({}).collect()", arguments(&selected, 2)).expect("writing to a String");
        format!(
            "{PRELUDE}\n\ndef members(users, enrollments=None, org=None, memberships=None, committed=None):\n{MEMBERS_DOC}{body}"
        )
    }

    /// What group `g` commits, given the groups before it in evaluation
    /// order as `g0`, `g1`, ...
    fn membership(&mut self, g: usize) -> String {
        let rules = self.rules;
        let group = &rules.groups[g];
        let mut evaluated = self.predicate(&group.rule, Frame::Users);
        if !group.include.is_empty() {
            evaluated = format!("({evaluated} | pl.col(\"user_id\").is_in({:?}))", group.include);
        }
        if !group.exclude.is_empty() {
            evaluated = format!("({evaluated} & ~pl.col(\"user_id\").is_in({:?}))", group.exclude);
        }
        let committed = || {
            format!(
                "pl.col(\"user_id\").is_in(_ids(committed, {}))",
                python_text(&group.key)
            )
        };
        match group.status {
            GroupStatus::Active | GroupStatus::Draft => evaluated,
            GroupStatus::Paused => committed(),
            GroupStatus::AddOnly => format!("({evaluated} | {})", committed()),
            GroupStatus::RemoveOnly => format!("({evaluated} & {})", committed()),
        }
    }

    /// A boolean expression that is never null.
    fn predicate(&mut self, p: &Predicate, frame: Frame) -> String {
        match p {
            // Tallied, a literal would count once per user, not once per
            // row: in an enrollment condition it is a test on every row.
            Predicate::Const(holds) => match (frame, holds) {
                (Frame::Users, true) => "pl.lit(True)".into(),
                (Frame::Users, false) => "pl.lit(False)".into(),
                (Frame::Enrollments, true) => "pl.col(\"user_id\").is_not_null()".into(),
                (Frame::Enrollments, false) => "pl.col(\"user_id\").is_null()".into(),
            },
            Predicate::And(ps) => self.joined(ps, " & ", frame),
            Predicate::Or(ps) => self.joined(ps, " | ", frame),
            Predicate::Not(p) => format!("(~{})", self.predicate(p, frame)),
            Predicate::Column(test) => self.column_test(test, frame),
            Predicate::InBranch(test) => {
                let n = position_or_push(&mut self.branches, test.code.clone());
                let branch = self.lowered(test.column, Frame::Users);
                format!("{branch}.is_in(b{n}).fill_null(False)")
            }
            Predicate::MemberOf(GroupRef::Rule(d)) => format!("g{d}"),
            Predicate::MemberOf(GroupRef::Static(key)) => match self.match_by {
                None => format!("pl.col(\"user_id\").is_in(_ids(memberships, {}))", python_text(key)),
                Some(column) => {
                    let index = self
                        .schema
                        .users
                        .names()
                        .position(|n| n == column)
                        .expect("match_by was checked");
                    format!(
                        "{}.is_in(_matched(memberships, {}, {})).fill_null(False)",
                        self.lowered(index, Frame::Users),
                        python_text(key),
                        python_text(column)
                    )
                }
            },
            Predicate::Enrollment(test) => {
                let condition = test.condition.as_ref().map(|c| self.predicate(c, Frame::Enrollments));
                let k = position_or_push(&mut self.tallies, condition);
                let tally = format!("pl.col(\"{TALLY}{k}\")");
                match test.count {
                    None => format!("({tally} > 0)"),
                    Some((op, n)) => format!("({tally} {} {n})", python_op(op)),
                }
            }
        }
    }

    fn joined(&mut self, ps: &[Predicate], op: &str, frame: Frame) -> String {
        let parts: Vec<String> = ps.iter().map(|p| self.predicate(p, frame)).collect();
        format!("({})", parts.join(op))
    }

    fn column_test(&mut self, test: &ColumnTest, frame: Frame) -> String {
        let schema = self.schema;
        let table = match frame {
            Frame::Users => &schema.users,
            Frame::Enrollments => schema.enrollments.as_ref().expect("enrollment columns were checked"),
        };
        let column = &table.columns[test.column];
        let value = format!("pl.col({})", python_text(&column.name));
        let value_type = match column.column_type {
            ColumnType::Usable(t) => t,
            ColumnType::Unusable(_) => unreachable!("the checker rejects tests on unusable columns"),
        };
        let number = format!("{value}.cast(pl.Float64)");
        let known = |condition: String| format!("({condition}).fill_null(False)");
        match (value_type, &test.test) {
            (ValueType::Text, Test::IsEmpty) => known(format!("{value}.is_null() | ({value} == \"\")")),
            (ValueType::Number, Test::IsEmpty) => known(format!("{value}.is_null() | {number}.is_nan()")),
            (_, Test::IsEmpty) => format!("{value}.is_null()"),
            // Polars runs the `regex` crate: it gets the ASCII classes
            // written out, as the engine does.
            (ValueType::Text, Test::Matches(pattern)) => {
                known(format!("{value}.str.contains({})", python_text(pattern.compiled())))
            }
            (ValueType::Text, text_test) => {
                let lowered = self.lowered(test.column, frame);
                known(match text_test {
                    Test::Compare(op, Scalar::Text(t)) => format!("{lowered} {} {}", python_op(*op), python_text(t)),
                    Test::In(items) => format!("{lowered}.is_in({})", python_list(items)),
                    Test::Contains(t) => format!("{lowered}.str.contains({}, literal=True)", python_text(t)),
                    Test::StartsWith(t) => format!("{lowered}.str.starts_with({})", python_text(t)),
                    Test::EndsWith(t) => format!("{lowered}.str.ends_with({})", python_text(t)),
                    other => unreachable!("not a text test: {other:?}"),
                })
            }
            (ValueType::Number, test) => known(match test {
                Test::Compare(op, n) => format!(
                    "~{number}.is_nan() & ({number} {} {})",
                    python_op(*op),
                    python_scalar(n)
                ),
                Test::In(items) => format!("~{number}.is_nan() & {number}.is_in({})", python_list(items)),
                other => unreachable!("not a number test: {other:?}"),
            }),
            (ValueType::Date, test) => {
                let day = format!("{value}.cast(pl.Date)");
                known(match test {
                    Test::Compare(op, date) => format!("{day} {} {}", python_op(*op), python_scalar(date)),
                    Test::In(items) => format!("{day}.is_in({})", python_list(items)),
                    other => unreachable!("not a date test: {other:?}"),
                })
            }
            (ValueType::Boolean, Test::IsTrue) => known(value),
            (ValueType::Boolean, Test::Compare(_, b)) => known(format!("{value} == {}", python_scalar(b))),
            (ValueType::Boolean, other) => unreachable!("not a boolean test: {other:?}"),
        }
    }

    /// The lowercased copy of a text column, made once per frame.
    fn lowered(&mut self, column: usize, frame: Frame) -> String {
        let prefix = match frame {
            Frame::Users => "__dyngroups_lower_user_",
            Frame::Enrollments => "__dyngroups_lower_enrollment_",
        };
        let name = self.lowered[frame as usize]
            .entry(column)
            .or_insert_with(|| format!("{prefix}{column}"));
        format!("pl.col(\"{name}\")")
    }
}

/// Where `item` is in `items`, added at the end if it is not there yet.
fn position_or_push<T: PartialEq>(items: &mut Vec<T>, item: T) -> usize {
    items.iter().position(|i| *i == item).unwrap_or_else(|| {
        items.push(item);
        items.len() - 1
    })
}

/// The prefix of the per-user tally columns.
const TALLY: &str = "__dyngroups_tally_";

const PRELUDE: &str = r#""""The groups of a dyngroups rules file as Polars expressions, written by
`dyngroups polars`. See members()."""
import datetime

import polars as pl


def _subtree(org, code):
    """The branch code and every descendant in the org tree, lowercased."""
    children = {}
    lowered = org.lazy().select(pl.col("branch").str.to_lowercase(), pl.col("parent").str.to_lowercase())
    for branch, parent in lowered.collect().iter_rows():
        if branch is not None and parent is not None:
            children.setdefault(parent, []).append(branch)
    found, stack = {code}, [code]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return sorted(found)


def _ids(frame, group):
    """The user ids of `group` in a (group, user_id) frame; none without one."""
    if frame is None:
        return pl.Series("user_id", [], dtype=pl.Int64)
    rows = frame.lazy().filter(pl.col("group") == group)
    return rows.select(pl.col("user_id").cast(pl.Int64)).collect().to_series()


def _matched(frame, group, column):
    """The lowercased `column` of `group`'s rows in a memberships frame."""
    if frame is None:
        return pl.Series(column, [], dtype=pl.String)
    rows = frame.lazy().filter(pl.col("group") == group)
    return rows.select(pl.col(column).cast(pl.String).str.to_lowercase()).collect().to_series()
"#;

const MEMBERS_DOC: &str = r#"    """`user_id` and one boolean column per group a run commits, named by
    the group's key. The frames may be data frames or lazy frames."""
"#;

/// Call arguments one per line, at `depth` levels of four spaces.
fn arguments(items: &[String], depth: usize) -> String {
    let indent = "    ".repeat(depth);
    let lines: String = items.iter().map(|item| format!("\n{indent}{item},")).collect();
    format!("{lines}\n{}", &indent[4..])
}

/// A Python string literal of `text`: JSON's escapes are Python's.
fn python_text(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

fn python_scalar(value: &Scalar) -> String {
    match value {
        Scalar::Text(t) => python_text(t),
        Scalar::Number(n) if n.is_finite() => format!("{n:?}"),
        Scalar::Number(n) => format!("float(\"{n}\")"),
        Scalar::Date(days, _) => {
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
            let date = epoch + chrono::TimeDelta::days(i64::from(*days));
            format!(
                "datetime.date({}, {}, {})",
                date.format("%Y"),
                date.format("%-m"),
                date.format("%-d")
            )
        }
        Scalar::Bool(b) => if *b { "True" } else { "False" }.into(),
    }
}

fn python_list(items: &[Scalar]) -> String {
    format!("[{}]", items.iter().map(python_scalar).collect::<Vec<_>>().join(", "))
}

/// Python's comparison operators are written as the rules write them.
fn python_op(op: CmpOp) -> &'static str {
    op.symbol()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(rules: &str) -> String {
        let schema = Schema {
            users: TableSchema::new([
                ("user_id", ValueType::Number),
                ("dept", ValueType::Text),
                ("name", ValueType::Text),
            ]),
            enrollments: Some(TableSchema::new([
                ("user_id", ValueType::Number),
                ("course", ValueType::Text),
                ("status", ValueType::Text),
            ])),
            ..Schema::default()
        };
        let parsed = crate::parse_rules(rules).unwrap();
        let as_of = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        let checked = crate::check(&parsed, &schema, as_of).unwrap().rules;
        polars_module(&checked, &schema, None).unwrap()
    }

    /// Each text column is lowercased once and each enrollment condition
    /// tallied once, however many groups test them: the wide select is
    /// what makes Polars fast, so the module must not repeat the work.
    #[test]
    fn shared_work_is_written_once() {
        let text = module(
            r#"group a { completed("C1") or dept == "Sales" }
               group b { completed("C1") and dept contains "ale" and name starts_with "x" }
               group c { count(enrollment(status == "completed")) >= 2 or enrolled("C2") }
               group d { enrollment() and not member_of(a) }"#,
        );
        assert_eq!(
            text.matches(".str.to_lowercase().alias(").count(),
            4,
            "dept, name, course, status:\n{text}"
        );
        assert_eq!(
            text.matches(".alias(\"__dyngroups_tally_").count(),
            4,
            "C1 completed, completed, C2, any:\n{text}"
        );
        assert!(text.contains("pl.len().alias(\"__dyngroups_tally_3\")"), "{text}");
        assert!(
            text.contains("(~g0)"),
            "member_of reads the group's expression:\n{text}"
        );
    }

    /// Texts are Python literals that read back as the same text.
    #[test]
    fn texts_are_python_literals() {
        assert_eq!(python_text("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
        assert_eq!(python_text("\0😀"), "\"\\u0000😀\"");
        assert_eq!(python_scalar(&Scalar::Date(19_782, None)), "datetime.date(2024, 2, 29)");
        assert_eq!(python_scalar(&Scalar::Number(0.1)), "0.1");
        assert_eq!(python_scalar(&Scalar::Number(1e300)), "1e300");
    }
}
