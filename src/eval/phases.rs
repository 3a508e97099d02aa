//! Phases 0 to 2 of an evaluation: indexes of the columns many atoms
//! test (postings, one pass for every `contains` literal), then the column
//! and branch atoms, then the enrollment atoms.

use super::algebra::Context;
use super::atoms::{Anchor, Needle, all_rows, branch_rows, codes_holding, column_rows, rows_with_codes, text_codes};
use super::coded::CodedConditions;
use super::enrolled::{EnrolledUsers, counted_values};
use super::plan::{Atom, Node, Plan};
use crate::ast::CmpOp;
use crate::checked::{ColumnTest, Test};
use crate::data::{Column, TextColumn};
use crate::dataset::Dataset;
use rayon::prelude::*;
use roaring::{MultiOps, RoaringBitmap};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per atom id, its rows (shared with the groups that are that atom alone)
/// and the time they took, or `None` for a column or branch atom used in
/// one place only.
pub(super) type AtomResults = Vec<Option<(Arc<RoaringBitmap>, Duration)>>;

/// What phase 0 found for an atom.
pub(super) enum Indexed {
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
pub(super) fn index_columns(plan: &Plan<'_>, data: &Dataset, answered: &[bool]) -> HashMap<usize, Indexed> {
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
pub(super) fn evaluate_atoms<'i>(
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

pub(super) fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed())
}

/// The column and test of a column atom.
pub(super) fn column_test<'d>(atom: &Atom<'d>, data: &'d Dataset) -> Option<(&'d Column, &'d ColumnTest)> {
    match atom {
        Atom::UserColumn(test) => Some((data.users.column(test.column), test)),
        Atom::EnrollmentColumn(test) => data.enrollments.as_ref().map(|e| (e.table.column(test.column), *test)),
        Atom::Branch(_) | Atom::Enrollment { .. } => None,
    }
}

/// A column or branch atom, from what phase 0 found for it if anything.
pub(super) fn leaf_atom<'i>(atom: &Atom<'_>, indexed: Option<&'i Indexed>, data: &Dataset) -> Cow<'i, RoaringBitmap> {
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
