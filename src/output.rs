//! Writing memberships and their changes to files: CSV, JSON Lines or
//! Parquet by extension,
//! always through a temporary file renamed into place, so a reader never sees
//! half a file and a failed run leaves the previous file untouched.

use crate::diff::GroupChange;
use crate::faults::count_write;
use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt32Array};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use roaring::RoaringBitmap;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

/// A failure to write an output file.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {reason}")]
pub struct OutputError {
    /// The file.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// Output file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated with a header row.
    Csv,
    /// One JSON object per line.
    JsonLines,
    /// Apache Parquet.
    Parquet,
}

impl Format {
    /// The format for a file name: `.parquet`, `.jsonl`/`.ndjson`, else CSV.
    pub fn for_path(path: &Path) -> Format {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("parquet" | "parq" | "pq") => Format::Parquet,
            Some("jsonl" | "ndjson") => Format::JsonLines,
            _ => Format::Csv,
        }
    }
}

/// One output row: a group key, a user id, and for diffs whether the user
/// was added (`true`) or removed.
type Row<'a> = (&'a str, u32, Option<bool>);

/// Writes `group,user_id` rows, sorted by group key then user id.
pub fn write_members<'a>(
    path: &Path,
    groups: impl IntoIterator<Item = (&'a str, &'a RoaringBitmap)>,
) -> Result<(), OutputError> {
    let mut groups: Vec<(&str, &RoaringBitmap)> = groups.into_iter().collect();
    groups.sort_by_key(|(key, _)| *key);
    let rows = groups
        .iter()
        .flat_map(|(key, members)| members.iter().map(move |id| (*key, id, None)));
    write_rows(path, false, rows)
}

/// Writes `group,user_id,change` rows (`change` is `add` or `remove`),
/// sorted by group key then user id.
pub fn write_changes(path: &Path, changes: &[GroupChange]) -> Result<(), OutputError> {
    let mut changes: Vec<&GroupChange> = changes.iter().collect();
    changes.sort_by(|a, b| a.key.cmp(&b.key));
    let rows = changes
        .iter()
        .flat_map(|change| change.rows().map(|(id, added)| (change.key.as_str(), id, Some(added))));
    write_rows(path, true, rows)
}

fn change_word(added: bool) -> &'static str {
    if added { "add" } else { "remove" }
}

fn write_rows<'a>(path: &Path, with_change: bool, rows: impl Iterator<Item = Row<'a>>) -> Result<(), OutputError> {
    write_atomically(path, |out| match Format::for_path(path) {
        Format::Csv => {
            let header = if with_change {
                "group,user_id,change"
            } else {
                "group,user_id"
            };
            writeln!(out, "{header}")?;
            for (key, id, change) in rows {
                match change {
                    Some(added) => writeln!(out, "{key},{id},{}", change_word(added))?,
                    None => writeln!(out, "{key},{id}")?,
                }
            }
            Ok(())
        }
        Format::JsonLines => {
            // Keys are `[A-Za-z0-9_-]`, so they need no JSON escaping.
            for (key, id, change) in rows {
                match change {
                    Some(added) => writeln!(
                        out,
                        "{{\"group\":\"{key}\",\"user_id\":{id},\"change\":\"{}\"}}",
                        change_word(added)
                    )?,
                    None => writeln!(out, "{{\"group\":\"{key}\",\"user_id\":{id}}}")?,
                }
            }
            Ok(())
        }
        Format::Parquet => write_parquet(out, with_change, rows).map_err(std::io::Error::other),
    })
}

/// A table of text cells, for exports that join memberships with user
/// columns or list groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextTable {
    /// Column names.
    pub header: Vec<String>,
    /// Rows of cells (`None` for a missing value).
    pub rows: Vec<Vec<Option<String>>>,
}

