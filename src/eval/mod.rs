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

mod atoms;
mod coded;
mod plan;

pub(crate) use coded::UsersByPair;
pub use plan::dependency_closure;

use crate::ast::CmpOp;
use crate::ast::GroupStatus;
use crate::checked::CheckedRules;
use crate::checked::{ColumnTest, Test};
use crate::data::{Column, TextColumn};
use crate::dataset::{Dataset, NO_USER};
use atoms::{
    Anchor, Needle, all_rows, branch_rows, codes_holding, column_rows, for_each_member, rows_where, rows_with_codes,
    text_codes,
};
use coded::CodedConditions;
use plan::{Atom, Node, Plan};
use rayon::prelude::*;
use roaring::{MultiOps, RoaringBitmap};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
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
    let atoms_dropped_after = dropped_after(&atom_last_batch, batches.len());
    let groups_dropped_after = dropped_after(&group_last_batch, batches.len());
    let mut group_rows: Vec<Arc<RoaringBitmap>> = vec![Arc::default(); rules.groups.len()];
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
                    leaf: &leaf,
                    groups: &group_rows,
                    statics,
                };
                let task = GroupTask {
                    g,
                    reused_from: reused_from[g],
                    keep_rows: group_last_batch[g].is_some(),
                };
                evaluate_group(&plan, task, rules, data, previous, &context)
            })
            .collect();
        let mut members = Vec::with_capacity(done.len());
        for (group, kept_rows, unknown) in done {
            if let Some(rows) = kept_rows {
                group_rows[group.position] = rows;
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
            group_rows[g] = Arc::default();
        }
        let (sent, waited) = timed(|| send(members));
        waiting += waited;
        if !sent {
            break;
        }
    }
    phase_done("phase 3 (groups)");
    EvaluationSummary {
        static_groups: statics
            .iter()
            .map(|(k, rows)| (k.clone(), data.rows_to_ids(rows)))
            .collect(),
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
    /// Whether later groups need the rows it commits.
    keep_rows: bool,
}

