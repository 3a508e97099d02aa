//! Checked rules → an evaluation plan: every distinct atom (a test on a
//! column, an enrollment test, a branch test) appears once, however many
//! groups use it, and each group is a boolean tree over atom ids.

use crate::ast::{CmpOp, GroupStatus};
use crate::checked::{BranchTest, CheckedRules, ColumnTest, GroupRef, Predicate, Scalar, Test};
use std::collections::{BTreeSet, HashMap};

/// A boolean tree over atoms and groups.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Node {
    Const(bool),
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Atom(usize),
    Group(usize),
    Static(String),
}

/// A leaf test, evaluated once into a bitmap of rows.
#[derive(Debug)]
pub(super) enum Atom<'r> {
    /// A test on a users column.
    UserColumn(&'r ColumnTest),
    /// A test on an enrollments column (rows of the enrollments table).
    EnrollmentColumn(&'r ColumnTest),
    /// `in_branch`.
    Branch(&'r BranchTest),
    /// `enrollment(...)` or `count(enrollment(...)) op n`; the condition's
    /// atoms are enrollment-column atoms.
    Enrollment {
        condition: Option<Node>,
        count: Option<(CmpOp, u64)>,
    },
}

impl Atom<'_> {
    pub(super) fn is_enrollment(&self) -> bool {
        matches!(self, Atom::Enrollment { .. })
    }
}

/// The plan for a set of groups.
pub(super) struct Plan<'r> {
    pub atoms: Vec<Atom<'r>>,
    /// Per rule group (by index), its tree; `None` for groups not selected.
    pub groups: Vec<Option<Node>>,
    /// Selected groups in batches: each batch depends only on earlier ones.
    pub levels: Vec<Vec<usize>>,
    /// Per rule group, the first group in `levels` order that commits the
    /// same members: an active group with the same tree and no
    /// `include`/`exclude` lists, like itself.
    pub same_members_as: Vec<Option<usize>>,
    /// Atom occurrences before sharing (for reporting).
    pub atom_uses: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Table {
    Users,
    Enrollments,
}

/// What makes two atoms one: the same test of the same column, with its
/// literals in canonical form (checked literals are already typed and
/// lowercased; an `in` list is a set), or the same enrollment condition
/// (a tree of atoms already interned) and count.
#[derive(PartialEq, Eq, Hash)]
enum AtomKey {
    Column {
        table: Table,
        column: usize,
        test: TestKey,
    },
    Branch {
        column: usize,
        code: String,
    },
    Enrollment {
        condition: Option<Node>,
        count: Option<(CmpOp, u64)>,
    },
}

/// A column test's canonical form.
#[derive(PartialEq, Eq, Hash)]
enum TestKey {
    Compare(CmpOp, ScalarKey),
    In(BTreeSet<ScalarKey>),
    Contains(String),
    StartsWith(String),
    EndsWith(String),
    /// A regex, by its pattern.
    Matches(String),
    IsEmpty,
    IsTrue,
}

/// A literal's canonical form: a number by its bits (`-0` as `0`), a date
/// by its day, whatever offset from `today` wrote it.
#[derive(PartialEq, Eq, Hash, PartialOrd, Ord)]
enum ScalarKey {
    Text(String),
    Number(u64),
    Date(i32),
    Bool(bool),
}

impl ScalarKey {
    fn of(scalar: &Scalar) -> ScalarKey {
        match scalar {
            Scalar::Text(text) => ScalarKey::Text(text.clone()),
            Scalar::Number(n) => ScalarKey::Number((n + 0.0).to_bits()),
            Scalar::Date(day, _) => ScalarKey::Date(*day),
            Scalar::Bool(b) => ScalarKey::Bool(*b),
        }
    }
}

impl TestKey {
    fn of(test: &Test) -> TestKey {
        match test {
            Test::Compare(op, scalar) => TestKey::Compare(*op, ScalarKey::of(scalar)),
            Test::In(items) => TestKey::In(items.iter().map(ScalarKey::of).collect()),
            Test::Contains(text) => TestKey::Contains(text.clone()),
            Test::StartsWith(text) => TestKey::StartsWith(text.clone()),
            Test::EndsWith(text) => TestKey::EndsWith(text.clone()),
            Test::Matches(pattern) => TestKey::Matches(pattern.source().to_string()),
            Test::IsEmpty => TestKey::IsEmpty,
            Test::IsTrue => TestKey::IsTrue,
        }
    }
}

struct Builder<'r> {
    atoms: Vec<Atom<'r>>,
    /// Each distinct atom's id.
    ids: HashMap<AtomKey, usize>,
    uses: usize,
}

