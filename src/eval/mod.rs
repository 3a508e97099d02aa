//! Checked rules + loaded data → the members of every group, as roaring
//! bitmaps of user ids.
//!
//! Evaluation runs in three parallel phases: every distinct column and branch
//! atom once; every distinct enrollment atom once (over those bitmaps); then
//! each group's bitmap algebra, batch by batch in `member_of` order.

mod atoms;
mod plan;

pub use plan::dependency_closure;

use crate::ast::GroupStatus;
use crate::checked::CheckedRules;
use crate::dataset::{Dataset, NO_USER};
use atoms::{all_rows, branch_rows, column_rows, rows_where};
use plan::{Atom, Node, Plan};
use rayon::prelude::*;
use roaring::{MultiOps, RoaringBitmap};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The members of one rule group.
#[derive(Debug, Clone)]
pub struct GroupMembers {
    /// The group's key.
    pub key: String,
    /// Its display name.
    pub name: String,
    /// Its status.
    pub status: GroupStatus,
    /// Member user ids, as the rule and `include`/`exclude` evaluate now.
    pub members: RoaringBitmap,
    /// What a `paused`, `add_only` or `remove_only` group commits; see
    /// [`GroupMembers::committed`].
    status_adjusted: Option<RoaringBitmap>,
    /// Time spent on this group's atoms and algebra (an atom shared by several
    /// groups counts in each).
    pub elapsed: Duration,
}

impl GroupMembers {
    /// What this run commits for the group, given its status and the last
    /// committed members (spec §6): `None` for a draft.
    pub fn committed(&self) -> Option<&RoaringBitmap> {
        match self.status {
            GroupStatus::Draft => None,
            GroupStatus::Active => Some(&self.members),
            GroupStatus::Paused | GroupStatus::AddOnly | GroupStatus::RemoveOnly => self.status_adjusted.as_ref(),
        }
    }
}

/// What an evaluation produced.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The evaluated rule groups, in rules-file order.
    pub groups: Vec<GroupMembers>,
    /// Members of static groups (user ids), by key.
    pub static_groups: BTreeMap<String, RoaringBitmap>,
    /// Atoms in the evaluated rules, counting repeats.
    pub atom_uses: usize,
    /// Distinct atoms actually evaluated.
    pub distinct_atoms: usize,
    /// `include`/`exclude` ids not in the users table (ignored), by group key.
    pub unknown_listed_ids: BTreeMap<String, Vec<u32>>,
}

/// Evaluates the groups marked in `selected` (closed under `member_of`; see
/// [`dependency_closure`]), or every group when `selected` is `None`, as the
/// first run: no group has committed members yet.
pub fn evaluate(rules: &CheckedRules, data: &Dataset, selected: Option<&[bool]>) -> Evaluation {
    evaluate_after(rules, data, selected, &BTreeMap::new())
}

