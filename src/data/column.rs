//! Decoded columns. Text is dictionary-encoded, so a text test runs once per
//! distinct value, not once per row.

use crate::eval::index::{FrequentValueBits, SortedValues};
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use rayon::prelude::*;
use roaring::RoaringBitmap;
use std::sync::OnceLock;

/// The code of a missing text value.
pub const NULL_CODE: u32 = u32::MAX;

/// A decoded column.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Dictionary-encoded text.
    Text(TextColumn),
    /// Numbers; NaN marks a missing value (null and NaN are both missing).
    Number(Vec<f64>),
    /// Days since 1970-01-01; `None` is missing.
    Date(Vec<Option<i32>>),
    /// Booleans; `None` is missing.
    Boolean(Vec<Option<bool>>),
}

impl Column {
    /// Row `row` as text, as a CSV file would hold it (`None` if missing):
    /// whole numbers without a fraction, dates as `YYYY-MM-DD`.
    pub fn cell_text(&self, row: usize) -> Option<String> {
        match self {
            Column::Text(text) => text.get(row).map(str::to_string),
            Column::Number(values) => {
                let n = values[row];
                if n.is_nan() {
                    None
                } else if n.fract() == 0.0 && n.abs() < 1e15 {
                    Some(format!("{}", n as i64))
                } else {
                    Some(n.to_string())
                }
            }
            Column::Date(days) => days[row].map(|d| {
                chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
                    .expect("a valid date")
                    .checked_add_signed(chrono::TimeDelta::days(i64::from(d)))
                    .map_or_else(|| d.to_string(), |date| date.format("%Y-%m-%d").to_string())
            }),
            Column::Boolean(values) => values[row].map(|b| b.to_string()),
        }
    }

    /// The value type of the column.
    pub fn value_type(&self) -> crate::schema::ValueType {
        use crate::schema::ValueType;
        match self {
            Column::Text(_) => ValueType::Text,
            Column::Number(_) => ValueType::Number,
            Column::Date(_) => ValueType::Date,
            Column::Boolean(_) => ValueType::Boolean,
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Column::Text(t) => t.codes.len(),
            Column::Number(v) => v.len(),
            Column::Date(v) => v.len(),
            Column::Boolean(v) => v.len(),
        }
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The column with its rows in `order`: row `i` of the result is row
    /// `order[i]` of this one.
    pub fn reordered(&self, order: &[u32]) -> Column {
        fn pick<T: Copy + Send + Sync>(values: &[T], order: &[u32]) -> Vec<T> {
            order.par_iter().map(|&row| values[row as usize]).collect()
        }
        match self {
            Column::Text(text) => Column::Text(text.reordered(order)),
            Column::Number(values) => Column::Number(pick(values, order)),
            Column::Date(values) => Column::Date(pick(values, order)),
            Column::Boolean(values) => Column::Boolean(pick(values, order)),
        }
    }

    /// Whether row `row` holds a missing value (null, NaN).
    pub fn is_missing(&self, row: usize) -> bool {
        match self {
            Column::Text(t) => t.codes[row] == NULL_CODE,
            Column::Number(v) => v[row].is_nan(),
            Column::Date(v) => v[row].is_none(),
            Column::Boolean(v) => v[row].is_none(),
        }
    }
}

/// Strings kept end to end in one buffer: one search can run over many of
/// them at once, and each costs no allocation of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Strings {
    text: String,
    /// Where each string ends in `text`; each starts where the one before
    /// ends.
    ends: Vec<usize>,
}

impl Strings {
    /// How many strings there are.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `i`th string.
    pub fn get(&self, i: usize) -> &str {
        &self.text[self.start(i)..self.ends[i]]
    }

    /// The `i`th string's bytes: no check that the ends fall between
    /// characters, which costs more than comparing most values when a test
    /// runs over millions of them.
    pub fn get_bytes(&self, i: usize) -> &[u8] {
        &self.text.as_bytes()[self.start(i)..self.ends[i]]
    }