/// One group's members (or those of the group it reuses); with
/// `keep_rows`, also the rows `member_of` and later groups of the same rule
/// see (what the group commits); and the `include`/`exclude` ids not in the
/// users table.
fn evaluate_group(
    plan: &Plan<'_>,
    task: GroupTask,
    rules: &CheckedRules,
    data: &Dataset,
    previous: &BTreeMap<String, RoaringBitmap>,
    context: &Context<'_, '_>,
) -> (GroupMembers, Option<Arc<RoaringBitmap>>, Vec<u32>) {
    let GroupTask {
        g,
        reused_from,
        keep_rows,
    } = task;
    let node = plan.groups[g].as_ref().expect("selected groups are planned");
    let (mut rows, took) = match reused_from {
        Some(f) => (Arc::clone(&context.groups[f]), Duration::ZERO),
        None => timed(|| context.combine(node)),
    };
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
    if !group.include.is_empty() || !group.exclude.is_empty() {
        let rows = Arc::make_mut(&mut rows);
        *rows |= listed_rows(&group.include);
        *rows -= listed_rows(&group.exclude);
    }
    let previous_rows = || -> RoaringBitmap {
        previous
            .get(&group.key)
            .map(|ids| ids.iter().filter_map(|id| data.row_of(id)).collect())
            .unwrap_or_default()
    };
    let status_adjusted = match group.status {
        GroupStatus::Active | GroupStatus::Draft => None,
        GroupStatus::Paused => Some(previous_rows()),
        GroupStatus::AddOnly => Some(previous_rows() | rows.as_ref()),
        GroupStatus::RemoveOnly => Some(previous_rows() & rows.as_ref()),
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
    let kept_rows = keep_rows.then(|| match &status_adjusted {
        Some(adjusted) => Arc::new(adjusted.clone()),
        None => Arc::clone(&rows),
    });
    let members = GroupMembers {
        key: group.key.clone(),
        name: group.name.clone(),
        status: group.status,
        position: g,
        members: data.rows_into_ids(rows),
        same_members_as: plan.same_members_as[g],
        status_adjusted: status_adjusted.map(|rows| data.rows_into_ids(rows)),
        elapsed: took + atom_time,
    };
    (members, kept_rows, unknown)
}

/// Per atom id, its rows (shared with the groups that are that atom alone)
/// and the time they took, or `None` for a column or branch atom used in
/// one place only.
type AtomResults = Vec<Option<(Arc<RoaringBitmap>, Duration)>>;

/// What phase 0 found for an atom.
enum Indexed {
    /// The distinct values a `contains`, `starts_with` or `ends_with` atom
    /// matches, by code.
    Codes(RoaringBitmap),
    /// The rows of an equality or `in` atom.
    Rows(RoaringBitmap),
}

/// The rules name few of a column's values when they name at most one in
/// this many: their rows are then gathered in one pass over the rows, not
/// through postings of every value.
const VALUES_PER_NAMED_VALUE: u64 = 8;

/// Phase 0: the per-value postings that equality and `in` tests use, one
/// column per task, before any atom waits on them, or, on a column whose
/// values the rules name few of, the rows of each such atom in one pass;
/// and every `contains`, `starts_with` and `ends_with` literal of a column
/// matched against its values in one pass, giving the codes of the values
/// each such atom matches (prefixes and suffixes are left to the REPL's
/// sorted values where it has them).
/// By atom id; atoms `answered` otherwise are left out.
fn index_columns(plan: &Plan<'_>, data: &Dataset, answered: &[bool]) -> HashMap<usize, Indexed> {
    // Per column, the equality and `in` atoms and the codes each names.
    let mut equal: Vec<(&TextColumn, Vec<(usize, RoaringBitmap)>)> = Vec::new();
    let mut containing: Vec<(&TextColumn, Vec<(usize, Needle)>)> = Vec::new();
    for (a, atom) in plan.atoms.iter().enumerate().filter(|(a, _)| !answered[*a]) {
        let Some((Column::Text(text), test)) = column_test(atom, data) else {
            continue;
        };
        match &test.test {
            Test::Compare(CmpOp::Eq, _) | Test::In(_) => {
                let codes = text_codes(text, &test.test).expect("codes of an equality");
                match equal.iter_mut().find(|(t, _)| std::ptr::eq(*t, text)) {
                    Some((_, atoms)) => atoms.push((a, codes)),
                    None => equal.push((text, vec![(a, codes)])),
                }
            }
            test if let Some(needle) = Needle::of(test) => {
                // The REPL's sorted values find a prefix or suffix by
                // binary search, with no pass.
                if needle.anchor != Anchor::Anywhere && text.sorted_values().is_some() {
                    continue;
                }
                match containing.iter_mut().find(|(t, _)| std::ptr::eq(*t, text)) {
                    Some((_, needles)) => needles.push((a, needle)),
                    None => containing.push((text, vec![(a, needle)])),
                }
            }
            _ => {}
        }
    }
    let (rows, codes) = rayon::join(
        || -> Vec<(usize, Indexed)> {
            equal
                .par_iter()
                .flat_map_iter(|(text, atoms)| {
                    let named: RoaringBitmap = atoms.iter().map(|(_, codes)| codes).union();
                    let few = named.len() * VALUES_PER_NAMED_VALUE <= text.values.len() as u64;
                    // A column of unique values finds its rows from each
                    // value's row (`rows_with_codes`), with no pass.
                    if text.has_postings() || !few || text.row_of_unique_value().is_some() {
                        text.postings();
                        return Vec::new();
                    }
                    let rows = text.rows_of_values(&named);
                    let rows_of = |code: u32| &rows[named.rank(code) as usize - 1];
                    atoms
                        .iter()
                        .map(|(a, codes)| (*a, Indexed::Rows(codes.iter().map(rows_of).union())))
                        .collect()
                })
                .collect()
        },
        || -> Vec<(usize, Indexed)> {
            containing
                .par_iter()
                .flat_map_iter(|(text, needles)| {
                    let batch: Vec<Needle> = needles.iter().map(|(_, n)| *n).collect();
                    let found = codes_holding(text, &batch).into_iter().map(Indexed::Codes);
                    needles.iter().map(|(a, _)| *a).zip(found)
                })
                .collect()
        },
    );
    rows.into_iter().chain(codes).collect()
}

/// Phases 1 and 2: the atoms of the plan, by atom id, over `users` (every
/// users row); `leaf` evaluates a column or branch atom.
///
/// A column or branch atom used in one place only (most `in` lists of a
/// large rules file) is left out: evaluated where it is used, its rows are
/// never held from phase 1 to that group's batch, and an enrollments column
/// atom whose condition is answered from per-user counts, or only in
/// `coded` conditions, is never evaluated at all.
fn evaluate_atoms<'i>(
    plan: &Plan<'_>,
    data: &Dataset,
    users: &RoaringBitmap,
    leaf: &(dyn Fn(usize) -> Cow<'i, RoaringBitmap> + Sync),
    coded: &CodedConditions<'_, '_>,
    trace: bool,
    phase_done: &dyn Fn(&str),
) -> AtomResults {
    let no_groups: Vec<Arc<RoaringBitmap>> = Vec::new();
    let statics = &data.static_groups;
    // Phase 1: column and branch atoms used in more than one place. Phase
    // 2: enrollment atoms, which combine enrollment-column atoms.
    let used_once = plan.used_once();
    let mut results: AtomResults = plan
        .atoms
        .par_iter()
        .enumerate()
        .map(|(a, atom)| {
            (!atom.is_enrollment() && !used_once[a] && !coded.answered[a])
                .then(|| timed(|| Arc::new(leaf(a).into_owned())))
        })
        .collect();
    phase_done("phase 1 (column and branch atoms)");
    // Atoms that differ only in their count share the rows and counts of
    // their condition.
    let mut by_condition: HashMap<Option<&Node>, Vec<usize>> = HashMap::new();
    for (a, atom) in plan.atoms.iter().enumerate() {
        if let Atom::Enrollment { condition, .. } = atom {
            by_condition.entry(condition.as_ref()).or_default().push(a);
        }
    }
    // The coded conditions are answered first, from one sort of the
    // enrollment rows by pair of values; each counts an equal share of its
    // time.
    let (coded_tallies, coded_took) = timed(|| coded.tally(data));
    let coded_share = coded_took / u32::try_from(coded_tallies.len().max(1)).unwrap_or(u32::MAX);
    let mut coded_tallies: HashMap<&Node, EnrolledUsers> = coded_tallies.into_iter().collect();
    let work: Vec<(Option<&Node>, Vec<usize>, Option<EnrolledUsers>)> = by_condition
        .into_iter()
        .map(|(condition, atoms)| {
            let tallied = condition.and_then(|c| coded_tallies.remove(c));
            (condition, atoms, tallied)
        })
        .collect();
    // 12.5 MB at 100M enrollments: built only for conditions the pairs of
    // values do not answer.
    let enrollment_universe = match &data.enrollments {
        Some(e) if work.iter().any(|(_, _, tallied)| tallied.is_none()) => all_rows(e.user_rows.len()),
        _ => RoaringBitmap::new(),
    };
    let enrollment_results: Vec<(usize, (Arc<RoaringBitmap>, Duration))> = work
        .into_par_iter()
        .flat_map_iter(|(condition, atoms, tallied)| {
            let (enrolled, shared) = match tallied {
                Some(enrolled) => (enrolled, coded_share),
                None => timed(|| {
                    let context = Context {
                        universe: &enrollment_universe,
                        atoms: &results,
                        leaf,
                        groups: &no_groups,
                        statics,
                    };
                    if let Some(Node::Atom(a)) = condition
                        && let Some(counts) = counted_values(&plan.atoms[*a], data)
                    {
                        return EnrolledUsers::Counted(counts);
                    }
                    let rows = match condition {
                        Some(c) => context.rows_of(c),
                        None => Cow::Borrowed(&enrollment_universe),
                    };
                    EnrolledUsers::new(data, &rows)
                }),
            };
            let atom_list = &plan.atoms;
            atoms.into_iter().map(move |a| {
                let Atom::Enrollment { count, .. } = &atom_list[a] else {
                    unreachable!("grouped enrollment atoms")
                };
                let (members, took) = timed(|| enrolled.users(*count, users));
                (a, (Arc::new(members), took + shared))
            })
        })
        .collect();
    for (a, result) in enrollment_results {
        results[a] = Some(result);
    }
    if trace {
        for (atom, result) in plan.atoms.iter().zip(&results) {
            if let Some((_, took)) = result {
                eprintln!("{:>10.3} ms  {atom:?}", took.as_secs_f64() * 1e3);
            }
        }
    }

    phase_done("phase 2 (enrollment atoms)");
    results
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed())
}

