//! Writing memberships and their changes to files: CSV, JSON Lines or
//! Parquet by extension,
//! always through a temporary file renamed into place, so a reader never sees
//! half a file and a failed run leaves the previous file untouched.

mod parquet_rows;
mod spool;

pub(crate) use spool::GroupSpool;
use spool::{GroupSource, Loaded};

use crate::diff::GroupChange;
use crate::faults::count_write;
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use rayon::prelude::*;
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

/// One group's rows in an output: its members, or its changes.
#[derive(Clone, Copy)]
enum GroupRows<'a> {
    Members(&'a RoaringBitmap),
    Changes(&'a GroupChange),
}

impl GroupRows<'_> {
    fn len(&self) -> u64 {
        match self {
            GroupRows::Members(members) => members.len(),
            GroupRows::Changes(change) => change.added.len() + change.removed.len(),
        }
    }

    /// Each row's user id, and for changes whether it was added, by id.
    fn for_each(&self, mut row: impl FnMut(u32, Option<bool>)) {
        match self {
            GroupRows::Members(members) => members.iter().for_each(|id| row(id, None)),
            GroupRows::Changes(change) => change.rows().for_each(|(id, added)| row(id, Some(added))),
        }
    }

    /// Appends the user ids of the rows at `ranks` (0 is the first) to
    /// `ids` and, for changes, whether each was added to `added`. Members,
    /// and changes all of one kind (a first run's), are copied from the
    /// bitmap's containers many at a time: a call per row was a quarter of
    /// a Parquet output's time.
    fn extend_in(&self, ranks: std::ops::Range<u64>, ids: &mut Vec<u32>, added: &mut Vec<bool>) {
        if ranks.is_empty() {
            return;
        }
        let (bitmap, kind) = match self {
            GroupRows::Members(members) => (*members, None),
            GroupRows::Changes(change) if change.removed.is_empty() => (&change.added, Some(true)),
            GroupRows::Changes(change) if change.added.is_empty() => (&change.removed, Some(false)),
            GroupRows::Changes(change) => {
                let rows = change.rows().skip(ranks.start as usize);
                for (id, was_added) in rows.take((ranks.end - ranks.start) as usize) {
                    ids.push(id);
                    added.push(was_added);
                }
                return;
            }
        };
        let id_at = |rank| bitmap.select(rank as u32).expect("a rank below the length");
        let mut source = bitmap.range(id_at(ranks.start)..=id_at(ranks.end - 1));
        let from = ids.len();
        ids.resize(from + (ranks.end - ranks.start) as usize, 0);
        let mut room = &mut ids[from..];
        while !room.is_empty() {
            let copied = source.next_many(room).len();
            room = &mut room[copied..];
        }
        if let Some(kind) = kind {
            added.resize(ids.len(), kind);
        }
    }
}

/// Writes `group,user_id` rows, sorted by group key then user id; or, for
/// a path ending in `.roaring`, a directory of one portable roaring bitmap
/// per group ([`write_bitmap_directory`]).
pub fn write_members<'a>(
    path: &Path,
    groups: impl IntoIterator<Item = (&'a str, &'a RoaringBitmap)>,
) -> Result<(), OutputError> {
    let groups: Vec<(&str, GroupRows<'_>)> = groups
        .into_iter()
        .map(|(key, members)| (key, GroupRows::Members(members)))
        .collect();
    write_member_rows(path, &groups)
}

/// Writes `group,user_id,change` rows (`change` is `add` or `remove`),
/// sorted by group key then user id.
pub fn write_changes(path: &Path, changes: &[GroupChange]) -> Result<(), OutputError> {
    let groups: Vec<(&str, GroupRows<'_>)> = changes
        .iter()
        .map(|change| (change.key.as_str(), GroupRows::Changes(change)))
        .collect();
    write_rows(path, true, &groups, Batching::default())
}

impl GroupSpool {
    /// Writes the members kept as [`write_members`] does.
    pub(crate) fn write_members(&self, path: &Path) -> Result<(), OutputError> {
        write_member_rows(path, self)
    }

    /// Writes the changes kept as [`write_changes`] does.
    pub(crate) fn write_changes(&self, path: &Path) -> Result<(), OutputError> {
        write_rows(path, true, self, Batching::default())
    }
}

fn write_member_rows(path: &Path, groups: &dyn GroupSource) -> Result<(), OutputError> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("roaring")) {
        write_bitmaps(path, groups)
    } else {
        write_rows(path, false, groups, Batching::default())
    }
}

fn change_word(added: bool) -> &'static str {
    if added { "add" } else { "remove" }
}