impl<'r> Builder<'r> {
    fn intern(&mut self, key: AtomKey, atom: impl FnOnce() -> Atom<'r>) -> usize {
        self.uses += 1;
        let next = self.atoms.len();
        *self.ids.entry(key).or_insert_with(|| {
            self.atoms.push(atom());
            next
        })
    }

    fn node(&mut self, predicate: &'r Predicate, table: Table) -> Node {
        match predicate {
            Predicate::Const(b) => Node::Const(*b),
            Predicate::And(ps) => Node::And(ps.iter().map(|p| self.node(p, table)).collect()),
            Predicate::Or(ps) => Node::Or(ps.iter().map(|p| self.node(p, table)).collect()),
            Predicate::Not(p) => Node::Not(Box::new(self.node(p, table))),
            Predicate::Column(test) => {
                let key = AtomKey::Column {
                    table,
                    column: test.column,
                    test: TestKey::of(&test.test),
                };
                Node::Atom(self.intern(key, || match table {
                    Table::Users => Atom::UserColumn(test),
                    Table::Enrollments => Atom::EnrollmentColumn(test),
                }))
            }
            Predicate::InBranch(test) => {
                let key = AtomKey::Branch {
                    column: test.column,
                    code: test.code.clone(),
                };
                Node::Atom(self.intern(key, || Atom::Branch(test)))
            }
            Predicate::Enrollment(test) => {
                let condition = test.condition.as_deref().map(|c| self.node(c, Table::Enrollments));
                let key = AtomKey::Enrollment {
                    condition: condition.clone(),
                    count: test.count,
                };
                Node::Atom(self.intern(key, || Atom::Enrollment {
                    condition,
                    count: test.count,
                }))
            }
            Predicate::MemberOf(GroupRef::Rule(g)) => Node::Group(*g),
            Predicate::MemberOf(GroupRef::Static(key)) => Node::Static(key.clone()),
        }
    }
}

impl<'r> Plan<'r> {
    /// Plans the groups marked in `selected` (which must be closed under
    /// `member_of`; see [`dependency_closure`]).
    pub(super) fn new(rules: &'r CheckedRules, selected: &[bool]) -> Plan<'r> {
        let mut builder = Builder {
            atoms: Vec::new(),
            ids: HashMap::new(),
            uses: 0,
        };
        let groups: Vec<Option<Node>> = rules
            .groups
            .iter()
            .zip(selected)
            .map(|(g, &on)| on.then(|| builder.node(&g.rule, Table::Users)))
            .collect();
        let mut level_of = vec![0usize; rules.groups.len()];
        let mut levels: Vec<Vec<usize>> = Vec::new();
        for &g in rules.evaluation_order.iter().filter(|&&g| selected[g]) {
            let level = groups[g].as_ref().map_or(0, |n| {
                n.referenced_groups()
                    .iter()
                    .map(|&d| level_of[d] + 1)
                    .max()
                    .unwrap_or(0)
            });
            level_of[g] = level;
            if levels.len() <= level {
                levels.resize(level + 1, Vec::new());
            }
            levels[level].push(g);
        }
        let mut same_members_as = vec![None; rules.groups.len()];
        let mut first_with_tree: HashMap<&Node, usize> = HashMap::new();
        for &g in levels.iter().flatten() {
            let group = &rules.groups[g];
            if group.status != GroupStatus::Active || !group.include.is_empty() || !group.exclude.is_empty() {
                continue;
            }
            let tree = groups[g].as_ref().expect("groups in levels are planned");
            let first = *first_with_tree.entry(tree).or_insert(g);
            same_members_as[g] = (first != g).then_some(first);
        }
        Plan {
            atoms: builder.atoms,
            groups,
            levels,
            same_members_as,
            atom_uses: builder.uses,
        }
    }
}

impl Plan<'_> {
    /// Per atom, whether it is used in exactly one place: one leaf of one
    /// group's tree or of one enrollment atom's condition.
    pub(super) fn used_once(&self) -> Vec<bool> {
        self.uses().into_iter().map(|n| n == 1).collect()
    }