/// The column and test of a column atom.
fn column_test<'d>(atom: &Atom<'d>, data: &'d Dataset) -> Option<(&'d Column, &'d ColumnTest)> {
    match atom {
        Atom::UserColumn(test) => Some((data.users.column(test.column), test)),
        Atom::EnrollmentColumn(test) => data.enrollments.as_ref().map(|e| (e.table.column(test.column), *test)),
        Atom::Branch(_) | Atom::Enrollment { .. } => None,
    }
}

/// A column or branch atom, from what phase 0 found for it if anything.
fn leaf_atom<'i>(atom: &Atom<'_>, indexed: Option<&'i Indexed>, data: &Dataset) -> Cow<'i, RoaringBitmap> {
    Cow::Owned(match (atom, column_test(atom, data), indexed) {
        (_, _, Some(Indexed::Rows(rows))) => return Cow::Borrowed(rows),
        (_, Some((Column::Text(text), _)), Some(Indexed::Codes(codes))) => rows_with_codes(text, codes),
        (_, Some((column, test)), _) => column_rows(column, test),
        (Atom::Branch(test), ..) => match &data.org {
            Some(org) => branch_rows(data.users.column(test.column), org, test),
            None => RoaringBitmap::new(),
        },
        _ => RoaringBitmap::new(),
    })
}