    /// Where the `i`th string starts in [`Strings::text`].
    pub fn start(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.ends[i - 1] }
    }

    /// Where the `i`th string ends in [`Strings::text`].
    pub fn end(&self, i: usize) -> usize {
        self.ends[i]
    }

    /// Every string, end to end.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(self.text.len());
    }

    fn push_lowercase(&mut self, s: &str) {
        if s.is_ascii() {
            let start = self.text.len();
            self.text.push_str(s);
            self.text[start..].make_ascii_lowercase();
        } else {
            self.text.push_str(&s.to_lowercase());
        }
        self.ends.push(self.text.len());
    }

    /// The strings at `indices` (each at most once), in that order. Users
    /// put in id order take the strings of a column of unique values
    /// (emails) in a random order, each string's end and bytes a read that
    /// misses the cache:
    /// the ends of the strings `2 * READ_AHEAD` ahead and the bytes of
    /// those `READ_AHEAD` ahead are asked for early, so that many misses
    /// are in flight at once rather than one.
    fn select(&self, indices: &[u32]) -> Strings {
        let mut out = Strings {
            // The strings are picked at most once each (reordered rows):
            // no pass to count their bytes, which missed the cache as often.
            text: String::with_capacity(self.text.len()),
            ends: Vec::with_capacity(indices.len()),
        };
        for (n, &i) in indices.iter().enumerate() {
            if let Some(&far) = indices.get(n + 2 * READ_AHEAD) {
                prefetch(&self.ends[far as usize]);
            }
            if let Some(&near) = indices.get(n + READ_AHEAD) {
                prefetch(self.text.as_bytes().as_ptr().wrapping_add(self.start(near as usize)));
            }
            out.push(self.get(i as usize));
        }
        out
    }

    fn append(&mut self, other: Strings) {
        let offset = self.text.len();
        self.text.push_str(&other.text);
        self.ends.extend(other.ends.into_iter().map(|end| end + offset));
    }
}

/// Text as one code per row into a table of distinct values.
#[derive(Debug, Clone, Default)]
pub struct TextColumn {
    /// Per row: an index into `values`, or [`NULL_CODE`].
    pub codes: Vec<u32>,
    /// The distinct values as stored, end to end: millions of distinct
    /// values (emails) then cost no allocation each.
    pub values: Strings,
    /// `values[i].to_lowercase()`, computed once.
    pub lowercase: Strings,
    /// The indexes evaluation builds over the column, each on first use
    /// or at load ([`crate::eval::index`]): they are kept with it so that
    /// every evaluation of a session shares them.
    ///
    /// Per distinct value, the rows holding it.
    pub(crate) postings: OnceLock<Vec<RoaringBitmap>>,
    /// Per distinct value, its one row, when every value is on one row;
    /// found on first use.
    pub(crate) row_of_unique_value: OnceLock<Option<Vec<u32>>>,
    /// The rows of the frequent values as bitsets; built on first use.
    /// Boxed: most columns never build it, and `Column` stays small.
    pub(crate) frequent_value_bits: OnceLock<Box<FrequentValueBits>>,
    /// The codes in the order of their lowercase values; built only by
    /// [`TextColumn::build_sorted_values`].
    pub(crate) sorted_values: OnceLock<Box<SortedValues>>,
}

impl PartialEq for TextColumn {
    /// Equal when the rows hold the same values (the postings are a cache).
    fn eq(&self, other: &TextColumn) -> bool {
        self.codes == other.codes && self.values == other.values
    }
}

impl TextColumn {
    /// The column with its rows in `order` (see [`Column::reordered`]).
    /// Codes are numbered again in the order the new rows first hold their
    /// values, as a builder numbers them: [`TextColumn::codes_are_rows`]
    /// and [`TextColumn::row_of_unique_value`] rely on it. Values no row
    /// holds are dropped.
    fn reordered(&self, order: &[u32]) -> TextColumn {
        let mut new_code = vec![NULL_CODE; self.values.len()];
        // The old codes, in the order of their new codes.
        let mut kept: Vec<u32> = Vec::with_capacity(self.values.len());
        // Rows in id order are the file's rows in a random order: each old
        // code, and its new one, a read that misses the cache unless asked
        // for ahead (as in `Strings::select`).
        let codes = order
            .iter()
            .enumerate()
            .map(|(n, &row)| {
                if let Some(&far) = order.get(n + 2 * READ_AHEAD) {
                    prefetch(&self.codes[far as usize]);
                }
                if let Some(&near) = order.get(n + READ_AHEAD)
                    && let Some(&code) = self.codes.get(near as usize)
                    && code != NULL_CODE
                {
                    prefetch(&new_code[code as usize]);
                }
                let old = self.codes[row as usize];
                if old == NULL_CODE {
                    return NULL_CODE;
                }
                let code = &mut new_code[old as usize];
                if *code == NULL_CODE {
                    *code = kept.len() as u32;
                    kept.push(old);
                }
                *code
            })
            .collect();
        let (values, lowercase) = rayon::join(|| self.values.select(&kept), || self.lowercase.select(&kept));
        TextColumn {
            codes,
            values,
            lowercase,
            ..TextColumn::default()
        }
    }

