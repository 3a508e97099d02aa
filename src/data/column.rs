//! Decoded columns. Text is dictionary-encoded, so a text test runs once per
//! distinct value, not once per row.

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

    /// The strings at `indices`, in that order.
    fn select(&self, indices: &[u32]) -> Strings {
        let bytes = indices
            .iter()
            .map(|&i| self.ends[i as usize] - self.start(i as usize))
            .sum();
        let mut out = Strings {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(indices.len()),
        };
        for &i in indices {
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
    /// Per distinct value, the rows holding it; built on first use.
    postings: OnceLock<Vec<RoaringBitmap>>,
    /// Per distinct value, its one row, when every value is on one row;
    /// found on first use.
    row_of_unique_value: OnceLock<Option<Vec<u32>>>,
    /// The rows of the frequent values as bitsets; built on first use.
    /// Boxed: most columns never build it, and `Column` stays small.
    frequent_value_bits: OnceLock<Box<FrequentValueBits>>,
    /// The codes in the order of their lowercase values; built only by
    /// [`TextColumn::build_sorted_values`].
    sorted_values: OnceLock<Box<SortedValues>>,
}

/// A column's distinct values in order, for tests that then find their
/// values by binary search instead of comparing every value: the REPL
/// builds it for columns of millions of distinct values (emails).
#[derive(Debug, Clone)]
pub struct SortedValues {
    /// The codes, by the bytes of their lowercase values (UTF-8 byte order
    /// is character order): equal values and values with a prefix in
    /// common lie side by side.
    pub by_value: Vec<u32>,
    /// The codes, by the bytes of their lowercase values read from the
    /// end: values with a suffix in common lie side by side.
    pub by_reversed_value: Vec<u32>,
}

/// A value on at least one row in this many is frequent. A column has at
/// most this many frequent values, so their bitsets take at most 8 bytes
/// a row (80 MB for 10M rows).
const ROWS_PER_FREQUENT_VALUE: usize = 64;

/// The rows of a column's frequent values as plain bitsets, least
/// significant bit first: bit `r % 8` of byte `r / 8` is row `r`.
#[derive(Debug, Clone)]
pub struct FrequentValueBits {
    /// Per code, its index into `bits`, or [`NULL_CODE`] when its value is
    /// not frequent.
    slot_of_code: Vec<u32>,
    bits: Vec<Vec<u8>>,
}

impl FrequentValueBits {
    /// The bitset of the value with code `code`, if the value is frequent.
    pub fn of(&self, code: u32) -> Option<&[u8]> {
        let slot = *self.slot_of_code.get(code as usize)?;
        (slot != NULL_CODE).then(|| self.bits[slot as usize].as_slice())
    }
}

impl PartialEq for TextColumn {
    /// Equal when the rows hold the same values (the postings are a cache).
    fn eq(&self, other: &TextColumn) -> bool {
        self.codes == other.codes && self.values == other.values
    }
}

/// A column whose values repeat less than this on average gets no postings:
/// a bitmap per near-unique value (emails, say) costs more than a scan.
const MIN_ROWS_PER_VALUE_FOR_POSTINGS: usize = 16;

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
        let codes = order
            .iter()
            .map(|&row| {
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

    /// Per distinct value, the bitmap of rows holding it, or `None` for a
    /// column of mostly unique values. Built once, in one pass, on first use.
    pub fn postings(&self) -> Option<&[RoaringBitmap]> {
        if self.values.is_empty() || self.codes.len() / self.values.len() < MIN_ROWS_PER_VALUE_FOR_POSTINGS {
            return None;
        }
        Some(super::built_once(&self.postings, || self.build_postings()).as_slice())
    }

    /// Whether every row holds a value of its own (a full column of
    /// emails): values are coded in the order rows first hold them, so each
    /// value's code is then its row, and the codes of a set of values are
    /// their rows.
    pub fn codes_are_rows(&self) -> bool {
        self.values.len() == self.codes.len()
    }

    /// Per distinct value, the one row holding it, ascending with the
    /// value's code; `None` unless every value is on exactly one row (an
    /// email column). Values are coded in the order rows first hold them,
    /// so the rows of such a column ascend with the codes, and the rows of
    /// a set of codes are found without a scan of the rows.
    pub fn row_of_unique_value(&self) -> Option<&[u32]> {
        // Most columns repeat their values: no pass over their rows.
        if self.values.len() * MIN_ROWS_PER_VALUE_FOR_POSTINGS <= self.codes.len() {
            return None;
        }
        super::built_once(&self.row_of_unique_value, || {
            let mut rows = vec![NULL_CODE; self.values.len()];
            for (row, &code) in (0u32..).zip(&self.codes) {
                if code == NULL_CODE {
                    continue;
                }
                if rows[code as usize] != NULL_CODE {
                    return None;
                }
                rows[code as usize] = row;
            }
            rows.is_sorted_by(|a, b| a < b).then_some(rows)
        })
        .as_deref()
    }

    /// The rows of the values on at least one row in 64, as bitsets, for a
    /// column with postings. Several such values are united word by word
    /// in one pass over their bits, where roaring unites two bitmaps at a
    /// time, each time reading and writing the whole result and counting
    /// its bits. Built once, in one pass over the rows, on first use.
    pub fn frequent_value_bits(&self) -> Option<&FrequentValueBits> {
        let postings = self.postings()?;
        Some(
            super::built_once(&self.frequent_value_bits, || -> Box<FrequentValueBits> {
                let mut slot_of_code = vec![NULL_CODE; postings.len()];
                let mut slots = 0;
                for (slot, rows) in slot_of_code.iter_mut().zip(postings) {
                    if self.is_frequent(rows) {
                        *slot = slots;
                        slots += 1;
                    }
                }
                let mut bits = vec![vec![0u8; self.codes.len().div_ceil(8)]; slots as usize];
                // Per block of rows, its bytes of every bitset, filled side by side.
                let mut blocks: Vec<Vec<&mut [u8]>> = Vec::new();
                for value_bits in &mut bits {
                    for (block, bytes) in value_bits.chunks_mut(BLOCK_ROWS / 8).enumerate() {
                        if blocks.len() <= block {
                            blocks.push(Vec::with_capacity(slots as usize));
                        }
                        blocks[block].push(bytes);
                    }
                }
                blocks
                    .into_par_iter()
                    .zip(self.codes.par_chunks(BLOCK_ROWS))
                    .for_each(|(mut block, codes)| {
                        for (row, &code) in codes.iter().enumerate() {
                            let slot = slot_of_code.get(code as usize).copied().unwrap_or(NULL_CODE);
                            if slot != NULL_CODE {
                                block[slot as usize][row / 8] |= 1 << (row % 8);
                            }
                        }
                    });
                Box::new(FrequentValueBits { slot_of_code, bits })
            })
            .as_ref(),
        )
    }

    /// The values in order ([`SortedValues`]), built now if they are not
    /// yet. Sorting 10M emails takes seconds: only a session that will test
    /// the column many times asks for this.
    pub fn build_sorted_values(&self) -> &SortedValues {
        super::built_once(&self.sorted_values, || -> Box<SortedValues> {
            let lower = &self.lowercase;
            // Sorted by a key of their first (last) 16 bytes, read from
            // memory in one pass; the comparisons of the sort then stay in
            // the keys instead of missing the cache on two values each.
            // Values whose keys tie (emails of the same long names) are
            // then ordered among themselves, by their whole bytes read
            // once each, and the groups of ties side by side.
            let order = |key: &(dyn Fn(&[u8]) -> u128 + Sync), whole: &(dyn Fn(&[u8]) -> Vec<u8> + Sync)| {
                let mut keyed: Vec<(u128, u32)> = (0..lower.len() as u32)
                    .into_par_iter()
                    .map(|c| (key(lower.get_bytes(c as usize)), c))
                    .collect();
                keyed.par_sort_unstable();
                keyed
                    .par_chunk_by_mut(|(a, _), (b, _)| a == b)
                    .filter(|tied| tied.len() > 1)
                    .for_each(|tied| tied.sort_by_cached_key(|(_, c)| whole(lower.get_bytes(*c as usize))));
                keyed.into_iter().map(|(_, c)| c).collect()
            };
            // Shorter values are padded with the smallest byte, so the keys
            // order as the values do.
            let first_bytes = |v: &[u8]| {
                let mut key = [0; 16];
                let n = v.len().min(16);
                key[..n].copy_from_slice(&v[..n]);
                u128::from_be_bytes(key)
            };
            let last_bytes = |v: &[u8]| {
                let mut key = [0; 16];
                key.iter_mut().zip(v.iter().rev()).for_each(|(k, b)| *k = *b);
                u128::from_be_bytes(key)
            };
            let (by_value, by_reversed_value) = rayon::join(
                || order(&first_bytes, &|v| v.to_vec()),
                || order(&last_bytes, &|v| v.iter().rev().copied().collect()),
            );
            Box::new(SortedValues {
                by_value,
                by_reversed_value,
            })
        })
        .as_ref()
    }

    /// The values in order, if [`TextColumn::build_sorted_values`] built
    /// them.
    pub fn sorted_values(&self) -> Option<&SortedValues> {
        self.sorted_values.get().map(AsRef::as_ref)
    }

    /// Whether a value on `rows` (its postings) is frequent: on at least one
    /// row in [`ROWS_PER_FREQUENT_VALUE`].
    pub fn is_frequent(&self, rows: &RoaringBitmap) -> bool {
        rows.len() * ROWS_PER_FREQUENT_VALUE as u64 >= (self.codes.len() as u64).max(1)
    }

    /// Whether the postings are built already (the REPL builds them at load).
    pub fn has_postings(&self) -> bool {
        self.postings.get().is_some()
    }

    /// For each code of `codes`, ascending, the rows holding its value: one
    /// pass over the rows, where the postings of every value cost a bitmap
    /// per value (5,000 courses over 10M enrollments: 300 ms) when the
    /// rules name a few of them.
    pub fn rows_of_values(&self, codes: &RoaringBitmap) -> Vec<RoaringBitmap> {
        let mut slots = vec![NULL_CODE; self.values.len()];
        for (slot, code) in (0u32..).zip(codes) {
            slots[code as usize] = slot;
        }
        self.rows_by_slot(codes.len() as usize, |code| {
            slots.get(code as usize).copied().unwrap_or(NULL_CODE)
        })
    }

    fn build_postings(&self) -> Vec<RoaringBitmap> {
        // NULL_CODE stays NULL_CODE: rows without a value are left out.
        self.rows_by_slot(self.values.len(), |code| code)
    }

    /// The rows of each of `slots` slots, given the slot of each code
    /// (`NULL_CODE`: none).
    fn rows_by_slot(&self, slots: usize, slot_of: impl Fn(u32) -> u32 + Sync) -> Vec<RoaringBitmap> {
        if slots <= MAX_SLOTS_FOR_BITSETS {
            return self.rows_by_slot_in_bitsets(slots, slot_of);
        }
        // A counting sort of rows by slot in each chunk of rows, the chunks
        // side by side; a slot's rows are then its rows of each chunk in
        // chunk order, ascending, ready for `from_sorted_iter`.
        let chunk_rows = self.codes.len().div_ceil(2 * rayon::current_num_threads()).max(1 << 16);
        let chunks: Vec<(Vec<usize>, Vec<u32>)> = self
            .codes
            .par_chunks(chunk_rows)
            .enumerate()
            .map(|(chunk, codes)| {
                let slotted = || codes.iter().map(|&code| slot_of(code));
                let mut starts = vec![0usize; slots + 1];
                for slot in slotted().filter(|&s| s != NULL_CODE) {
                    starts[slot as usize + 1] += 1;
                }
                for i in 1..starts.len() {
                    starts[i] += starts[i - 1];
                }
                let mut next = starts.clone();
                let mut rows = vec![0u32; starts[slots]];
                let first_row = chunk * chunk_rows;
                for (row, slot) in (first_row..).zip(slotted()).filter(|(_, s)| *s != NULL_CODE) {
                    rows[next[slot as usize]] = row as u32;
                    next[slot as usize] += 1;
                }
                (starts, rows)
            })
            .collect();
        (0..slots)
            .into_par_iter()
            .map(|slot| {
                let rows = chunks
                    .iter()
                    .flat_map(|(starts, rows)| rows[starts[slot]..starts[slot + 1]].iter().copied());
                RoaringBitmap::from_sorted_iter(rows).expect("rows ascend")
            })
            .collect()
    }

    /// [`TextColumn::rows_by_slot`] for few slots: each block of rows is
    /// gathered into a bitset per slot, which roaring turns into containers
    /// far faster than rows pushed one at a time (a status column of 5
    /// values over 10M enrollments holds millions of rows per value).
    fn rows_by_slot_in_bitsets(&self, slots: usize, slot_of: impl Fn(u32) -> u32 + Sync) -> Vec<RoaringBitmap> {
        const BLOCK_BYTES: usize = BLOCK_ROWS / 8;
        let blocks: Vec<Vec<RoaringBitmap>> = self
            .codes
            .par_chunks(BLOCK_ROWS)
            .enumerate()
            .map(|(block, codes)| {
                let mut bits = vec![0u8; slots * BLOCK_BYTES];
                for (row, &code) in codes.iter().enumerate() {
                    let slot = slot_of(code);
                    if slot != NULL_CODE {
                        bits[slot as usize * BLOCK_BYTES + row / 8] |= 1 << (row % 8);
                    }
                }
                bits.chunks(BLOCK_BYTES)
                    .map(|slot_bits| RoaringBitmap::from_lsb0_bytes((block * BLOCK_ROWS) as u32, slot_bits))
                    .collect()
            })
            .collect();
        (0..slots)
            .into_par_iter()
            .map(|slot| {
                let mut rows = RoaringBitmap::new();
                for block in &blocks {
                    rows |= &block[slot];
                }
                rows
            })
            .collect()
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

/// Up to this many values (or values asked for), rows are gathered into a
/// bitset per value; 16 bitsets of a block fill 128 KiB, within the cache.
const MAX_SLOTS_FOR_BITSETS: usize = 16;

/// Rows per block of those bitsets: one roaring container.
const BLOCK_ROWS: usize = 1 << 16;

/// Distinct values lowercased per parallel task.
const VALUES_PER_LOWERCASE_TASK: usize = 1 << 14;

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

    #[test]
    fn postings_hold_each_values_rows() {
        let mut b = TextColumnBuilder::default();
        for i in 0..40 {
            b.push(if i % 10 == 0 { None } else { Some(["a", "b"][i % 2]) });
        }
        let t = b.finish();
        let postings = t.postings().unwrap();
        assert_eq!(
            postings[0].iter().collect::<Vec<_>>(),
            vec![
                1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 33, 35, 37, 39
            ]
        );
        assert_eq!(postings[1].len(), 16);
        let unique: TextColumn = (0..40).map(|i| Some(i.to_string())).collect();
        assert!(unique.postings().is_none());
    }

    /// Across several chunks of rows, with few values (a bitset per value)
    /// and many (a counting sort).
    #[test]
    fn postings_hold_each_values_rows_across_chunks() {
        let rows = 1_000_003;
        for distinct in [3, 40] {
            let value_of = |row: usize| (row % 7 != 3).then(|| format!("v{}", (row * 31 + row / 1000) % distinct));
            let t: TextColumn = (0..rows).map(value_of).collect();
            let postings = t.postings().unwrap();
            assert_eq!(postings.len(), t.values.len());
            for (code, rows_of_value) in postings.iter().enumerate() {
                let value = t.values.get(code);
                let expected: RoaringBitmap = (0..rows as u32)
                    .filter(|&r| value_of(r as usize).as_deref() == Some(value))
                    .collect();
                assert_eq!(rows_of_value, &expected, "value {value}");
            }
            let non_null = (0..rows).filter(|&r| value_of(r).is_some()).count() as u64;
            assert_eq!(postings.iter().map(RoaringBitmap::len).sum::<u64>(), non_null);
        }
    }

    /// The rows of some values, in one pass across chunks, equal their
    /// postings, and the postings are not built on the way.
    #[test]
    fn rows_of_some_values_equal_their_postings() {
        let rows = 300_007;
        let t: TextColumn = (0..rows)
            .map(|row| (row % 11 != 5).then(|| format!("v{}", row * 7 % 40)))
            .collect();
        let codes: RoaringBitmap = [0, 3, 39].into_iter().collect();
        let some = t.rows_of_values(&codes);
        assert!(!t.has_postings());
        let postings = t.postings().unwrap();
        assert_eq!(some.len(), 3);
        for (rows, code) in some.iter().zip(&codes) {
            assert!(!rows.is_empty());
            assert_eq!(rows, &postings[code as usize], "code {code}");
        }
    }
}
