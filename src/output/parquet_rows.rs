//! Memberships and changes as Parquet, with the pages encoded here.
//!
//! The rows have a shape a general writer cannot see: a group's rows are
//! one run of one key, and its user ids ascend. The Arrow writer hashed and
//! compared the key of every row to find its dictionary entry and its
//! statistics, and pushed ids one at a time through its delta encoder: a
//! third of a 227M-row file's time went to the key alone. Here a group's
//! key costs one run header per page, and its ids go from the bitmap
//! straight into bit-packed miniblocks. parquet-rs still writes the page
//! headers, the row groups and the footer.

use super::{GroupRows, change_word};
use bytes::Bytes;
use parquet::basic::{Compression, Encoding};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::ByteArray;
use parquet::errors::ParquetError;
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;
use parquet::file::writer::{SerializedFileWriter, SerializedPageWriter, TrackedWrite};
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::{ColumnDescPtr, SchemaDescriptor};
use rayon::prelude::*;
use std::io::Write;
use std::sync::Arc;

/// A file of memberships or changes being written: the groups' rows, in
/// the order appended, as `group` (dictionary-encoded, a group's rows one
/// run), `user_id` (unsigned, delta-encoded: ids ascend within a group)
/// and, with changes, `change` (dictionary-encoded, one bit a row). At 20%
/// of users a membership takes about half a byte.
pub(super) struct RowsWriter<W: Write + Send> {
    writer: SerializedFileWriter<W>,
    columns: SchemaDescriptor,
    with_change: bool,
}

impl<W: Write + Send> RowsWriter<W> {
    /// Starts the file, with a `change` column if `with_change`.
    pub(super) fn new(out: W, with_change: bool) -> Result<RowsWriter<W>, ParquetError> {
        let change_column = if with_change {
            "required binary change (STRING);"
        } else {
            ""
        };
        let schema = Arc::new(parse_message_type(&format!(
            "message memberships {{ required binary group (STRING); required int32 user_id (INTEGER(32, false)); {change_column} }}"
        ))?);
        let columns = SchemaDescriptor::new(schema.clone());
        let writer = SerializedFileWriter::new(out, schema, Arc::new(WriterProperties::new()))?;
        Ok(RowsWriter {
            writer,
            columns,
            with_change,
        })
    }

