//! Input tables (users, enrollments, org tree, static memberships) read from
//! Parquet or CSV into typed columns. A table is opened first for its schema;
//! only the columns the rules use are decoded.

mod column;
mod csv;
mod parquet;

pub use column::{Column, NULL_CODE, Strings, TextColumn};
pub(crate) use column::{READ_AHEAD, prefetch};
pub use csv::TextRows;

use crate::schema::{ColumnType, TableSchema, ValueType};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The value of `cell`, built by `build` on first use. The build runs
/// outside the cell's lock because it runs in parallel: inside
/// `get_or_init`, this thread could steal a task that waits on this same
/// lock. Two threads racing here both build; one result is kept.
pub(crate) fn built_once<T>(cell: &OnceLock<T>, build: impl FnOnce() -> T) -> &T {
    if let Some(built) = cell.get() {
        return built;
    }
    let _ = cell.set(build());
    cell.get().expect("set just now, by this thread or another")
}

/// Bad input data: names the file and, where known, the column and row.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct DataError {
    /// The file, as given.
    pub file: PathBuf,
    /// The column, if the problem is in one.
    pub column: Option<String>,
    /// The row (1-based data row; for CSV the line number), if known.
    pub row: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl DataError {
    /// An error about the whole file.
    pub fn file(file: &Path, message: impl Into<String>) -> DataError {
        DataError {
            file: file.to_path_buf(),
            column: None,
            row: None,
            message: message.into(),
        }
    }

    /// An error about a column of the file.
    pub fn column(file: &Path, column: &str, message: impl Into<String>) -> DataError {
        DataError {
            column: Some(column.to_string()),
            ..DataError::file(file, message)
        }
    }

    /// The same error, at a row.
    pub fn at_row(mut self, row: usize) -> DataError {
        self.row = Some(row);
        self
    }

    fn describe(&self) -> String {
        let mut out = self.file.display().to_string();
        if let Some(column) = &self.column {
            out += &format!(": column `{column}`");
        }
        if let Some(row) = self.row {
            out += &format!(", row {row}");
        }
        out + ": " + &self.message
    }
}

/// A table file opened for reading: its schema is known, its columns are not
/// decoded yet.
pub struct OpenTable {
    path: PathBuf,
    source: Source,
    schema: TableSchema,
    rows: usize,
}

enum Source {
    Csv(csv::CsvCells),
    Parquet,
    Memory(Vec<Column>),
}

/// A table with some of its columns decoded.
#[derive(Debug)]
pub struct Table {
    /// The file it came from.
    pub path: PathBuf,
    /// All columns of the file, decoded or not.
    pub schema: TableSchema,
    /// Decoded columns, by schema index; `None` where not asked for.
    pub columns: Vec<Option<Column>>,
    /// Number of rows.
    pub rows: usize,
    /// For CSV, the line each row starts on (what a spreadsheet shows).
    lines: Option<Vec<usize>>,
}

/// How to read a CSV file beyond what the file says of itself.
#[derive(Clone, Debug, Default)]
pub struct CsvOptions {
    /// The input's role, as the command line names it (`users`,
    /// `enrollments`): errors name the option to pass with it.
    pub role: String,
    /// Per column name, how its dates are written, in `chrono`'s format
    /// (`%d/%m/%Y`), when the cells alone cannot tell.
    pub date_formats: BTreeMap<String, String>,
    /// The file's text encoding when it is not UTF-8, by its WHATWG label
    /// (`windows-1252`, `latin1`, `utf-16le`...).
    pub encoding: Option<String>,
}

/// Whether `label` names a text encoding [`CsvOptions::encoding`] can read.
pub fn is_text_encoding(label: &str) -> bool {
    encoding_rs::Encoding::for_label(label.as_bytes()).is_some()
}

impl OpenTable {
    /// Opens `path` (Parquet for `.parquet`/`.parq`/`.pq`, CSV otherwise) and
    /// reads its schema.
    pub fn open(path: &Path) -> Result<OpenTable, DataError> {
        OpenTable::open_with(path, &CsvOptions::default())
    }

