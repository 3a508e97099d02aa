//! CSV input: a header row, `,` or `;` as delimiter (spreadsheet exports use
//! `;`), UTF-8 with or without a byte-order mark, CRLF or LF.
//!
//! CSV has no types, so each column's type is inferred from its non-empty
//! cells: all numbers → number; all ISO dates (`YYYY-MM-DD`, with a time
//! `YYYY-MM-DD HH:MM:SS`, or RFC 3339 with a zone) → date; all dates written
//! day or month first in one way the cells tell (`30/11/2025`) → date; all
//! `true`/`false` → boolean; otherwise text. A column of dates that are
//! written in no one way, or that could be day or month first, is an error
//! naming the first such cell and `--date-format`, never text. An empty cell
//! is a missing value. In `;`-separated files a comma is also accepted as
//! the decimal separator (`1,5`), as spreadsheets in those locales write it.

use super::column::{Column, TextColumnBuilder};
use super::{CsvOptions, DataError};
use crate::checked::days_since_epoch;
use crate::schema::{ColumnSchema, ColumnType, TableSchema, ValueType};
use std::path::Path;

/// A CSV file read into memory, cells still as text.
pub(super) struct CsvCells {
    header: Vec<String>,
    /// Rows of cells, with the line each row starts on.
    records: Vec<(usize, csv::StringRecord)>,
    types: Vec<ValueType>,
    /// Per column of dates not written ISO, their format.
    date_formats: Vec<Option<String>>,
    decimal_comma: bool,
}