    /// Per atom, the places it is used in: leaves of groups' trees and of
    /// enrollment atoms' conditions.
    pub(super) fn uses(&self) -> Vec<usize> {
        let mut uses = vec![0usize; self.atoms.len()];
        let conditions = self.atoms.iter().filter_map(|atom| match atom {
            Atom::Enrollment {
                condition: Some(condition),
                ..
            } => Some(condition),
            _ => None,
        });
        for node in self.groups.iter().flatten().chain(conditions) {
            node.for_each_leaf(|leaf| {
                if let Node::Atom(a) = leaf {
                    uses[*a] += 1;
                }
            });
        }
        uses
    }
}

impl Node {
    /// Calls `visit` on every leaf (constants, atoms, groups), without
    /// recursion.
    pub(super) fn for_each_leaf(&self, mut visit: impl FnMut(&Node)) {
        let mut stack = vec![self];
        while let Some(n) = stack.pop() {
            match n {
                Node::And(ns) | Node::Or(ns) => stack.extend(ns),
                Node::Not(n) => stack.push(n),
                leaf => visit(leaf),
            }
        }
    }

    /// The groups the tree refers to by `member_of`.
    pub(super) fn referenced_groups(&self) -> Vec<usize> {
        let mut out = Vec::new();
        self.for_each_leaf(|leaf| {
            if let Node::Group(g) = leaf {
                out.push(*g);
            }
        });
        out
    }
}

