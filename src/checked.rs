//! Checked rules: names resolved to column indices and group indices, literals
//! typed and lowercased, negations normalised. This is what the planner and
//! every evaluator consume; nothing downstream looks a name up again.

use crate::ast::{CmpOp, DateOffset, GroupStatus};
use crate::pattern::Pattern;
use std::collections::BTreeSet;

/// A whole rules file, checked against a schema.
#[derive(Clone, Debug)]
pub struct CheckedRules {
    /// The rule groups, in file order.
    pub groups: Vec<CheckedGroup>,
    /// Indices into `groups` such that every group comes after the groups its
    /// rule refers to with `member_of`.
    pub evaluation_order: Vec<usize>,
    /// The as-of date the rules were checked for (`today` in rules).
    pub as_of: chrono::NaiveDate,
}

impl CheckedRules {
    /// The users columns and the enrollments columns the rules test, so only
    /// those are decoded.
    pub fn columns_used(&self) -> (BTreeSet<usize>, BTreeSet<usize>) {
        let mut users = BTreeSet::new();
        let mut enrollments = BTreeSet::new();
        for group in &self.groups {
            group.rule.collect_columns(&mut users, &mut enrollments);
        }
        (users, enrollments)
    }
}

impl Predicate {
    fn collect_columns(&self, own: &mut BTreeSet<usize>, enrollments: &mut BTreeSet<usize>) {
        match self {
            Predicate::Const(_) | Predicate::MemberOf(_) => {}
            Predicate::And(ps) | Predicate::Or(ps) => ps.iter().for_each(|p| p.collect_columns(own, enrollments)),
            Predicate::Not(p) => p.collect_columns(own, enrollments),
            Predicate::Column(test) => {
                own.insert(test.column);
            }
            Predicate::InBranch(test) => {
                own.insert(test.column);
            }
            Predicate::Enrollment(test) => {
                if let Some(condition) = &test.condition {
                    // Inside an enrollment condition, columns are enrollment columns.
                    condition.collect_columns(enrollments, &mut BTreeSet::new());
                }
            }
        }
    }
}

/// One group of the rules file.
#[derive(Clone, Debug)]
pub struct CheckedGroup {
    /// The stable key.
    pub key: String,
    /// The display name (the key when none was given).
    pub name: String,
    /// The lifecycle status.
    pub status: GroupStatus,
    /// The rule, over the users table.
    pub rule: Predicate,
    /// User ids always included.
    pub include: Vec<u32>,
    /// User ids always excluded (wins over include).
    pub exclude: Vec<u32>,
}

/// A predicate over the rows of one table (the users table for group rules,
/// the enrollments table inside [`EnrollmentTest::condition`]).
#[derive(Clone, Debug)]
pub enum Predicate {
    /// Every row, or none.
    Const(bool),
    /// All hold (at least two operands).
    And(Vec<Predicate>),
    /// Any holds (at least two operands).
    Or(Vec<Predicate>),
    /// The complement: every row for which the operand is false.
    Not(Box<Predicate>),
    /// A test on one column.
    Column(ColumnTest),
    /// A test on the user's enrollment rows.
    Enrollment(EnrollmentTest),
    /// The user's branch is this code or one of its descendants.
    InBranch(BranchTest),
    /// The user is a member of another group.
    MemberOf(GroupRef),
}

/// `in_branch("B")`: the users' branch column and the lowercased code B.
#[derive(Clone, Debug)]
pub struct BranchTest {
    /// Index of the users' `branch` column.
    pub column: usize,
    /// The branch code, lowercased.
    pub code: String,
}

/// A group that `member_of` refers to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GroupRef {
    /// A group of the rules file, by index into [`CheckedRules::groups`].
    Rule(usize),
    /// A static group of the memberships input, by key.
    Static(String),
}

/// A test on the column at index `column` of the table being tested.
#[derive(Clone, Debug)]
pub struct ColumnTest {
    /// Index into the table schema's columns.
    pub column: usize,
    /// The test.
    pub test: Test,
}

/// Column tests. A missing value (null, NaN) makes every test false except
/// [`Test::IsEmpty`]; `!=`, `not in` and `is not empty` are `Not` of these.
#[derive(Clone, Debug)]
pub enum Test {
    /// Comparison with a literal of the column's type (never `!=`).
    Compare(CmpOp, Scalar),
    /// Equal to one of the literals (all of the column's type).
    In(Vec<Scalar>),
    /// Lowercased value contains the lowercased text.
    Contains(String),
    /// Lowercased value starts with the lowercased text.
    StartsWith(String),
    /// Lowercased value ends with the lowercased text.
    EndsWith(String),
    /// The pattern finds a match in the value as stored.
    Matches(Pattern),
    /// Missing, or `""` for text.
    IsEmpty,
    /// A boolean column that is true.
    IsTrue,
}

/// A typed literal. Text is lowercased, because text comparisons ignore case.
#[derive(Clone, Debug)]
pub enum Scalar {
    /// Lowercased text.
    Text(String),
    /// A number.
    Number(f64),
    /// Days since 1970-01-01, and the offset from `today` when the rule
    /// wrote it relative to the as-of date (`today` itself is `+0d`), so
    /// the date can also be written relative to the day a query runs.
    Date(i32, Option<DateOffset>),
    /// A boolean.
    Bool(bool),
}

/// Equal values are equal however they were written: `today` and the
/// as-of date as a literal are the same day.
impl PartialEq for Scalar {
    fn eq(&self, other: &Scalar) -> bool {
        match (self, other) {
            (Scalar::Text(a), Scalar::Text(b)) => a == b,
            (Scalar::Number(a), Scalar::Number(b)) => a == b,
            (Scalar::Date(a, _), Scalar::Date(b, _)) => a == b,
            (Scalar::Bool(a), Scalar::Bool(b)) => a == b,
            _ => false,
        }
    }
}

/// `enrollment(condition)` or `count(enrollment(condition)) op n`.
#[derive(Clone, Debug)]
pub struct EnrollmentTest {
    /// The condition on enrollment rows; `None` means any row.
    pub condition: Option<Box<Predicate>>,
    /// `None` for existence; otherwise the number of matching rows is
    /// compared with `n` (users without rows count 0).
    pub count: Option<(CmpOp, u64)>,
}

/// Days since 1970-01-01 of a calendar date.
pub fn days_since_epoch(date: chrono::NaiveDate) -> i32 {
    const EPOCH_FROM_CE: i32 = 719_163;
    chrono::Datelike::num_days_from_ce(&date) - EPOCH_FROM_CE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_days_match_arrow_date32() {
        let d = |y, m, day| chrono::NaiveDate::from_ymd_opt(y, m, day).unwrap();
        assert_eq!(days_since_epoch(d(1970, 1, 1)), 0);
        assert_eq!(days_since_epoch(d(1969, 12, 31)), -1);
        assert_eq!(days_since_epoch(d(2024, 2, 29)), 19_782);
    }
}