impl CsvCells {
    pub(super) fn read(path: &Path, options: &CsvOptions) -> Result<CsvCells, DataError> {
        let bytes = decode_text(path, read_file(path)?, options)?;
        let delimiter = detect_delimiter(&bytes);
        let (mut reader, header) = open_reader(path, &bytes, delimiter, false)?;
        let mut records = Vec::new();
        let mut lines = LineCounter::new(&bytes);
        for record in reader.records() {
            let record = record.map_err(|e| csv_error(path, &e, &header))?;
            let line = lines.line_of(&record);
            if record.len() == 1 && record[0].trim().is_empty() && header.len() > 1 {
                continue; // a blank line
            }
            records.push((line, record));
        }
        let decimal_comma = delimiter == b';';
        let (types, date_formats) = header
            .iter()
            .enumerate()
            .map(|(c, name)| {
                let cells = records.iter().map(|(line, r)| (*line, r.get(c).unwrap_or("").trim()));
                let column = ColumnOf { path, name, options };
                column.infer_type(cells, decimal_comma)
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        Ok(CsvCells {
            header,
            records,
            types,
            date_formats,
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
                let format = self.date_formats[c].as_deref();
                decode_cells(
                    path,
                    &schema.columns[c].name,
                    self.types[c],
                    format,
                    self.decimal_comma,
                    cells,
                )
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

/// The file's bytes as UTF-8: decoded from `options.encoding` if given.
fn decode_text(path: &Path, bytes: Vec<u8>, options: &CsvOptions) -> Result<Vec<u8>, DataError> {
    let Some(label) = &options.encoding else {
        return Ok(bytes);
    };
    let encoding = encoding_rs::Encoding::for_label(label.as_bytes())
        .ok_or_else(|| DataError::file(path, format!("`{label}` is not a text encoding this reader knows")))?;
    let (text, _, _) = encoding.decode(&bytes);
    Ok(text.into_owned().into_bytes())
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
        .map_err(|e| csv_error(path, &e, &[]))?
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
    /// Reads a CSV file (`,` or `;`, with or without BOM, CRLF or LF), in
    /// the text encoding of `options`.
    pub fn read(path: &Path, options: &CsvOptions) -> Result<TextRows, DataError> {
        let bytes = decode_text(path, read_file(path)?, options)?;
        let (mut reader, header) = open_reader(path, &bytes, detect_delimiter(&bytes), true)?;
        let mut rows = Vec::new();
        let mut lines = LineCounter::new(&bytes);
        for record in reader.records() {
            let record = record.map_err(|e| csv_error(path, &e, &header))?;
            let line = lines.line_of(&record);
            rows.push((line, record.iter().map(|c| c.trim().to_string()).collect()));
        }
        Ok(TextRows { header, rows })
    }
}

fn csv_error(path: &Path, error: &csv::Error, header: &[String]) -> DataError {
    let line = error.position().map(|p| p.line() as usize);
    let e = match error.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            DataError::file(path, format!("has {len} fields, but the header has {expected_len}"))
        }
        csv::ErrorKind::Utf8 { err, .. } => {
            let message = "is not UTF-8 text: the file was likely saved as Windows-1252 or Latin-1. Save it as \
                           UTF-8 (a spreadsheet's \"CSV UTF-8\"), or read it as it is with `--encoding windows-1252`";
            match header.get(err.field()) {
                Some(column) => DataError::column(path, column, message),
                None => DataError::file(path, message),
            }
        }
        _ => DataError::file(path, error.to_string()),
    };
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

/// An ISO date, alone, with a time, or with a time and a zone (its UTC
/// calendar date).
fn parse_date(cell: &str) -> Option<i32> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(cell, "%Y-%m-%d") {
        return Some(days_since_epoch(d));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(cell)
        .or_else(|_| chrono::DateTime::parse_from_str(cell, "%Y-%m-%d %H:%M:%S%.f%:z"))
    {
        return Some(days_since_epoch(t.with_timezone(&chrono::Utc).date_naive()));
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(cell, format).ok())
        .map(|t| days_since_epoch(t.date()))
}

/// A date written as `format` (chrono's syntax), or ISO when `None`.
fn parse_date_as(cell: &str, format: Option<&str>) -> Option<i32> {
    match format {
        None => parse_date(cell),
        Some(format) => chrono::NaiveDate::parse_from_str(cell, format)
            .ok()
            .or_else(|| {
                chrono::NaiveDateTime::parse_from_str(cell, format)
                    .ok()
                    .map(|t| t.date())
            })
            .map(days_since_epoch),
    }
}

/// The ways of writing a date day or month first that the cells of a
/// column may tell apart.
const DAY_OR_MONTH_FIRST: [(&str, &str); 6] = [
    ("%d/%m/%Y", "day first"),
    ("%m/%d/%Y", "month first"),
    ("%d.%m.%Y", "day first"),
    ("%m.%d.%Y", "month first"),
    ("%d-%m-%Y", "day first"),
    ("%m-%d-%Y", "month first"),
];

/// Whether a cell is written as a date (`2025-11-30`, `30/11/2025`,
/// `11.30.2025 08:00`), whether or not it is a real one: three groups of
/// digits, one of four, the others of one or two.
fn looks_like_date(cell: &str) -> bool {
    let date = cell.split([' ', 'T']).next().unwrap_or("");
    let parts: Vec<&str> = date.split(['/', '.', '-']).collect();
    let digits = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let short = |p: &&str| digits(p) && p.len() <= 2;
    let year = |p: &&str| digits(p) && p.len() == 4;
    match parts.as_slice() {
        [a, b, c] => (year(a) && short(b) && short(c)) || (short(a) && short(b) && year(c)),
        _ => false,
    }
}

/// A CSV column, for its errors.
struct ColumnOf<'a> {
    path: &'a Path,
    name: &'a str,
    options: &'a CsvOptions,
}

impl ColumnOf<'_> {
    /// The `--date-format` option for this column with `format`.
    fn date_format_option(&self, format: &str) -> String {
        let role = if self.options.role.is_empty() {
            "INPUT"
        } else {
            &self.options.role
        };
        format!("`--date-format {role}.{}={format}`", self.name)
    }

    fn error_at(&self, line: usize, message: String) -> DataError {
        DataError::column(self.path, self.name, message).at_row(line)
    }

    /// The column's type, and for dates not written ISO their format.
    fn infer_type<'c>(
        &self,
        cells: impl Iterator<Item = (usize, &'c str)> + Clone,
        decimal_comma: bool,
    ) -> Result<(ValueType, Option<String>), DataError> {
        let present = cells.filter(|(_, c)| !c.is_empty());
        if let Some(format) = self.options.date_formats.get(self.name) {
            return match present.clone().find(|(_, c)| parse_date_as(c, Some(format)).is_none()) {
                None => Ok((ValueType::Date, Some(format.clone()))),
                Some((line, cell)) => Err(self.error_at(
                    line,
                    format!(
                        "`{cell}` is not a date written as {} says",
                        self.date_format_option(format)
                    ),
                )),
            };
        }
        let value_type = infer_type(present.clone().map(|(_, c)| c), decimal_comma);
        if value_type != ValueType::Text
            || !present.clone().all(|(_, c)| looks_like_date(c))
            || present.clone().next().is_none()
        {
            return Ok((value_type, None));
        }
        // Every cell is written as a date, but not all as ISO dates.
        let fits: Vec<(&str, &str)> = DAY_OR_MONTH_FIRST
            .into_iter()
            .filter(|(format, _)| present.clone().all(|(_, c)| parse_date_as(c, Some(format)).is_some()))
            .collect();
        match fits.as_slice() {
            [(format, _)] => Ok((ValueType::Date, Some(format.to_string()))),
            [(first, first_order), (second, second_order), ..] => {
                let (line, cell) = present.clone().next().expect("a cell");
                Err(self.error_at(
                    line,
                    format!(
                        "holds dates like `{cell}` that may be written day or month first: say which with {} \
                         ({first_order}) or {} ({second_order})",
                        self.date_format_option(first),
                        self.date_format_option(second),
                    ),
                ))
            }
            [] => {
                // Named as the format most of the column's cells have.
                let count = |format: Option<&str>| {
                    present
                        .clone()
                        .filter(|(_, c)| parse_date_as(c, format).is_some())
                        .count()
                };
                let (format, described) = std::iter::once((None, "YYYY-MM-DD"))
                    .chain(DAY_OR_MONTH_FIRST.iter().map(|(f, _)| (Some(*f), *f)))
                    .max_by_key(|(format, _)| count(*format))
                    .expect("formats");
                let (line, cell) = present
                    .clone()
                    .find(|(_, c)| parse_date_as(c, format).is_none())
                    .expect("a cell the format does not read");
                Err(self.error_at(
                    line,
                    format!(
                        "`{cell}` is not a date written like the column's other dates ({described}): fix the export, \
                         or say how the column's dates are written with {}",
                        self.date_format_option("FORMAT")
                    ),
                ))
            }
        }
    }
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
    date_format: Option<&str>,
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
        ValueType::Date => Column::Date(parse_cells(
            cells,
            |c| parse_date_as(c, date_format).map(Some),
            None,
            bad,
        )?),
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