/// Enrollment rows per parallel task when tallying users, as a power of two.
const ROWS_PER_TASK_BITS: u32 = 20;

/// For an enrollment-column atom on a column with per-value user counts,
/// the counts of the values it holds for.
fn counted_values<'d>(atom: &Atom<'_>, data: &'d Dataset) -> Option<Vec<&'d [AtomicU16]>> {
    let Atom::EnrollmentColumn(test) = atom else {
        return None;
    };
    let counts = data.user_counts_by_value(test.column)?;
    let Column::Text(text) = data.enrollments.as_ref()?.table.column(test.column) else {
        return None;
    };
    let codes = text_codes(text, &test.test)?;
    Some(codes.iter().map(|code| counts[code as usize].as_slice()).collect())
}

/// The users (rows) with matching enrollment rows, and how many each has.
enum EnrolledUsers<'d> {
    /// Few matching rows: the users that have some, ascending, and
    /// `counts[i]`, the matching rows of `users[i]`.
    Listed { users: Vec<u32>, counts: Vec<u32> },
    /// Many: the matching rows of every user, by users row. Thresholding
    /// it builds the bitmap a block of users at a time, far faster than
    /// pushing millions of listed users one by one.
    Dense(Vec<AtomicU32>),
    /// Only which users have a matching row, for counts that only ask
    /// that (see [`presence_decides`]).
    Present(RoaringBitmap),
    /// The rows matching one test on a column of few values: the per-user
    /// counts of the values it holds for ([`Dataset::user_counts_by_value`]),
    /// summed when a user is asked about.
    Counted(Vec<&'d [AtomicU16]>),
}

/// A tally is dense when it has at least one matching row per this many
/// users.
const USERS_PER_ROW_FOR_DENSE: u64 = 4;