/// A cell made safe to open in a spreadsheet (OWASP "CSV injection"): text
/// starting with `=`, `+`, `-`, `@`, tab or CR gets a leading `'`, so it is
/// not run as a formula. Numbers such as `-5` are left as they are.
pub fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    let risky = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && cell.parse::<f64>().is_err() {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

impl TextTable {
    /// The table as aligned text columns, for a terminal (`-` for missing).
    pub fn to_aligned(&self) -> String {
        let cell = |row: &[Option<String>], c: usize| row[c].clone().unwrap_or_else(|| "-".to_string());
        let widths: Vec<usize> = (0..self.header.len())
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| cell(r, c).chars().count())
                    .chain([self.header[c].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<String>| {
            let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            padded.join("  ").trim_end().to_string() + "\n"
        };
        let mut out = line(self.header.clone());
        for row in &self.rows {
            out += &line((0..self.header.len()).map(|c| cell(row, c)).collect());
        }
        out
    }

    /// The table as CSV; cells made spreadsheet-safe unless `raw`.
    pub fn to_csv(&self, raw: bool) -> String {
        let mut out = csv::Writer::from_writer(Vec::new());
        let cell = |c: &str| {
            if raw {
                c.to_string()
            } else {
                spreadsheet_safe(c).into_owned()
            }
        };
        out.write_record(self.header.iter().map(|h| cell(h)))
            .expect("writing to memory");
        for row in &self.rows {
            out.write_record(row.iter().map(|c| c.as_deref().map(cell).unwrap_or_default()))
                .expect("writing to memory");
        }
        String::from_utf8(out.into_inner().expect("writing to memory")).expect("CSV of UTF-8 cells")
    }
}

/// Writes a table as CSV (spreadsheet-safe unless `raw`), JSON Lines or
/// Parquet (text columns), by extension.
pub fn write_table(path: &Path, table: &TextTable, raw: bool) -> Result<(), OutputError> {
    write_atomically(path, |out| match Format::for_path(path) {
        Format::Csv => out.write_all(table.to_csv(raw).as_bytes()),
        Format::JsonLines => {
            for row in &table.rows {
                let object: serde_json::Map<String, serde_json::Value> = table
                    .header
                    .iter()
                    .zip(row)
                    .map(|(name, cell)| (name.clone(), cell.clone().map_or(serde_json::Value::Null, Into::into)))
                    .collect();
                writeln!(out, "{}", serde_json::Value::Object(object))?;
            }
            Ok(())
        }
        Format::Parquet => {
            let columns = table.header.iter().enumerate().map(|(i, name)| {
                let cells: StringArray = table.rows.iter().map(|row| row[i].as_deref()).collect();
                (name.as_str(), Arc::new(cells) as ArrayRef)
            });
            let batch = RecordBatch::try_from_iter(columns).map_err(std::io::Error::other)?;
            let mut writer = ArrowWriter::try_new(out, batch.schema(), None).map_err(std::io::Error::other)?;
            writer.write(&batch).map_err(std::io::Error::other)?;
            writer.close().map_err(std::io::Error::other)?;
            Ok(())
        }
    })
}

/// Writes a directory of files all at once: they are written to a new
/// directory beside `dir`, synced, and then that directory replaces `dir`,
/// so a reader sees the old set or the new set, never a part.
pub fn write_directory(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<(), OutputError> {
    let error = |e: &dyn std::fmt::Display| OutputError {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(".dyngroups-")
        .tempdir_in(parent)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => error(&"its parent directory does not exist"),
            _ => error(&e),
        })?;
    for (name, bytes) in files {
        let path = staging.path().join(name);
        let mut file = std::fs::File::create(&path).map_err(|e| error(&e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| error(&e))?;
        count_write();
    }
    let staged = staging.keep();
    if dir.exists() {
        let old = parent.join(format!(
            ".dyngroups-old-{}-{}",
            std::process::id(),
            dir.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
        ));
        std::fs::rename(dir, &old).map_err(|e| error(&e))?;
        std::fs::rename(&staged, dir).map_err(|e| error(&e))?;
        std::fs::remove_dir_all(&old).map_err(|e| error(&e))?;
    } else {
        std::fs::rename(&staged, dir).map_err(|e| error(&e))?;
    }
    count_write();
    Ok(())
}

/// Writes a text file.
pub fn write_text(path: &Path, text: &str) -> Result<(), OutputError> {
    write_atomically(path, |out| out.write_all(text.as_bytes()))
}

/// Writes a bitmap in the roaring portable format, which CRoaring,
/// pyroaring, Java and Go read.
pub fn write_portable_bitmap(path: &Path, members: &RoaringBitmap) -> Result<(), OutputError> {
    write_atomically(path, |out| members.serialize_into(out))
}

/// Writes through a temporary file in the same directory, synced and then
/// renamed over `path`.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&std::fs::File>) -> std::io::Result<()>,
) -> Result<(), OutputError> {
    let error = |e: &dyn std::fmt::Display| OutputError {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Created as any output file is (0666 less the umask), not with the
    // temporary file's private 0600. Its own name means nothing to the user.
    let temp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => error(&"its directory does not exist"),
            std::io::ErrorKind::PermissionDenied => error(&"permission denied"),
            kind => error(&std::io::Error::from(kind)),
        })?;
    {
        let mut out = BufWriter::new(temp.as_file());
        write(&mut out).map_err(|e| error(&e))?;
        out.flush().map_err(|e| error(&e))?;
    }
    count_write();
    temp.as_file().sync_all().map_err(|e| error(&e))?;
    temp.persist(path).map_err(|e| error(&e.error))?;
    // Make the rename itself durable; a reader already sees all or nothing.
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    count_write();
    Ok(())
}

fn write_parquet<'a, W: Write + Send>(
    out: W,
    with_change: bool,
    rows: impl Iterator<Item = Row<'a>>,
) -> Result<(), parquet::errors::ParquetError> {
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let batch = |keys: Vec<&str>, ids: Vec<u32>, changes: Vec<&str>| {
        let mut columns = vec![
            ("group", Arc::new(StringArray::from(keys)) as ArrayRef),
            ("user_id", Arc::new(UInt32Array::from(ids)) as ArrayRef),
        ];
        if with_change {
            columns.push(("change", Arc::new(StringArray::from(changes)) as ArrayRef));
        }
        RecordBatch::try_from_iter(columns)
    };
    let schema = batch(Vec::new(), Vec::new(), Vec::new())?.schema();
    let mut writer = ArrowWriter::try_new(out, schema, Some(props))?;
    const BATCH_ROWS: usize = 1 << 16;
    let mut keys = Vec::with_capacity(BATCH_ROWS);
    let mut ids = Vec::with_capacity(BATCH_ROWS);
    let mut changes = Vec::new();
    for (key, id, change) in rows {
        keys.push(key);
        ids.push(id);
        if let Some(added) = change {
            changes.push(change_word(added));
        }
        if ids.len() == BATCH_ROWS {
            writer.write(&batch(
                std::mem::take(&mut keys),
                std::mem::take(&mut ids),
                std::mem::take(&mut changes),
            )?)?;
        }
    }
    if !ids.is_empty() {
        writer.write(&batch(keys, ids, changes)?)?;
    }
    writer.close()?;
    Ok(())
}