/// How rows are cut up on the way out.
#[derive(Clone, Copy)]
struct Batching {
    /// Rows of CSV or JSON Lines formatted at once, in parallel by group,
    /// while the rows before them are written.
    text_window: u64,
    /// Rows in one Parquet row group.
    row_group: u64,
    /// Rows in one Parquet data page at most: big enough that page headers
    /// cost nothing, small enough that a reader decodes a page at a time.
    page: u64,
}

impl Default for Batching {
    /// Enough to keep both cores busy, little enough to hold.
    fn default() -> Batching {
        Batching {
            text_window: 1 << 23,
            row_group: 1 << 22,
            page: 1 << 20,
        }
    }
}

/// Writes the groups' rows, sorted by key, a window of rows at a time:
/// each window's groups are loaded (read back from a spool, if there) and
/// encoded in parallel while the window before is written.
fn write_rows(path: &Path, with_change: bool, source: &dyn GroupSource, batching: Batching) -> Result<(), OutputError> {
    let mut order: Vec<usize> = (0..source.len()).collect();
    order.sort_by(|&a, &b| source.key(a).cmp(source.key(b)));
    let format = Format::for_path(path);
    let window_rows = match format {
        Format::Csv | Format::JsonLines => batching.text_window,
        Format::Parquet => batching.row_group * parquet_rows::row_groups_at_once() as u64,
    };
    let windows = windows_of(&order, |group| source.rows(group), window_rows);
    let load = |window: &[usize]| -> std::io::Result<Vec<Loaded<'_>>> {
        window.par_iter().map(|&group| source.load(group)).collect()
    };
    write_atomically(path, |out| match format {
        Format::Csv | Format::JsonLines => {
            if format == Format::Csv {
                let header = if with_change {
                    "group,user_id,change\n"
                } else {
                    "group,user_id\n"
                };
                out.write_all(header.as_bytes())?;
            }
            let format_window = |window: &[usize]| -> std::io::Result<Vec<Vec<u8>>> {
                let loaded = load(window)?;
                Ok(window
                    .par_iter()
                    .zip(&loaded)
                    .map(|(&group, rows)| text_rows(format, source.key(group), &rows.rows()))
                    .collect())
            };
            let mut formatted: Vec<Vec<u8>> = Vec::new();
            for window in windows {
                let (written, next) = rayon::join(
                    || formatted.iter().try_for_each(|text| out.write_all(text)),
                    || format_window(window),
                );
                written?;
                formatted = next?;
            }
            formatted.iter().try_for_each(|text| out.write_all(text))
        }
        Format::Parquet => {
            let mut rows = parquet_rows::RowsWriter::new(out, with_change).map_err(std::io::Error::other)?;
            for window in windows {
                let loaded = load(window)?;
                let groups: Vec<(&str, GroupRows<'_>)> = window
                    .iter()
                    .zip(&loaded)
                    .map(|(&group, rows)| (source.key(group), rows.rows()))
                    .collect();
                rows.append(&groups, batching.row_group, batching.page)
                    .map_err(std::io::Error::other)?;
            }
            rows.finish().map_err(std::io::Error::other)
        }
    })
}

/// `groups` cut into windows of at most `most` rows, or of one group that
/// has more.
fn windows_of(groups: &[usize], rows: impl Fn(usize) -> u64, most: u64) -> Vec<&[usize]> {
    let mut windows = Vec::new();
    let mut rest = groups;
    while !rest.is_empty() {
        let mut total = 0;
        let take = rest
            .iter()
            .position(|&group| {
                total += rows(group);
                total > most
            })
            .map_or(rest.len(), |at| at.max(1));
        let (window, next) = rest.split_at(take);
        windows.push(window);
        rest = next;
    }
    windows
}