    /// Appends the groups' rows in row groups of `rows_per_group` (the last
    /// may have fewer) and pages of `rows_per_page`. Row groups are encoded
    /// side by side, a few per core, and written in order.
    pub(super) fn append(
        &mut self,
        groups: &[(&str, GroupRows<'_>)],
        rows_per_group: u64,
        rows_per_page: u64,
    ) -> Result<(), ParquetError> {
        let plans = row_group_plans(groups, rows_per_group);
        for window in plans.chunks(row_groups_at_once()) {
            let encoded = window
                .par_iter()
                .map(|plan| {
                    RowGroupRows::gather(groups, plan, self.with_change).encode(&self.columns, rows_per_page as usize)
                })
                .collect::<Result<Vec<_>, ParquetError>>()?;
            for chunks in encoded {
                let mut row_group = self.writer.next_row_group()?;
                for (bytes, close) in chunks {
                    row_group.append_column(&bytes, close)?;
                }
                row_group.close()?;
            }
        }
        Ok(())
    }

    /// Writes the footer.
    pub(super) fn finish(self) -> Result<(), ParquetError> {
        self.writer.close()?;
        Ok(())
    }
}

/// Row groups encoded side by side: a few per core.
pub(super) fn row_groups_at_once() -> usize {
    4 * rayon::current_num_threads()
}

/// One row group's rows: per group (its index), how many of its rows to
/// skip and how many to take.
type RowGroupPlan = Vec<(usize, u64, u64)>;

/// Cuts the groups' rows, in order, into row groups of `rows_per_group`.
fn row_group_plans(groups: &[(&str, GroupRows<'_>)], rows_per_group: u64) -> Vec<RowGroupPlan> {
    let mut plans = vec![RowGroupPlan::new()];
    let mut room = rows_per_group;
    for (index, (_, group)) in groups.iter().enumerate() {
        let mut skip = 0;
        let mut left = group.len();
        while left > 0 {
            if room == 0 {
                plans.push(RowGroupPlan::new());
                room = rows_per_group;
            }
            let take = left.min(room);
            plans.last_mut().expect("a plan").push((index, skip, take));
            (skip, left, room) = (skip + take, left - take, room - take);
        }
    }
    plans.retain(|plan| !plan.is_empty());
    plans
}

/// The rows of one row group, gathered from the groups' bitmaps.
struct RowGroupRows<'a> {
    /// Each group's key and its rows here, in order.
    runs: Vec<(&'a str, usize)>,
    user_ids: Vec<u32>,
    /// Per row of changes, whether it was added; empty for memberships.
    added: Vec<bool>,
}

impl<'a> RowGroupRows<'a> {
    fn gather(groups: &[(&'a str, GroupRows<'_>)], plan: &RowGroupPlan, with_change: bool) -> RowGroupRows<'a> {
        let rows = plan.iter().map(|(_, _, take)| *take as usize).sum();
        let mut user_ids = Vec::with_capacity(rows);
        let mut added = Vec::with_capacity(if with_change { rows } else { 0 });
        let mut runs = Vec::with_capacity(plan.len());
        for &(index, skip, take) in plan {
            let (key, group) = &groups[index];
            group.extend_in(skip..skip + take, &mut user_ids, &mut added);
            runs.push((*key, take as usize));
        }
        RowGroupRows { runs, user_ids, added }
    }

    /// Each column's chunk, ready to append to the row group.
    fn encode(
        &self,
        columns: &SchemaDescriptor,
        rows_per_page: usize,
    ) -> Result<Vec<(Bytes, ColumnCloseResult)>, ParquetError> {
        let rows = self.user_ids.len();
        let pages = (0..rows)
            .step_by(rows_per_page)
            .map(|start| start..rows.min(start + rows_per_page));
        let keys: Vec<&str> = self.runs.iter().map(|(key, _)| *key).collect();
        let group = ColumnChunk {
            dictionary: Some(&keys),
            pages: pages
                .clone()
                .map(|range| (dictionary_runs(&self.runs, range.clone(), keys.len()), range.len()))
                .collect(),
            encoding: Encoding::RLE_DICTIONARY,
            statistics: Statistics::byte_array(
                keys.first().map(|key| ByteArray::from(*key)),
                keys.last().map(|key| ByteArray::from(*key)),
                None,
                Some(0),
                false,
            ),
        }
        .write(columns.column(0), rows)?;
        let user_ids = ColumnChunk {
            dictionary: None,
            pages: pages
                .clone()
                .map(|range| (delta_binary_packed(&self.user_ids[range.clone()]), range.len()))
                .collect(),
            encoding: Encoding::DELTA_BINARY_PACKED,
            // Unsigned ids are stored as the INT32 of the same bits.
            statistics: Statistics::int32(
                self.user_ids.iter().min().map(|&id| id as i32),
                self.user_ids.iter().max().map(|&id| id as i32),
                None,
                Some(0),
                false,
            ),
        }
        .write(columns.column(1), rows)?;
        let mut chunks = vec![group, user_ids];
        if !self.added.is_empty() {
            let word = |added: bool| Some(ByteArray::from(change_word(added)));
            let any_added = self.added.contains(&true);
            let any_removed = self.added.contains(&false);
            let changes = ColumnChunk {
                dictionary: Some(&[change_word(true), change_word(false)]),
                pages: pages
                    .map(|range| (bit_per_row(&self.added[range.clone()]), range.len()))
                    .collect(),
                encoding: Encoding::RLE_DICTIONARY,
                // "add" sorts before "remove".
                statistics: Statistics::byte_array(word(any_added), word(!any_removed), None, Some(0), false),
            }
            .write(columns.column(2), rows)?;
            chunks.push(changes);
        }
        Ok(chunks)
    }
}

/// One column's pages in one row group, encoded.
struct ColumnChunk<'a> {
    /// The dictionary's words, when the pages hold indices into it.
    dictionary: Option<&'a [&'a str]>,
    /// Each data page's values and its row count.
    pages: Vec<(Vec<u8>, usize)>,
    encoding: Encoding,
    statistics: Statistics,
}

impl ColumnChunk<'_> {
    /// The chunk's bytes (page headers and pages, uncompressed: the values
    /// are bit-packed already) and its metadata.
    fn write(self, column: ColumnDescPtr, rows: usize) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
        let mut sink = TrackedWrite::new(Vec::new());
        let mut page_writer = SerializedPageWriter::new(&mut sink);
        let (mut compressed_size, mut uncompressed_size) = (0, 0);
        let mut write_page = |page: Page, size: usize| {
            let written = page_writer.write_page(CompressedPage::new(page, size))?;
            compressed_size += written.compressed_size as i64;
            uncompressed_size += written.uncompressed_size as i64;
            Ok::<_, ParquetError>(written.offset as i64)
        };
        let mut encodings = vec![self.encoding];
        let dictionary_page_offset = match self.dictionary {
            Some(words) => {
                encodings.push(Encoding::PLAIN);
                let mut plain = Vec::new();
                for word in words {
                    plain.extend_from_slice(&(word.len() as u32).to_le_bytes());
                    plain.extend_from_slice(word.as_bytes());
                }
                let size = plain.len();
                let page = Page::DictionaryPage {
                    buf: plain.into(),
                    num_values: words.len() as u32,
                    encoding: Encoding::PLAIN,
                    is_sorted: false,
                };
                Some(write_page(page, size)?)
            }
            None => None,
        };
        let mut data_page_offset = None;
        for (values, page_rows) in self.pages {
            let size = values.len();
            let page = Page::DataPage {
                buf: values.into(),
                num_values: page_rows as u32,
                encoding: self.encoding,
                def_level_encoding: Encoding::RLE,
                rep_level_encoding: Encoding::RLE,
                statistics: None,
            };
            let offset = write_page(page, size)?;
            data_page_offset.get_or_insert(offset);
        }
        let bytes = Bytes::from(sink.into_inner()?);
        let metadata = ColumnChunkMetaData::builder(column)
            .set_compression(Compression::UNCOMPRESSED)
            .set_encodings(encodings)
            .set_total_compressed_size(compressed_size)
            .set_total_uncompressed_size(uncompressed_size)
            .set_num_values(rows as i64)
            .set_data_page_offset(data_page_offset.unwrap_or_default())
            .set_dictionary_page_offset(dictionary_page_offset)
            .set_statistics(self.statistics)
            .build()?;
        let close = ColumnCloseResult {
            bytes_written: bytes.len() as u64,
            rows_written: rows as u64,
            metadata,
            bloom_filter: None,
            column_index: None,
            offset_index: None,
        };
        Ok((bytes, close))
    }
}

