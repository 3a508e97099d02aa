//! Atoms over columns: each test runs once per distinct text value (the
//! column is dictionary-encoded) or once per row for numbers, dates and
//! booleans, in parallel chunks of rows, straight into a bitmap of rows.

use crate::checked::{BranchTest, ColumnTest, Scalar, Test};
use crate::data::{Column, NULL_CODE, TextColumn};
use crate::dataset::OrgTree;
use rayon::prelude::*;
use roaring::{MultiOps, RoaringBitmap};
use std::collections::HashSet;

/// Rows per parallel chunk: a multiple of 2^16, so chunks fill disjoint
/// roaring containers and merging them is cheap.
const CHUNK_ROWS: usize = 1 << 16;

/// The rows `0..rows` for which `keep` holds.
pub(super) fn rows_where(rows: usize, keep: impl Fn(usize) -> bool + Sync) -> RoaringBitmap {
    let chunks: Vec<RoaringBitmap> = (0..rows.div_ceil(CHUNK_ROWS))
        .into_par_iter()
        .map(|chunk| {
            let start = chunk * CHUNK_ROWS;
            let end = rows.min(start + CHUNK_ROWS);
            RoaringBitmap::from_sorted_iter((start..end).filter(|&r| keep(r)).map(|r| r as u32)).expect("rows ascend")
        })
        .collect();
    let mut out = RoaringBitmap::new();
    for chunk in chunks {
        out |= chunk;
    }
    out
}

/// All rows `0..rows`.
pub(super) fn all_rows(rows: usize) -> RoaringBitmap {
    let mut out = RoaringBitmap::new();
    out.insert_range(0..rows as u32);
    out
}

/// Matching at most this many distinct values, a test unions their postings
/// instead of scanning the rows.
const MAX_CODES_FOR_POSTINGS: usize = 4096;

/// Rows whose dictionary code is marked in `matched`: the union of the
/// values' postings when few values match (however many rows they cover:
/// a union of dense postings ORs 8 KiB containers, far cheaper than
/// scanning every row), otherwise one parallel scan of the codes.
fn rows_with_codes(text: &TextColumn, matched: &[bool]) -> RoaringBitmap {
    let codes: Vec<usize> = (0..matched.len())
        .filter(|&c| matched[c])
        .take(MAX_CODES_FOR_POSTINGS + 1)
        .collect();
    if codes.is_empty() {
        return RoaringBitmap::new();
    }
    if codes.len() <= MAX_CODES_FOR_POSTINGS
        && let Some(postings) = text.postings()
    {
        return codes.iter().map(|&c| &postings[c]).union();
    }
    rows_where(text.codes.len(), |r| {
        let code = text.codes[r];
        code != NULL_CODE && matched[code as usize]
    })
}

/// Marks each distinct value of `text` for which `test` holds.
fn match_codes<'a>(values: &'a [String], test: impl Fn(&'a str) -> bool + Sync) -> Vec<bool> {
    values.par_iter().map(|v| test(v.as_str())).collect()
}

/// The rows of `column` for which `test` holds.
pub(super) fn column_rows(column: &Column, test: &ColumnTest) -> RoaringBitmap {
    match column {
        Column::Text(text) => text_rows(text, &test.test),
        Column::Number(values) => rows_where(values.len(), |r| {
            let v = values[r];
            match &test.test {
                Test::IsEmpty => v.is_nan(),
                _ if v.is_nan() => false,
                Test::Compare(op, Scalar::Number(n)) => op.holds(v, *n),
                Test::In(items) => items.contains(&Scalar::Number(v)),
                _ => false,
            }
        }),
        Column::Date(values) => {
            let set: HashSet<i32> = match &test.test {
                Test::In(items) => items
                    .iter()
                    .filter_map(|i| if let Scalar::Date(d, _) = i { Some(*d) } else { None })
                    .collect(),
                _ => HashSet::new(),
            };
            rows_where(values.len(), |r| match (values[r], &test.test) {
                (None, Test::IsEmpty) => true,
                (None, _) | (Some(_), Test::IsEmpty) => false,
                (Some(v), Test::Compare(op, Scalar::Date(d, _))) => op.holds(v, *d),
                (Some(v), Test::In(_)) => set.contains(&v),
                _ => false,
            })
        }
        Column::Boolean(values) => rows_where(values.len(), |r| match (values[r], &test.test) {
            (None, Test::IsEmpty) => true,
            (Some(v), Test::IsTrue) => v,
            (Some(v), Test::Compare(_, Scalar::Bool(b))) => v == *b,
            _ => false,
        }),
    }
}

fn text_rows(text: &TextColumn, test: &Test) -> RoaringBitmap {
    let lower = &text.lowercase;
    let matched = match test {
        Test::IsEmpty => {
            let empty = match_codes(&text.values, str::is_empty);
            let mut rows = rows_with_codes(text, &empty);
            rows |= rows_where(text.codes.len(), |r| text.codes[r] == NULL_CODE);
            return rows;
        }
        Test::Compare(op, Scalar::Text(t)) => match_codes(lower, |v| op.holds(v, t.as_str())),
        Test::In(items) => {
            let set: HashSet<&str> = items
                .iter()
                .filter_map(|i| {
                    if let Scalar::Text(t) = i {
                        Some(t.as_str())
                    } else {
                        None
                    }
                })
                .collect();
            match_codes(lower, |v| set.contains(v))
        }
        Test::Contains(t) => {
            let finder = memchr::memmem::Finder::new(t.as_bytes());
            match_codes(lower, |v| finder.find(v.as_bytes()).is_some())
        }
        Test::StartsWith(t) => match_codes(lower, |v| v.starts_with(t.as_str())),
        Test::EndsWith(t) => match_codes(lower, |v| v.ends_with(t.as_str())),
        Test::Matches(regex) => match_codes(&text.values, |v| regex.is_match(v)),
        Test::Compare(..) | Test::IsTrue => return RoaringBitmap::new(),
    };
    rows_with_codes(text, &matched)
}

/// Rows whose branch is the test's branch or one of its descendants.
pub(super) fn branch_rows(column: &Column, org: &OrgTree, test: &BranchTest) -> RoaringBitmap {
    let (Column::Text(text), Some(ancestor)) = (column, org.branch(&test.code)) else {
        return RoaringBitmap::new();
    };
    let matched = match_codes(&text.values, |v| {
        org.branch(v).is_some_and(|b| org.is_within(b, ancestor))
    });
    rows_with_codes(text, &matched)
}
