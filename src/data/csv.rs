//! CSV input: a header row, `,` or `;` as delimiter (spreadsheet exports use
//! `;`), UTF-8 with or without a byte-order mark, CRLF or LF.
//!
//! CSV has no types, so each column's type is inferred from its non-empty
//! cells: all numbers → number; all `YYYY-MM-DD` dates or RFC 3339 timestamps
//! → date; all `true`/`false` → boolean; otherwise text. An empty cell is a
//! missing value. In `;`-separated files a comma is also accepted as the
//! decimal separator (`1,5`), as spreadsheets in those locales write it.

use super::DataError;
use super::column::{Column, TextColumnBuilder};
use crate::checked::days_since_epoch;
use crate::schema::{ColumnSchema, ColumnType, TableSchema, ValueType};
use std::path::Path;

/// A CSV file read into memory, cells still as text.
pub(super) struct CsvCells {
    header: Vec<String>,
    /// Rows of cells, with the line each row starts on.
    records: Vec<(usize, csv::StringRecord)>,
    types: Vec<ValueType>,
    decimal_comma: bool,
}

impl CsvCells {
    pub(super) fn read(path: &Path) -> Result<CsvCells, DataError> {
        let bytes = read_file(path)?;
        let delimiter = detect_delimiter(&bytes);
        let (mut reader, header) = open_reader(path, &bytes, delimiter, false)?;
        let mut records = Vec::new();
        let mut lines = LineCounter::new(&bytes);
        for record in reader.records() {
            let record = record.map_err(|e| csv_error(path, &e))?;
            let line = lines.line_of(&record);
            if record.len() == 1 && record[0].trim().is_empty() && header.len() > 1 {
                continue; // a blank line
            }
            records.push((line, record));
        }
        let decimal_comma = delimiter == b';';
        let types = (0..header.len())
            .map(|c| {
                infer_type(
                    records.iter().map(|(_, r)| r.get(c).unwrap_or("").trim()),
                    decimal_comma,
                )
            })
            .collect();
        Ok(CsvCells {
            header,
            records,
            types,
            decimal_comma,
        })
    }

    pub(super) fn lines(&self) -> Vec<usize> {
        self.records.iter().map(|(line, _)| *line).collect()
    }

    pub(super) fn rows(&self) -> usize {
        self.records.len()
    }

    pub(super) fn schema(&self) -> TableSchema {
        TableSchema {
            columns: self
                .header
                .iter()
                .zip(&self.types)
                .map(|(name, t)| ColumnSchema {
                    name: name.clone(),
                    column_type: ColumnType::Usable(*t),
                })
                .collect(),
        }
    }

    pub(super) fn decode(&self, path: &Path, schema: &TableSchema, wanted: &[usize]) -> Result<Vec<Column>, DataError> {
        wanted
            .iter()
            .map(|&c| {
                let cells = self
                    .records
                    .iter()
                    .map(|(line, r)| (*line, r.get(c).unwrap_or("").trim()));
                decode_cells(path, &schema.columns[c].name, self.types[c], self.decimal_comma, cells)
            })
            .collect()
    }
}

/// Line numbers of records, counted from their byte offsets: the csv
/// crate's own line count is one short after CRLF line ends.
struct LineCounter<'a> {
    text: &'a [u8],
    counted_to: usize,
    line: usize,
}

impl<'a> LineCounter<'a> {
    fn new(text: &'a [u8]) -> LineCounter<'a> {
        LineCounter {
            text,
            counted_to: 0,
            line: 1,
        }
    }

    /// The line a record starts on; records come in file order.
    fn line_of(&mut self, record: &csv::StringRecord) -> usize {
        let mut start = record.position().map_or(self.counted_to, |p| p.byte() as usize);
        // After CRLF the reported start can be the line end before the record.
        while matches!(self.text.get(start), Some(b'\r' | b'\n')) {
            start += 1;
        }
        self.line += memchr::memchr_iter(b'\n', &self.text[self.counted_to..start]).count();
        self.counted_to = start;
        self.line
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut bytes = std::fs::read(path).map_err(|e| DataError::file(path, format!("cannot read the file: {e}")))?;
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    Ok(bytes)
}

/// A reader past the header, and the header's trimmed names.
fn open_reader<'a>(
    path: &Path,
    text: &'a [u8],
    delimiter: u8,
    flexible: bool,
) -> Result<(csv::Reader<&'a [u8]>, Vec<String>), DataError> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(flexible)
        .from_reader(text);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(path, &e))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if header.iter().all(String::is_empty) {
        return Err(DataError::file(path, "the file has no header row"));
    }
    if let Some(dup) = header.iter().enumerate().find(|(i, h)| header[..*i].contains(h)) {
        return Err(DataError::column(path, dup.1, "appears twice in the header"));
    }
    Ok((reader, header))
}

/// A CSV file as trimmed text cells, every line kept: blank lines and rows
/// with too few or too many cells are there for the caller to report.
pub struct TextRows {
    /// The header's names.
    pub header: Vec<String>,
    /// Each data line's number and cells.
    pub rows: Vec<(usize, Vec<String>)>,
}

impl TextRows {
    /// Reads a CSV file (`,` or `;`, with or without BOM, CRLF or LF).
    pub fn read(path: &Path) -> Result<TextRows, DataError> {
        let bytes = read_file(path)?;
        let (mut reader, header) = open_reader(path, &bytes, detect_delimiter(&bytes), true)?;
        let mut rows = Vec::new();
        let mut lines = LineCounter::new(&bytes);
        for record in reader.records() {
            let record = record.map_err(|e| csv_error(path, &e))?;
            let line = lines.line_of(&record);
            rows.push((line, record.iter().map(|c| c.trim().to_string()).collect()));
        }
        Ok(TextRows { header, rows })
    }
}