/// A page of dictionary indices where each run of rows shares one index
/// (run `i` has index `i`): the bit width, then one run-length header and
/// value per run that meets `rows`.
fn dictionary_runs(runs: &[(&str, usize)], rows: std::ops::Range<usize>, words: usize) -> Vec<u8> {
    let width = bits_for(words.saturating_sub(1) as u32);
    let mut page = vec![width as u8];
    let mut start = 0;
    for (index, (_, length)) in runs.iter().enumerate() {
        let (from, to) = (start.max(rows.start), (start + length).min(rows.end));
        if from < to {
            uleb128(&mut page, ((to - from) as u64) << 1);
            page.extend_from_slice(&(index as u32).to_le_bytes()[..width.div_ceil(8) as usize]);
        }
        start += length;
    }
    page
}

/// A page of the `change` column's dictionary indices, `add` then
/// `remove`, one bit each: the bit width, then one bit-packed run of all
/// rows, eight to a byte.
fn bit_per_row(added: &[bool]) -> Vec<u8> {
    let mut page = vec![1];
    uleb128(&mut page, ((added.len().div_ceil(8) as u64) << 1) | 1);
    page.extend(added.chunks(8).map(|eight| {
        eight
            .iter()
            .enumerate()
            .fold(0u8, |byte, (bit, &added)| byte | (u8::from(!added) << bit))
    }));
    page
}

/// Deltas in a block of [`DELTA_BLOCK`], cut into [`DELTA_MINIBLOCKS`]
/// miniblocks, each bit-packed at the width of its widest delta: parquet-rs'
/// and Arrow C++'s own choice.
const DELTA_BLOCK: usize = 128;
const DELTA_MINIBLOCKS: usize = 4;
const DELTA_MINIBLOCK: usize = DELTA_BLOCK / DELTA_MINIBLOCKS;