    /// Whether every row holds a value of its own (a full column of
    /// emails): values are coded in the order rows first hold them, so each
    /// value's code is then its row, and the codes of a set of values are
    /// their rows.
    pub fn codes_are_rows(&self) -> bool {
        self.values.len() == self.codes.len()
    }

    /// The value at `row` as stored, or `None` if missing.
    pub fn get(&self, row: usize) -> Option<&str> {
        match self.codes[row] {
            NULL_CODE => None,
            code => Some(self.values.get(code as usize)),
        }
    }
}

impl FromIterator<Option<String>> for TextColumn {
    fn from_iter<I: IntoIterator<Item = Option<String>>>(values: I) -> TextColumn {
        let mut builder = TextColumnBuilder::default();
        for v in values {
            builder.push(v.as_deref());
        }
        builder.finish()
    }
}

/// Builds a [`TextColumn`] one row at a time.
#[derive(Default)]
pub struct TextColumnBuilder {
    codes: Vec<u32>,
    values: Strings,
    /// (hash, code) of every value: each value is stored once, in `values`,
    /// which matters for columns of a million distinct emails, and growing
    /// the table reuses the hashes instead of reading the values again.
    index: HashTable<(u64, u32)>,
    /// Interning is hashing-bound; ahash is several times faster than the
    /// standard SipHash on short strings, and the input is not adversarial.
    hasher: ahash::RandomState,
    /// Whether values are appended without a lookup and made distinct by
    /// [`Self::finish`]: set when the first [`DISTINCT_PROBE_ROWS`] rows
    /// all differ (a column of emails). At millions of distinct values
    /// every lookup misses the cache, and interning 10M emails one by one
    /// took longer than decoding any other column.
    deferred: bool,
}

/// Rows a builder interns before it judges whether the column's values
/// are all distinct.
const DISTINCT_PROBE_ROWS: usize = 1 << 16;

impl TextColumnBuilder {
    /// A builder with room for `rows` rows.
    pub fn with_capacity(rows: usize) -> TextColumnBuilder {
        TextColumnBuilder {
            codes: Vec::with_capacity(rows),
            ..TextColumnBuilder::default()
        }
    }

    /// Appends a value (or a missing one).
    pub fn push(&mut self, value: Option<&str>) {
        let code = value.map_or(NULL_CODE, |v| self.intern(v));
        self.codes.push(code);
        if self.codes.len() == DISTINCT_PROBE_ROWS && self.values.len() == DISTINCT_PROBE_ROWS {
            self.deferred = true;
            self.index = HashTable::new();
        }
    }

    /// Appends `code`, a code returned for an earlier [`Self::intern`].
    pub fn push_code(&mut self, code: u32) {
        self.codes.push(code);
    }

    /// The code of `value`, adding it to the dictionary if new (or, once
    /// the builder defers, a new code whatever the value).
    pub fn intern(&mut self, value: &str) -> u32 {
        if self.deferred {
            self.values.push(value);
            return u32::try_from(self.values.len() - 1).expect("fewer than 2^32 values");
        }
        let TextColumnBuilder {
            values, index, hasher, ..
        } = self;
        let hash = hasher.hash_one(value);
        let entry = index.entry(
            hash,
            |&(h, code)| h == hash && values.get(code as usize) == value,
            |&(h, _)| h,
        );
        match entry {
            Entry::Occupied(found) => found.get().1,
            Entry::Vacant(slot) => {
                let code = u32::try_from(values.len()).expect("fewer than 2^32 distinct values");
                values.push(value);
                slot.insert((hash, code));
                code
            }
        }
    }

    /// The finished column.
    pub fn finish(mut self) -> TextColumn {
        if self.deferred && !all_distinct(&self.values, &self.hasher) {
            // Interned again in the order the values came, so codes number
            // values as they first appear, as if never deferred.
            let mut distinct = TextColumnBuilder::default();
            let new_code: Vec<u32> = (0..self.values.len())
                .map(|v| distinct.intern(self.values.get(v)))
                .collect();
            for code in self.codes.iter_mut().filter(|c| **c != NULL_CODE) {
                *code = new_code[*code as usize];
            }
            self.values = distinct.values;
        }
        let values = &self.values;
        let parts: Vec<Strings> = (0..values.len().div_ceil(VALUES_PER_LOWERCASE_TASK))
            .into_par_iter()
            .map(|task| {
                let first = task * VALUES_PER_LOWERCASE_TASK;
                let mut part = Strings::default();
                (first..values.len().min(first + VALUES_PER_LOWERCASE_TASK))
                    .for_each(|v| part.push_lowercase(values.get(v)));
                part
            })
            .collect();
        let mut lowercase = Strings::default();
        parts.into_iter().for_each(|part| lowercase.append(part));
        TextColumn {
            codes: self.codes,
            values: self.values,
            lowercase,
            postings: OnceLock::new(),
            row_of_unique_value: OnceLock::new(),
            frequent_value_bits: OnceLock::new(),
            sorted_values: OnceLock::new(),
        }
    }
}