impl EnrolledUsers<'_> {
    /// Tallies the users of the enrollment `rows` (rows of unknown users
    /// are ignored).
    fn new<'d>(data: &Dataset, rows: &RoaringBitmap) -> EnrolledUsers<'d> {
        let dense = rows.len() * USERS_PER_ROW_FOR_DENSE >= data.user_count() as u64;
        EnrolledUsers::tally(data, rows, dense)
    }

    fn tally<'d>(data: &Dataset, rows: &RoaringBitmap, dense: bool) -> EnrolledUsers<'d> {
        let Some(enrollments) = &data.enrollments else {
            return EnrolledUsers::Listed {
                users: Vec::new(),
                counts: Vec::new(),
            };
        };
        // Each task tallies its range of rows into runs of one user; rows
        // stored user by user give one run per user and no sort.
        let ranges = (rows.max().unwrap_or(0) >> ROWS_PER_TASK_BITS) + 1;
        let runs_of = |range: u32, on_run: &mut dyn FnMut(u32, u32)| {
            let start = range << ROWS_PER_TASK_BITS;
            let mut run: Option<(u32, u32)> = None;
            // Each slice's users are read in a loop of their own: the
            // reads, scattered over the enrollments, then wait on memory
            // side by side instead of one at a time behind the counting.
            let mut users_of_members = Vec::new();
            for_each_member(rows, start..start.saturating_add(1 << ROWS_PER_TASK_BITS), |members| {
                users_of_members.clear();
                users_of_members.extend(members.iter().map(|&e| enrollments.user_rows[e as usize]));
                for &user in &users_of_members {
                    match &mut run {
                        _ if user == NO_USER => {}
                        Some((last, count)) if *last == user => *count += 1,
                        _ => {
                            if let Some((last, count)) = run.replace((user, 1)) {
                                on_run(last, count);
                            }
                        }
                    }
                }
            });
            if let Some((last, count)) = run {
                on_run(last, count);
            }
        };
        if dense {
            let counts: Vec<AtomicU32> = (0..data.user_count())
                .into_par_iter()
                .map(|_| AtomicU32::new(0))
                .collect();
            (0..ranges).into_par_iter().for_each(|range| {
                runs_of(range, &mut |user, count| {
                    counts[user as usize].fetch_add(count, Ordering::Relaxed);
                });
            });
            return EnrolledUsers::Dense(counts);
        }
        let runs: Vec<(u32, u32)> = (0..ranges)
            .into_par_iter()
            .flat_map_iter(|range| {
                let mut runs = Vec::new();
                runs_of(range, &mut |user, count| runs.push((user, count)));
                runs
            })
            .collect();
        EnrolledUsers::from_runs(runs)
    }

    /// The users of `runs`, (user, matching rows) pairs in any order, a
    /// user in as many pairs as it has runs of rows.
    fn from_runs<'d>(mut runs: Vec<(u32, u32)>) -> EnrolledUsers<'d> {
        if !runs.is_sorted_by_key(|&(user, _)| user) {
            runs.par_sort_unstable_by_key(|&(user, _)| user);
        }
        let mut users: Vec<u32> = Vec::with_capacity(runs.len());
        let mut counts: Vec<u32> = Vec::with_capacity(runs.len());
        for (user, count) in runs {
            if users.last() == Some(&user) {
                *counts.last_mut().expect("a count per user") += count;
            } else {
                users.push(user);
                counts.push(count);
            }
        }
        EnrolledUsers::Listed { users, counts }
    }

    /// The users with a matching row, or whose number of matching rows
    /// satisfies `count`; users without rows count 0, so when 0 satisfies
    /// it the result starts from `universe` (every users row).
    fn users(&self, count: Option<(CmpOp, u64)>, universe: &RoaringBitmap) -> RoaringBitmap {
        let holds = |rows: u32| match count {
            None => rows > 0,
            Some((op, n)) => op.holds(u64::from(rows), n),
        };
        let (users, counts) = match self {
            EnrolledUsers::Dense(counts) => {
                return rows_where(counts.len(), |u| holds(counts[u].load(Ordering::Relaxed)));
            }
            EnrolledUsers::Counted(values) => {
                return rows_where(universe.len() as usize, |u| {
                    holds(
                        values
                            .iter()
                            .map(|counts| u32::from(counts[u].load(Ordering::Relaxed)))
                            .sum(),
                    )
                });
            }
            EnrolledUsers::Present(present) => {
                return match (holds(1), holds(0)) {
                    (true, true) => universe.clone(),
                    (true, false) => present.clone(),
                    (false, true) => universe - present,
                    (false, false) => RoaringBitmap::new(),
                };
            }
            EnrolledUsers::Listed { users, counts } => (users, counts),
        };
        let with_count = |wanted: bool| {
            RoaringBitmap::from_sorted_iter(
                users
                    .iter()
                    .zip(counts)
                    .filter(|(_, c)| holds(**c) == wanted)
                    .map(|(u, _)| *u),
            )
            .expect("users ascend")
        };
        if holds(0) {
            universe - with_count(false)
        } else {
            with_count(true)
        }
    }
}