/// Evaluates like [`evaluate`], after a run that committed `previous`
/// (user ids by group key). Only `paused`, `add_only` and `remove_only`
/// groups look at their previous members, and `member_of` such a group sees
/// what it commits (spec §6). Previous members no longer in the users table
/// are dropped: a user who left is removed from every group.
pub fn evaluate_after(
    rules: &CheckedRules,
    data: &Dataset,
    selected: Option<&[bool]>,
    previous: &BTreeMap<String, RoaringBitmap>,
) -> Evaluation {
    let all = vec![true; rules.groups.len()];
    let plan = Plan::new(rules, selected.unwrap_or(&all));
    let users = all_rows(data.user_count());
    let enrollment_universe = data
        .enrollments
        .as_ref()
        .map_or_else(RoaringBitmap::new, |e| all_rows(e.user_rows.len()));
    let no_groups: Vec<RoaringBitmap> = Vec::new();
    let statics = &data.static_groups;

    // Phase 0: the per-value postings that equality and `in` tests use, one
    // column per task, before any atom waits on them.
    let mut indexed: Vec<&crate::data::TextColumn> = Vec::new();
    for atom in &plan.atoms {
        let (table, test) = match atom {
            Atom::UserColumn(test) => (Some(&data.users), test),
            Atom::EnrollmentColumn(test) => (data.enrollments.as_ref().map(|e| &e.table), test),
            _ => continue,
        };
        if let (Some(table), crate::checked::Test::Compare(crate::ast::CmpOp::Eq, _) | crate::checked::Test::In(_)) =
            (table, &test.test)
            && let crate::data::Column::Text(text) = table.column(test.column)
            && !indexed.iter().any(|t| std::ptr::eq(*t, text))
        {
            indexed.push(text);
        }
    }
    indexed.par_iter().for_each(|text| {
        text.postings();
    });

    // Phase 1: column and branch atoms. Phase 2: enrollment atoms, which
    // combine enrollment-column atoms of phase 1.
    let mut results: Vec<Option<(RoaringBitmap, Duration)>> = plan
        .atoms
        .par_iter()
        .map(|atom| (!atom.is_enrollment()).then(|| timed(|| leaf_atom(atom, data))))
        .collect();
    let enrollment_results: Vec<Option<(RoaringBitmap, Duration)>> = plan
        .atoms
        .par_iter()
        .map(|atom| match atom {
            Atom::Enrollment { condition, count } => Some(timed(|| {
                let context = Context {
                    universe: &enrollment_universe,
                    atoms: &results,
                    groups: &no_groups,
                    statics,
                };
                let rows = match condition {
                    Some(c) => context.combine(c),
                    None => enrollment_universe.clone(),
                };
                enrollment_users(data, &rows, *count)
            })),
            _ => None,
        })
        .collect();
    if std::env::var_os("DYNGROUPS_TRACE_ATOMS").is_some() {
        for (atom, result) in plan.atoms.iter().zip(&results) {
            if let Some((_, took)) = result {
                eprintln!("{:>10.3} ms  {atom:?}", took.as_secs_f64() * 1e3);
            }
        }
    }
    for (slot, result) in results.iter_mut().zip(enrollment_results) {
        if result.is_some() {
            *slot = result;
        }
    }

    // Phase 3: groups, batch by batch.
    let mut group_rows: Vec<RoaringBitmap> = vec![RoaringBitmap::new(); rules.groups.len()];
    // The evaluated members, where the status makes them differ from what
    // the group commits.
    let mut evaluated_rows: Vec<Option<RoaringBitmap>> = vec![None; rules.groups.len()];
    let mut elapsed = vec![Duration::ZERO; rules.groups.len()];
    let mut unknown_listed_ids = BTreeMap::new();
    for level in &plan.levels {
        let done: Vec<LevelResult> = level
            .par_iter()
            .map(|&g| {
                let node = plan.groups[g].as_ref().expect("selected groups are planned");
                let context = Context {
                    universe: &users,
                    atoms: &results,
                    groups: &group_rows,
                    statics,
                };
                let (mut rows, took) = timed(|| context.combine(node));
                let group = &rules.groups[g];
                let mut unknown = Vec::new();
                let mut listed_rows = |ids: &[u32]| -> RoaringBitmap {
                    ids.iter()
                        .filter_map(|&id| {
                            data.row_of(id).or_else(|| {
                                unknown.push(id);
                                None
                            })
                        })
                        .collect()
                };
                rows |= listed_rows(&group.include);
                rows -= listed_rows(&group.exclude);
                let previous_rows = || -> RoaringBitmap {
                    previous
                        .get(&group.key)
                        .map(|ids| ids.iter().filter_map(|id| data.row_of(id)).collect())
                        .unwrap_or_default()
                };
                let status_adjusted = match group.status {
                    GroupStatus::Active | GroupStatus::Draft => None,
                    GroupStatus::Paused => Some(previous_rows()),
                    GroupStatus::AddOnly => Some(previous_rows() | &rows),
                    GroupStatus::RemoveOnly => Some(previous_rows() & &rows),
                };
                let atom_time: Duration = atom_ids(node)
                    .iter()
                    .filter_map(|&a| results[a].as_ref().map(|r| r.1))
                    .sum();
                LevelResult {
                    group: g,
                    rows,
                    status_adjusted,
                    took: took + atom_time,
                    unknown,
                }
            })
            .collect();
        for LevelResult {
            group: g,
            rows,
            status_adjusted,
            took,
            unknown,
        } in done
        {
            // `member_of` sees what a group commits. Only drafts refer to
            // drafts, and they preview the evaluated members.
            match status_adjusted {
                Some(adjusted) => {
                    group_rows[g] = adjusted;
                    evaluated_rows[g] = Some(rows);
                }
                None => group_rows[g] = rows,
            }
            elapsed[g] = took;
            if !unknown.is_empty() {
                unknown_listed_ids.insert(rules.groups[g].key.clone(), unknown);
            }
        }
    }

    let groups = plan
        .groups
        .iter()
        .enumerate()
        .filter(|(_, node)| node.is_some())
        .map(|(g, _)| {
            let group = &rules.groups[g];
            GroupMembers {
                key: group.key.clone(),
                name: group.name.clone(),
                status: group.status,
                members: data.rows_to_ids(evaluated_rows[g].as_ref().unwrap_or(&group_rows[g])),
                status_adjusted: evaluated_rows[g].as_ref().map(|_| data.rows_to_ids(&group_rows[g])),
                elapsed: elapsed[g],
            }
        })
        .collect();
    Evaluation {
        groups,
        static_groups: statics
            .iter()
            .map(|(k, rows)| (k.clone(), data.rows_to_ids(rows)))
            .collect(),
        atom_uses: plan.atom_uses,
        distinct_atoms: plan.atoms.len(),
        unknown_listed_ids,
    }
}