/// Marks `wanted` groups and every group they reach through `member_of`.
pub fn dependency_closure(rules: &CheckedRules, wanted: &[usize]) -> Vec<bool> {
    let mut selected = vec![false; rules.groups.len()];
    let mut stack: Vec<usize> = wanted.to_vec();
    while let Some(g) = stack.pop() {
        if std::mem::replace(&mut selected[g], true) {
            continue;
        }
        let mut predicates = vec![&rules.groups[g].rule];
        while let Some(p) = predicates.pop() {
            match p {
                Predicate::And(ps) | Predicate::Or(ps) => predicates.extend(ps),
                Predicate::Not(p) => predicates.push(p),
                Predicate::MemberOf(GroupRef::Rule(d)) => stack.push(*d),
                _ => {}
            }
        }
    }
    selected
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Column, OpenTable};
    use crate::dataset::OpenInputs;

    /// An atom used by two groups, or twice in one, is held for its uses;
    /// one used by one group, or by one enrollment condition, is not.
    #[test]
    fn atoms_used_in_one_place_are_found() {
        let text = |values: &[&str]| Column::Text(values.iter().map(|v| Some(v.to_string())).collect());
        let users = OpenTable::from_columns(
            "users",
            vec![
                ("user_id".into(), Column::Number(vec![1.0, 2.0])),
                ("dept".into(), text(&["a", "b"])),
            ],
        );
        let enrollments = OpenTable::from_columns(
            "enrollments",
            vec![
                ("user_id".into(), Column::Number(vec![1.0])),
                ("course".into(), text(&["c"])),
                ("status".into(), text(&["completed"])),
            ],
        );
        let inputs = OpenInputs::from_tables(users, Some(enrollments), None, None).unwrap();
        let file = crate::parse_rules(
            r#"group g1 { dept == "a" or dept == "b" }
               group g2 { dept == "a" and enrollment(course == "c") }
               group g3 { dept == "x" and dept == "x" }"#,
        )
        .unwrap();
        let as_of = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        let rules = crate::check(&file, &inputs.schema(), as_of).unwrap().rules;
        let plan = Plan::new(&rules, &[true, true, true]);
        let once: Vec<String> = plan
            .atoms
            .iter()
            .zip(plan.used_once())
            .filter(|(_, once)| *once)
            .map(|(atom, _)| format!("{atom:?}"))
            .collect();
        assert_eq!(once.len(), 3, "{once:?}");
        assert!(once[0].contains("\"b\"") && once[1].contains("\"c\""), "{once:?}");
        assert!(once[2].starts_with("Enrollment"), "{once:?}");
    }

    /// Atoms that test the same thing are one, however written: an `in`
    /// list in any order and with repeats, a text literal in any case, a
    /// number as `0` or `-0`, a date as a literal or as `today` less days;
    /// a test of another column, operator or value is another atom.
    #[test]
    fn atoms_written_differently_but_the_same_are_one() {
        let users = OpenTable::from_columns(
            "users",
            vec![
                ("user_id".into(), Column::Number(vec![1.0])),
                (
                    "dept".into(),
                    Column::Text(std::iter::once(Some("a".to_string())).collect()),
                ),
                (
                    "site".into(),
                    Column::Text(std::iter::once(Some("a".to_string())).collect()),
                ),
                ("grade".into(), Column::Number(vec![1.0])),
                ("start".into(), Column::Date(vec![Some(0)])),
            ],
        );
        let inputs = OpenInputs::from_tables(users, None, None, None).unwrap();
        let file = crate::parse_rules(
            r#"group g0 { dept in ["b", "a", "a"] }
               group g1 { dept in ["A", "B"] }
               group g2 { site in ["a", "b"] }
               group g3 { grade == 0 }
               group g4 { grade == -0 }
               group g5 { grade >= 0 }
               group g6 { start >= 2026-11-12 }
               group g7 { start >= today - 10d }
               group g8 { dept matches "^a" or dept matches "^a" or dept matches "^b" }"#,
        )
        .unwrap();
        let as_of = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        let rules = crate::check(&file, &inputs.schema(), as_of).unwrap().rules;
        let plan = Plan::new(&rules, &[true; 9]);
        let atom = |g: usize| match &plan.groups[g] {
            Some(Node::Atom(a)) => *a,
            other => panic!("group {g}: {other:?}"),
        };
        assert_eq!(atom(0), atom(1));
        assert_ne!(atom(0), atom(2));
        assert_eq!(atom(3), atom(4));
        assert_ne!(atom(3), atom(5));
        assert_eq!(atom(6), atom(7));
        assert_eq!(plan.atoms.len(), 7, "{:?}", plan.atoms);
    }

    /// Active groups with the same tree and no lists commit the same
    /// members, and are told so (text literals compare without case, so
    /// `"A"` is `"a"`); a group with another status or an `include` list is
    /// not, and neither is one whose operands come in another order.
    #[test]
    fn groups_with_the_same_rule_are_found() {
        let users = OpenTable::from_columns(
            "users",
            vec![
                ("user_id".into(), Column::Number(vec![1.0, 2.0])),
                (
                    "dept".into(),
                    Column::Text(["a", "b"].iter().map(|v| Some(v.to_string())).collect()),
                ),
            ],
        );
        let inputs = OpenInputs::from_tables(users, None, None, None).unwrap();
        let file = crate::parse_rules(
            r#"group g0 { dept == "a" }
               group g1 { dept == "A" }
               group g2 paused { dept == "a" }
               group g3 { dept == "a" include [2] }
               group g4 { dept == "a" or dept == "b" }
               group g5 { dept == "b" or dept == "a" }
               group g6 { dept == "a" or dept == "b" }"#,
        )
        .unwrap();
        let as_of = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        let rules = crate::check(&file, &inputs.schema(), as_of).unwrap().rules;
        let plan = Plan::new(&rules, &[true; 7]);
        assert_eq!(plan.same_members_as, [None, Some(0), None, None, None, None, Some(4)]);
    }
}
