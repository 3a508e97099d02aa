//! Users rows and user ids. Rows are in the order of their ids, so a set of
//! rows maps to a set of ids in the same order, and the rows of the ids of
//! one 64-id word are consecutive: a big set maps a word at a time, by one
//! bit deposit (`pdep`) per word, instead of one lookup per member.

use super::NO_USER;
use roaring::RoaringBitmap;

/// user id → users row, for ids that ascend with the rows.
pub(super) enum RowIndex {
    /// `user_ids[row] == row` for every row.
    Identity(usize),
    /// Any other ids, ascending, so mapping a set of rows keeps its order.
    Map {
        /// Indexed by id ([`NO_USER`] where no user has it), for the ids up
        /// to a few times the number of users: most systems number users
        /// from 1, with gaps.
        dense: Vec<u32>,
        /// The ids past the dense table (imported from another system,
        /// say), ascending: found by binary search. Their rows follow the
        /// rows of the dense ids.
        sparse: Vec<u32>,
        /// The number of dense ids: the row of `sparse[0]`.
        dense_rows: usize,
    },
}

/// A dense id table may have this many slots per user.
const DENSE_SLOTS_PER_USER: usize = 4;

impl RowIndex {
    /// The index of `ids`, which ascend.
    pub(super) fn new(ids: &[u32]) -> RowIndex {
        debug_assert!(ids.is_sorted_by(|a, b| a < b));
        if ids.iter().enumerate().all(|(row, &id)| row as u64 == u64::from(id)) {
            return RowIndex::Identity(ids.len());
        }
        let slots = ids.len().saturating_mul(DENSE_SLOTS_PER_USER).max(1024);
        let dense_rows = ids.partition_point(|&id| (id as usize) < slots);
        let mut dense = vec![NO_USER; ids[..dense_rows].last().map_or(0, |&max| max as usize + 1)];
        for (row, &id) in ids[..dense_rows].iter().enumerate() {
            dense[id as usize] = row as u32;
        }
        RowIndex::Map {
            dense,
            sparse: ids[dense_rows..].to_vec(),
            dense_rows,
        }
    }

    /// Asks for the memory [`RowIndex::row`] will read for `id`.
    pub(super) fn prefetch(&self, id: u32) {
        if let RowIndex::Map { dense, .. } = self
            && let Some(slot) = dense.get(id as usize)
        {
            crate::data::prefetch(slot);
        }
    }

    /// The row of a user id, if a user has it.
    pub(super) fn row(&self, id: u32) -> Option<u32> {
        match self {
            RowIndex::Identity(n) => ((id as usize) < *n).then_some(id),
            RowIndex::Map {
                dense,
                sparse,
                dense_rows,
            } => match dense.get(id as usize) {
                Some(&row) => (row != NO_USER).then_some(row),
                None => Some((dense_rows + sparse.binary_search(&id).ok()?) as u32),
            },
        }
    }
}

/// Where the dense ids lie: one bit per id up to the last dense one, and
/// for each word of 64 ids the row of its first id (the number of ids
/// before the word).
pub(super) struct IdWords {
    words: Vec<u64>,
    rows_before: Vec<u32>,
}

impl IdWords {
    /// The words of `dense_ids`, which ascend.
    pub(super) fn new(dense_ids: &[u32]) -> IdWords {
        let len = dense_ids.last().map_or(0, |&last| last as usize / 64 + 1);
        let mut words = vec![0u64; len];
        for &id in dense_ids {
            words[id as usize / 64] |= 1 << (id % 64);
        }
        let mut rows = 0;
        let rows_before = words
            .iter()
            .map(|word| {
                let before = rows;
                rows += word.count_ones();
                before
            })
            .collect();
        IdWords { words, rows_before }
    }
}

/// 64-bit words of a roaring container.
const WORDS_PER_CONTAINER: usize = 1024;

