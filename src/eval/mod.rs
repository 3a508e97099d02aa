//! Checked rules + loaded data → the members of every group, as roaring
//! bitmaps of user ids.
//!
//! Evaluation runs in parallel phases: the postings and `contains` matches
//! of the columns the rules test (or, on a column whose values the rules
//! name few of, the rows of those values); every distinct column and branch atom
//! used in more than one place, once; every distinct enrollment atom once
//! (over those bitmaps, or, for conditions such as `completed("C")`, from
//! the users of each (course, status) pair); then each group's bitmap
//! algebra, batch by batch in `member_of` order. An atom used in one place
//! only is evaluated there.
//!
//! This module schedules the groups; `plan` shares atoms, `phases` runs
//! phases 0 to 2, `atoms` evaluates one column or branch test, `enrolled`
//! and `coded` tally enrollment rows per user, `algebra` combines a group's
//! tree.

mod algebra;
mod atoms;
mod coded;
mod enrolled;
pub mod index;
mod phases;
mod plan;

pub(crate) use coded::UsersByPair;
pub use plan::dependency_closure;

use crate::ast::GroupStatus;
use crate::checked::CheckedRules;
use crate::dataset::Dataset;
use algebra::{Context, atom_ids};
use atoms::all_rows;
use coded::CodedConditions;
use phases::{evaluate_atoms, index_columns, leaf_atom, timed};
use plan::Plan;
use rayon::prelude::*;
use roaring::RoaringBitmap;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
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
    /// Its place in the rules file (0 for the first group).
    pub position: usize,
    /// Member user ids, as the rule and `include`/`exclude` evaluate now:
    /// shared with the atom a group's rule consists of, rather than a copy
    /// of millions of rows.
    pub members: Arc<RoaringBitmap>,
    /// The position of a group handed over before this one (in an earlier
    /// batch, or earlier in the same one) that commits exactly the same
    /// members: an active group with the same rule and no
    /// `include`/`exclude` lists, like this one.
    pub same_members_as: Option<usize>,
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
    /// Everything else it found.
    pub summary: EvaluationSummary,
}

/// What an evaluation found besides the members of rule groups.
#[derive(Debug, Clone)]
pub struct EvaluationSummary {
    /// Members of static groups (user ids), by key.
    pub static_groups: BTreeMap<String, RoaringBitmap>,
    /// Atoms in the evaluated rules, counting repeats.
    pub atom_uses: usize,
    /// Distinct atoms actually evaluated.
    pub distinct_atoms: usize,
    /// `include`/`exclude` ids not in the users table (ignored), by group key.
    pub unknown_listed_ids: BTreeMap<String, Vec<u32>>,
    /// Time spent evaluating, not counting the waits for the caller to take
    /// a batch.
    pub elapsed: Duration,
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
    let mut groups = Vec::new();
    let summary = evaluate_each(rules, data, selected, previous, |batch| {
        groups.extend(batch);
        Ok::<(), std::convert::Infallible>(())
    });
    let Ok(summary) = summary;
    groups.sort_by_key(|g| g.position);
    Evaluation { groups, summary }
}

/// Groups evaluated side by side in one batch: enough to keep every core
/// busy, few enough that a batch's members are a small part of memory.
const GROUPS_PER_BATCH: usize = 64;

/// Evaluates like [`evaluate_after`], but hands the groups to `on_batch` a
/// batch at a time, in `member_of` order (a group comes after the groups it
/// refers to), and keeps only the members later groups refer to. A run over
/// millions of users and thousands of groups then holds the shared atoms
/// and a few batches of members, never every group's members at once.
///
/// `on_batch` runs on the calling thread while the next batch is evaluated
/// on another, so storing one batch overlaps evaluating the next. An error
/// from `on_batch` stops the evaluation and is returned.
pub fn evaluate_each<E>(
    rules: &CheckedRules,
    data: &Dataset,
    selected: Option<&[bool]>,
    previous: &BTreeMap<String, RoaringBitmap>,
    mut on_batch: impl FnMut(Vec<GroupMembers>) -> Result<(), E>,
) -> Result<EvaluationSummary, E> {
    std::thread::scope(|scope| {
        // One batch waits while the caller handles the one before it.
        let (batches, evaluated) = std::sync::mpsc::sync_channel(1);
        let evaluation =
            scope.spawn(move || evaluate_batches(rules, data, selected, previous, |batch| batches.send(batch).is_ok()));
        let failed = evaluated.iter().find_map(|batch| on_batch(batch).err());
        // A caller that failed stops the evaluation at its next batch.
        drop(evaluated);
        let summary = evaluation
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        failed.map_or(Ok(summary), Err)
    })
}

