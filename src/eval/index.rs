//! The indexes evaluation builds over a text column: per value, its rows
//! (postings), or its one row (a column of unique values); the rows of the
//! frequent values as bitsets; the values in sorted order. Each is built
//! once, on first use or by [`crate::dataset::Dataset::build_indexes`], and
//! kept in a slot of its [`TextColumn`].

use crate::data::{NULL_CODE, TextColumn, built_once};
use rayon::prelude::*;
use roaring::RoaringBitmap;

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

/// A column whose values repeat less than this on average gets no postings:
/// a bitmap per near-unique value (emails, say) costs more than a scan.
const MIN_ROWS_PER_VALUE_FOR_POSTINGS: usize = 16;

/// Up to this many values (or values asked for), rows are gathered into a
/// bitset per value; 16 bitsets of a block fill 128 KiB, within the cache.
const MAX_SLOTS_FOR_BITSETS: usize = 16;

/// Rows per block of those bitsets: one roaring container.
const BLOCK_ROWS: usize = 1 << 16;

impl TextColumn {
    /// Per distinct value, the bitmap of rows holding it, or `None` for a
    /// column of mostly unique values. Built once, in one pass, on first use.
    pub fn postings(&self) -> Option<&[RoaringBitmap]> {
        if self.values.is_empty() || self.codes.len() / self.values.len() < MIN_ROWS_PER_VALUE_FOR_POSTINGS {
            return None;
        }
        Some(built_once(&self.postings, || self.build_postings()).as_slice())
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
        built_once(&self.row_of_unique_value, || {
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
            built_once(&self.frequent_value_bits, || -> Box<FrequentValueBits> {
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
        built_once(&self.sorted_values, || -> Box<SortedValues> {
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
    /// row in `ROWS_PER_FREQUENT_VALUE` (64).
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postings_hold_each_values_rows() {
        let t: TextColumn = (0..40)
            .map(|i| (i % 10 != 0).then(|| ["a", "b"][i % 2].to_string()))
            .collect();
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