fn csv_error(path: &Path, error: &csv::Error) -> DataError {
    let line = error.position().map(|p| p.line() as usize);
    let message = match error.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("has {len} fields, but the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8 text".to_string(),
        _ => error.to_string(),
    };
    let e = DataError::file(path, message);
    match line {
        Some(line) => e.at_row(line),
        None => e,
    }
}

/// `;` when the header line has more semicolons than commas (outside quotes).
fn detect_delimiter(text: &[u8]) -> u8 {
    let mut in_quotes = false;
    let (mut commas, mut semicolons) = (0, 0);
    for &b in text {
        match b {
            b'\n' if !in_quotes => break,
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => commas += 1,
            b';' if !in_quotes => semicolons += 1,
            _ => {}
        }
    }
    if semicolons > commas { b';' } else { b',' }
}

fn parse_number(cell: &str, decimal_comma: bool) -> Option<f64> {
    if cell == "NaN" {
        return Some(f64::NAN);
    }
    if decimal_comma && cell.bytes().filter(|&b| b == b',').count() == 1 && !cell.contains('.') {
        return parse_number(&cell.replace(',', "."), false);
    }
    let plain = cell
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    if !plain || !cell.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    cell.parse::<f64>().ok().filter(|n| n.is_finite())
}

fn parse_date(cell: &str) -> Option<i32> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(cell, "%Y-%m-%d") {
        return Some(days_since_epoch(d));
    }
    chrono::DateTime::parse_from_rfc3339(cell)
        .ok()
        .map(|t| days_since_epoch(t.with_timezone(&chrono::Utc).date_naive()))
}

fn parse_bool(cell: &str) -> Option<bool> {
    if cell.eq_ignore_ascii_case("true") {
        Some(true)
    } else if cell.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

fn infer_type<'a>(cells: impl Iterator<Item = &'a str> + Clone, decimal_comma: bool) -> ValueType {
    let mut present = cells.filter(|c| !c.is_empty()).peekable();
    if present.peek().is_none() {
        return ValueType::Text;
    }
    if present.clone().all(|c| parse_number(c, decimal_comma).is_some()) {
        ValueType::Number
    } else if present.clone().all(|c| parse_date(c).is_some()) {
        ValueType::Date
    } else if present.all(|c| parse_bool(c).is_some()) {
        ValueType::Boolean
    } else {
        ValueType::Text
    }
}

fn decode_cells<'a>(
    path: &Path,
    name: &str,
    value_type: ValueType,
    decimal_comma: bool,
    cells: impl ExactSizeIterator<Item = (usize, &'a str)>,
) -> Result<Column, DataError> {
    // Types were inferred from these very cells, so parsing cannot fail here;
    // the error path guards against a future change of the inference.
    let bad =
        |line: usize, cell: &str| DataError::column(path, name, format!("`{cell}` is not {value_type}")).at_row(line);
    Ok(match value_type {
        ValueType::Text => {
            let mut builder = TextColumnBuilder::with_capacity(cells.len());
            for (_, cell) in cells {
                builder.push((!cell.is_empty()).then_some(cell));
            }
            Column::Text(builder.finish())
        }
        ValueType::Number => Column::Number(parse_cells(cells, |c| parse_number(c, decimal_comma), f64::NAN, bad)?),
        ValueType::Date => Column::Date(parse_cells(cells, |c| parse_date(c).map(Some), None, bad)?),
        ValueType::Boolean => Column::Boolean(parse_cells(cells, |c| parse_bool(c).map(Some), None, bad)?),
    })
}

/// Parses non-empty cells with `parse`; an empty cell is `missing`.
fn parse_cells<'a, T>(
    cells: impl Iterator<Item = (usize, &'a str)>,
    parse: impl Fn(&str) -> Option<T>,
    missing: T,
    bad: impl Fn(usize, &str) -> DataError,
) -> Result<Vec<T>, DataError>
where
    T: Clone,
{
    cells
        .map(|(line, cell)| {
            if cell.is_empty() {
                Ok(missing.clone())
            } else {
                parse(cell).ok_or_else(|| bad(line, cell))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semicolons_win_only_when_they_outnumber_commas_outside_quotes() {
        assert_eq!(detect_delimiter(b"a;b;c\n1,5;2;3"), b';');
        assert_eq!(detect_delimiter(b"\"a;b\",c\n"), b',');
        assert_eq!(detect_delimiter(b"a,b\n"), b',');
    }

    #[test]
    fn types_are_inferred_from_non_empty_cells() {
        assert_eq!(infer_type(["1", "", "-2.5"].into_iter(), false), ValueType::Number);
        assert_eq!(infer_type(["2024-01-31", ""].into_iter(), false), ValueType::Date);
        assert_eq!(infer_type(["TRUE", "false"].into_iter(), false), ValueType::Boolean);
        assert_eq!(infer_type(["1", "x"].into_iter(), false), ValueType::Text);
        assert_eq!(infer_type(["", ""].into_iter(), false), ValueType::Text);
        assert_eq!(infer_type(["inf"].into_iter(), false), ValueType::Text);
        assert_eq!(infer_type(["1,5", "2"].into_iter(), true), ValueType::Number);
        assert_eq!(infer_type(["1,5"].into_iter(), false), ValueType::Text);
        assert_eq!(infer_type(["1,5,6"].into_iter(), true), ValueType::Text);
    }
}