    /// Like [`OpenTable::open`], reading a CSV file with `options`.
    pub fn open_with(path: &Path, options: &CsvOptions) -> Result<OpenTable, DataError> {
        let is_parquet = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "parquet" | "parq" | "pq"));
        if is_parquet {
            let (schema, rows) = parquet::read_schema(path)?;
            Ok(OpenTable {
                path: path.to_path_buf(),
                source: Source::Parquet,
                schema,
                rows,
            })
        } else {
            let cells = csv::CsvCells::read(path, options)?;
            Ok(OpenTable {
                path: path.to_path_buf(),
                schema: cells.schema(),
                rows: cells.rows(),
                source: Source::Csv(cells),
            })
        }
    }

    /// A table already in memory, e.g. built by an embedding program or a
    /// test. `name` stands for the file name in errors. All columns must
    /// have the same length.
    pub fn from_columns(name: &str, columns: Vec<(String, Column)>) -> OpenTable {
        let rows = columns.first().map_or(0, |(_, c)| c.len());
        assert!(
            columns.iter().all(|(_, c)| c.len() == rows),
            "columns of one table have one length"
        );
        let schema = TableSchema {
            columns: columns
                .iter()
                .map(|(name, column)| crate::schema::ColumnSchema {
                    name: name.clone(),
                    column_type: ColumnType::Usable(column.value_type()),
                })
                .collect(),
        };
        OpenTable {
            path: PathBuf::from(name),
            source: Source::Memory(columns.into_iter().map(|(_, c)| c).collect()),
            schema,
            rows,
        }
    }

    /// The file's columns and their types.
    pub fn schema(&self) -> &TableSchema {
        &self.schema
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of data rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Finds a column the input format requires, with the type it must have.
    pub fn required(&self, name: &str, expected: ValueType) -> Result<usize, DataError> {
        let Some(index) = self.schema.columns.iter().position(|c| c.name == name) else {
            let near = crate::suggest::nearest(name, self.schema.names());
            let hint = crate::suggest::did_you_mean(&near)
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            return Err(DataError::file(
                &self.path,
                format!(
                    "missing required column `{name}`{hint}; the file has {}",
                    crate::suggest::list_some(self.schema.names(), 12)
                ),
            ));
        };
        match &self.schema.columns[index].column_type {
            ColumnType::Usable(t) if *t == expected => Ok(index),
            ColumnType::Usable(t) => Err(DataError::column(
                &self.path,
                name,
                format!("must be {expected}, found {t}"),
            )),
            ColumnType::Unusable(t) => Err(DataError::column(
                &self.path,
                name,
                format!("must be {expected}, found {t}"),
            )),
        }
    }

    /// Decodes the columns at `indices` (schema indices).
    pub fn load(self, indices: &[usize]) -> Result<Table, DataError> {
        let mut wanted: Vec<usize> = indices.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let decoded = match &self.source {
            Source::Csv(cells) => cells.decode(&self.path, &self.schema, &wanted)?,
            Source::Parquet => parquet::decode(&self.path, &self.schema, &wanted)?,
            Source::Memory(columns) => wanted.iter().map(|&i| columns[i].clone()).collect(),
        };
        let mut columns: Vec<Option<Column>> = (0..self.schema.columns.len()).map(|_| None).collect();
        for (index, column) in wanted.into_iter().zip(decoded) {
            columns[index] = Some(column);
        }
        let lines = match self.source {
            Source::Csv(cells) => Some(cells.lines()),
            Source::Parquet | Source::Memory(_) => None,
        };
        Ok(Table {
            path: self.path,
            schema: self.schema,
            columns,
            rows: self.rows,
            lines,
        })
    }
}

impl Table {
    /// The decoded column at `index`.
    ///
    /// # Panics
    /// If the column was not asked for when loading: the planner decides what
    /// to load from the same checked rules it evaluates.
    pub fn column(&self, index: usize) -> &Column {
        self.columns[index].as_ref().expect("column was loaded")
    }

    /// Puts the rows in `order`: row `i` becomes what row `order[i]` was.
    /// Errors still name rows as the file holds them.
    pub fn reorder_rows(&mut self, order: &[u32]) {
        let labels = order.iter().map(|&row| self.row_label(row as usize)).collect();
        self.columns
            .par_iter_mut()
            .flatten()
            .for_each(|column| *column = column.reordered(order));
        self.lines = Some(labels);
    }

    /// How to name data row `row` (0-based) in an error: the line number for
    /// CSV, the 1-based row number for Parquet.
    pub fn row_label(&self, row: usize) -> usize {
        self.lines.as_ref().map_or(row + 1, |lines| lines[row])
    }

    /// Name of the column at `index`.
    pub fn column_name(&self, index: usize) -> &str {
        &self.schema.columns[index].name
    }
}
