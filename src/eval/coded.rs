//! Enrollment conditions made only of tests on enrollments text columns,
//! as `enrolled("C")` and `completed("C")` are, answered together from the
//! users of each pair of values: (course, status) → users.
//!
//! Thousands of such conditions (one per course a rules file names) would
//! otherwise need the row bitmaps of every course, intersected with those
//! of a status, and then a tally that looks up the user of each of their
//! rows. Here one counting sort of the enrollment rows by their pair of
//! values, reading the columns in order, lists each pair's users, and each
//! condition unions the lists of the pairs it holds for.

use super::atoms::text_codes;
use super::enrolled::{EnrolledUsers, counted_values, presence_decides};
use super::phases::column_test;
use super::plan::{Atom, Node, Plan};
use crate::data::{Column, NULL_CODE, TextColumn};
use crate::dataset::{Dataset, Enrollments, NO_USER};
use rayon::prelude::*;
use roaring::RoaringBitmap;
use std::collections::{HashMap, HashSet};

/// The most distinct values of the second column of a condition (a status):
/// the pairs of values number picked values × these.
const MAX_SECOND_VALUES: usize = 64;

/// A condition whose rows number at least one per this many users gathers
/// its users in a bitset of every user, whose bytes are then at most 8 per
/// row: cheaper than sorting and uniting the users of its pairs.
const USERS_PER_MEMBER_FOR_BITSET: usize = 64;

/// Enrollment rows a task of the pair sort sorts: its scratch of a pair per
/// row is then 4 MB.
const ROWS_PER_SORT_TASK: usize = 1 << 20;

/// Two enrollments columns, by index: a first, and a second if any.
type PairColumns = (usize, Option<usize>);

/// The enrollment conditions of a plan answered from the users of pairs of
/// values, and the atoms only they use.
pub(super) struct CodedConditions<'p, 'd> {
    conditions: Vec<CodedCondition<'p, 'd>>,
    /// Per atom id, whether every use of it is in one of these conditions:
    /// such an atom's rows are never needed.
    pub answered: Vec<bool>,
}