/// Evaluates the groups and hands each batch to `send`, stopping early when
/// it returns `false`.
fn evaluate_batches(
    rules: &CheckedRules,
    data: &Dataset,
    selected: Option<&[bool]>,
    previous: &BTreeMap<String, RoaringBitmap>,
    mut send: impl FnMut(Vec<GroupMembers>) -> bool,
) -> EvaluationSummary {
    let all = vec![true; rules.groups.len()];
    let plan = Plan::new(rules, selected.unwrap_or(&all));
    let users = all_rows(data.user_count());
    let statics = &data.static_groups;
    let trace = std::env::var_os("DYNGROUPS_TRACE_ATOMS").is_some();
    let started = Instant::now();
    let phase_done = |phase: &str| {
        if trace {
            eprintln!("{:>10.3} ms  {phase} done", started.elapsed().as_secs_f64() * 1e3);
        }
    };
    let coded = CodedConditions::find(&plan, data);
    let indexed = index_columns(&plan, data, &coded.answered);
    phase_done("phase 0 (postings, contains)");
    let leaf = |a: usize| leaf_atom(&plan.atoms[a], indexed.get(&a), data);
    let mut results = evaluate_atoms(&plan, data, &users, &leaf, &coded, trace, &phase_done);

    // Phase 3: groups, batch by batch. Members are kept past their batch
    // only until the last group that refers to them by `member_of`, or takes
    // them as its own (the same rule), and each atom is dropped after the
    // last batch that uses it (the enrollment-column atoms already): in a
    // large run the atoms are most of what memory holds.
    let batches: Vec<&[usize]> = plan.levels.iter().flat_map(|l| l.chunks(GROUPS_PER_BATCH)).collect();
    let mut batch_of = vec![usize::MAX; rules.groups.len()];
    for (b, batch) in batches.iter().enumerate() {
        for &g in *batch {
            batch_of[g] = b;
        }
    }
    // A group with the same rule as a group of an earlier batch takes its
    // members; one in the same batch cannot wait for them.
    let reused_from: Vec<Option<usize>> = plan
        .same_members_as
        .iter()
        .enumerate()
        .map(|(g, same)| same.filter(|&f| batch_of[f] < batch_of[g]))
        .collect();
    let mut atom_last_batch: Vec<Option<usize>> = vec![None; plan.atoms.len()];
    let mut group_last_batch: Vec<Option<usize>> = vec![None; rules.groups.len()];
    for (b, batch) in batches.iter().enumerate() {
        for &g in *batch {
            if let Some(f) = reused_from[g] {
                group_last_batch[f] = Some(b);
                continue;
            }
            let tree = plan.groups[g].as_ref().expect("selected groups are planned");
            for a in atom_ids(tree) {
                atom_last_batch[a] = Some(b);
            }
            for f in tree.referenced_groups() {
                group_last_batch[f] = Some(b);
            }
        }
    }
    for (a, last) in atom_last_batch.iter().enumerate() {
        if last.is_none() {
            results[a] = None;
        }
    }
    // Phase 3 combines user ids, not rows: each atom the groups use is
    // mapped once here, where mapping every group's members took up to half
    // of a run when ids do not equal rows (thousands of groups of millions).
    // The enrollment-column atoms, in enrollment rows, were dropped above.
    results.par_iter_mut().flatten().for_each(|(members, took)| {
        let (ids, mapping) = timed(|| data.rows_into_ids(Arc::clone(members)));
        *members = ids;
        *took += mapping;
    });
    let users = data.rows_into_ids(users);
    let statics: BTreeMap<String, RoaringBitmap> = statics
        .iter()
        .map(|(k, rows)| (k.clone(), data.rows_to_ids(rows)))
        .collect();
    let leaf_ids = |a: usize| match leaf(a) {
        rows if data.ids_are_rows() => rows,
        rows => Cow::Owned(data.rows_to_ids(&rows)),
    };
    let atoms_dropped_after = dropped_after(&atom_last_batch, batches.len());
    let groups_dropped_after = dropped_after(&group_last_batch, batches.len());
    let mut group_members: Vec<Arc<RoaringBitmap>> = vec![Arc::default(); rules.groups.len()];
    let mut unknown_listed_ids = BTreeMap::new();
    let mut waiting = Duration::ZERO;
    for ((batch, atoms_dropped), groups_dropped) in
        batches.into_iter().zip(atoms_dropped_after).zip(groups_dropped_after)
    {
        let done: Vec<(GroupMembers, Option<Arc<RoaringBitmap>>, Vec<u32>)> = batch
            .par_iter()
            .map(|&g| {
                let context = Context {
                    universe: &users,
                    atoms: &results,
                    leaf: &leaf_ids,
                    groups: &group_members,
                    statics: &statics,
                };
                let task = GroupTask {
                    g,
                    reused_from: reused_from[g],
                    keep_members: group_last_batch[g].is_some(),
                };
                evaluate_group(&plan, task, rules, previous, &context)
            })
            .collect();
        let mut members = Vec::with_capacity(done.len());
        for (group, kept_members, unknown) in done {
            if let Some(rows) = kept_members {
                group_members[group.position] = rows;
            }
            if !unknown.is_empty() {
                unknown_listed_ids.insert(group.key.clone(), unknown);
            }
            members.push(group);
        }
        for a in atoms_dropped {
            results[a] = None;
        }
        for g in groups_dropped {
            group_members[g] = Arc::default();
        }
        let (sent, waited) = timed(|| send(members));
        waiting += waited;
        if !sent {
            break;
        }
    }
    phase_done("phase 3 (groups)");
    EvaluationSummary {
        static_groups: statics,
        atom_uses: plan.atom_uses,
        distinct_atoms: plan.atoms.len(),
        unknown_listed_ids,
        elapsed: started.elapsed() - waiting,
    }
}