/// One group's rows as CSV or JSON Lines. Numbers go through `itoa`, rows
/// through one buffer: `writeln!` per row held the writer at a few million
/// rows a second.
fn text_rows(format: Format, key: &str, group: &GroupRows<'_>) -> Vec<u8> {
    // A row's bytes past the key, at most: an id of 10 digits, the
    // punctuation, and the change.
    let row_bytes = key.len()
        + if format == Format::Csv { 12 } else { 35 }
        + if matches!(group, GroupRows::Changes(_)) { 20 } else { 0 };
    let mut text = Vec::with_capacity(group.len() as usize * row_bytes);
    let mut number = itoa::Buffer::new();
    group.for_each(|id, change| {
        // Keys are `[A-Za-z0-9_-]`, so they need no CSV quoting and no JSON
        // escaping.
        if format == Format::Csv {
            text.extend_from_slice(key.as_bytes());
            text.push(b',');
            text.extend_from_slice(number.format(id).as_bytes());
            if let Some(added) = change {
                text.push(b',');
                text.extend_from_slice(change_word(added).as_bytes());
            }
        } else {
            text.extend_from_slice(b"{\"group\":\"");
            text.extend_from_slice(key.as_bytes());
            text.extend_from_slice(b"\",\"user_id\":");
            text.extend_from_slice(number.format(id).as_bytes());
            if let Some(added) = change {
                text.extend_from_slice(b",\"change\":\"");
                text.extend_from_slice(change_word(added).as_bytes());
                text.push(b'"');
            }
            text.push(b'}');
        }
        text.push(b'\n');
    });
    text
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
    replace_directory(dir, |staging| {
        files
            .iter()
            .try_for_each(|(name, bytes)| write_synced(&staging.join(name), |out| out.write_all(bytes)))
    })
}