/// The ids of `rows`, given each row's id (`user_ids`, ascending), how many
/// rows hold dense ids and where those lie. A set of at least one member
/// per word of the span of its ids is deposited word by word; a smaller
/// one, and the rows of ids past the dense ones, are looked up member by
/// member.
pub(super) fn ids_of_rows(
    user_ids: &[u32],
    dense_rows: usize,
    id_words: &IdWords,
    rows: &RoaringBitmap,
) -> RoaringBitmap {
    let dense_end = dense_rows as u32;
    let mut out = match rows.range(..dense_end).next_back() {
        Some(last) if rows.range_cardinality(..dense_end) >= u64::from(user_ids[last as usize] / 64) => {
            deposited_ids(user_ids, id_words, rows, last)
        }
        _ => RoaringBitmap::from_sorted_iter(rows.range(..dense_end).map(|row| user_ids[row as usize]))
            .expect("ids ascend with rows"),
    };
    out.append(rows.range(dense_end..).map(|row| user_ids[row as usize]))
        .expect("ids past the dense ones ascend, after them");
    out
}

/// The ids of the rows of `rows` up to `last` (a dense row), deposited from
/// a bitset of the rows into the words of the ids, from the container of the
/// first member's id to the word of the last one's.
fn deposited_ids(user_ids: &[u32], id_words: &IdWords, rows: &RoaringBitmap, last: u32) -> RoaringBitmap {
    let first = rows.min().expect("a set with a last row has a first");
    let first_word = (user_ids[first as usize] as usize / 64) & !(WORDS_PER_CONTAINER - 1);
    let last_word = user_ids[last as usize] as usize / 64;
    let row_bits = row_words(rows, last);
    let mut out = vec![0u8; (last_word + 1 - first_word) * 8];
    deposit(
        &id_words.words[first_word..=last_word],
        &id_words.rows_before[first_word..=last_word],
        &row_bits,
        &mut out,
    );
    RoaringBitmap::from_lsb0_bytes((first_word * 64) as u32, &out)
}

/// A bitset of the rows of `rows` up to the end of the container of `last`,
/// with a word to spare: read from the bitmap's portable serialization,
/// where a bitmap container is its 1,024 words as they are and an array or
/// run container its values, so no member is visited one by one where the
/// container is a bitmap.
fn row_words(rows: &RoaringBitmap, last: u32) -> Vec<u64> {
    let containers = (last >> 16) as usize + 1;
    let mut words = vec![0u64; containers * WORDS_PER_CONTAINER + 1];
    let mut bytes = Vec::with_capacity(rows.serialized_size());
    rows.serialize_into(&mut bytes).expect("writing to a Vec cannot fail");
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
    // The portable format's two headers: with no run container, a cookie
    // and the count; else the count in the cookie, then a bit per container
    // telling the run containers.
    let (count, run_flags, descriptions) = match u32_at(0) {
        NO_RUN_COOKIE => (u32_at(4), None, 8),
        cookie => {
            debug_assert_eq!(cookie & 0xFFFF, RUN_COOKIE);
            let count = (cookie >> 16) + 1;
            (count, Some(4), 4 + count.div_ceil(8))
        }
    };
    let has_offsets = run_flags.is_none() || count >= RUN_FORMAT_OFFSETS_FROM;
    let mut at = descriptions + 4 * count + if has_offsets { 4 * count } else { 0 };
    for i in 0..count {
        let key = u16_at(descriptions + 4 * i);
        if key >= containers {
            break;
        }
        let cardinality = u16_at(descriptions + 4 * i + 2) + 1;
        let base = key << 16;
        let is_run = run_flags.is_some_and(|flags| bytes[flags + i / 8] & (1 << (i % 8)) != 0);
        if is_run {
            let runs = u16_at(at);
            at += 2;
            for _ in 0..runs {
                let (start, extra) = (u16_at(at), u16_at(at + 2));
                (base + start..=base + start + extra).for_each(|bit| set_bit(&mut words, bit));
                at += 4;
            }
        } else if cardinality > ARRAY_MAX {
            let container = &mut words[key * WORDS_PER_CONTAINER..][..WORDS_PER_CONTAINER];
            for (word, le) in container.iter_mut().zip(bytes[at..].chunks_exact(8)) {
                *word = u64::from_le_bytes(le.try_into().expect("chunks of 8"));
            }
            at += WORDS_PER_CONTAINER * 8;
        } else {
            (0..cardinality).for_each(|v| set_bit(&mut words, base + u16_at(at + 2 * v)));
            at += 2 * cardinality;
        }
    }
    words
}

