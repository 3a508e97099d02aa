//! The users of matching enrollment rows, and how many rows each has:
//! tallied from the rows, or read from per-user counts of a value.

use super::atoms::{for_each_member, rows_where, text_codes};
use super::plan::Atom;
use crate::ast::CmpOp;
use crate::data::Column;
use crate::dataset::{Dataset, NO_USER};
use rayon::prelude::*;
use roaring::RoaringBitmap;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

/// Enrollment rows per parallel task when tallying users, as a power of two.
const ROWS_PER_TASK_BITS: u32 = 20;

/// For an enrollment-column atom on a column with per-value user counts,
/// the counts of the values it holds for.
pub(super) fn counted_values<'d>(atom: &Atom<'_>, data: &'d Dataset) -> Option<Vec<&'d [AtomicU16]>> {
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
pub(super) enum EnrolledUsers<'d> {
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
    pub(super) fn new<'d>(data: &Dataset, rows: &RoaringBitmap) -> EnrolledUsers<'d> {
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
    pub(super) fn from_runs<'d>(mut runs: Vec<(u32, u32)>) -> EnrolledUsers<'d> {
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
    pub(super) fn users(&self, count: Option<(CmpOp, u64)>, universe: &RoaringBitmap) -> RoaringBitmap {
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
pub(super) fn presence_decides(count: Option<(CmpOp, u64)>) -> bool {
    count.is_none_or(|(op, n)| n <= 1 && op.holds(1, n) == op.holds(u64::MAX, n))
}

#[cfg(test)]
mod tests {
    use super::super::atoms::all_rows;
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
