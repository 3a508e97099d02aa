//! Writing memberships to files: CSV, JSON Lines or Parquet by extension,
//! always through a temporary file renamed into place, so a reader never sees
//! half a file and a failed run leaves the previous file untouched.

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

/// Writes `group,user_id` rows, sorted by group key then user id.
pub fn write_members<'a>(
    path: &Path,
    groups: impl IntoIterator<Item = (&'a str, &'a RoaringBitmap)>,
) -> Result<(), OutputError> {
    let mut groups: Vec<(&str, &RoaringBitmap)> = groups.into_iter().collect();
    groups.sort_by_key(|(key, _)| *key);
    let error = |e: &dyn std::fmt::Display| OutputError {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // The temporary file's own name means nothing to the user.
    let temp = tempfile::NamedTempFile::new_in(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => error(&"its directory does not exist"),
        std::io::ErrorKind::PermissionDenied => error(&"permission denied"),
        kind => error(&std::io::Error::from(kind)),
    })?;
    {
        let mut out = BufWriter::new(temp.as_file());
        match Format::for_path(path) {
            Format::Csv => {
                writeln!(out, "group,user_id").map_err(|e| error(&e))?;
                for (key, members) in &groups {
                    for id in members.iter() {
                        writeln!(out, "{key},{id}").map_err(|e| error(&e))?;
                    }
                }
            }
            Format::JsonLines => {
                for (key, members) in &groups {
                    // Keys are `[A-Za-z0-9_-]`, so they need no JSON escaping.
                    for id in members.iter() {
                        writeln!(out, "{{\"group\":\"{key}\",\"user_id\":{id}}}").map_err(|e| error(&e))?;
                    }
                }
            }
            Format::Parquet => write_parquet(&mut out, &groups).map_err(|e| error(&e))?,
        }
        out.flush().map_err(|e| error(&e))?;
    }
    temp.as_file().sync_all().map_err(|e| error(&e))?;
    temp.persist(path).map_err(|e| error(&e.error))?;
    Ok(())
}

fn write_parquet<W: Write + Send>(
    out: W,
    groups: &[(&str, &RoaringBitmap)],
) -> Result<(), parquet::errors::ParquetError> {
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let batch = |keys: Vec<&str>, ids: Vec<u32>| {
        RecordBatch::try_from_iter([
            ("group", Arc::new(StringArray::from(keys)) as ArrayRef),
            ("user_id", Arc::new(UInt32Array::from(ids)) as ArrayRef),
        ])
    };
    let schema = batch(Vec::new(), Vec::new())?.schema();
    let mut writer = ArrowWriter::try_new(out, schema, Some(props))?;
    const BATCH_ROWS: usize = 1 << 16;
    let mut keys = Vec::with_capacity(BATCH_ROWS);
    let mut ids = Vec::with_capacity(BATCH_ROWS);
    for (key, members) in groups {
        for id in members.iter() {
            keys.push(*key);
            ids.push(id);
            if ids.len() == BATCH_ROWS {
                writer.write(&batch(std::mem::take(&mut keys), std::mem::take(&mut ids))?)?;
            }
        }
    }
    if !ids.is_empty() {
        writer.write(&batch(keys, ids)?)?;
    }
    writer.close()?;
    Ok(())
}
