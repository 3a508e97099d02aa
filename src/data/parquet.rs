//! Parquet input through arrow: the schema from the footer, then only the
//! wanted columns (a projection), batch by batch.

use super::DataError;
use super::column::{Column, TextColumn, TextColumnBuilder};
use crate::schema::{ColumnSchema, ColumnType, TableSchema, ValueType};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::basic::Encoding;
use rayon::prelude::*;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

const BATCH_ROWS: usize = 64 * 1024;

fn builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, DataError> {
    let file = File::open(path).map_err(|e| DataError::file(path, format!("cannot open the file: {e}")))?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| DataError::file(path, format!("not a readable Parquet file: {e}")))
}

/// The value type of an arrow column type, as rules see it.
pub(super) fn column_type(data_type: &DataType) -> ColumnType {
    use DataType::*;
    match data_type {
        Utf8 | LargeUtf8 | Utf8View => ColumnType::Usable(ValueType::Text),
        Dictionary(_, value) if matches!(**value, Utf8 | LargeUtf8 | Utf8View) => ColumnType::Usable(ValueType::Text),
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Float32 | Float64 => {
            ColumnType::Usable(ValueType::Number)
        }
        Date32 | Date64 | Timestamp(_, _) => ColumnType::Usable(ValueType::Date),
        Boolean => ColumnType::Usable(ValueType::Boolean),
        other => ColumnType::Unusable(format!("`{other}`")),
    }
}

/// Reads the schema and row count from the file's footer.
pub(super) fn read_schema(path: &Path) -> Result<(TableSchema, usize), DataError> {
    let builder = builder(path)?;
    let rows = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    let columns = builder
        .schema()
        .fields()
        .iter()
        .map(|f| ColumnSchema {
            name: f.name().clone(),
            column_type: column_type(f.data_type()),
        })
        .collect();
    Ok((TableSchema { columns }, rows))
}

enum Decoder {
    /// Text, and the codes of the last dictionary seen: batches of one
    /// column chunk share their dictionary.
    Text(TextColumnBuilder, Option<Box<DictionaryCodes>>),
    Number(Vec<f64>),
    Date(Vec<Option<i32>>),
    Boolean(Vec<Option<bool>>),
}

/// Decodes the columns at `wanted` (sorted schema indices), each column on
/// its own reader so that columns decode in parallel.
pub(super) fn decode(path: &Path, schema: &TableSchema, wanted: &[usize]) -> Result<Vec<Column>, DataError> {
    wanted.par_iter().map(|&i| decode_column(path, schema, i)).collect()
}

fn decode_column(path: &Path, schema: &TableSchema, index: usize) -> Result<Column, DataError> {
    let column = &schema.columns[index];
    let mut builder = builder(path)?;
    // Room for every row up front: growing by doubling would copy a column
    // of 100M enrollments (800 MB of numbers) about twice over.
    let rows = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    let mut decoder = match &column.column_type {
        ColumnType::Usable(ValueType::Text) => Decoder::Text(TextColumnBuilder::with_capacity(rows), None),
        ColumnType::Usable(ValueType::Number) => Decoder::Number(Vec::with_capacity(rows)),
        ColumnType::Usable(ValueType::Date) => Decoder::Date(Vec::with_capacity(rows)),
        ColumnType::Usable(ValueType::Boolean) => Decoder::Boolean(Vec::with_capacity(rows)),
        ColumnType::Unusable(t) => {
            return Err(DataError::column(
                path,
                &column.name,
                format!("has type {t}, which rules cannot test"),
            ));
        }
    };
    if matches!(decoder, Decoder::Text(..)) && all_pages_dictionary_encoded(&builder, index) {
        builder = dictionary_reader(path, builder.schema(), index)?;
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| DataError::file(path, format!("cannot read the file: {e}")))?;
    for batch in reader {
        let batch =
            batch.map_err(|e| DataError::file(path, format!("cannot read the file (damaged or truncated?): {e}")))?;
        append(&mut decoder, batch.column(0).as_ref());
    }
    Ok(match decoder {
        Decoder::Text(b, _) => Column::Text(b.finish()),
        Decoder::Number(v) => Column::Number(v),
        Decoder::Date(v) => Column::Date(v),
        Decoder::Boolean(v) => Column::Boolean(v),
    })
}