/// Whether `count` holds alike for every user with matching rows, however
/// many: whether a user has any then decides it (`>= 1`, `< 1`, `> 0`,
/// no count at all).
fn presence_decides(count: Option<(CmpOp, u64)>) -> bool {
    count.is_none_or(|(op, n)| n <= 1 && op.holds(1, n) == op.holds(u64::MAX, n))
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

/// What a tree is combined against: its table's rows, evaluated atoms (and
/// how to evaluate one not held, whose rows may outlive the context), and
/// the groups finished so far.
struct Context<'a, 'i: 'a> {
    universe: &'a RoaringBitmap,
    atoms: &'a [Option<(Arc<RoaringBitmap>, Duration)>],
    leaf: &'a (dyn Fn(usize) -> Cow<'i, RoaringBitmap> + Sync),
    groups: &'a [Arc<RoaringBitmap>],
    statics: &'a BTreeMap<String, RoaringBitmap>,
}

impl<'a> Context<'a, '_> {
    /// The rows of `node`: shared when they are held (an evaluated atom, a
    /// group), else made.
    fn combine(&self, node: &Node) -> Arc<RoaringBitmap> {
        match node {
            Node::Atom(a) if let Some((rows, _)) = &self.atoms[*a] => Arc::clone(rows),
            Node::Group(g) => Arc::clone(&self.groups[*g]),
            _ => Arc::new(self.rows_of(node).into_owned()),
        }
    }

    /// The rows of `node`, borrowed when they are held (an evaluated atom,
    /// a group, the universe): operands are combined where they lie, never
    /// copied first. At millions of rows a copy costs about as much as the
    /// operation itself.
    fn rows_of(&self, node: &Node) -> Cow<'a, RoaringBitmap> {
        match node {
            Node::Const(true) => Cow::Borrowed(self.universe),
            Node::Const(false) => Cow::Owned(RoaringBitmap::new()),
            Node::Atom(a) => match &self.atoms[*a] {
                Some((rows, _)) => Cow::Borrowed(rows.as_ref()),
                None => (self.leaf)(*a),
            },
            Node::Group(g) => Cow::Borrowed(self.groups[*g].as_ref()),
            Node::Static(key) => self
                .statics
                .get(key)
                .map_or_else(|| Cow::Owned(RoaringBitmap::new()), Cow::Borrowed),
            Node::Not(inner) => Cow::Owned(self.universe - self.rows_of(inner).as_ref()),
            Node::Or(nodes) if nodes.iter().any(|n| matches!(n, Node::Not(_))) => {
                // `not a or b` is the complement of `a and not b`: one
                // complement of a set that is often small, where each
                // negated operand would be a complement over every row.
                let (negated, positive) = split_negated(nodes);
                Cow::Owned(self.universe - &self.rows_in_all_but(negated, positive))
            }
            Node::Or(nodes) => Cow::Owned(self.rows_of_each(nodes).iter().map(AsRef::as_ref).union()),
            Node::And(nodes) => {
                let (negated, positive) = split_negated(nodes);
                Cow::Owned(self.rows_in_all_but(positive, negated))
            }
        }
    }

    /// The rows in every node of `all` (every row when there is none) and
    /// in none of `none`: the intersection first, then each of `none`
    /// subtracted, and evaluated, only while rows are left. `a and not b`
    /// is `a - b`, with no complement built.
    fn rows_in_all_but(&self, all: Vec<&Node>, none: Vec<&Node>) -> RoaringBitmap {
        let mut out = if all.is_empty() {
            self.universe.clone()
        } else {
            intersection(self.rows_of_each(all))
        };
        for node in none {
            if out.is_empty() {
                break;
            }
            out -= self.rows_of(node).as_ref();
        }
        out
    }

    /// Each node's rows, side by side: a node's atoms may be evaluated here
    /// rather than in the atom phases.
    fn rows_of_each<'n>(&self, nodes: impl IntoParallelIterator<Item = &'n Node>) -> Vec<Cow<'a, RoaringBitmap>> {
        nodes.into_par_iter().map(|n| self.rows_of(n)).collect()
    }
}