/// A condition: some values of one column (a course), and, if it tests a
/// second column (a status), the values of that one it holds for.
struct CodedCondition<'p, 'd> {
    node: &'p Node,
    /// The column of most distinct values among the condition's tests,
    /// and the codes of those it holds for.
    first: (&'d TextColumn, Vec<u32>),
    /// The other column, and per code whether the tests on it hold.
    second: Option<(&'d TextColumn, Vec<bool>)>,
    /// The enrollments columns of `first` and `second`.
    columns: PairColumns,
    /// Whether an atom of the condition asks how many rows a user has
    /// (beyond whether it has any).
    counted: bool,
}

impl<'p, 'd> CodedConditions<'p, 'd> {
    /// Finds the conditions of `plan` answered from pairs of values: a test
    /// on a text column, or an `and` of tests on at most two text columns,
    /// the second of at most [`MAX_SECOND_VALUES`] values, whose first
    /// column has no postings yet, or whose pairs were sorted at load (the
    /// REPL builds both at load, and postings find the few rows of one
    /// rule faster than a pass over every row, if no pairs). A single test
    /// on a column of per-user counts is left to those counts.
    pub(super) fn find(plan: &'p Plan<'d>, data: &'d Dataset) -> CodedConditions<'p, 'd> {
        let mut counted: HashMap<&Node, bool> = HashMap::new();
        for atom in &plan.atoms {
            if let Atom::Enrollment {
                condition: Some(node),
                count,
            } = atom
            {
                *counted.entry(node).or_default() |= !presence_decides(*count);
            }
        }
        let mut conditions = Vec::new();
        let mut seen = HashSet::new();
        let mut coded_uses = vec![0usize; plan.atoms.len()];
        for atom in &plan.atoms {
            let Atom::Enrollment {
                condition: Some(node), ..
            } = atom
            else {
                continue;
            };
            if !seen.contains(node) {
                let Some(condition) = CodedCondition::of(node, counted[node], plan, data) else {
                    continue;
                };
                seen.insert(node);
                conditions.push(condition);
            }
            node.for_each_leaf(|leaf| {
                if let Node::Atom(a) = leaf {
                    coded_uses[*a] += 1;
                }
            });
        }
        let answered = plan
            .uses()
            .into_iter()
            .zip(coded_uses)
            .map(|(uses, coded)| coded > 0 && coded == uses)
            .collect();
        CodedConditions { conditions, answered }
    }

    /// Each condition, with the users of its matching rows (and how many
    /// each has, where an atom of the condition asks).
    pub(super) fn tally(&self, data: &Dataset) -> Vec<(&'p Node, EnrolledUsers<'d>)> {
        let Some(enrollments) = &data.enrollments else {
            return Vec::new();
        };
        // The conditions the pairs sorted at load answer, and one sort per
        // other pair of columns (in practice one: course, status); a
        // condition of one column goes with a pair of the same first
        // column, if any.
        let sorted_at_load = data.users_by_pair();
        let (at_load, mut rest): (Vec<&CodedCondition>, Vec<&CodedCondition>) = self
            .conditions
            .iter()
            .partition(|c| sorted_at_load.is_some_and(|pairs| pairs.covers(c.columns)));
        rest.sort_by_key(|c| c.second.is_none());
        let mut sorts: Vec<(PairColumns, Vec<&CodedCondition>)> = Vec::new();
        for condition in rest {
            let (first, second) = condition.columns;
            match sorts
                .iter_mut()
                .find(|((f, s), _)| *f == first && (second.is_none() || second == *s))
            {
                Some((_, conditions)) => conditions.push(condition),
                None => sorts.push((condition.columns, vec![condition])),
            }
        }
        fn answer<'p, 'd>(
            pairs: &UsersByPair,
            conditions: &[&CodedCondition<'p, 'd>],
        ) -> Vec<(&'p Node, EnrolledUsers<'d>)> {
            let enrolled: Vec<EnrolledUsers<'d>> = conditions.par_iter().map(|c| pairs.enrolled(c)).collect();
            conditions.iter().map(|c| c.node).zip(enrolled).collect()
        }
        let mut answered: Vec<(&'p Node, EnrolledUsers<'d>)> = match sorted_at_load {
            Some(pairs) => answer(pairs, &at_load),
            None => Vec::new(),
        };
        for (columns, conditions) in sorts {
            let first = conditions[0].first.0;
            let second = conditions.iter().find_map(|c| c.second.as_ref().map(|(text, _)| *text));
            let pairs = UsersByPair::of_conditions(
                columns,
                first,
                second,
                &conditions,
                &enrollments.user_rows,
                data.user_count(),
            );
            answered.extend(answer(&pairs, &conditions));
        }
        answered
    }
}

/// The users of the enrollment rows of each pair of values of two columns,
/// for the first column's values some condition picks (or all of them):
/// per task (a range of rows), the users in row order, grouped by pair.
pub(crate) struct UsersByPair {
    /// The enrollments columns: the first, and the second if any.
    columns: PairColumns,
    /// Per code of the first column, its place among the picked values.
    place_of: Vec<u32>,
    /// Pairs per picked value: the second column's values, and one for
    /// rows without one.
    seconds: usize,
    /// Per task, where each pair's users start (and the last end), and the
    /// users.
    tasks: Vec<(Vec<usize>, Vec<u32>)>,
    /// Rows of the users table.
    users: usize,
}

impl UsersByPair {
    /// The users of every pair of values of the enrollments text column of
    /// most distinct values and the first other text column of at most
    /// [`MAX_SECOND_VALUES`] values.
    pub(crate) fn of_whole_columns(enrollments: &Enrollments, users: usize) -> Option<UsersByPair> {
        let texts = || {
            enrollments
                .table
                .columns
                .iter()
                .enumerate()
                .filter_map(|(c, column)| match column {
                    Some(Column::Text(text)) => Some((c, text)),
                    _ => None,
                })
        };
        let (first, first_text) = texts().max_by_key(|(_, text)| text.values.len())?;
        let second = texts().find(|&(c, text)| c != first && text.values.len() <= MAX_SECOND_VALUES);
        let place_of: Vec<u32> = (0..first_text.values.len() as u32).collect();
        let columns = (first, second.map(|(c, _)| c));
        let second = second.map(|(_, text)| text);
        Some(UsersByPair::sort(
            columns,
            first_text,
            second,
            place_of,
            &enrollments.user_rows,
            users,
        ))
    }

    /// Whether these pairs answer a condition on `columns` (a condition on
    /// the first column alone goes with any second).
    fn covers(&self, columns: PairColumns) -> bool {
        self.columns.0 == columns.0 && (columns.1.is_none() || columns.1 == self.columns.1)
    }

    /// Sorts the rows of the first column's values that `conditions` pick.
    fn of_conditions(
        columns: PairColumns,
        first: &TextColumn,
        second: Option<&TextColumn>,
        conditions: &[&CodedCondition],
        user_rows: &[u32],
        users: usize,
    ) -> Self {
        let mut place_of = vec![NULL_CODE; first.values.len()];
        let mut places = 0;
        for code in conditions.iter().flat_map(|c| &c.first.1) {
            if place_of[*code as usize] == NULL_CODE {
                place_of[*code as usize] = places;
                places += 1;
            }
        }
        UsersByPair::sort(columns, first, second, place_of, user_rows, users)
    }

    /// Sorts the rows of the first column's values with a place in
    /// `place_of` (`NULL_CODE` for none) by pair.
    fn sort(
        columns: PairColumns,
        first: &TextColumn,
        second: Option<&TextColumn>,
        place_of: Vec<u32>,
        user_rows: &[u32],
        users: usize,
    ) -> Self {
        let places = place_of.iter().filter(|&&p| p != NULL_CODE).count();
        let seconds = second.map_or(1, |s| s.values.len() + 1);
        let pairs = places * seconds;
        // Per row, its pair or `NO_PAIR`, read off the columns' slices in
        // one pass that also counts each pair's rows; the second pass reads
        // only the pairs and the users.
        const NO_PAIR: u32 = u32::MAX;
        assert!(
            u32::try_from(pairs).is_ok_and(|p| p < NO_PAIR),
            "fewer than 2^32 - 1 pairs"
        );
        let second_codes = second.map(|s| &s.codes);
        let tasks = (0..first.codes.len().div_ceil(ROWS_PER_SORT_TASK))
            .into_par_iter()
            .map(|task| {
                let rows = task * ROWS_PER_SORT_TASK..first.codes.len().min((task + 1) * ROWS_PER_SORT_TASK);
                let mut starts = vec![0usize; pairs + 1];
                let user_rows = &user_rows[rows.clone()];
                let places = first.codes[rows.clone()].iter().zip(user_rows).map(|(&code, &user)| {
                    match place_of.get(code as usize) {
                        Some(&place) if place != NULL_CODE && user != NO_USER => place * seconds as u32,
                        _ => NO_PAIR,
                    }
                });
                let pair_of_row: Vec<u32> = match second_codes {
                    None => places.collect(),
                    Some(codes) => places
                        .zip(&codes[rows])
                        .map(|(first, &second)| match first {
                            NO_PAIR => NO_PAIR,
                            first => first + second.min(seconds as u32 - 1),
                        })
                        .collect(),
                };
                for &pair in pair_of_row.iter().filter(|&&pair| pair != NO_PAIR) {
                    starts[pair as usize + 1] += 1;
                }
                for i in 1..starts.len() {
                    starts[i] += starts[i - 1];
                }
                let mut next = starts.clone();
                let mut users = vec![0u32; starts[pairs]];
                for (&pair, &user) in pair_of_row.iter().zip(user_rows) {
                    if pair != NO_PAIR {
                        users[next[pair as usize]] = user;
                        next[pair as usize] += 1;
                    }
                }
                (starts, users)
            })
            .collect();
        UsersByPair {
            columns,
            place_of,
            seconds,
            tasks,
            users,
        }
    }

    /// How many rows `pair` has, over every task.
    fn users_in(&self, pair: usize) -> usize {
        self.tasks
            .iter()
            .map(|(starts, _)| starts[pair + 1] - starts[pair])
            .sum()
    }

    /// The users of `condition`'s rows: those of every pair it holds for,
    /// task by task.
    fn enrolled<'d>(&self, condition: &CodedCondition) -> EnrolledUsers<'d> {
        let holds = |second: usize| match &condition.second {
            None => true,
            Some((_, holds)) => holds.get(second).copied().unwrap_or(false),
        };
        let pairs: Vec<usize> = condition
            .first
            .1
            .iter()
            .flat_map(|&code| {
                let place = self.place_of[code as usize] as usize;
                (0..self.seconds)
                    .filter(|&second| holds(second))
                    .map(move |second| place * self.seconds + second)
            })
            .collect();
        let users_of_pair = |pair: usize| {
            self.tasks
                .iter()
                .flat_map(move |(starts, users)| users[starts[pair]..starts[pair + 1]].iter().copied())
        };
        if condition.counted {
            let mut runs: Vec<(u32, u32)> = Vec::new();
            for pair in pairs {
                for user in users_of_pair(pair) {
                    match runs.last_mut() {
                        Some((last, count)) if *last == user => *count += 1,
                        _ => runs.push((user, 1)),
                    }
                }
            }
            return EnrolledUsers::from_runs(runs);
        }
        let members: usize = pairs.iter().map(|&pair| self.users_in(pair)).sum();
        if members >= self.users / USERS_PER_MEMBER_FOR_BITSET {
            // Setting bits costs a store per row, where sorting, dedup and
            // unions of millions of users cost tens of nanoseconds each.
            let mut bits = vec![0u8; self.users.div_ceil(8)];
            for user in pairs.into_iter().flat_map(users_of_pair) {
                bits[user as usize / 8] |= 1 << (user % 8);
            }
            return EnrolledUsers::Present(RoaringBitmap::from_lsb0_bytes(0, &bits));
        }
        let mut present = RoaringBitmap::new();
        for pair in pairs {
            let mut users: Vec<u32> = users_of_pair(pair).collect();
            // Rows stored user by user list each pair's users ascending.
            if !users.is_sorted() {
                users.sort_unstable();
            }
            users.dedup();
            present |= RoaringBitmap::from_sorted_iter(users).expect("users ascend");
        }
        EnrolledUsers::Present(present)
    }
}

impl<'p, 'd> CodedCondition<'p, 'd> {
    fn of(node: &'p Node, counted: bool, plan: &Plan<'d>, data: &'d Dataset) -> Option<CodedCondition<'p, 'd>> {
        let atoms: Vec<usize> = match node {
            Node::Atom(a) => {
                if counted_values(&plan.atoms[*a], data).is_some() {
                    return None;
                }
                vec![*a]
            }
            Node::And(nodes) => nodes
                .iter()
                .map(|n| match n {
                    Node::Atom(a) => Some(*a),
                    _ => None,
                })
                .collect::<Option<_>>()?,
            _ => return None,
        };
        let mut tests = Vec::with_capacity(atoms.len());
        for a in atoms {
            let atom = &plan.atoms[a];
            let (Atom::EnrollmentColumn(_), Some((Column::Text(text), test))) = (atom, column_test(atom, data)) else {
                return None;
            };
            tests.push((test.column, text, text_codes(text, &test.test)?));
        }
        let first = (0..tests.len()).max_by_key(|&t| tests[t].1.values.len())?;
        let (first_column, first_text, first_codes) = tests.swap_remove(first);
        if tests.iter().any(|(column, ..)| *column == first_column) {
            return None;
        }
        let mut second: Option<(&TextColumn, Vec<bool>)> = None;
        let mut second_column = None;
        for (column, text, codes) in tests {
            if text.values.len() > MAX_SECOND_VALUES || *second_column.get_or_insert(column) != column {
                return None;
            }
            let (_, holds) = second.get_or_insert_with(|| (text, vec![true; text.values.len()]));
            for (code, holds) in (0u32..).zip(holds.iter_mut()) {
                *holds &= codes.contains(code);
            }
        }
        let columns = (first_column, second_column);
        // A column with postings finds one rule's few rows faster than a
        // pass over every row, unless its pairs were sorted at load.
        if first_text.has_postings() && !data.users_by_pair().is_some_and(|pairs| pairs.covers(columns)) {
            return None;
        }
        Some(CodedCondition {
            node,
            first: (first_text, first_codes.iter().collect()),
            second,
            columns,
            counted,
        })
    }
}