/// Whether no two of `values` are equal. The values are hashed in
/// parallel and parted by their hashes' top bits, and each part is checked
/// in a table small enough for the cache: one table of millions of values
/// misses the cache on every lookup.
fn all_distinct(values: &Strings, hasher: &ahash::RandomState) -> bool {
    const PART_BITS: u32 = 10;
    let hashes: Vec<u64> = (0..values.len())
        .into_par_iter()
        .map(|v| hasher.hash_one(values.get_bytes(v)))
        .collect();
    let mut parts: Vec<Vec<(u64, u32)>> = vec![Vec::new(); 1 << PART_BITS];
    for (v, &hash) in hashes.iter().enumerate() {
        parts[(hash >> (u64::BITS - PART_BITS)) as usize].push((hash, v as u32));
    }
    parts.par_iter().all(|part| {
        let mut seen: HashTable<(u64, u32)> = HashTable::with_capacity(part.len());
        part.iter().all(|&(hash, v)| {
            let same = |&(h, other): &(u64, u32)| {
                h == hash && values.get_bytes(other as usize) == values.get_bytes(v as usize)
            };
            match seen.entry(hash, same, |&(h, _)| h) {
                Entry::Occupied(_) => false,
                Entry::Vacant(slot) => {
                    slot.insert((hash, v));
                    true
                }
            }
        })
    })
}

/// Distinct values lowercased per parallel task.
const VALUES_PER_LOWERCASE_TASK: usize = 1 << 14;

/// How many items ahead a gather in a random order asks for the memory it
/// will read; twice as far for the index it reads first.
pub(crate) const READ_AHEAD: usize = 32;

/// Asks the CPU to bring the cache line at `at` in, where it can be asked:
/// a hint, which reads nothing and cannot fault.
#[inline(always)]
pub(crate) fn prefetch<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it does not read the memory, and an
    // address outside the process's memory is ignored.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_interned_once_per_distinct_value() {
        let mut b = TextColumnBuilder::default();
        for v in [Some("Sales"), None, Some("sales"), Some("Sales")] {
            b.push(v);
        }
        let t = b.finish();
        assert_eq!(t.codes, vec![0, NULL_CODE, 1, 0]);
        assert_eq!(
            (0..2).map(|i| t.lowercase.get(i)).collect::<Vec<_>>(),
            vec!["sales", "sales"]
        );
        assert_eq!(t.get(1), None);
        assert_eq!(t.get(3), Some("Sales"));
    }

    /// A column whose first rows all differ is interned at the end: with
    /// repeats and nulls after those rows, each row keeps its value, each
    /// value is held once, and codes number values as they first appear.
    #[test]
    fn values_deferred_past_distinct_first_rows_are_interned_at_the_end() {
        let rows = DISTINCT_PROBE_ROWS * 3;
        let value = |r: usize| match r {
            _ if r < DISTINCT_PROBE_ROWS => Some(format!("user{r}@example.com")),
            _ if r.is_multiple_of(5) => None,
            _ if r.is_multiple_of(3) => Some(format!("user{}@example.com", r % 1000)),
            _ => Some(format!("new{}@example.com", r / 2)),
        };
        let mut builder = TextColumnBuilder::default();
        (0..rows).for_each(|r| builder.push(value(r).as_deref()));
        assert!(builder.deferred);
        let column = builder.finish();
        let (mut first_seen, mut seen) = (Vec::new(), std::collections::HashSet::new());
        for r in 0..rows {
            assert_eq!(column.get(r), value(r).as_deref(), "row {r}");
            if let Some(v) = value(r).filter(|v| seen.insert(v.clone())) {
                first_seen.push(v);
            }
        }
        let values: Vec<&str> = (0..column.values.len()).map(|v| column.values.get(v)).collect();
        assert_eq!(values, first_seen);

        let mut unique = TextColumnBuilder::default();
        (0..rows).for_each(|r| unique.push(Some(&format!("user{r}"))));
        let unique = unique.finish();
        assert_eq!(unique.codes, (0..rows as u32).collect::<Vec<_>>());
    }
}