/// One group evaluated within a `member_of` level.
struct LevelResult {
    group: usize,
    /// The evaluated rows.
    rows: RoaringBitmap,
    /// What the group commits, when its status makes that differ from `rows`.
    status_adjusted: Option<RoaringBitmap>,
    took: Duration,
    /// `include`/`exclude` ids not in the users table.
    unknown: Vec<u32>,
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed())
}

fn leaf_atom(atom: &Atom<'_>, data: &Dataset) -> RoaringBitmap {
    match atom {
        Atom::UserColumn(test) => column_rows(data.users.column(test.column), test),
        Atom::EnrollmentColumn(test) => match &data.enrollments {
            Some(e) => column_rows(e.table.column(test.column), test),
            None => RoaringBitmap::new(),
        },
        Atom::Branch(test) => match &data.org {
            Some(org) => branch_rows(data.users.column(test.column), org, test),
            None => RoaringBitmap::new(),
        },
        Atom::Enrollment { .. } => unreachable!("enrollment atoms are evaluated in their own phase"),
    }
}

/// Users (rows) with a matching enrollment row, or whose number of matching
/// rows satisfies `count` (users with none count 0).
fn enrollment_users(data: &Dataset, rows: &RoaringBitmap, count: Option<(crate::ast::CmpOp, u64)>) -> RoaringBitmap {
    let Some(enrollments) = &data.enrollments else {
        return RoaringBitmap::new();
    };
    match count {
        None => {
            let mut users: Vec<u32> = rows
                .iter()
                .map(|e| enrollments.user_rows[e as usize])
                .filter(|&u| u != NO_USER)
                .collect();
            users.par_sort_unstable();
            users.dedup();
            RoaringBitmap::from_sorted_iter(users).expect("sorted, distinct rows")
        }
        Some((op, n)) => {
            let mut counts = vec![0u32; data.user_count()];
            for e in rows {
                let u = enrollments.user_rows[e as usize];
                if u != NO_USER {
                    counts[u as usize] += 1;
                }
            }
            rows_where(counts.len(), |u| op.holds(u64::from(counts[u]), n))
        }
    }
}

fn atom_ids(node: &Node) -> Vec<usize> {
    let mut out = Vec::new();
    node.for_each_leaf(|leaf| {
        if let Node::Atom(a) = leaf {
            out.push(*a);
        }
    });
    out.sort_unstable();
    out.dedup();
    out
}

/// What a tree is combined against: its table's rows, evaluated atoms, and
/// the groups finished so far.
struct Context<'a> {
    universe: &'a RoaringBitmap,
    atoms: &'a [Option<(RoaringBitmap, Duration)>],
    groups: &'a [RoaringBitmap],
    statics: &'a BTreeMap<String, RoaringBitmap>,
}

impl Context<'_> {
    fn combine(&self, node: &Node) -> RoaringBitmap {
        match node {
            Node::Const(true) => self.universe.clone(),
            Node::Const(false) => RoaringBitmap::new(),
            Node::Atom(a) => self.atoms[*a].as_ref().map(|r| r.0.clone()).unwrap_or_default(),
            Node::Group(g) => self.groups[*g].clone(),
            Node::Static(key) => self.statics.get(key).cloned().unwrap_or_default(),
            Node::Not(inner) => self.universe - self.combine(inner),
            Node::Or(nodes) => nodes.iter().map(|n| self.combine(n)).union(),
            Node::And(nodes) => {
                // Intersect the positive operands, then subtract the negated
                // ones: `a and not b` is `a - b`, with no complement built.
                let (negated, positive): (Vec<&Node>, Vec<&Node>) =
                    nodes.iter().partition(|n| matches!(n, Node::Not(_)));
                let mut out = if positive.is_empty() {
                    self.universe.clone()
                } else {
                    positive.iter().map(|n| self.combine(n)).intersection()
                };
                for n in negated {
                    let Node::Not(inner) = n else {
                        unreachable!("partitioned on Not")
                    };
                    out -= self.combine(inner);
                }
                out
            }
        }
    }
}