/// `values` as DELTA_BINARY_PACKED INT32: the header with the first value,
/// then blocks of deltas from a block's smallest delta. Deltas wrap in 32
/// bits, as the format asks, so ids past 2^31 and the fall from one
/// group's last id to the next group's first cost nothing special.
fn delta_binary_packed(values: &[u32]) -> Vec<u8> {
    let mut page = Vec::with_capacity(16 + values.len() / 2);
    uleb128(&mut page, DELTA_BLOCK as u64);
    uleb128(&mut page, DELTA_MINIBLOCKS as u64);
    uleb128(&mut page, values.len() as u64);
    let Some(&first) = values.first() else {
        uleb128(&mut page, 0);
        return page;
    };
    uleb128(&mut page, zigzag(i64::from(first as i32)));
    let mut previous = first;
    let mut deltas = [0u32; DELTA_BLOCK];
    for block in values[1..].chunks(DELTA_BLOCK) {
        for (delta, &value) in deltas.iter_mut().zip(block) {
            *delta = value.wrapping_sub(previous);
            previous = value;
        }
        let deltas = &mut deltas[..block.len()];
        let min = deltas
            .iter()
            .map(|&delta| delta as i32)
            .min()
            .expect("a block has a delta");
        uleb128(&mut page, zigzag(i64::from(min)));
        for delta in deltas.iter_mut() {
            *delta = delta.wrapping_sub(min as u32);
        }
        let widths_at = page.len();
        page.extend_from_slice(&[0; DELTA_MINIBLOCKS]);
        for (at, miniblock) in deltas.chunks(DELTA_MINIBLOCK).enumerate() {
            let width = bits_for(miniblock.iter().fold(0, |all, &delta| all | delta));
            page[widths_at + at] = width as u8;
            bit_pack(&mut page, miniblock, width);
        }
    }
    page
}

/// Packs a miniblock's values at `width` bits each, least significant bit
/// first, padded with zeros to a full miniblock.
fn bit_pack(page: &mut Vec<u8>, values: &[u32], width: u32) {
    if width == 0 {
        return;
    }
    let (mut buffer, mut bits) = (0u64, 0);
    for at in 0..DELTA_MINIBLOCK {
        buffer |= u64::from(values.get(at).copied().unwrap_or(0)) << bits;
        bits += width;
        if bits >= 32 {
            page.extend_from_slice(&(buffer as u32).to_le_bytes());
            buffer >>= 32;
            bits -= 32;
        }
    }
}

/// The bits needed to write `value`.
fn bits_for(value: u32) -> u32 {
    u32::BITS - value.leading_zeros()
}

fn uleb128(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::column::reader::get_typed_column_reader;
    use parquet::data_type::{ByteArrayType, Int32Type};
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// Ids that wrap past 2^31, start a page past it, fall from one group
    /// to the next, repeat a delta for a whole miniblock, or end a block
    /// part way come back through parquet-rs' own reader as they went in,
    /// each under its group's key.
    #[test]
    fn rows_read_back_through_parquet_rs() {
        let mut first: Vec<u32> = (0..1000).step_by(3).collect();
        first.extend([2_147_483_647, 2_147_483_648, 4_000_000_000, u32::MAX]);
        first.extend((0..77).map(|i| 1001 + i * 1_000_003));
        let bitmaps: Vec<(&str, roaring::RoaringBitmap)> = vec![
            ("a", first.into_iter().collect()),
            ("b", (0..500).map(|i| 3_000_000_000 + i * 7).collect()),
            ("c", (0..40).collect()),
        ];
        let groups: Vec<(&str, GroupRows<'_>)> = bitmaps
            .iter()
            .map(|(key, ids)| (*key, GroupRows::Members(ids)))
            .collect();
        let mut file = Vec::new();
        let mut rows = RowsWriter::new(&mut file, false).unwrap();
        rows.append(&groups, 300, 100).unwrap();
        rows.finish().unwrap();
        let reader = SerializedFileReader::new(Bytes::from(file)).unwrap();
        assert_eq!(reader.num_row_groups(), 4);
        let mut read = Vec::new();
        for row_group in 0..reader.num_row_groups() {
            let row_group = reader.get_row_group(row_group).unwrap();
            let mut keys = Vec::new();
            get_typed_column_reader::<ByteArrayType>(row_group.get_column_reader(0).unwrap())
                .read_records(usize::MAX, None, None, &mut keys)
                .unwrap();
            let mut ids = Vec::new();
            get_typed_column_reader::<Int32Type>(row_group.get_column_reader(1).unwrap())
                .read_records(usize::MAX, None, None, &mut ids)
                .unwrap();
            read.extend(
                keys.iter()
                    .map(|key| key.as_utf8().unwrap().to_string())
                    .zip(ids.into_iter().map(|id| id as u32)),
            );
        }
        let expected: Vec<(String, u32)> = bitmaps
            .iter()
            .flat_map(|(key, ids)| ids.iter().map(|id| (key.to_string(), id)))
            .collect();
        assert_eq!(read, expected);
    }
}
