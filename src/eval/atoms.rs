//! Atoms over columns: each test runs once per distinct text value (the
//! column is dictionary-encoded) or once per row for numbers, dates and
//! booleans, in parallel chunks of rows, straight into a bitmap of rows.

use super::index::SortedValues;
use crate::ast::CmpOp;
use crate::checked::{BranchTest, ColumnTest, Scalar, Test};
use crate::data::{Column, NULL_CODE, Strings, TextColumn};
use crate::dataset::OrgTree;
use aho_corasick::AhoCorasick;
use rayon::prelude::*;
use roaring::{MultiOps, RoaringBitmap};
use std::collections::HashSet;

/// Rows per parallel chunk: a multiple of 2^16, so chunks fill disjoint
/// roaring containers and merging them is cheap.
const CHUNK_ROWS: usize = 1 << 16;

/// The rows `0..rows` for which `keep` holds. Each chunk is tested into a
/// plain bitset first: roaring builds a container from 8 KiB of bits far
/// faster than from one pushed row at a time when many rows match.
pub(super) fn rows_where(rows: usize, keep: impl Fn(usize) -> bool + Sync) -> RoaringBitmap {
    rows_in_chunks(rows, |start, end| {
        let bits: Vec<u8> = (start..end)
            .step_by(8)
            .map(|byte_start| {
                (byte_start..end.min(byte_start + 8))
                    .fold(0u8, |byte, r| byte | (u8::from(keep(r)) << (r - byte_start)))
            })
            .collect();
        RoaringBitmap::from_lsb0_bytes(start as u32, &bits)
    })
}

/// The rows of `values` whose value `keep` accepts, each chunk's bits read
/// off its slice of values: with no index to check per row and a test
/// whose kind is settled before the loop, a comparison runs several times
/// faster than through [`rows_where`].
fn rows_of_values<T: Copy + Sync>(values: &[T], keep: impl Fn(T) -> bool + Sync) -> RoaringBitmap {
    rows_in_chunks(values.len(), |start, end| {
        let bits: Vec<u8> = values[start..end]
            .chunks(8)
            .map(|eight| {
                (0..)
                    .zip(eight)
                    .fold(0u8, |byte, (i, &v)| byte | (u8::from(keep(v)) << i))
            })
            .collect();
        RoaringBitmap::from_lsb0_bytes(start as u32, &bits)
    })
}

/// The rows of `values` that are `valid` (not missing) and compare to `n`
/// by `op`, with the comparison chosen once rather than per row.
fn rows_comparing<T: Copy + PartialOrd + Sync>(
    values: &[T],
    op: CmpOp,
    n: T,
    valid: impl Fn(T) -> bool + Sync,
) -> RoaringBitmap {
    match op {
        CmpOp::Eq => rows_of_values(values, |v| valid(v) & (v == n)),
        CmpOp::Ne => rows_of_values(values, |v| valid(v) & (v != n)),
        CmpOp::Lt => rows_of_values(values, |v| valid(v) & (v < n)),
        CmpOp::Le => rows_of_values(values, |v| valid(v) & (v <= n)),
        CmpOp::Gt => rows_of_values(values, |v| valid(v) & (v > n)),
        CmpOp::Ge => rows_of_values(values, |v| valid(v) & (v >= n)),
    }
}

/// The rows `0..rows`, as `chunk(start, end)` finds those of each chunk,
/// the chunks side by side.
fn rows_in_chunks(rows: usize, chunk: impl Fn(usize, usize) -> RoaringBitmap + Sync) -> RoaringBitmap {
    let chunks: Vec<RoaringBitmap> = (0..rows.div_ceil(CHUNK_ROWS))
        .into_par_iter()
        .map(|c| chunk(c * CHUNK_ROWS, rows.min((c + 1) * CHUNK_ROWS)))
        .collect();
    let mut out = RoaringBitmap::new();
    for chunk in chunks {
        out |= chunk;
    }
    out
}

/// All rows `0..rows`, held in bitset containers. `insert_range` would
/// make run containers, and roaring subtracts an array from a run one
/// member at a time, splitting the run and shifting the rest each time
/// (quadratic in the members), and turns runs into bitsets in every union:
/// `not` and `and not` over this universe cost far more than over bitsets.
pub(super) fn all_rows(rows: usize) -> RoaringBitmap {
    let mut bytes = vec![u8::MAX; rows / 8];
    if !rows.is_multiple_of(8) {
        bytes.push((1u8 << (rows % 8)) - 1);
    }
    RoaringBitmap::from_lsb0_bytes(0, &bytes)
}