/// Whether every data page of the column is dictionary-encoded, as the
/// footer's page statistics say (unknown counts as no).
fn all_pages_dictionary_encoded(builder: &ParquetRecordBatchReaderBuilder<File>, index: usize) -> bool {
    let Some(leaf) = builder
        .parquet_schema()
        .columns()
        .iter()
        .position(|c| c.path().parts()[0] == *builder.schema().field(index).name())
    else {
        return false;
    };
    builder.metadata().row_groups().iter().all(|group| {
        let column = group.column(leaf);
        column.dictionary_page_offset().is_some()
            && column
                .page_encoding_stats_mask()
                .is_some_and(|mask| mask.is_only(Encoding::RLE_DICTIONARY) || mask.is_only(Encoding::PLAIN_DICTIONARY))
    })
}

/// A reader that hands the text column at `index` over as dictionary keys
/// and values, as stored, instead of one string per row: each distinct value
/// is then interned once per batch, not once per row.
fn dictionary_reader(
    path: &Path,
    schema: &SchemaRef,
    index: usize,
) -> Result<ParquetRecordBatchReaderBuilder<File>, DataError> {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 if i == index => f.as_ref().clone().with_data_type(
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(f.data_type().clone())),
            ),
            _ => f.as_ref().clone(),
        })
        .collect();
    let options = ArrowReaderOptions::new().with_schema(Arc::new(Schema::new(fields)));
    let file = File::open(path).map_err(|e| DataError::file(path, format!("cannot open the file: {e}")))?;
    ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
        .map_err(|e| DataError::file(path, format!("not a readable Parquet file: {e}")))
}

fn append(decoder: &mut Decoder, array: &dyn Array) {
    match decoder {
        Decoder::Text(builder, dictionary) => append_text(builder, dictionary, array),
        Decoder::Number(out) => append_numbers(out, array),
        Decoder::Date(out) => append_dates(out, array),
        Decoder::Boolean(out) => out.extend(array.as_boolean().iter()),
    }
}

/// A batch's dictionary values, and the column code of each, interned when
/// a row first uses it (a dictionary may hold values no row refers to).
struct DictionaryCodes {
    values: ArrayRef,
    texts: TextColumn,
    codes: Vec<Option<u32>>,
}

fn append_text(builder: &mut TextColumnBuilder, last_dictionary: &mut Option<Box<DictionaryCodes>>, array: &dyn Array) {
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().iter().for_each(|v| builder.push(v)),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().for_each(|v| builder.push(v)),
        DataType::Utf8View => array.as_string_view().iter().for_each(|v| builder.push(v)),
        _ => {
            let dictionary = array.as_any_dictionary();
            let values = dictionary.values();
            let dictionary_codes = match last_dictionary {
                Some(last) if Arc::ptr_eq(&last.values, values) => last,
                _ => {
                    let mut texts = TextColumnBuilder::default();
                    append_text(&mut texts, &mut None, values.as_ref());
                    last_dictionary.insert(Box::new(DictionaryCodes {
                        values: values.clone(),
                        texts: texts.finish(),
                        codes: vec![None; values.len()],
                    }))
                }
            };
            // The nulls are looked up once per batch, not through the
            // array's dynamic `is_valid` once per row.
            let nulls = array.logical_nulls();
            let mut push_key = |key: usize| match dictionary_codes.codes.get_mut(key) {
                Some(Some(code)) => builder.push_code(*code),
                Some(unseen) => match dictionary_codes.texts.get(key) {
                    Some(text) => {
                        let code = builder.intern(text);
                        *unseen = Some(code);
                        builder.push_code(code);
                    }
                    None => builder.push(None),
                },
                None => builder.push(None),
            };
            // The keys the dictionary reader asks for are read off their
            // slice, where widening every batch's keys to a new `Vec<usize>`
            // took a tenth of the decode of a column of 100M courses.
            match (array.as_dictionary_opt::<Int32Type>(), &nulls) {
                (Some(typed), None) => typed.keys().values().iter().for_each(|&key| push_key(key as usize)),
                _ => {
                    for (row, key) in dictionary.normalized_keys().into_iter().enumerate() {
                        let valid = nulls.as_ref().is_none_or(|nulls| nulls.is_valid(row));
                        push_key(if valid { key } else { usize::MAX });
                    }
                }
            }
        }
    }
}

