//! A reference evaluator: plain, one user and one row at a time, written
//! straight from spec §3. Slow on purpose; obviously right is the point.

use dyngroups::ast::CmpOp;
use dyngroups::checked::{CheckedRules, GroupRef, Predicate, Scalar, Test};
use dyngroups::data::{Column, Table};
use dyngroups::dataset::{Dataset, NO_USER};
use std::collections::{BTreeMap, BTreeSet};

/// Members (user ids) of every rule group, by key.
pub fn members(rules: &CheckedRules, data: &Dataset) -> BTreeMap<String, BTreeSet<u32>> {
    let mut done: Vec<Option<BTreeSet<usize>>> = vec![None; rules.groups.len()];
    for g in 0..rules.groups.len() {
        group_rows(rules, data, g, &mut done);
    }
    rules
        .groups
        .iter()
        .zip(done)
        .map(|(g, rows)| (g.key.clone(), rows.unwrap().iter().map(|&r| data.user_ids[r]).collect()))
        .collect()
}

fn group_rows(
    rules: &CheckedRules,
    data: &Dataset,
    g: usize,
    done: &mut Vec<Option<BTreeSet<usize>>>,
) -> BTreeSet<usize> {
    if let Some(rows) = &done[g] {
        return rows.clone();
    }
    let group = &rules.groups[g];
    let mut rows = BTreeSet::new();
    for user in 0..data.user_count() {
        let id = data.user_ids[user];
        let by_rule = user_holds(rules, data, &group.rule, user, done);
        let included = group.include.contains(&id);
        let excluded = group.exclude.contains(&id);
        if (by_rule || included) && !excluded {
            rows.insert(user);
        }
    }
    done[g] = Some(rows.clone());
    rows
}

fn user_holds(
    rules: &CheckedRules,
    data: &Dataset,
    p: &Predicate,
    user: usize,
    done: &mut Vec<Option<BTreeSet<usize>>>,
) -> bool {
    match p {
        Predicate::Const(b) => *b,
        Predicate::And(ps) => ps.iter().all(|p| user_holds(rules, data, p, user, done)),
        Predicate::Or(ps) => ps.iter().any(|p| user_holds(rules, data, p, user, done)),
        Predicate::Not(p) => !user_holds(rules, data, p, user, done),
        Predicate::Column(t) => cell_holds(&data.users, t.column, &t.test, user),
        Predicate::InBranch(t) => {
            let Column::Text(text) = data.users.column(t.column) else {
                panic!("branch is text")
            };
            let org = data.org.as_ref().unwrap();
            let Some(mut branch) = text.get(user).and_then(|b| org.branch(b)) else {
                return false;
            };
            loop {
                if org.codes[branch].to_lowercase() == t.code {
                    return true;
                }
                match org.parents[branch] {
                    Some(parent) => branch = parent,
                    None => return false,
                }
            }
        }
        Predicate::MemberOf(GroupRef::Rule(g)) => group_rows(rules, data, *g, done).contains(&user),
        Predicate::MemberOf(GroupRef::Static(key)) => data
            .static_groups
            .get(key)
            .is_some_and(|rows| rows.contains(user as u32)),
        Predicate::Enrollment(test) => {
            let enrollments = data.enrollments.as_ref().unwrap();
            let matching = (0..enrollments.user_rows.len())
                .filter(|&e| enrollments.user_rows[e] != NO_USER && enrollments.user_rows[e] as usize == user)
                .filter(|&e| {
                    test.condition
                        .as_deref()
                        .is_none_or(|c| row_holds(&enrollments.table, c, e))
                })
                .count() as u64;
            match test.count {
                None => matching > 0,
                Some((op, n)) => op.holds(matching, n),
            }
        }
    }
}

fn row_holds(table: &Table, p: &Predicate, row: usize) -> bool {
    match p {
        Predicate::Const(b) => *b,
        Predicate::And(ps) => ps.iter().all(|p| row_holds(table, p, row)),
        Predicate::Or(ps) => ps.iter().any(|p| row_holds(table, p, row)),
        Predicate::Not(p) => !row_holds(table, p, row),
        Predicate::Column(t) => cell_holds(table, t.column, &t.test, row),
        other => panic!("not an enrollment predicate: {other:?}"),
    }
}

/// One cell against one test, per spec §3 rules 1-2.
fn cell_holds(table: &Table, column: usize, test: &Test, row: usize) -> bool {
    match table.column(column) {
        Column::Text(text) => {
            let Some(value) = text.get(row) else {
                return matches!(test, Test::IsEmpty);
            };
            let lower = value.to_lowercase();
            match test {
                Test::IsEmpty => value.is_empty(),
                Test::Compare(op, Scalar::Text(t)) => op.holds(lower.as_bytes(), t.as_bytes()),
                Test::In(items) => items.contains(&Scalar::Text(lower.clone())),
                Test::Contains(t) => lower.contains(t.as_str()),
                Test::StartsWith(t) => lower.starts_with(t.as_str()),
                Test::EndsWith(t) => lower.ends_with(t.as_str()),
                Test::Matches(p) => p.is_match(value),
                other => panic!("not a text test: {other:?}"),
            }
        }
        Column::Number(values) => {
            let v = values[row];
            match test {
                Test::IsEmpty => v.is_nan(),
                _ if v.is_nan() => false,
                Test::Compare(op, Scalar::Number(n)) => op.holds(v, *n),
                Test::In(items) => items.iter().any(|i| matches!(i, Scalar::Number(n) if *n == v)),
                other => panic!("not a number test: {other:?}"),
            }
        }
        Column::Date(values) => match (values[row], test) {
            (None, t) => matches!(t, Test::IsEmpty),
            (Some(_), Test::IsEmpty) => false,
            (Some(v), Test::Compare(op, Scalar::Date(d, _))) => op.holds(v, *d),
            (Some(v), Test::In(items)) => items.contains(&Scalar::Date(v, None)),
            (_, other) => panic!("not a date test: {other:?}"),
        },
        Column::Boolean(values) => match (values[row], test) {
            (None, t) => matches!(t, Test::IsEmpty),
            (Some(_), Test::IsEmpty) => false,
            (Some(v), Test::IsTrue) => v,
            (Some(v), Test::Compare(CmpOp::Eq, Scalar::Bool(b))) => v == *b,
            (_, other) => panic!("not a boolean test: {other:?}"),
        },
    }
}
