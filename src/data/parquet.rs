//! Parquet input through arrow: the schema from the footer, then only the
//! wanted columns (a projection), batch by batch.

use super::DataError;
use super::column::{Column, TextColumnBuilder};
use crate::schema::{ColumnSchema, ColumnType, TableSchema, ValueType};
use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rayon::prelude::*;
use std::fs::File;
use std::path::Path;

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
    Text(TextColumnBuilder),
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
    let mut decoder = match &column.column_type {
        ColumnType::Usable(ValueType::Text) => Decoder::Text(TextColumnBuilder::default()),
        ColumnType::Usable(ValueType::Number) => Decoder::Number(Vec::new()),
        ColumnType::Usable(ValueType::Date) => Decoder::Date(Vec::new()),
        ColumnType::Usable(ValueType::Boolean) => Decoder::Boolean(Vec::new()),
        ColumnType::Unusable(t) => {
            return Err(DataError::column(
                path,
                &column.name,
                format!("has type {t}, which rules cannot test"),
            ));
        }
    };
    let builder = builder(path)?;
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
        Decoder::Text(b) => Column::Text(b.finish()),
        Decoder::Number(v) => Column::Number(v),
        Decoder::Date(v) => Column::Date(v),
        Decoder::Boolean(v) => Column::Boolean(v),
    })
}

fn append(decoder: &mut Decoder, array: &dyn Array) {
    match decoder {
        Decoder::Text(builder) => append_text(builder, array),
        Decoder::Number(out) => append_numbers(out, array),
        Decoder::Date(out) => append_dates(out, array),
        Decoder::Boolean(out) => out.extend(array.as_boolean().iter()),
    }
}

fn append_text(builder: &mut TextColumnBuilder, array: &dyn Array) {
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().iter().for_each(|v| builder.push(v)),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().for_each(|v| builder.push(v)),
        DataType::Utf8View => array.as_string_view().iter().for_each(|v| builder.push(v)),
        _ => {
            // A dictionary: intern each distinct value once, then map keys.
            let dictionary = array.as_any_dictionary();
            let values = dictionary.values();
            let mut value_texts = TextColumnBuilder::default();
            append_text(&mut value_texts, values.as_ref());
            let value_texts = value_texts.finish();
            let codes: Vec<Option<u32>> = (0..values.len())
                .map(|i| value_texts.get(i).map(|v| builder.intern(v)))
                .collect();
            for (row, key) in dictionary.normalized_keys().into_iter().enumerate() {
                match codes.get(key).copied().flatten() {
                    Some(code) if array.is_valid(row) => builder.push_code(code),
                    _ => builder.push(None),
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