/// The operands of `nodes` under a `not`, and the others.
fn split_negated(nodes: &[Node]) -> (Vec<&Node>, Vec<&Node>) {
    let mut negated = Vec::new();
    let mut others = Vec::new();
    for node in nodes {
        match node {
            Node::Not(inner) => negated.push(inner.as_ref()),
            other => others.push(other),
        }
    }
    (negated, others)
}

/// The rows in every operand. The smallest goes first, so that each step
/// works on at most its rows; two borrowed operands are intersected into a
/// new bitmap, so that neither is copied whole.
fn intersection(mut operands: Vec<Cow<'_, RoaringBitmap>>) -> RoaringBitmap {
    operands.sort_by_cached_key(|rows| rows.len());
    let mut operands = operands.into_iter();
    let mut out = match (operands.next(), operands.next()) {
        (None, _) => return RoaringBitmap::new(),
        (Some(only), None) => return only.into_owned(),
        (Some(Cow::Owned(mut first)), Some(second)) => {
            first &= second.as_ref();
            first
        }
        (Some(Cow::Borrowed(first)), Some(second)) => first & second.as_ref(),
    };
    for rows in operands {
        if out.is_empty() {
            break;
        }
        out &= rows.as_ref();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::OpenTable;
    use crate::dataset::OpenInputs;
    use std::collections::BTreeSet;

    /// Enrollments of more rows than one tallying task takes, stored out of
    /// user order, or user by user with a user across a task boundary:
    /// every row counts once.
    #[test]
    fn enrolled_users_count_every_row_over_several_tasks() {
        let rows = (1usize << ROWS_PER_TASK_BITS) + 4321;
        let shuffled = |e: usize| ((e * 7) % 6) as f64; // user 5 is unknown
        let user_by_user = |e: usize| (e * 5 / rows) as f64; // user 4 spans two tasks
        check_tally(rows, &shuffled);
        check_tally(rows, &user_by_user);
    }

    /// Presence decides a count exactly when the count holds alike for
    /// one matching row and for any more.
    #[test]
    fn presence_decides_the_counts_that_hold_alike_for_any_rows() {
        use CmpOp::*;
        assert!(presence_decides(None));
        for op in [Eq, Ne, Lt, Le, Gt, Ge] {
            for n in 0..4 {
                let alike = (1..10).all(|rows| op.holds(rows, n) == op.holds(1, n));
                assert_eq!(presence_decides(Some((op, n))), alike, "{op:?} {n}");
            }
        }
    }

    fn check_tally(rows: usize, user_of: &dyn Fn(usize) -> f64) {
        let users = 5u32;
        let users_table = OpenTable::from_columns(
            "users",
            vec![("user_id".into(), Column::Number((0..users).map(f64::from).collect()))],
        );
        let enrollments = OpenTable::from_columns(
            "enrollments",
            vec![
                ("user_id".into(), Column::Number((0..rows).map(user_of).collect())),
                (
                    "course".into(),
                    Column::Text((0..rows).map(|_| Some("C".to_string())).collect()),
                ),
                ("status".into(), Column::Text((0..rows).map(|_| None).collect())),
            ],
        );
        let data = OpenInputs::from_tables(users_table, Some(enrollments), None, None)
            .unwrap()
            .load_all(&BTreeSet::new())
            .unwrap();
        let mut expected = [0u32; 6];
        for e in 0..rows {
            expected[user_of(e) as usize] += 1;
        }
        let universe = all_rows(users as usize);
        let expected_users =
            |holds: &dyn Fn(u32) -> bool| -> Vec<u32> { (0..users).filter(|&u| holds(expected[u as usize])).collect() };
        for dense in [false, true] {
            let enrolled = EnrolledUsers::tally(&data, &all_rows(rows), dense);
            let members = |count| enrolled.users(count, &universe).iter().collect::<Vec<_>>();
            assert_eq!(members(None), expected_users(&|c| c > 0), "dense: {dense}");
            let at_least = u64::from(expected[1]);
            assert_eq!(
                members(Some((CmpOp::Ge, at_least))),
                expected_users(&|c| u64::from(c) >= at_least),
                "dense: {dense}"
            );
            assert_eq!(
                members(Some((CmpOp::Lt, at_least))),
                expected_users(&|c| u64::from(c) < at_least),
                "dense: {dense}"
            );
        }
    }
}