/// Rows of a roaring container: 2^16.
const CONTAINER_ROWS: u32 = 1 << 16;

/// Hands the members of `rows` within `range` to `visit`, ascending, a
/// slice at a time. `Iter::next_many` reads a bitmap about three times
/// faster than one `next` per member, but roaring 0.12.0 overflows in it on
/// a container that is one full run (and in release builds skips it), so a
/// full container's rows are handed over without reading the bitmap.
pub(super) fn for_each_member(rows: &RoaringBitmap, range: std::ops::Range<u32>, mut visit: impl FnMut(&[u32])) {
    let mut buffer = vec![0u32; 1024];
    if range.is_empty() {
        return;
    }
    for container in range.start / CONTAINER_ROWS..=(range.end - 1) / CONTAINER_ROWS {
        let first = container * CONTAINER_ROWS;
        let part = range.start.max(first)..range.end.min(first.saturating_add(CONTAINER_ROWS));
        if part.len() == CONTAINER_ROWS as usize && rows.range_cardinality(part.clone()) == u64::from(CONTAINER_ROWS) {
            for start in part.step_by(buffer.len()) {
                buffer.iter_mut().zip(start..).for_each(|(slot, row)| *slot = row);
                visit(&buffer);
            }
            continue;
        }
        let mut members = rows.range(part);
        loop {
            let read = members.next_many(&mut buffer);
            if read.is_empty() {
                break;
            }
            visit(read);
        }
    }
}

/// Matching at most this many distinct values, a test unions their postings
/// instead of scanning the rows.
const MAX_CODES_FOR_POSTINGS: usize = 4096;

/// A set of codes of at most one value in this many rows finds each value's
/// one row in a column of unique values; more scan the rows.
const ROWS_PER_LOOKED_UP_VALUE: u64 = 256;

/// Rows whose dictionary code is in `codes`: the codes themselves when each
/// row holds a value of its own; in a column of unique values, each value's
/// one row when the codes are few; in a column of repeated values, the
/// union of the values' postings (with the bitsets of frequent values) when
/// there are few; otherwise one parallel scan of the codes against a bitset
/// of them (1.25 MB for 10M distinct values, where a `bool` per value would
/// be 10 MB to fill and to miss in cache).
pub(super) fn rows_with_codes(text: &TextColumn, codes: &RoaringBitmap) -> RoaringBitmap {
    if text.codes_are_rows() {
        return codes.clone();
    }
    // Each value's row is a read that misses the cache: past one value in
    // `ROWS_PER_LOOKED_UP_VALUE`, a scan of the rows is faster.
    if codes.len() * ROWS_PER_LOOKED_UP_VALUE <= text.codes.len() as u64
        && let Some(row_of) = text.row_of_unique_value()
    {
        return RoaringBitmap::from_sorted_iter(codes.iter().map(|c| row_of[c as usize]))
            .expect("rows ascend with the codes");
    }
    if codes.len() <= MAX_CODES_FOR_POSTINGS as u64
        && let Some(postings) = text.postings()
    {
        return union_with_frequent_values(text, codes, postings)
            .unwrap_or_else(|| codes.iter().map(|c| &postings[c as usize]).union());
    }
    let mut matched = vec![0u64; text.values.len().div_ceil(64)];
    for code in codes {
        matched[code as usize / 64] |= 1 << (code % 64);
    }
    rows_where(text.codes.len(), |r| {
        let code = text.codes[r];
        code != NULL_CODE && matched[code as usize / 64] >> (code % 64) & 1 == 1
    })
}

/// The rows of `codes`, if two or more of them are frequent values
/// ([`TextColumn::frequent_value_bits`]): their bitsets are united a chunk of
/// rows at a time, each chunk's bytes read once and written once, and the
/// postings of the other values added to that.
fn union_with_frequent_values(
    text: &TextColumn,
    codes: &RoaringBitmap,
    postings: &[RoaringBitmap],
) -> Option<RoaringBitmap> {
    // Found from the postings first: the bitsets of a column are built
    // only when a test needs them.
    codes
        .iter()
        .filter(|&c| text.is_frequent(&postings[c as usize]))
        .nth(1)?;
    let frequent = text.frequent_value_bits()?;
    let bits: Vec<&[u8]> = codes.iter().filter_map(|c| frequent.of(c)).collect();
    let mut rows = rows_in_chunks(text.codes.len(), |start, end| {
        let bytes = start / 8..end.div_ceil(8);
        let mut united = bits[0][bytes.clone()].to_vec();
        for value_bits in &bits[1..] {
            united
                .iter_mut()
                .zip(&value_bits[bytes.clone()])
                .for_each(|(u, b)| *u |= b);
        }
        RoaringBitmap::from_lsb0_bytes(start as u32, &united)
    });
    for code in codes.iter().filter(|&c| frequent.of(c).is_none()) {
        rows |= &postings[code as usize];
    }
    Some(rows)
}