fn set_bit(words: &mut [u64], bit: usize) {
    words[bit / 64] |= 1 << (bit % 64);
}

/// The portable format's cookie when no container is a run container.
const NO_RUN_COOKIE: usize = 12346;
/// The low half of its cookie when some are.
const RUN_COOKIE: usize = 12347;
/// With run containers, the format has container offsets from this many.
const RUN_FORMAT_OFFSETS_FROM: usize = 4;
/// The most values an array container holds; more make a bitmap container.
const ARRAY_MAX: usize = 4096;

/// For each word of ids (`id_words`, whose first id is the row
/// `rows_before` of the same word), the ids whose rows are set in
/// `row_bits`, written to `out` as little-endian bytes.
fn deposit(id_words: &[u64], rows_before: &[u32], row_bits: &[u64], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("bmi2") {
        // SAFETY: the CPU has BMI2, as checked just above.
        unsafe { deposit_bmi2(id_words, rows_before, row_bits, out) };
        return;
    }
    deposit_with(deposit_bits, id_words, rows_before, row_bits, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi2")]
fn deposit_bmi2(id_words: &[u64], rows_before: &[u32], row_bits: &[u64], out: &mut [u8]) {
    deposit_with(
        |bits, mask| std::arch::x86_64::_pdep_u64(bits, mask),
        id_words,
        rows_before,
        row_bits,
        out,
    );
}

#[inline(always)]
fn deposit_with(
    deposit: impl Fn(u64, u64) -> u64,
    id_words: &[u64],
    rows_before: &[u32],
    row_bits: &[u64],
    out: &mut [u8],
) {
    for ((&mask, &first_row), out) in id_words.iter().zip(rows_before).zip(out.chunks_exact_mut(8)) {
        if mask == 0 {
            continue;
        }
        let (word, shift) = (first_row as usize / 64, first_row % 64);
        let mut bits = row_bits[word] >> shift;
        if shift != 0 {
            bits |= row_bits[word + 1] << (64 - shift);
        }
        out.copy_from_slice(&deposit(bits, mask).to_le_bytes());
    }
}

/// The low bits of `bits`, one by one, at the set bits of `mask`: what
/// `pdep` does in one instruction.
fn deposit_bits(mut bits: u64, mut mask: u64) -> u64 {
    let mut out = 0;
    while mask != 0 && bits != 0 {
        let lowest = mask & mask.wrapping_neg();
        if bits & 1 != 0 {
            out |= lowest;
        }
        bits >>= 1;
        mask ^= lowest;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rows_are_found_by_dense_and_sparse_ids() {
        for ids in [
            vec![0, 3, 7, 12],
            vec![5, 90_000_000, 4_000_000_000],
            vec![2, 4_000_000_000, u32::MAX],
            vec![1, 2, 3],
        ] {
            let index = RowIndex::new(&ids);
            for (row, &id) in ids.iter().enumerate() {
                assert_eq!(index.row(id), Some(row as u32), "id {id} of {ids:?}");
            }
            for absent in [1, 4, 13, 6, 4_000_000_001, u32::MAX - 1] {
                if !ids.contains(&absent) {
                    assert_eq!(index.row(absent), None, "id {absent} of {ids:?}");
                }
            }
        }
        assert!(matches!(RowIndex::new(&[0, 1, 2]), RowIndex::Identity(3)));
        let RowIndex::Map { dense, sparse, .. } = RowIndex::new(&[5, 90_000_000, 4_000_000_000]) else {
            panic!("ids that are not rows need a map");
        };
        assert_eq!((dense.len(), sparse), (6, vec![90_000_000, 4_000_000_000]));
    }

    /// Each row's id, looked up one by one: what the mapping must give.
    fn ids_one_by_one(user_ids: &[u32], rows: &RoaringBitmap) -> RoaringBitmap {
        rows.iter().map(|row| user_ids[row as usize]).collect()
    }

    fn mapped(user_ids: &[u32], rows: &RoaringBitmap) -> RoaringBitmap {
        let RowIndex::Map { dense_rows, .. } = RowIndex::new(user_ids) else {
            panic!("ids that are not rows need a map");
        };
        ids_of_rows(user_ids, dense_rows, &IdWords::new(&user_ids[..dense_rows]), rows)
    }

    #[test]
    fn rows_map_to_their_ids_deposited_and_one_by_one() {
        // Ids from 1 with gaps, then a few far past them.
        let mut user_ids: Vec<u32> = (0..300_000u32).map(|i| 1 + i + i / 3).collect();
        user_ids.extend([4_000_000_000, 4_000_000_007, u32::MAX]);
        let every = |step: usize| (0..user_ids.len() as u32).step_by(step).collect::<RoaringBitmap>();
        let all = every(1);
        let mut with_runs = &all - &every(70_000);
        assert!(with_runs.optimize(), "long runs make run containers");
        let sets = [
            RoaringBitmap::new(),
            every(3),
            every(1000),
            (0..5).chain(299_990..300_003).collect(),
            (300_000..300_003).collect(),
            [0, 299_999].into_iter().collect(),
            (100_000..100_064).collect(),
            &all - &every(4),
            with_runs,
            all,
        ];
        for rows in &sets {
            assert_eq!(
                mapped(&user_ids, rows),
                ids_one_by_one(&user_ids, rows),
                "{} rows",
                rows.len()
            );
        }
    }

    #[test]
    fn the_row_bitset_holds_each_kind_of_container() {
        let mut rows: RoaringBitmap = (0..3u32).chain((65_536..65_536 + 10_000).step_by(2)).collect();
        rows.insert_range(3 * 65_536..3 * 65_536 + 5_000);
        rows.optimize();
        let words = row_words(&rows, rows.max().unwrap());
        let set: RoaringBitmap = (0..words.len() * 64)
            .filter(|&bit| words[bit / 64] & (1 << (bit % 64)) != 0)
            .map(|bit| bit as u32)
            .collect();
        assert_eq!(set, rows);
    }

    #[test]
    fn a_bit_deposit_places_the_low_bits_at_the_mask() {
        assert_eq!(deposit_bits(0b101, 0b1110_0000), 0b1010_0000);
        assert_eq!(deposit_bits(u64::MAX, 0), 0);
        assert_eq!(deposit_bits(0b1, u64::MAX << 63), 1 << 63);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("bmi2") {
            let mut state = 0x9E37_79B9_7F4A_7C15u64;
            for _ in 0..10_000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let (bits, mask) = (state, state.rotate_left(29) | state.rotate_right(11));
                // SAFETY: the CPU has BMI2, as checked above.
                let by_the_cpu = unsafe { std::arch::x86_64::_pdep_u64(bits, mask) };
                assert_eq!(deposit_bits(bits, mask), by_the_cpu, "{bits:#x} at {mask:#x}");
            }
        }
    }

    proptest! {
        /// Any ids (gaps of any size, some past the dense table) and any
        /// set of rows: the mapping gives what looking each row up gives.
        #[test]
        fn any_rows_map_to_their_ids(
            gaps in prop::collection::vec(prop_oneof![8 => 1u32..3, 1 => 3u32..200], 1..5_000),
            far in prop::collection::btree_set(1_000_000u32..u32::MAX, 0..4),
            density in 0.0f64..1.0,
            seed: u64,
        ) {
            let mut user_ids: Vec<u32> = gaps.iter().scan(0u32, |id, gap| { *id += gap; Some(*id) }).collect();
            user_ids.extend(far);
            let mut state = seed | 1;
            let rows: RoaringBitmap = (0..user_ids.len() as u32)
                .filter(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ((state >> 11) as f64 / (1u64 << 53) as f64) < density
                })
                .collect();
            if matches!(RowIndex::new(&user_ids), RowIndex::Map { .. }) {
                prop_assert_eq!(mapped(&user_ids, &rows), ids_one_by_one(&user_ids, &rows));
            }
        }
    }
}
