//! The commands over the state: `history`, `members`, `groups`,
//! `unassigned`, `groups-of`, `diff`.

use super::{StateArgs, read_rules, stdout_error};
use clap::Args;
use dyngroups::output::TextTable;
use dyngroups::state::{GroupRecord, RunRecord, State, StateError};
use dyngroups::{Error, parse_rules};
use roaring::RoaringBitmap;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub(super) struct MembersArgs {
    /// The group's key.
    #[arg(long, value_name = "KEY")]
    group: String,
    /// Add these users columns (comma-separated), read from `--users`.
    #[arg(long, value_name = "COLUMNS", value_delimiter = ',', requires = "users")]
    with: Vec<String>,
    /// The users file the columns come from.
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    #[command(flatten)]
    export: ExportArgs,
}

/// What every export from the state takes.
#[derive(Args)]
pub(super) struct ExportArgs {
    /// The run (default: the last committed run).
    #[arg(long, value_name = "ID")]
    run: Option<u64>,
    /// Write here (.csv, .jsonl or .parquet; `members` also writes the
    /// roaring portable bitmap to .roaring); default: stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write CSV cells as they are: no spreadsheet-formula guard.
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Args)]
pub(super) struct GroupsArgs {
    #[command(flatten)]
    export: ExportArgs,
}

#[derive(Args)]
pub(super) struct UnassignedArgs {
    /// The group.
    #[arg(long, value_name = "KEY")]
    group: String,
    /// The users file.
    #[arg(long, value_name = "FILE")]
    users: PathBuf,
    /// Add these users columns (comma-separated).
    #[arg(long, value_name = "COLUMNS", value_delimiter = ',')]
    with: Vec<String>,
    #[command(flatten)]
    export: ExportArgs,
}