/// The batches after which each atom or group is dropped, from the last
/// batch that needs it (`None`: none does).
fn dropped_after(last_batch: &[Option<usize>], batches: usize) -> Vec<Vec<usize>> {
    let mut dropped = vec![Vec::new(); batches];
    for (item, last) in last_batch.iter().enumerate() {
        if let Some(b) = last {
            dropped[*b].push(item);
        }
    }
    dropped
}

/// One group of a batch to evaluate.
struct GroupTask {
    /// The group's index.
    g: usize,
    /// A group of an earlier batch with the same rule, whose members it
    /// takes.
    reused_from: Option<usize>,
    /// Whether later groups need the members it commits.
    keep_members: bool,
}

/// One group's members (or those of the group it reuses); with
/// `keep_members`, also the members `member_of` and later groups of the same rule
/// see (what the group commits); and the `include`/`exclude` ids not in the
/// users table.
fn evaluate_group(
    plan: &Plan<'_>,
    task: GroupTask,
    rules: &CheckedRules,
    previous: &BTreeMap<String, RoaringBitmap>,
    context: &Context<'_, '_>,
) -> (GroupMembers, Option<Arc<RoaringBitmap>>, Vec<u32>) {
    let GroupTask {
        g,
        reused_from,
        keep_members,
    } = task;
    let node = plan.groups[g].as_ref().expect("selected groups are planned");
    let (mut ids, took) = match reused_from {
        Some(f) => (Arc::clone(&context.groups[f]), Duration::ZERO),
        None => timed(|| context.combine(node)),
    };
    let group = &rules.groups[g];
    let mut unknown = Vec::new();
    let mut listed_users = |listed: &[u32]| -> RoaringBitmap {
        listed
            .iter()
            .copied()
            .filter(|&id| {
                let known = context.universe.contains(id);
                if !known {
                    unknown.push(id);
                }
                known
            })
            .collect()
    };
    if !group.include.is_empty() || !group.exclude.is_empty() {
        let ids = Arc::make_mut(&mut ids);
        *ids |= listed_users(&group.include);
        *ids -= listed_users(&group.exclude);
    }
    let previous_users = || -> RoaringBitmap {
        previous
            .get(&group.key)
            .map(|last| last & context.universe)
            .unwrap_or_default()
    };
    let status_adjusted = match group.status {
        GroupStatus::Active | GroupStatus::Draft => None,
        GroupStatus::Paused => Some(previous_users()),
        GroupStatus::AddOnly => Some(previous_users() | ids.as_ref()),
        GroupStatus::RemoveOnly => Some(previous_users() & ids.as_ref()),
    };
    let atom_time: Duration = match reused_from {
        Some(_) => Duration::ZERO,
        None => atom_ids(node)
            .iter()
            .filter_map(|&a| context.atoms[a].as_ref().map(|r| r.1))
            .sum(),
    };
    // `member_of` sees what a group commits. Only drafts refer to drafts,
    // and they preview the evaluated members.
    let kept_members = keep_members.then(|| match &status_adjusted {
        Some(adjusted) => Arc::new(adjusted.clone()),
        None => Arc::clone(&ids),
    });
    let members = GroupMembers {
        key: group.key.clone(),
        name: group.name.clone(),
        status: group.status,
        position: g,
        members: ids,
        same_members_as: plan.same_members_as[g],
        status_adjusted,
        elapsed: took + atom_time,
    };
    (members, kept_members, unknown)
}