/// Distinct values searched per parallel task.
const VALUES_PER_SEARCH_TASK: usize = 1 << 14;

/// Where in a value a literal must be found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Anchor {
    /// Anywhere: `contains`.
    Anywhere,
    /// At its start: `starts_with`.
    Start,
    /// At its end: `ends_with`.
    End,
}

/// A test that a lowercase value holds a literal, where its anchor says.
#[derive(Clone, Copy, Debug)]
pub(super) struct Needle<'a> {
    /// The literal, lowercase.
    pub literal: &'a str,
    /// Where it must be.
    pub anchor: Anchor,
}

impl<'a> Needle<'a> {
    /// The needle of a `contains`, `starts_with` or `ends_with` test.
    pub fn of(test: &'a Test) -> Option<Needle<'a>> {
        let (literal, anchor) = match test {
            Test::Contains(literal) => (literal, Anchor::Anywhere),
            Test::StartsWith(literal) => (literal, Anchor::Start),
            Test::EndsWith(literal) => (literal, Anchor::End),
            _ => return None,
        };
        Some(Needle { literal, anchor })
    }

    /// Whether a match at `start..end` of a value at `value` holds.
    fn holds_at(&self, start: usize, end: usize, value: std::ops::Range<usize>) -> bool {
        match self.anchor {
            Anchor::Anywhere => true,
            Anchor::Start => start == value.start,
            Anchor::End => end == value.end,
        }
    }
}

/// How the distinct literals of a batch of needles are searched for.
enum Search<'a> {
    /// One literal.
    Alone(Box<memchr::memmem::Finder<'a>>),
    /// Several, at once.
    Many(AhoCorasick),
}

/// Per needle, the codes of the distinct values of `text` whose lowercase
/// form holds it: one pass over all the values, kept end to end, for every
/// literal at once, where a search per value or per literal would start
/// over millions of times (and 64 literals a pass made 22 passes over 1M
/// emails for 1,400 literals). `starts_with` and `ends_with` ride the same
/// pass: a value starts with a literal found at its start.
pub(super) fn codes_holding(text: &TextColumn, needles: &[Needle<'_>]) -> Vec<RoaringBitmap> {
    let lower = &text.lowercase;
    // The empty literal is in every value; the search gets the distinct
    // others, each with the needles it is.
    let mut literals: Vec<&str> = Vec::new();
    let mut needles_of: Vec<Vec<u32>> = Vec::new();
    for (i, needle) in needles.iter().enumerate().filter(|(_, n)| !n.literal.is_empty()) {
        match literals.iter().position(|&l| l == needle.literal) {
            Some(p) => needles_of[p].push(i as u32),
            None => {
                literals.push(needle.literal);
                needles_of.push(vec![i as u32]);
            }
        }
    }
    let tasks = (0..lower.len().div_ceil(VALUES_PER_SEARCH_TASK)).into_par_iter();
    let mut codes = match literals[..] {
        [] => vec![RoaringBitmap::new(); needles.len()],
        // One literal alone is found faster by memmem's vectorised search,
        // and its hits go straight into a bitset per task: a literal such
        // as `@acme.com` is in nearly every value, and a list of 10M hits
        // to gather and sort out cost more than the search.
        [literal] => {
            let search = Search::Alone(Box::new(memchr::memmem::Finder::new(literal)));
            let found: Vec<Vec<RoaringBitmap>> = tasks
                .map(|task| {
                    let first = task * VALUES_PER_SEARCH_TASK;
                    let values = VALUES_PER_SEARCH_TASK.min(lower.len() - first);
                    let mut bits = vec![vec![0u8; values.div_ceil(8)]; needles_of[0].len()];
                    search_task(lower, task, &search, needles, &needles_of, |value, _, slot| {
                        bits[slot][(value - first) / 8] |= 1 << ((value - first) % 8);
                    });
                    bits.iter()
                        .map(|bits| RoaringBitmap::from_lsb0_bytes(first as u32, bits))
                        .collect()
                })
                .collect();
            let mut codes = vec![RoaringBitmap::new(); needles.len()];
            for task in found {
                for (bitmap, &needle) in task.into_iter().zip(&needles_of[0]) {
                    codes[needle as usize] |= bitmap;
                }
            }
            codes
        }
        // Building fails only past billions of automaton states.
        _ => {
            let search = Search::Many(AhoCorasick::new(&literals).expect("an automaton for the literals"));
            // Per task, a (value, needle) pair per hit, values ascending:
            // as many entries as hits, where a word per value would fill
            // and copy 80 MB for 10M values.
            let hits: Vec<Vec<(u32, u32)>> = tasks
                .map(|task| {
                    let mut hits = Vec::new();
                    search_task(lower, task, &search, needles, &needles_of, |value, needle, _| {
                        hits.push((value as u32, needle));
                    });
                    hits
                })
                .collect();
            // One pass hands each hit to its needle: a pass over every hit
            // per needle read a million hits 25 times, one core alone. A
            // value holding a literal twice is a hit twice, next to each
            // other.
            let mut codes_of: Vec<Vec<u32>> = vec![Vec::new(); needles.len()];
            for &(code, needle) in hits.iter().flatten() {
                let codes = &mut codes_of[needle as usize];
                if codes.last() != Some(&code) {
                    codes.push(code);
                }
            }
            codes_of
                .into_par_iter()
                .map(|codes| RoaringBitmap::from_sorted_iter(codes).expect("codes found in ascending order"))
                .collect()
        }
    };
    for (codes, needle) in codes.iter_mut().zip(needles) {
        if needle.literal.is_empty() {
            *codes = all_rows(lower.len());
        }
    }
    codes
}

/// Searches the values of one search task (`VALUES_PER_SEARCH_TASK`
/// values from `task * VALUES_PER_SEARCH_TASK`) and hands each value that
/// holds a needle, with the needle and its position among its literal's
/// needles, to `record`, values ascending; `needles_of[p]` are the needles
/// of `search`'s literal `p`.
fn search_task(
    lower: &Strings,
    task: usize,
    search: &Search<'_>,
    needles: &[Needle<'_>],
    needles_of: &[Vec<u32>],
    mut record: impl FnMut(usize, u32, usize),
) {
    let first = task * VALUES_PER_SEARCH_TASK;
    let last = lower.len().min(first + VALUES_PER_SEARCH_TASK) - 1;
    let base = lower.start(first);
    let haystack = &lower.text()[base..lower.end(last)];
    // Records the needles of literal `p` that a match at `start..end` of
    // `haystack`, in value `value`, holds; returns whether it holds all.
    let mut hit = |value: usize, p: usize, start: usize, end: usize| -> bool {
        let span = lower.start(value)..lower.end(value);
        let mut all = true;
        for (slot, &i) in needles_of[p].iter().enumerate() {
            if needles[i as usize].holds_at(base + start, base + end, span.clone()) {
                record(value, i, slot);
            } else {
                all = false;
            }
        }
        all
    };
    // Matches come by ascending end; one across two values is no match.
    let mut value = first;
    // The value holding the end of a match at `start..end` of `haystack`:
    // `Ok` if it holds the start too, else `Err`.
    let mut holding = |start: usize, end: usize| {
        while lower.end(value) < base + end {
            value += 1;
        }
        if base + start >= lower.start(value) {
            Ok(value)
        } else {
            Err(value)
        }
    };
    match search {
        Search::Alone(finder) => {
            // After a match the search goes on past the value it is in if
            // the match holds every needle of the literal (one of an
            // anchored needle may come later in it), else at the next byte;
            // after a match across two values, at the second's start.
            let mut from = 0;
            while let Some(found) = finder.find(&haystack.as_bytes()[from..]) {
                let start = from + found;
                let end = start + finder.needle().len();
                from = match holding(start, end) {
                    Ok(v) if hit(v, 0, start, end) => lower.end(v) - base,
                    Ok(_) => start + 1,
                    Err(v) => lower.start(v) - base,
                };
            }
        }
        Search::Many(automaton) => {
            for m in automaton.find_overlapping_iter(haystack) {
                if let Ok(v) = holding(m.start(), m.end()) {
                    hit(v, m.pattern().as_usize(), m.start(), m.end());
                }
            }
        }
    }
}

/// The codes of the distinct values, `0..values`, for which `test` holds.
fn match_codes(values: usize, test: impl Fn(usize) -> bool + Sync) -> RoaringBitmap {
    rows_where(values, test)
}

/// The rows of `column` for which `test` holds.
pub(super) fn column_rows(column: &Column, test: &ColumnTest) -> RoaringBitmap {
    match column {
        Column::Text(text) => text_rows(text, &test.test),
        Column::Number(values) => match &test.test {
            Test::IsEmpty => rows_of_values(values, f64::is_nan),
            Test::Compare(op, Scalar::Number(n)) => rows_comparing(values, *op, *n, |v: f64| !v.is_nan()),
            Test::In(items) => rows_of_values(values, |v| !v.is_nan() && items.contains(&Scalar::Number(v))),
            _ => RoaringBitmap::new(),
        },
        Column::Date(values) => match &test.test {
            Test::IsEmpty => rows_of_values(values, |v| v.is_none()),
            Test::Compare(op, Scalar::Date(d, _)) => rows_comparing(values, *op, Some(*d), |v| v.is_some()),
            Test::In(items) => {
                let set: HashSet<i32> = items
                    .iter()
                    .filter_map(|i| if let Scalar::Date(d, _) = i { Some(*d) } else { None })
                    .collect();
                rows_of_values(values, |v| v.is_some_and(|v| set.contains(&v)))
            }
            _ => RoaringBitmap::new(),
        },
        Column::Boolean(values) => rows_where(values.len(), |r| match (values[r], &test.test) {
            (None, Test::IsEmpty) => true,
            (Some(v), Test::IsTrue) => v,
            (Some(v), Test::Compare(_, Scalar::Bool(b))) => v == *b,
            _ => false,
        }),
    }
}

fn text_rows(text: &TextColumn, test: &Test) -> RoaringBitmap {
    match text_codes(text, test) {
        Some(codes) => rows_with_codes(text, &codes),
        None => {
            let empty = match_codes(text.values.len(), |c| text.values.get(c).is_empty());
            let mut rows = rows_with_codes(text, &empty);
            rows |= rows_where(text.codes.len(), |r| text.codes[r] == NULL_CODE);
            rows
        }
    }
}

/// The codes of the distinct values of `text` for which `test` holds;
/// `None` for `is empty`, which holds for rows without a value too.
pub(super) fn text_codes(text: &TextColumn, test: &Test) -> Option<RoaringBitmap> {
    // Values are compared as bytes: UTF-8 orders, matches and prefixes as
    // its characters do.
    let lower = &text.lowercase;
    if let Some(sorted) = text.sorted_values()
        && let Some(codes) = sorted_codes(lower, sorted, test)
    {
        return Some(codes);
    }
    Some(match test {
        Test::IsEmpty => return None,
        Test::Compare(op, Scalar::Text(t)) => match_codes(lower.len(), |c| op.holds(lower.get_bytes(c), t.as_bytes())),
        Test::In(items) => {
            let set: HashSet<&[u8]> = items
                .iter()
                .filter_map(|i| {
                    if let Scalar::Text(t) = i {
                        Some(t.as_bytes())
                    } else {
                        None
                    }
                })
                .collect();
            match_codes(lower.len(), |c| set.contains(lower.get_bytes(c)))
        }
        Test::Contains(_) => codes_holding(text, &[Needle::of(test).expect("a needle")]).swap_remove(0),
        Test::StartsWith(t) => match_codes(lower.len(), |c| lower.get_bytes(c).starts_with(t.as_bytes())),
        Test::EndsWith(t) => match_codes(lower.len(), |c| lower.get_bytes(c).ends_with(t.as_bytes())),
        Test::Matches(pattern) => match_codes(text.values.len(), |c| pattern.is_match(text.values.get(c))),
        Test::Compare(..) | Test::IsTrue => RoaringBitmap::new(),
    })
}

/// The codes of the values `test` holds for, found by binary search in the
/// values' order, for the tests that order answers: comparisons, `in`
/// lists, prefixes and suffixes.
fn sorted_codes(lower: &Strings, sorted: &SortedValues, test: &Test) -> Option<RoaringBitmap> {
    let value = |c: &u32| lower.get_bytes(*c as usize);
    // Where the values at or after `bytes` start in `order`, and the range
    // of those that start with `bytes` (`key` reads a value the way
    // `order` sorts it: forward, or from the end).
    let at_or_after = |order: &[u32], key: &dyn Fn(&[u8]) -> Vec<u8>, bytes: &[u8]| {
        order.partition_point(|c| key(value(c)).as_slice() < bytes)
    };
    let forward = |v: &[u8]| v.to_vec();
    let starting = |order: &[u32], key: &dyn Fn(&[u8]) -> Vec<u8>, bytes: &[u8]| -> std::ops::Range<usize> {
        let start = at_or_after(order, key, bytes);
        start..start + order[start..].partition_point(|c| key(value(c)).starts_with(bytes))
    };
    let equal = |bytes: &[u8]| {
        let start = at_or_after(&sorted.by_value, &forward, bytes);
        start..start + sorted.by_value[start..].partition_point(|c| value(c) == bytes)
    };
    let by_value = &sorted.by_value;
    let ranges: Vec<&[u32]> = match test {
        Test::Compare(op, Scalar::Text(t)) => {
            let equal = equal(t.as_bytes());
            match op {
                CmpOp::Eq => vec![&by_value[equal]],
                CmpOp::Ne => vec![&by_value[..equal.start], &by_value[equal.end..]],
                CmpOp::Lt => vec![&by_value[..equal.start]],
                CmpOp::Le => vec![&by_value[..equal.end]],
                CmpOp::Gt => vec![&by_value[equal.end..]],
                CmpOp::Ge => vec![&by_value[equal.start..]],
            }
        }
        Test::In(items) => items
            .iter()
            .filter_map(|item| match item {
                Scalar::Text(t) => Some(&by_value[equal(t.as_bytes())]),
                _ => None,
            })
            .collect(),
        Test::StartsWith(t) => vec![&by_value[starting(by_value, &forward, t.as_bytes())]],
        Test::EndsWith(t) => {
            let reversed = |v: &[u8]| v.iter().rev().copied().collect::<Vec<u8>>();
            let suffix = reversed(t.as_bytes());
            let order = &sorted.by_reversed_value;
            vec![&order[starting(order, &reversed, &suffix)]]
        }
        _ => return None,
    };
    Some(codes_in_any_order(lower.len(), &ranges))
}

/// A bitmap of the codes of `parts`, which may come in any order and may
/// be most of the `values` codes.
fn codes_in_any_order(values: usize, parts: &[&[u32]]) -> RoaringBitmap {
    let count: usize = parts.iter().map(|p| p.len()).sum();
    // Few: sorted. Many: set in a bitset, which roaring takes whole.
    if count * 64 < values {
        let mut codes: Vec<u32> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        codes.sort_unstable();
        codes.dedup();
        return RoaringBitmap::from_sorted_iter(codes).expect("sorted codes");
    }
    let mut bits = vec![0u8; values.div_ceil(8)];
    for &code in parts.iter().flat_map(|p| p.iter()) {
        bits[code as usize / 8] |= 1 << (code % 8);
    }
    RoaringBitmap::from_lsb0_bytes(0, &bits)
}

/// Rows whose branch is the test's branch or one of its descendants.
pub(super) fn branch_rows(column: &Column, org: &OrgTree, test: &BranchTest) -> RoaringBitmap {
    let (Column::Text(text), Some(ancestor)) = (column, org.branch(&test.code)) else {
        return RoaringBitmap::new();
    };
    let matched = match_codes(text.values.len(), |c| {
        org.branch(text.values.get(c))
            .is_some_and(|b| org.is_within(b, ancestor))
    });
    rows_with_codes(text, &matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_where_keeps_rows_across_chunk_boundaries() {
        let rows = 3 * CHUNK_ROWS + 11;
        let keep = |r: usize| r.is_multiple_of(7) || (CHUNK_ROWS - 3..CHUNK_ROWS + 3).contains(&r) || r == rows - 1;
        let expected: Vec<u32> = (0..rows).filter(|&r| keep(r)).map(|r| r as u32).collect();
        assert_eq!(rows_where(rows, keep).iter().collect::<Vec<_>>(), expected);
    }

    /// Comparisons on numbers and dates over several chunks, with missing
    /// values on both sides of a chunk boundary: every operator finds the
    /// rows a plain filter finds, and never a missing value.
    #[test]
    fn comparisons_find_the_rows_a_filter_finds_across_chunks() {
        let rows = 2 * CHUNK_ROWS + 13;
        let missing = |r: usize| r.is_multiple_of(11) || (CHUNK_ROWS - 2..CHUNK_ROWS + 2).contains(&r);
        let numbers: Vec<f64> = (0..rows)
            .map(|r| if missing(r) { f64::NAN } else { (r % 5) as f64 })
            .collect();
        let dates: Vec<Option<i32>> = (0..rows).map(|r| (!missing(r)).then_some((r % 5) as i32)).collect();
        let members = |rows: RoaringBitmap| rows.iter().map(|r| r as usize).collect::<Vec<_>>();
        for op in [CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge] {
            let expected: Vec<usize> = (0..rows).filter(|&r| !missing(r) && op.holds(r % 5, 2)).collect();
            let found_numbers = members(rows_comparing(&numbers, op, 2.0, |v: f64| !v.is_nan()));
            let found_dates = members(rows_comparing(&dates, op, Some(2), |v| v.is_some()));
            assert_eq!(found_numbers, expected, "{op:?} on numbers");
            assert_eq!(found_dates, expected, "{op:?} on dates");
        }
    }

    /// With the values sorted, every comparison, `in` list, prefix and
    /// suffix finds the codes that comparing each value finds: values that
    /// tie in their first or last 16 bytes, that differ only in letter case,
    /// that are empty, or hold non-ASCII letters.
    #[test]
    fn sorted_values_find_the_codes_a_scan_finds() {
        let long = "a-prefix-of-more-than-sixteen-bytes";
        let mut values: Vec<String> = (0..3_000)
            .map(|i| match i % 6 {
                0 => format!("{long}{}", i * 7 % 1_000),
                1 => format!("{}{long}", i * 7 % 1_000),
                2 => format!("User{}@Example.com", i % 500),
                3 => format!("user{}@example.com", i % 500),
                4 => format!("é{}ß", i % 50),
                _ => format!("z{i}"),
            })
            .collect();
        values.extend([String::new(), "a".into(), "A".into(), format!("{long}\0")]);
        let scanned: TextColumn = values.iter().map(|v| Some(v.clone())).collect();
        let sorted = scanned.clone();
        sorted.build_sorted_values();
        let literals = [
            "",
            "a",
            "user1",
            "user10@example.com",
            long,
            "é1",
            "é1ß",
            "z",
            "zz",
            "@example.com",
            "7",
            "ß",
            "\u{10FFFF}",
        ];
        let text = |t: &str| Scalar::Text(t.to_string());
        let mut tests: Vec<Test> = Vec::new();
        for literal in literals {
            let ops = [CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge];
            tests.extend(ops.map(|op| Test::Compare(op, text(literal))));
            tests.push(Test::StartsWith(literal.to_string()));
            tests.push(Test::EndsWith(literal.to_string()));
        }
        tests.push(Test::In(vec![
            text("a"),
            text("user3@example.com"),
            text("nothing"),
            Scalar::Number(1.0),
        ]));
        let mut matching = 0;
        for test in &tests {
            let found = text_codes(&sorted, test).expect("codes");
            assert_eq!(Some(&found), text_codes(&scanned, test).as_ref(), "{test:?}");
            matching += usize::from(!found.is_empty() && found.len() < values.len() as u64);
        }
        assert!(
            matching * 2 > tests.len(),
            "most tests hold for some values and not all"
        );
    }

    #[test]
    fn all_rows_holds_every_row_and_no_more() {
        for rows in [0, 1, 7, 8, 9, 4096, 65_535, 65_536, 65_537, 3 * 65_536 + 4_097] {
            let all = all_rows(rows);
            assert_eq!(all.len(), rows as u64, "{rows} rows");
            assert_eq!(all, (0..rows as u32).collect::<RoaringBitmap>(), "{rows} rows");
        }
    }

    /// A value of its own on every row, unique values with rows missing
    /// between them, one value repeated on the next row, and many rows per
    /// value: each way to the rows finds the same ones.
    #[test]
    fn rows_with_codes_equal_the_rows_holding_the_values() {
        let rows = 100_003;
        let unique = |r: usize| (r % 3 != 1).then(|| format!("user{r}@example.com"));
        // The last row repeats the value of the row before it.
        let repeated = |r: usize| unique(r.min(rows - 2));
        let few = |r: usize| unique(r % 40);
        // Five values on a tenth of the rows each (kept as bitsets too), and
        // thousands on 16 rows each.
        let skewed = |r: usize| {
            if r.is_multiple_of(2) {
                unique(r % 10)
            } else {
                unique(1_000 + r / 32)
            }
        };
        let all_unique = |r: usize| Some(format!("user{r}@example.com"));
        for (name, value_of) in [
            ("all unique", &all_unique as &dyn Fn(usize) -> Option<String>),
            ("unique", &unique),
            ("one repeated", &repeated),
            ("few", &few),
            ("skewed", &skewed),
        ] {
            let text: TextColumn = (0..rows).map(value_of).collect();
            assert_eq!(text.row_of_unique_value().is_some(), name.ends_with("unique"), "{name}");
            assert_eq!(text.codes_are_rows(), name == "all unique", "{name}");
            if name == "skewed" {
                let frequent = text.frequent_value_bits().expect("postings");
                let kept = (0..text.values.len() as u32)
                    .filter(|&c| frequent.of(c).is_some())
                    .count();
                assert_eq!(kept, 4, "values 0, 2, 6 and 8 (4 is missing)");
            }
            for every in [1, 7, 5_000] {
                let codes: RoaringBitmap = (0..text.values.len() as u32).step_by(every).collect();
                let named: HashSet<&str> = codes.iter().map(|c| text.values.get(c as usize)).collect();
                let expected: RoaringBitmap = (0..rows as u32)
                    .filter(|&r| value_of(r as usize).is_some_and(|v| named.contains(v.as_str())))
                    .collect();
                assert_eq!(
                    rows_with_codes(&text, &codes),
                    expected,
                    "{name}, every {every}th value"
                );
            }
        }
    }

    #[test]
    fn members_are_visited_in_order_over_every_container_kind() {
        // A full run container (which `next_many` mishandles), a partial
        // run, a bitset and an array container, and an empty gap.
        let mut rows: RoaringBitmap = (0..65_536 * 3).collect();
        rows.remove_range(65_536 + 100..65_536 + 200);
        rows.extend((65_536 * 3..65_536 * 4).step_by(3));
        rows.extend((65_536 * 6..65_536 * 7).step_by(1000));
        rows.optimize();
        for range in [
            0..65_536 * 8,
            0..65_536,
            10..65_536 * 3 + 7,
            65_536 * 2..65_536 * 6 + 1,
            5..5,
        ] {
            let mut visited = Vec::new();
            for_each_member(&rows, range.clone(), |members| visited.extend_from_slice(members));
            assert_eq!(
                visited,
                rows.range(range.clone()).collect::<Vec<u32>>(),
                "range {range:?}"
            );
        }
    }

    #[test]
    fn every_needle_finds_the_values_holding_it_over_several_passes() {
        // Values over several search tasks.
        let values = [
            "Ana@Acme.com",
            "bob@acme.co.uk",
            "",
            "aaa",
            "ab",
            "zed",
            "xab",
            "abay",
            "acme.com.acme.com",
        ]
        .map(String::from)
        .into_iter()
        .chain((0..3 * VALUES_PER_SEARCH_TASK).map(|i| format!("v{i}x")));
        let text: TextColumn = values.map(Some).collect();
        // Many needles, overlapping ones, the empty one,
        // ones found only across two values ("aaa" "ab", "v0x" "v1x"), one
        // found across two values and then inside the second ("xab" "abay"),
        // one found inside a value before its end ("acme.com.acme.com"),
        // and one literal under all three anchors.
        let mut literals: Vec<String> = (0..70).map(|i| format!("x{i}")).collect();
        literals.extend(
            [
                "a", "aa", "ab", "@acme.co", "acme.com", "", "z", "aaab", "bz", "xv1", "9x", "aba", "v1", "x",
            ]
            .map(String::from),
        );
        let anchors = [Anchor::Anywhere, Anchor::Start, Anchor::End];
        let needles: Vec<Needle> = literals
            .iter()
            .enumerate()
            .flat_map(|(i, literal)| {
                // Every literal anywhere; one in three also at a start, one
                // in three also at an end; the last ones under all three.
                let extra = if i + 4 >= literals.len() {
                    &anchors[1..]
                } else {
                    &anchors[1 + i % 3..(2 + i % 3).min(3)]
                };
                std::iter::once(Anchor::Anywhere)
                    .chain(extra.iter().copied())
                    .map(move |anchor| Needle { literal, anchor })
            })
            .collect();
        let found = codes_holding(&text, &needles);
        let mut anchored = 0;
        for (needle, codes) in needles.iter().zip(&found) {
            let holds = |value: &str| match needle.anchor {
                Anchor::Anywhere => value.contains(needle.literal),
                Anchor::Start => value.starts_with(needle.literal),
                Anchor::End => value.ends_with(needle.literal),
            };
            let expected: Vec<u32> = (0..text.lowercase.len() as u32)
                .filter(|&c| holds(text.lowercase.get(c as usize)))
                .collect();
            assert_eq!(codes.iter().collect::<Vec<_>>(), expected, "{needle:?}");
            anchored += usize::from(needle.anchor != Anchor::Anywhere && !expected.is_empty());
            // Alone, a literal takes the memmem path.
            assert_eq!(&codes_holding(&text, &[*needle])[0], codes, "{needle:?} alone");
        }
        assert!(anchored >= 5, "anchored needles that hold somewhere: {anchored}");
        // One literal under every anchor, alone on the memmem path: "acme.com"
        // is inside "acme.com.acme.com" before it is at its end.
        let acme: Vec<Needle> = anchors
            .map(|anchor| Needle {
                literal: "acme.com",
                anchor,
            })
            .to_vec();
        let codes: Vec<Vec<u32>> = codes_holding(&text, &acme).iter().map(|c| c.iter().collect()).collect();
        assert_eq!(codes, [vec![0, 8], vec![8], vec![0, 8]]);
    }
}