#[derive(Args)]
pub(super) struct GroupsOfArgs {
    /// The user's id.
    #[arg(long, value_name = "ID")]
    user: u32,
    /// The run (default: the last committed run).
    #[arg(long, value_name = "ID")]
    run: Option<u64>,
    /// The rules file, to tell members by `include` from members by rule.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Args)]
pub(super) struct DiffArgs {
    /// The earlier run.
    #[arg(long, value_name = "ID")]
    from: u64,
    /// The later run.
    #[arg(long, value_name = "ID")]
    to: u64,
    /// Write `group,user_id,change` rows here (.csv, .jsonl or .parquet).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    state: StateArgs,
}

pub(super) fn run_history(args: StateArgs) -> Result<(), Error> {
    let state = State::open(&args.dir).map_err(Error::State)?;
    let runs = state.runs().map_err(Error::State)?;
    println!(
        "{:>5}  {:<10}  {:<20}  {:>6}  {:>10}  {:>8}  {:>8}  rules sha256",
        "run", "as of", "committed at", "groups", "members", "added", "removed"
    );
    for run in &runs {
        let sum = |f: fn(&GroupRecord) -> u64| run.groups.iter().map(f).sum::<u64>();
        let rules_hash = run
            .inputs
            .iter()
            .find(|i| i.role == "rules")
            .map_or("", |i| &i.sha256[..12.min(i.sha256.len())]);
        println!(
            "{:>5}  {:<10}  {:<20}  {:>6}  {:>10}  {:>8}  {:>8}  {rules_hash}",
            run.id,
            run.as_of,
            run.committed_at,
            run.groups.len(),
            sum(|g| g.members),
            format!("+{}", sum(|g| g.added)),
            format!("-{}", sum(|g| g.removed)),
        );
    }
    Ok(())
}

impl ExportArgs {
    /// The state, and the run asked for (default: the last committed run).
    fn open(&self) -> Result<(State, RunRecord), Error> {
        let state = State::open(&self.state.dir).map_err(Error::State)?;
        let run = chosen_run(&state, self.run)?;
        Ok((state, run))
    }
}

/// Run `id`, or the last committed run.
pub(super) fn chosen_run(state: &State, id: Option<u64>) -> Result<RunRecord, Error> {
    match id {
        Some(id) => state.run(id),
        None => state.last_run().and_then(|last| {
            last.ok_or_else(|| StateError::Missing {
                dir: state.dir().display().to_string(),
            })
        }),
    }
    .map_err(Error::State)
}

/// The members group `key` committed in `run`, or a usage error listing
/// the groups it has.
pub(super) fn committed_members(state: &State, run: &RunRecord, key: &str) -> Result<RoaringBitmap, Error> {
    state.members(run.id, key).map_err(Error::State)?.ok_or_else(|| {
        Error::Usage(format!(
            "run {} committed no group `{key}`; it has: {}",
            run.id,
            run.groups.iter().map(|g| g.key.as_str()).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Prints a table as CSV, or writes it by extension.
pub(super) fn emit_table(table: &TextTable, out: Option<&Path>, raw: bool, what: &str) -> Result<(), Error> {
    match out {
        None => print!("{}", table.to_csv(raw)),
        Some(path) => {
            dyngroups::output::write_table(path, table, raw).map_err(Error::Output)?;
            println!("{} {what} written to {}", table.rows.len(), path.display());
        }
    }
    Ok(())
}

pub(super) fn run_members(args: MembersArgs) -> Result<(), Error> {
    let export = &args.export;
    let (state, run) = export.open()?;
    let members = committed_members(&state, &run, &args.group)?;
    if let Some(users) = &args.users {
        let table = dyngroups::export::user_rows(users, &args.with, Some(&members), None).map_err(Error::Data)?;
        return emit_table(&table, export.out.as_deref(), export.raw, "members");
    }
    match &export.out {
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for id in &members {
                writeln!(out, "{id}").map_err(stdout_error)?;
            }
            out.flush().map_err(stdout_error)?;
        }
        Some(path) => {
            let written = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("roaring")) {
                dyngroups::output::write_portable_bitmap(path, &members)
            } else {
                dyngroups::output::write_members(path, [(args.group.as_str(), &members)])
            };
            written.map_err(Error::Output)?;
            println!(
                "{} members of `{}` in run {} written to {}",
                members.len(),
                args.group,
                run.id,
                path.display()
            );
        }
    }
    Ok(())
}

pub(super) fn run_groups(args: GroupsArgs) -> Result<(), Error> {
    let export = &args.export;
    let (state, run) = export.open()?;
    let table = dyngroups::export::groups_table(&state, &run).map_err(Error::State)?;
    if let Some(path) = &export.out {
        return emit_table(&table, Some(path), export.raw, "groups");
    }
    print!("{}", table.to_aligned());
    Ok(())
}

pub(super) fn run_unassigned(args: UnassignedArgs) -> Result<(), Error> {
    let export = &args.export;
    let (state, run) = export.open()?;
    let members = committed_members(&state, &run, &args.group)?;
    let table = dyngroups::export::user_rows(&args.users, &args.with, None, Some(&members)).map_err(Error::Data)?;
    emit_table(&table, export.out.as_deref(), export.raw, "users")
}

pub(super) fn run_groups_of(args: GroupsOfArgs) -> Result<(), Error> {
    let state = State::open(&args.state.dir).map_err(Error::State)?;
    let run = chosen_run(&state, args.run)?;
    let includes: HashMap<String, Vec<u64>> = match &args.rules {
        Some(path) => {
            let source = read_rules(path)?;
            let file = parse_rules(&source.text).map_err(|e| Error::Rules {
                errors: vec![e.0],
                warnings: Vec::new(),
                file: source.clone(),
            })?;
            file.include_lists()
        }
        None => HashMap::new(),
    };
    let groups = dyngroups::export::groups_of(&state, &run, args.user, &includes).map_err(Error::State)?;
    println!("user {} is in {} groups after run {}", args.user, groups.len(), run.id);
    let key_width = groups
        .iter()
        .map(|(k, _, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    let name_width = groups
        .iter()
        .map(|(_, n, _)| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    for (key, name, why) in &groups {
        println!("{key:<key_width$}  {name:<name_width$}  {}", why.word());
    }
    Ok(())
}

pub(super) fn run_diff(args: DiffArgs) -> Result<(), Error> {
    let state = State::open(&args.state.dir).map_err(Error::State)?;
    let changes = state.changes_between(args.from, args.to).map_err(Error::State)?;
    let key_width = changes.iter().map(|c| c.key.chars().count()).max().unwrap_or(0).max(5);
    println!("{:<key_width$}  {:>8}  {:>8}", "group", "added", "removed");
    for change in changes.iter().filter(|c| !c.is_empty()) {
        println!(
            "{:<key_width$}  {:>8}  {:>8}",
            change.key,
            format!("+{}", change.added.len()),
            format!("-{}", change.removed.len())
        );
    }
    if let Some(path) = &args.out {
        dyngroups::output::write_changes(path, &changes).map_err(Error::Output)?;
        println!("changes written to {}", path.display());
    }
    Ok(())
}