/// Writes `dir` as one file per group, `<key>.roaring`, each a portable
/// roaring bitmap of its members' user ids (read by CRoaring, pyroaring,
/// Java and Go), and `groups.json`, listing each group's key, file and
/// member count; a key's bytes other than ASCII letters, digits, `-` and
/// `_` are written `%XX` in its file name. The files are written in
/// parallel and the directory replaced at once, as [`write_directory`]
/// does.
pub fn write_bitmap_directory(dir: &Path, groups: &[(&str, &RoaringBitmap)]) -> Result<(), OutputError> {
    let groups: Vec<(&str, GroupRows<'_>)> = groups
        .iter()
        .map(|(key, members)| (*key, GroupRows::Members(members)))
        .collect();
    write_bitmaps(dir, &groups)
}

/// [`write_bitmap_directory`] of groups of members, loaded one at a time.
fn write_bitmaps(dir: &Path, groups: &dyn GroupSource) -> Result<(), OutputError> {
    let listed: Vec<serde_json::Value> = (0..groups.len())
        .map(|group| {
            let key = groups.key(group);
            serde_json::json!({"group": key, "file": bitmap_file_name(key), "members": groups.rows(group)})
        })
        .collect();
    replace_directory(dir, |staging| {
        (0..groups.len()).into_par_iter().try_for_each(|group| {
            let loaded = groups.load(group)?;
            let GroupRows::Members(members) = loaded.rows() else {
                unreachable!("a directory of bitmaps is written from members")
            };
            write_synced(&staging.join(bitmap_file_name(groups.key(group))), |out| {
                members.serialize_into(out)
            })
        })?;
        let listing = serde_json::to_vec_pretty(&listed).map_err(std::io::Error::other)?;
        write_synced(&staging.join("groups.json"), |out| out.write_all(&listing))
    })
}

/// A group's bitmap file name: its key, `%XX` for bytes that are not safe
/// in a file name on every system, then `.roaring`.
fn bitmap_file_name(key: &str) -> String {
    let mut name = String::with_capacity(key.len() + 8);
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            name.push(char::from(byte));
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    name + ".roaring"
}

/// Creates a file, writes it through a buffer and syncs it.
fn write_synced(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut out = BufWriter::new(&file);
    write(&mut out)?;
    out.flush()?;
    drop(out);
    file.sync_all()?;
    count_write();
    Ok(())
}

/// Fills a new directory beside `dir` with `fill`, then puts it in `dir`'s
/// place; `dir`'s old content is removed only once the new one is there.
fn replace_directory(dir: &Path, fill: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<(), OutputError> {
    let error = |e: &dyn std::fmt::Display| OutputError {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let parent = directory_of(dir);
    let staging = tempfile::Builder::new()
        .prefix(".dyngroups-")
        .tempdir_in(parent)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => error(&"its parent directory does not exist"),
            _ => error(&e),
        })?;
    fill(staging.path()).map_err(|e| error(&e))?;
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

/// The directory `path` is in: `.` for a bare file name.
fn directory_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
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
    let dir = directory_of(path);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::OpenTable;

    /// The rows a file of memberships or changes holds, read back: through
    /// the Parquet reader of the inputs, or as text.
    fn read_back(path: &Path) -> Vec<String> {
        match Format::for_path(path) {
            Format::Parquet => {
                let table = OpenTable::open(path).unwrap();
                let columns: Vec<usize> = (0..table.schema().columns.len()).collect();
                let table = table.load(&columns).unwrap();
                (0..table.rows)
                    .map(|row| {
                        let cells: Vec<String> = columns
                            .iter()
                            .map(|&c| table.column(c).cell_text(row).unwrap_or_default())
                            .collect();
                        cells.join(",")
                    })
                    .collect()
            }
            Format::Csv => std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .skip(1)
                .map(String::from)
                .collect(),
            Format::JsonLines => std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(|line| {
                    let row: serde_json::Value = serde_json::from_str(line).unwrap();
                    ["group", "user_id", "change"]
                        .iter()
                        .filter_map(|name| row.get(name))
                        .map(|v| v.as_str().map_or(v.to_string(), String::from))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .collect(),
        }
    }

    /// A directory of bitmaps holds each group's members under a file name
    /// safe on any system, listed with its key and count; writing it again
    /// replaces it whole.
    #[test]
    fn a_directory_of_bitmaps_holds_each_group_under_a_safe_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("members.roaring");
        let odd: RoaringBitmap = [1, 70_000, u32::MAX].into_iter().collect();
        let many: RoaringBitmap = (0..200_000).collect();
        write_members(&path, [("eng/emea é", &odd), ("all", &many)]).unwrap();
        let read =
            |name: &str| RoaringBitmap::deserialize_from(std::fs::read(path.join(name)).unwrap().as_slice()).unwrap();
        assert_eq!(read("eng%2Femea%20%C3%A9.roaring"), odd);
        assert_eq!(read("all.roaring"), many);
        let listed: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path.join("groups.json")).unwrap()).unwrap();
        assert_eq!(
            listed,
            serde_json::json!([
                {"group": "eng/emea é", "file": "eng%2Femea%20%C3%A9.roaring", "members": 3},
                {"group": "all", "file": "all.roaring", "members": 200_000},
            ])
        );
        write_members(&path, [("all", &odd)]).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["all.roaring", "groups.json"]);
        assert_eq!(read("all.roaring"), odd);
    }

    /// Every format, in windows and row groups far smaller than the groups,
    /// holds every row once, in order: groups by key, users by id.
    #[test]
    fn rows_cut_into_windows_and_row_groups_come_back_whole_and_in_order() {
        let sets: Vec<(String, RoaringBitmap)> = [("b", 0..23u32), ("a", 5..9), ("empty", 0..0), ("c", 100..101)]
            .into_iter()
            .map(|(key, ids)| (key.to_string(), ids.map(|id| id * 7).collect()))
            .collect();
        let mut expected_members = Vec::new();
        for (key, members) in [&sets[1], &sets[0], &sets[3]] {
            expected_members.extend(members.iter().map(|id| format!("{key},{id}")));
        }
        let changes = [
            GroupChange::between("z", &sets[0].1, &sets[1].1),
            GroupChange::between("y", &RoaringBitmap::new(), &sets[3].1),
        ];
        let mut expected_changes = vec!["y,700,add".to_string()];
        expected_changes.extend(
            changes[0]
                .rows()
                .map(|(id, added)| format!("z,{id},{}", change_word(added))),
        );
        let dir = tempfile::tempdir().unwrap();
        for batching in [
            Batching::default(),
            Batching {
                text_window: 3,
                row_group: 5,
                page: 2,
            },
        ] {
            for extension in ["csv", "jsonl", "parquet"] {
                let path = dir.path().join(format!("out.{extension}"));
                let groups: Vec<(&str, GroupRows<'_>)> = sets
                    .iter()
                    .map(|(key, m)| (key.as_str(), GroupRows::Members(m)))
                    .collect();
                write_rows(&path, false, &groups, batching).unwrap();
                assert_eq!(read_back(&path), expected_members, "members, {extension}");
                let groups: Vec<(&str, GroupRows<'_>)> = changes
                    .iter()
                    .map(|c| (c.key.as_str(), GroupRows::Changes(c)))
                    .collect();
                write_rows(&path, true, &groups, batching).unwrap();
                assert_eq!(read_back(&path), expected_changes, "changes, {extension}");
                // The same rows, kept in a spool that moved them to its
                // file.
                let (mut members, mut changed) = (GroupSpool::spilling(&path), GroupSpool::spilling(&path));
                for (key, m) in &sets {
                    members.push_members(key, m.clone()).unwrap();
                }
                for change in &changes {
                    changed.push_change(change.clone()).unwrap();
                }
                write_rows(&path, false, &members, batching).unwrap();
                assert_eq!(read_back(&path), expected_members, "spilled members, {extension}");
                write_rows(&path, true, &changed, batching).unwrap();
                assert_eq!(read_back(&path), expected_changes, "spilled changes, {extension}");
            }
        }
        let path = dir.path().join("none.parquet");
        write_members(&path, []).unwrap();
        assert_eq!(read_back(&path), Vec::<String>::new());
    }
}