fn append_numbers(out: &mut Vec<f64>, array: &dyn Array) {
    macro_rules! extend {
        ($($variant:ident => $t:ty),*) => {
            match array.data_type() {
                $(DataType::$variant => out.extend(
                    array.as_primitive::<$t>().iter().map(|v| v.map_or(f64::NAN, |v| v as f64)),
                ),)*
                other => unreachable!("not a number type: {other}"),
            }
        };
    }
    extend!(
        Int8 => Int8Type, Int16 => Int16Type, Int32 => Int32Type, Int64 => Int64Type,
        UInt8 => UInt8Type, UInt16 => UInt16Type, UInt32 => UInt32Type, UInt64 => UInt64Type,
        Float32 => Float32Type, Float64 => Float64Type
    );
}

fn append_dates(out: &mut Vec<Option<i32>>, array: &dyn Array) {
    const DAY_SECONDS: i64 = 86_400;
    let per_day = |unit: &TimeUnit| match unit {
        TimeUnit::Second => DAY_SECONDS,
        TimeUnit::Millisecond => DAY_SECONDS * 1_000,
        TimeUnit::Microsecond => DAY_SECONDS * 1_000_000,
        TimeUnit::Nanosecond => DAY_SECONDS * 1_000_000_000,
    };
    let days = |v: i64, per_day: i64| i32::try_from(v.div_euclid(per_day)).ok();
    match array.data_type() {
        DataType::Date32 => out.extend(array.as_primitive::<Date32Type>().iter()),
        DataType::Date64 => out.extend(
            array
                .as_primitive::<Date64Type>()
                .iter()
                .map(|v| v.and_then(|v| days(v, per_day(&TimeUnit::Millisecond)))),
        ),
        DataType::Timestamp(unit, _) => {
            let per_day = per_day(unit);
            let values: Vec<Option<i64>> = match unit {
                TimeUnit::Second => array.as_primitive::<TimestampSecondType>().iter().collect(),
                TimeUnit::Millisecond => array.as_primitive::<TimestampMillisecondType>().iter().collect(),
                TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().iter().collect(),
                TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().iter().collect(),
            };
            out.extend(values.into_iter().map(|v| v.and_then(|v| days(v, per_day))));
        }
        other => unreachable!("not a date type: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{RecordBatch, StringArray};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    /// Writes `values` as one text column under three writer settings and
    /// reads it back: dictionary pages over several row groups and batches,
    /// a dictionary that overflows into plain pages, and plain pages only.
    #[test]
    fn text_decodes_alike_from_dictionary_and_plain_pages() {
        // Batches with missing values, and (read off their keys' slice)
        // without.
        for missing in [true, false] {
            let values: Vec<Option<String>> = (0..150_000u32)
                .map(|i| match i % 7 {
                    0 if missing => None,
                    1 => Some(format!("unique-{i}")),
                    _ => Some(format!("Value {}", i % 13)),
                })
                .collect();
            decodes_alike_from_dictionary_and_plain_pages(&values);
        }
    }

    fn decodes_alike_from_dictionary_and_plain_pages(values: &[Option<String>]) {
        let settings = [
            WriterProperties::builder()
                .set_max_row_group_row_count(Some(40_000))
                .build(),
            WriterProperties::builder().set_dictionary_page_size_limit(512).build(),
            WriterProperties::builder().set_dictionary_enabled(false).build(),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (i, props) in settings.into_iter().enumerate() {
            let path = dir.path().join(format!("t{i}.parquet"));
            let column: ArrayRef = Arc::new(StringArray::from(values.to_vec()));
            let batch = RecordBatch::try_from_iter([("name", column)]).unwrap();
            let mut writer = ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), Some(props)).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();

            let (schema, _) = read_schema(&path).unwrap();
            let decoded = decode(&path, &schema, &[0]).unwrap();
            let Column::Text(text) = &decoded[0] else {
                panic!("a text column")
            };
            let read: Vec<Option<String>> = (0..text.codes.len()).map(|r| text.get(r).map(String::from)).collect();
            assert_eq!(read, values, "writer setting {i}");
            let distinct: std::collections::HashSet<&String> = values.iter().flatten().collect();
            assert_eq!(
                text.values.len(),
                distinct.len(),
                "each value interned once, setting {i}"
            );
        }
    }
}
