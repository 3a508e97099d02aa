//! Command-line commands over the library. Errors are reported here, once,
//! with the exit codes every command keeps: 0 ok, 1 rule errors, 2 usage
//! errors, 3 data errors, 4 state and output (I/O) errors, 5 the
//! mass-removal guard stopped a run.

use clap::{Args, Parser, Subcommand};
use dyngroups::ast::GroupStatus;
use dyngroups::checked::CheckedRules;
use dyngroups::dataset::{InputPaths, OpenInputs};
use dyngroups::diagnostic::render_all;
use dyngroups::diff::{ChangeCount, GroupChange, RemovalGuard};
use dyngroups::eval::{EvaluationSummary, GroupMembers, dependency_closure, evaluate, evaluate_each};
use dyngroups::import::{BadRowLimit, ImportReport, MatchBy};
use dyngroups::output::TextTable;
use dyngroups::state::{GroupRecord, GroupToCommit, InputFingerprint, RunRecord, RunWriter, State, StateError};
use dyngroups::{Diagnostic, SourceFile, check, check_without_data, parse_rules};
use roaring::RoaringBitmap;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// dyngroups: rules in, group memberships out.
#[derive(Parser)]
#[command(version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a rules file; with data files, check fields and types too.
    Check(CheckArgs),
    /// Evaluate every group of a rules file over the data.
    Run(Box<RunArgs>),
    /// Type rules against your data and see at once who they catch, why a
    /// user is caught or not, and what a group of the rules file would change.
    Repl(Box<crate::repl::ReplArgs>),
    /// Why a user is or is not in a group: the rule as a tree, each node
    /// true or false for the user, with the user's values.
    Explain(ExplainArgs),
    /// List the committed runs kept in the state.
    History(StateArgs),
    /// Export the members a group committed in a run.
    Members(MembersArgs),
    /// The add/remove changes between two committed runs.
    Diff(DiffArgs),
    /// List the groups of a committed run.
    Groups(GroupsArgs),
    /// The users not in a group.
    Unassigned(UnassignedArgs),
    /// The groups one user is in, and why.
    GroupsOf(GroupsOfArgs),
    /// Print (or write) an empty file to fill in and import.
    Template(TemplateArgs),
    /// Generate a synthetic population (Parquet) and optionally rules, for
    /// benchmarks and demos.
    Gen(GenArgs),
    /// Write the rules as SQL for DuckDB, PostgreSQL or Spark SQL; the data
    /// files give the column types.
    Sql(SqlArgs),
    /// Write the rules as a Python module of Polars expressions (one wide
    /// select); the data files give the column types.
    Polars(RulesAndData),
}

#[derive(Args)]
struct SqlArgs {
    #[command(flatten)]
    inputs: RulesAndData,
    /// The SQL engine.
    #[arg(long, value_enum, default_value = "duckdb")]
    dialect: SqlDialect,
    /// Only this group's query (repeatable).
    #[arg(long = "group", value_name = "KEY", conflicts_with = "combined")]
    groups: Vec<String>,
    /// Print only the one query returning `(group, user_id)` for every group
    /// a run commits.
    #[arg(long)]
    combined: bool,
    /// The users table.
    #[arg(long, value_name = "TABLE", default_value = "users")]
    users_table: String,
    /// The enrollments table.
    #[arg(long, value_name = "TABLE", default_value = "enrollments")]
    enrollments_table: String,
    /// The org tree table.
    #[arg(long, value_name = "TABLE", default_value = "org")]
    org_table: String,
    /// The static memberships table.
    #[arg(long, value_name = "TABLE", default_value = "memberships")]
    memberships_table: String,
    /// What the last run committed (`group`, `user_id`), read by `paused`,
    /// `add_only` and `remove_only` groups.
    #[arg(long, value_name = "TABLE", default_value = "committed")]
    committed_table: String,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SqlDialect {
    Duckdb,
    Postgres,
    Spark,
}

#[derive(Args)]
struct GenArgs {
    /// Number of users (about 10 enrollments each).
    #[arg(long)]
    users: u32,
    /// Seed: the same seed gives the same files.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write `rules.rules` with this many groups.
    #[arg(long, default_value_t = 0)]
    rules: usize,
    /// The date relative dates are drawn around (default: today, UTC).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_as_of)]
    as_of: Option<chrono::NaiveDate>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// The files' shape: `export` (user ids with gaps in random row order,
    /// enrollments by course, distinct text literals in rules) or
    /// `sequential` (user ids equal to rows, enrollments user by user).
    #[arg(long, value_enum, default_value_t = GenShape::Export)]
    shape: GenShape,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum GenShape {
    /// As systems export them.
    Export,
    /// Ids equal to rows, enrollments user by user.
    Sequential,
}

/// The inputs besides the users and the rules, shared by the commands that
/// read data and by `repl`.
#[derive(Args)]
pub(crate) struct DataArgs {
    /// Enrollments (Parquet or CSV): `user_id`, `course`, `status`, ...
    #[arg(long, value_name = "FILE")]
    enrollments: Option<PathBuf>,
    /// Org tree (Parquet or CSV): `branch`, `parent`.
    #[arg(long, value_name = "FILE")]
    org: Option<PathBuf>,
    /// Static group memberships (Parquet or CSV): `group`, and `user_id`
    /// or the `--match-by` column.
    #[arg(long, value_name = "FILE")]
    memberships: Option<PathBuf>,
    /// The users column the memberships name users by (unique, compared
    /// ignoring case), e.g. `email` or `institutional_id`.
    #[arg(long, value_name = "COLUMN", requires = "memberships")]
    match_by: Option<String>,
    /// The date `today` means in rules (default: today, UTC).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_as_of)]
    as_of: Option<chrono::NaiveDate>,
    /// How a CSV column writes its dates, when its cells cannot tell (day
    /// or month first): `users.start_date=%d/%m/%Y` (repeatable).
    #[arg(long, value_name = "INPUT.COLUMN=FORMAT")]
    date_format: Vec<dyngroups::dataset::DateFormat>,
    /// The text encoding of CSV inputs that are not UTF-8, e.g.
    /// `windows-1252` (what Excel on Windows saves as "CSV").
    #[arg(long, value_name = "LABEL", value_parser = parse_encoding)]
    encoding: Option<String>,
}

/// `--encoding`: a label of the WHATWG encoding standard.
fn parse_encoding(label: &str) -> Result<String, String> {
    dyngroups::data::is_text_encoding(label)
        .then(|| label.to_string())
        .ok_or_else(|| format!("`{label}` is not a text encoding: write e.g. `windows-1252`, `latin1` or `utf-16le`"))
}

#[derive(Args)]
struct CheckArgs {
    /// The rules file.
    rules: PathBuf,
    /// Users (Parquet or CSV), to check field names and types.
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
}

/// A rules file and the data to evaluate it over.
#[derive(Args)]
struct RulesAndData {
    /// The rules file.
    #[arg(long, value_name = "FILE")]
    rules: PathBuf,
    /// Users (Parquet or CSV) with a unique `user_id` column.
    #[arg(long, value_name = "FILE")]
    users: PathBuf,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    inputs: RulesAndData,
    /// Write `group,user_id` rows of what each group commits here (.csv,
    /// .jsonl or .parquet), or for a path ending in `.roaring` a directory of
    /// one portable roaring bitmap per group, listed in `groups.json`;
    /// drafts only with `--dry-run` or `--no-state`.
    #[arg(long, value_name = "FILE")]
    members_out: Option<PathBuf>,
    /// Only these groups (and the groups they depend on); the other groups
    /// of the last committed run are kept as they were.
    #[arg(long = "group", value_name = "KEY")]
    groups: Vec<String>,
    #[command(flatten)]
    state: StateArgs,
    /// Write the changes since the last committed run as
    /// `group,user_id,change` rows here (.csv, .jsonl or .parquet).
    #[arg(long, value_name = "FILE")]
    diff_out: Option<PathBuf>,
    /// Write the changes as SCIM 2.0 PATCH requests for `/Groups/{key}` into
    /// this directory, with `manifest.json` listing them in order.
    #[arg(long, value_name = "DIR")]
    scim_out: Option<PathBuf>,
    /// The most member changes in one SCIM request.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    scim_batch: u64,
    /// Compute and write the changes, but commit nothing.
    #[arg(long, conflicts_with = "no_state")]
    dry_run: bool,
    /// Evaluate only: no state is read or written, no changes are computed.
    #[arg(long, conflicts_with_all = ["diff_out", "scim_out"])]
    no_state: bool,
    /// Write the memberships import report here (`.json`, else text).
    #[arg(long, value_name = "FILE", requires = "memberships")]
    import_report: Option<PathBuf>,
    /// Stop before evaluating when the memberships import has more bad rows
    /// than this: a count, or a share of the rows read (`5%`).
    #[arg(long, value_name = "LIMIT", default_value = "0")]
    max_bad_rows: BadRowLimit,
    /// Commit even if the run removes many members: of every group, or of
    /// the group named (repeatable).
    #[arg(long, value_name = "KEY", num_args = 0..=1, default_missing_value = "*")]
    allow_mass_removal: Vec<String>,
    /// The mass-removal guard trips when a run removes more than this share
    /// (percent) of a group's members...
    #[arg(long, value_name = "PERCENT", default_value_t = 10.0)]
    mass_removal_share: f64,
    /// ...and at least this many (of a group, or of the whole run).
    #[arg(long, value_name = "N", default_value_t = 100)]
    mass_removal_min: u64,
    /// The guard also trips when a run removes more than this share
    /// (percent) of all the memberships the last run committed.
    #[arg(long, value_name = "PERCENT", default_value_t = 20.0)]
    mass_removal_run_share: f64,
    /// Delete this static group of the last run, which the memberships
    /// input no longer names (repeatable; without KEY, every such group).
    #[arg(long, value_name = "KEY", num_args = 0..=1, default_missing_value = "*")]
    delete_static: Vec<String>,
    /// How many committed runs the state keeps.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    keep: u64,
}

#[derive(Args)]
struct ExplainArgs {
    #[command(flatten)]
    inputs: RulesAndData,
    /// The group.
    #[arg(long, value_name = "KEY")]
    group: String,
    /// The user's id.
    #[arg(long, value_name = "ID")]
    user: u32,
    /// Expand `member_of` into the referenced group's rule, this many levels.
    #[arg(long, value_name = "N", default_value_t = 0)]
    depth: usize,
}

#[derive(Args)]
struct TemplateArgs {
    /// Which file.
    kind: TemplateKind,
    /// Name users by this users column instead of `user_id`.
    #[arg(long, value_name = "COLUMN")]
    match_by: Option<String>,
    /// Write it here instead of printing it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TemplateKind {
    /// Static group memberships: `group` and a user identifier.
    Memberships,
}

#[derive(Args)]
struct StateArgs {
    /// The state directory: committed runs and their members.
    #[arg(long = "state", value_name = "DIR", default_value = ".dyngroups")]
    dir: PathBuf,
}

#[derive(Args)]
struct MembersArgs {
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
struct ExportArgs {
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
struct GroupsArgs {
    #[command(flatten)]
    export: ExportArgs,
}

#[derive(Args)]
struct UnassignedArgs {
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
struct GroupsOfArgs {
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
struct DiffArgs {
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

/// How a command failed, mapped to its exit code.
enum Failure {
    Rules,
    Usage(String),
    Data(String),
    Output(String),
    Guard(String),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Repl(args) => return crate::repl::main(*args),
        Command::Check(args) => run_check(args),
        Command::Run(args) => run_run(*args),
        Command::Explain(args) => run_explain(args),
        Command::History(args) => run_history(args),
        Command::Members(args) => run_members(args),
        Command::Diff(args) => run_diff(args),
        Command::Groups(args) => run_groups(args),
        Command::Unassigned(args) => run_unassigned(args),
        Command::GroupsOf(args) => run_groups_of(args),
        Command::Template(args) => run_template(args),
        Command::Gen(args) => run_gen(args),
        Command::Sql(args) => run_sql(args),
        Command::Polars(args) => run_polars(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Rules) => ExitCode::from(1),
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Data(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(3)
        }
        Err(Failure::Output(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(4)
        }
        Err(Failure::Guard(message)) => {
            eprint!("{message}");
            ExitCode::from(5)
        }
    }
}

fn read_rules(path: &Path) -> Result<SourceFile, Failure> {
    SourceFile::read(path).map_err(|e| Failure::Usage(format!("cannot read rules file {}: {e}", path.display())))
}

/// `--as-of`, with an error in plain words: a date written day or month
/// first gets the ISO dates it may mean.
fn parse_as_of(text: &str) -> Result<chrono::NaiveDate, String> {
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date);
    }
    let parts: Vec<&str> = text.split(['/', '.', '-']).collect();
    let numbers: Option<Vec<u32>> = parts.iter().map(|p| p.parse().ok()).collect();
    let meanings: Vec<String> = match (parts.as_slice(), numbers.as_deref()) {
        ([_, _, year], Some(&[a, b, y])) if year.len() == 4 => {
            let day_first = chrono::NaiveDate::from_ymd_opt(y as i32, b, a);
            let month_first = chrono::NaiveDate::from_ymd_opt(y as i32, a, b);
            match (day_first, month_first) {
                (Some(d), Some(m)) if d != m => vec![format!("{d} (day first)"), format!("{m} (month first)")],
                (Some(d), _) => vec![d.to_string()],
                (None, Some(m)) => vec![m.to_string()],
                (None, None) => Vec::new(),
            }
        }
        _ => Vec::new(),
    };
    Err(match meanings.as_slice() {
        [] => format!("`{text}` is not a date: write it as YYYY-MM-DD, e.g. 2026-11-22"),
        [one] => format!("`{text}` is not written YYYY-MM-DD: did you mean {one}?"),
        [first, second, ..] => format!("`{text}` is not written YYYY-MM-DD: did you mean {first} or {second}?"),
    })
}

/// The date `today` means: `--as-of`, else today (UTC).
pub(crate) fn as_of(data: &DataArgs) -> chrono::NaiveDate {
    data.as_of.unwrap_or_else(|| chrono::Utc::now().date_naive())
}

fn print_diagnostics(diagnostics: &[Diagnostic], source: &SourceFile) {
    if !diagnostics.is_empty() {
        eprint!("{}", render_all(diagnostics, source));
    }
}

/// Parses and checks; on failure prints every diagnostic.
fn parse_and_check(
    source: &SourceFile,
    inputs: Option<&OpenInputs>,
    as_of: chrono::NaiveDate,
    only_group: Option<&str>,
) -> Result<(dyngroups::ast::RulesFile, Option<dyngroups::Checked>), Failure> {
    let file = parse_rules(&source.text).map_err(|e| {
        print_diagnostics(&[e.0], source);
        Failure::Rules
    })?;
    let file = match only_group {
        Some(key) => file
            .closure_of(key)
            .ok_or_else(|| Failure::Usage(format!("no group `{key}`")))?,
        None => file,
    };
    let checked = match inputs {
        Some(inputs) => Some(check(&file, &inputs.schema(), as_of).map_err(|e| {
            print_diagnostics(&e.errors, source);
            print_diagnostics(&e.warnings, source);
            Failure::Rules
        })?),
        None => {
            let warnings = check_without_data(&file, as_of).map_err(|e| {
                print_diagnostics(&e.errors, source);
                print_diagnostics(&e.warnings, source);
                Failure::Rules
            })?;
            print_diagnostics(&warnings, source);
            None
        }
    };
    if let Some(checked) = &checked {
        print_diagnostics(&checked.warnings, source);
    }
    Ok((file, checked))
}

fn open_inputs(users: PathBuf, data: &DataArgs) -> Result<OpenInputs, Failure> {
    OpenInputs::open(&input_paths(users, data)).map_err(|e| Failure::Data(e.to_string()))
}

/// Where the inputs are, and how to read them.
pub(crate) fn input_paths(users: PathBuf, data: &DataArgs) -> InputPaths {
    InputPaths {
        users,
        enrollments: data.enrollments.clone(),
        org: data.org.clone(),
        memberships: data.memberships.clone(),
        match_by: data.match_by.clone().map_or(MatchBy::UserId, MatchBy::Column),
        date_formats: data.date_format.clone(),
        encoding: data.encoding.clone(),
    }
}

fn run_check(args: CheckArgs) -> Result<(), Failure> {
    let source = read_rules(&args.rules)?;
    let inputs = match args.users {
        Some(users) => Some(open_inputs(users, &args.data)?),
        None if args.data.enrollments.is_some() || args.data.org.is_some() || args.data.memberships.is_some() => {
            return Err(Failure::Usage("checking against data needs `--users FILE` too".into()));
        }
        None => None,
    };
    let (file, _) = parse_and_check(&source, inputs.as_ref(), as_of(&args.data), None)?;
    let n = file.groups.len();
    println!("{n} group{} OK", if n == 1 { "" } else { "s" });
    Ok(())
}

/// A spinner with elapsed time on stderr while a stage runs; drawn only
/// when stderr is a terminal, so logs and pipes stay clean.
fn stage<T>(message: String, work: impl FnOnce() -> T) -> T {
    let spinner = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    spinner.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("a valid progress template"),
    );
    spinner.set_message(message);
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let value = work();
    spinner.finish_and_clear();
    value
}

fn state_failure(e: StateError) -> Failure {
    Failure::Output(e.to_string())
}

fn run_run(args: RunArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let source = read_rules(&args.inputs.rules)?;
    // The state is taken first, so that a second run on it fails at once.
    let state = if args.no_state {
        None
    } else if args.dry_run {
        match State::open(&args.state.dir) {
            Err(StateError::Missing { .. }) => None,
            opened => Some(opened.map_err(state_failure)?),
        }
    } else {
        Some(State::open_or_create(&args.state.dir).map_err(state_failure)?)
    };
    let inputs = stage(format!("opening {}", args.inputs.users.display()), || {
        open_inputs(args.inputs.users.clone(), &args.inputs.data)
    })?;
    let as_of = as_of(&args.inputs.data);
    let (_, checked) = parse_and_check(&source, Some(&inputs), as_of, None)?;
    let rules = checked.expect("checked against data").rules;
    let selected = if args.groups.is_empty() {
        None
    } else {
        let mut wanted = Vec::new();
        for key in &args.groups {
            let index = rules.groups.iter().position(|g| &g.key == key).ok_or_else(|| {
                Failure::Usage(format!(
                    "`--group {key}`: no such group in {}",
                    args.inputs.rules.display()
                ))
            })?;
            wanted.push(index);
        }
        Some(dependency_closure(&rules, &wanted))
    };
    let previous = match &state {
        Some(state) => state
            .last_members(
                rules
                    .groups
                    .iter()
                    .filter(|g| !matches!(g.status, GroupStatus::Active | GroupStatus::Draft))
                    .map(|g| g.key.as_str()),
            )
            .map_err(state_failure)?,
        None => BTreeMap::new(),
    };
    let committing = state.is_some() && !args.dry_run;
    let (data, fingerprints) = stage("loading the columns the rules use".into(), || {
        rayon::join(
            || inputs.load(&rules),
            || committing.then(|| fingerprints(&args.inputs)).transpose(),
        )
    });
    let data = data.map_err(|e| Failure::Data(e.to_string()))?;
    if let Some(report) = &data.import_report {
        check_import(report, &args)?;
    }
    let fingerprints = fingerprints.map_err(|e| Failure::Data(e.to_string()))?;
    let last_run = match &state {
        Some(state) => state.last_run().map_err(state_failure)?,
        None => None,
    };
    if let Some(last) = last_run.as_ref().filter(|_| selected.is_none()) {
        guard_static_groups(last, &data.static_groups, &rules, &args)?;
    }
    let loaded = started.elapsed();

    // Each batch of groups is diffed and stored as soon as it is evaluated,
    // then dropped: only what the outputs asked for is kept.
    let carry_over = !args.groups.is_empty();
    let writer = match &state {
        Some(state) if args.dry_run => Some(state.begin_dry_run(carry_over)),
        Some(state) => Some(state.begin_run(carry_over)),
        None => None,
    };
    let mut sink = RunSink {
        writer: writer.transpose().map_err(state_failure)?,
        // A dry run before any commit: everything would be added.
        finds_changes: state.is_some() || args.dry_run,
        keeps_changes: args.diff_out.is_some() || args.scim_out.is_some(),
        counts: Vec::new(),
        changes: Vec::new(),
        took: std::time::Duration::ZERO,
    };
    let preview = args.dry_run || state.is_none();
    let mut lines: Vec<(usize, RunLine)> = Vec::new();
    let mut kept_members: Vec<(String, RoaringBitmap)> = Vec::new();
    let summary = stage(format!("evaluating {} groups", rules.groups.len()), || {
        evaluate_each(&rules, &data, selected.as_deref(), &previous, |batch| {
            let shown: Vec<GroupMembers> = batch
                .into_iter()
                .filter(|g| args.groups.is_empty() || args.groups.contains(&g.key))
                .collect();
            let to_commit: Vec<GroupToCommit> = shown
                .iter()
                .filter_map(|g| {
                    Some(GroupToCommit {
                        key: &g.key,
                        name: &g.name,
                        kind: "rule",
                        status: g.status.keyword(),
                        members: g.committed()?,
                        same_members_as: g.same_members_as.map(|same| rules.groups[same].key.as_str()),
                    })
                })
                .collect();
            sink.add(&to_commit)?;
            for g in &shown {
                // What each group commits; drafts only in previews, never in
                // a run that commits.
                let written = g.committed().or(preview.then_some(&g.members));
                if let (Some(_), Some(members)) = (&args.members_out, written) {
                    kept_members.push((g.key.clone(), members.clone()));
                }
                lines.push((g.position, RunLine::of_group(g)));
            }
            Ok(())
        })
    })?;
    // Static groups are committed too, by a run of every group.
    let statics: Vec<GroupToCommit> = if args.groups.is_empty() {
        summary
            .static_groups
            .iter()
            .map(|(key, members)| GroupToCommit {
                key,
                name: key,
                kind: "static",
                status: GroupStatus::Active.keyword(),
                members,
                same_members_as: None,
            })
            .collect()
    } else {
        Vec::new()
    };
    sink.add(&statics)?;
    let gone = sink.add_gone()?;
    let evaluated = summary.elapsed;
    lines.sort_by_key(|(position, _)| *position);
    let mut lines: Vec<RunLine> = lines.into_iter().map(|(_, line)| line).collect();
    lines.extend(statics.iter().map(|g| RunLine {
        key: g.key.to_string(),
        name: "(static)".into(),
        members: g.members.len(),
        time: String::new(),
    }));
    let was_static = |key: &str| {
        last_run
            .iter()
            .flat_map(|last| &last.groups)
            .any(|g| g.key == key && g.kind == "static")
    };
    lines.extend(gone.iter().map(|key| RunLine {
        key: key.clone(),
        name: if was_static(key) {
            "(gone from the memberships input)".into()
        } else {
            "(gone from the rules)".into()
        },
        members: 0,
        time: String::new(),
    }));
    print_data_warnings(&summary, &data);
    let counts = sink.finds_changes.then_some(sink.counts.as_slice());
    print_run_table(&lines, counts);
    let enrollment_rows = data.enrollments.as_ref().map_or(0, |e| e.user_rows.len());
    println!(
        "{} groups over {} users and {} enrollments; {} distinct atoms of {}; loaded in {:.1} ms, evaluated in {:.1} ms",
        lines.len() - statics.len() - gone.len(),
        data.user_count(),
        enrollment_rows,
        summary.distinct_atoms,
        summary.atom_uses,
        loaded.as_secs_f64() * 1e3,
        evaluated.as_secs_f64() * 1e3
    );
    if let Some(counts) = counts {
        let changed = counts.iter().filter(|c| c.added + c.removed > 0).count();
        let added: u64 = counts.iter().map(|c| c.added).sum();
        let removed: u64 = counts.iter().map(|c| c.removed).sum();
        println!(
            "changes since the last committed run: +{added} -{removed} in {changed} groups, found in {:.1} ms",
            sink.took.as_secs_f64() * 1e3
        );
    }
    if let Some(last) = &last_run {
        let now: HashSet<&str> = lines[..lines.len() - gone.len()]
            .iter()
            .map(|l| l.key.as_str())
            .collect();
        guard_removals(last, &sink.counts, |key| now.contains(key), &args)?;
    }
    if let Some(path) = &args.members_out {
        let members = kept_members.iter().map(|(key, members)| (key.as_str(), members));
        dyngroups::output::write_members(path, members).map_err(|e| Failure::Output(e.to_string()))?;
        println!("members written to {}", path.display());
    }
    let mut changes = std::mem::take(&mut sink.changes);
    changes.sort_by(|a, b| a.key.cmp(&b.key));
    if let Some(path) = &args.diff_out {
        dyngroups::output::write_changes(path, &changes).map_err(|e| Failure::Output(e.to_string()))?;
        println!("changes written to {}", path.display());
    }
    if let Some(dir) = &args.scim_out {
        let requests = dyngroups::scim::patch_requests(&changes, args.scim_batch as usize);
        let mut files: Vec<(String, Vec<u8>)> = requests
            .iter()
            .map(|r| (r.file.clone(), pretty_json(&r.body)))
            .collect();
        files.push((
            "manifest.json".into(),
            pretty_json(&dyngroups::scim::manifest(&requests)),
        ));
        dyngroups::output::write_directory(dir, &files).map_err(|e| Failure::Output(e.to_string()))?;
        println!("{} SCIM requests written to {}", requests.len(), dir.display());
    }
    let Some(state) = &state else {
        if args.dry_run {
            println!(
                "dry run: no committed run in {}; nothing committed",
                args.state.dir.display()
            );
        }
        return Ok(());
    };
    if args.dry_run {
        println!("dry run: nothing committed");
        return Ok(());
    }
    let writer = sink.writer.expect("a writer when committing");
    let commit_started = Instant::now();
    let record = stage("committing".into(), || {
        writer.commit(
            &as_of.to_string(),
            fingerprints.expect("fingerprinted when committing"),
            args.keep as usize,
        )
    })
    .map_err(state_failure)?;
    println!(
        "committed run {} to {} in {:.1} ms",
        record.id,
        state.dir().display(),
        commit_started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

/// Where a run's groups go as they are evaluated: diffed against the last
/// committed run and stored (or, in a dry run before any commit, all
/// added), keeping every group's change counts and, when the outputs need
/// them, the changes themselves.
struct RunSink<'s> {
    writer: Option<RunWriter<'s>>,
    finds_changes: bool,
    keeps_changes: bool,
    counts: Vec<ChangeCount>,
    changes: Vec<GroupChange>,
    /// Time spent diffing and storing.
    took: std::time::Duration,
}

impl RunSink<'_> {
    fn add(&mut self, groups: &[GroupToCommit<'_>]) -> Result<(), Failure> {
        let started = Instant::now();
        let empty = RoaringBitmap::new();
        match &mut self.writer {
            Some(writer) if self.keeps_changes => {
                let changes = writer.add_with_changes(groups).map_err(state_failure)?;
                self.keep(changes);
            }
            Some(writer) => self.counts.extend(writer.add(groups).map_err(state_failure)?),
            None if !self.finds_changes => {}
            None if self.keeps_changes => self.keep(
                groups
                    .iter()
                    .map(|g| GroupChange::between(g.key, &empty, g.members))
                    .collect(),
            ),
            None => self
                .counts
                .extend(groups.iter().map(|g| ChangeCount::between(g.key, &empty, g.members))),
        }
        self.took += started.elapsed();
        Ok(())
    }

    /// Adds the groups of the last run that this run does not have; returns
    /// their keys.
    fn add_gone(&mut self) -> Result<Vec<String>, Failure> {
        let started = Instant::now();
        let gone = match &self.writer {
            Some(writer) => writer.gone().map_err(state_failure)?,
            None => Vec::new(),
        };
        let keys = gone.iter().map(|c| c.key.clone()).collect();
        self.keep(gone);
        self.took += started.elapsed();
        Ok(keys)
    }

    fn keep(&mut self, changes: Vec<GroupChange>) {
        self.counts.extend(changes.iter().map(GroupChange::count));
        if self.keeps_changes {
            self.changes.extend(changes);
        }
    }
}

/// The groups a guard's message lists, those losing most first.
const GUARD_GROUPS_LISTED: usize = 20;

/// Stops the run before the diff is written or anything committed when a
/// group, or the run as a whole, would lose too many members, unless allowed.
fn guard_removals(
    last: &RunRecord,
    counts: &[ChangeCount],
    still_committed: impl Fn(&str) -> bool,
    args: &RunArgs,
) -> Result<(), Failure> {
    let before: HashMap<&str, u64> = last.groups.iter().map(|g| (g.key.as_str(), g.members)).collect();
    let guard = RemovalGuard {
        share: args.mass_removal_share / 100.0,
        min: args.mass_removal_min,
        run_share: args.mass_removal_run_share / 100.0,
    };
    let allowed = |key: &str| args.allow_mass_removal.iter().any(|a| a == "*" || a == key);
    let trips = guard.check(
        counts,
        |k| before.get(k).copied().unwrap_or(0),
        |k| still_committed(k) && !allowed(k),
    );
    if trips.is_empty() {
        return Ok(());
    }
    let mut message = String::from("error: the mass-removal guard stopped the run; nothing was written or committed\n");
    if !trips.groups.is_empty() {
        message += &format!(
            "  {} group{} would lose more than {}% of their members (and at least {}):\n",
            trips.groups.len(),
            if trips.groups.len() == 1 { "" } else { "s" },
            args.mass_removal_share,
            args.mass_removal_min
        );
    }
    let mut groups = trips.groups;
    groups.sort_by(|a, b| b.removed.cmp(&a.removed).then_with(|| a.key.cmp(&b.key)));
    for trip in groups.iter().take(GUARD_GROUPS_LISTED) {
        message += &format!(
            "    {}: {} -> {} members (-{})\n",
            trip.key, trip.before, trip.after, trip.removed
        );
    }
    if groups.len() > GUARD_GROUPS_LISTED {
        message += &format!("    and {} more\n", groups.len() - GUARD_GROUPS_LISTED);
    }
    if let Some(run) = trips.run {
        message += &format!(
            "  the run would remove {} of the {} memberships committed last, more than {}% (and at least {})\n",
            run.removed, run.before, args.mass_removal_run_share, args.mass_removal_min
        );
    }
    message += "  = help: check the input data; if the removals are right, run again with \
                `--allow-mass-removal` (every group) or `--allow-mass-removal KEY`\n";
    Err(Failure::Guard(message))
}

/// Stops the run before anything is evaluated, written or committed when
/// static groups of the last run, with members, are missing from the
/// memberships input (or the run has none), unless deleted on purpose.
fn guard_static_groups(
    last: &RunRecord,
    statics_now: &BTreeMap<String, RoaringBitmap>,
    rules: &CheckedRules,
    args: &RunArgs,
) -> Result<(), Failure> {
    let deleted = |key: &str| args.delete_static.iter().any(|a| a == "*" || a == key);
    let missing: Vec<&GroupRecord> = last
        .static_groups_missing(
            |key| statics_now.contains_key(key),
            |key| rules.groups.iter().any(|g| g.key == key),
        )
        .into_iter()
        .filter(|g| !deleted(&g.key))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let input = match &args.inputs.data.memberships {
        Some(path) => format!("the memberships input {} does not name", path.display()),
        None => "this run has no `--memberships` input for".to_string(),
    };
    let mut message = format!(
        "error: {} static group{} of the last run {input} {}; nothing was evaluated, written or committed\n",
        missing.len(),
        if missing.len() == 1 { "" } else { "s" },
        if missing.len() == 1 { "it" } else { "them" },
    );
    for group in &missing {
        message += &format!("  {}: {} members\n", group.key, group.members);
    }
    message += "  = help: pass the memberships export with `--memberships FILE`; to delete a group on purpose, \
                run again with `--delete-static KEY` (repeatable) or `--delete-static` (every such group)\n";
    Err(Failure::Guard(message))
}

fn pretty_json(value: &serde_json::Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("JSON values serialise");
    bytes.push(b'\n');
    bytes
}

/// Prints the import report, writes it if asked, and stops the run when it
/// has more bad rows than allowed, before anything is evaluated or committed.
fn check_import(report: &ImportReport, args: &RunArgs) -> Result<(), Failure> {
    print!("{}", report.render());
    if let Some(path) = &args.import_report {
        let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let text = if is_json {
            serde_json::to_string_pretty(report).expect("a report serialises") + "\n"
        } else {
            report.render()
        };
        dyngroups::output::write_text(path, &text).map_err(|e| Failure::Output(e.to_string()))?;
    }
    if report.within(args.max_bad_rows) {
        Ok(())
    } else {
        Err(Failure::Data(format!(
            "{}: {} of {} rows are bad, more than `--max-bad-rows` allows; nothing was committed",
            report.file,
            report.bad_rows(),
            report.rows_read
        )))
    }
}

/// The rules file and every data file of a run, fingerprinted.
fn fingerprints(inputs: &RulesAndData) -> std::io::Result<Vec<InputFingerprint>> {
    let files = [
        ("rules", Some(&inputs.rules)),
        ("users", Some(&inputs.users)),
        ("enrollments", inputs.data.enrollments.as_ref()),
        ("org", inputs.data.org.as_ref()),
        ("memberships", inputs.data.memberships.as_ref()),
    ];
    files
        .into_iter()
        .filter_map(|(role, path)| path.map(|path| InputFingerprint::of(role, path)))
        .collect()
}

fn print_data_warnings(summary: &EvaluationSummary, data: &dyngroups::dataset::Dataset) {
    for (key, ids) in &summary.unknown_listed_ids {
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        eprintln!(
            "warning: group `{key}` lists user ids not in the users table (ignored): {}",
            ids.join(", ")
        );
    }
    if let Some(e) = &data.enrollments
        && e.unknown_users > 0
    {
        eprintln!(
            "warning: {} enrollment rows name a user not in the users table (ignored)",
            e.unknown_users
        );
    }
}

/// One line of the run table.
struct RunLine {
    key: String,
    name: String,
    members: u64,
    time: String,
}

impl RunLine {
    /// A rule group's line: committed members (evaluated ones for a draft).
    fn of_group(g: &GroupMembers) -> RunLine {
        RunLine {
            key: g.key.clone(),
            name: match g.status {
                GroupStatus::Active => g.name.clone(),
                status => format!("{} [{}]", g.name, status.keyword()),
            },
            members: g.committed().unwrap_or(&g.members).len(),
            time: format!("{:.2} ms", g.elapsed.as_secs_f64() * 1e3),
        }
    }
}

/// One line per group, and with a state the changes since the last run.
fn print_run_table(lines: &[RunLine], changes: Option<&[ChangeCount]>) {
    let by_key: HashMap<&str, &ChangeCount> = changes
        .unwrap_or_default()
        .iter()
        .map(|c| (c.key.as_str(), c))
        .collect();
    let key_width = lines.iter().map(|l| l.key.chars().count()).max().unwrap_or(0).max(5);
    let name_width = lines.iter().map(|l| l.name.chars().count()).max().unwrap_or(0).max(4);
    let change_columns = |added: &dyn std::fmt::Display, removed: &dyn std::fmt::Display| {
        if changes.is_some() {
            format!("  {added:>8}  {removed:>8}")
        } else {
            String::new()
        }
    };
    println!(
        "{:<key_width$}  {:<name_width$}  {:>9}{}  {:>10}",
        "group",
        "name",
        "members",
        change_columns(&"added", &"removed"),
        "time"
    );
    for line in lines {
        let (added, removed) = by_key.get(line.key.as_str()).map_or((0, 0), |c| (c.added, c.removed));
        let row = format!(
            "{:<key_width$}  {:<name_width$}  {:>9}{}  {:>10}",
            line.key,
            line.name,
            line.members,
            change_columns(&format!("+{added}"), &format!("-{removed}")),
            line.time
        );
        println!("{}", row.trim_end());
    }
}

fn run_history(args: StateArgs) -> Result<(), Failure> {
    let state = State::open(&args.dir).map_err(state_failure)?;
    let runs = state.runs().map_err(state_failure)?;
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
    fn open(&self) -> Result<(State, RunRecord), Failure> {
        let state = State::open(&self.state.dir).map_err(state_failure)?;
        let run = chosen_run(&state, self.run)?;
        Ok((state, run))
    }
}

/// Run `id`, or the last committed run.
fn chosen_run(state: &State, id: Option<u64>) -> Result<RunRecord, Failure> {
    match id {
        Some(id) => state.run(id),
        None => state.last_run().and_then(|last| {
            last.ok_or_else(|| StateError::Missing {
                dir: state.dir().display().to_string(),
            })
        }),
    }
    .map_err(state_failure)
}

/// The members group `key` committed in `run`, or a usage error listing
/// the groups it has.
fn committed_members(state: &State, run: &RunRecord, key: &str) -> Result<RoaringBitmap, Failure> {
    state.members(run.id, key).map_err(state_failure)?.ok_or_else(|| {
        Failure::Usage(format!(
            "run {} committed no group `{key}`; it has: {}",
            run.id,
            run.groups.iter().map(|g| g.key.as_str()).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Prints a table as CSV, or writes it by extension.
fn emit_table(table: &TextTable, out: Option<&Path>, raw: bool, what: &str) -> Result<(), Failure> {
    match out {
        None => print!("{}", table.to_csv(raw)),
        Some(path) => {
            dyngroups::output::write_table(path, table, raw).map_err(|e| Failure::Output(e.to_string()))?;
            println!("{} {what} written to {}", table.rows.len(), path.display());
        }
    }
    Ok(())
}

fn run_members(args: MembersArgs) -> Result<(), Failure> {
    let export = &args.export;
    let (state, run) = export.open()?;
    let members = committed_members(&state, &run, &args.group)?;
    if let Some(users) = &args.users {
        let table = dyngroups::export::user_rows(users, &args.with, Some(&members), None)
            .map_err(|e| Failure::Data(e.to_string()))?;
        return emit_table(&table, export.out.as_deref(), export.raw, "members");
    }
    match &export.out {
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for id in &members {
                writeln!(out, "{id}").map_err(|e| Failure::Output(e.to_string()))?;
            }
            out.flush().map_err(|e| Failure::Output(e.to_string()))?;
        }
        Some(path) => {
            let written = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("roaring")) {
                dyngroups::output::write_portable_bitmap(path, &members)
            } else {
                dyngroups::output::write_members(path, [(args.group.as_str(), &members)])
            };
            written.map_err(|e| Failure::Output(e.to_string()))?;
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

fn run_groups(args: GroupsArgs) -> Result<(), Failure> {
    let export = &args.export;
    let (state, run) = export.open()?;
    let table = dyngroups::export::groups_table(&state, &run).map_err(state_failure)?;
    if let Some(path) = &export.out {
        return emit_table(&table, Some(path), export.raw, "groups");
    }
    print!("{}", table.to_aligned());
    Ok(())
}

fn run_unassigned(args: UnassignedArgs) -> Result<(), Failure> {
    let export = &args.export;
    let (state, run) = export.open()?;
    let members = committed_members(&state, &run, &args.group)?;
    let table = dyngroups::export::user_rows(&args.users, &args.with, None, Some(&members))
        .map_err(|e| Failure::Data(e.to_string()))?;
    emit_table(&table, export.out.as_deref(), export.raw, "users")
}

fn run_groups_of(args: GroupsOfArgs) -> Result<(), Failure> {
    let state = State::open(&args.state.dir).map_err(state_failure)?;
    let run = chosen_run(&state, args.run)?;
    let includes: HashMap<String, Vec<u64>> = match &args.rules {
        Some(path) => {
            let source = read_rules(path)?;
            let file = parse_rules(&source.text).map_err(|e| {
                print_diagnostics(&[e.0], &source);
                Failure::Rules
            })?;
            file.include_lists()
        }
        None => HashMap::new(),
    };
    let groups = dyngroups::export::groups_of(&state, &run, args.user, &includes).map_err(state_failure)?;
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

fn run_diff(args: DiffArgs) -> Result<(), Failure> {
    let state = State::open(&args.state.dir).map_err(state_failure)?;
    let changes = state.changes_between(args.from, args.to).map_err(state_failure)?;
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
        dyngroups::output::write_changes(path, &changes).map_err(|e| Failure::Output(e.to_string()))?;
        println!("changes written to {}", path.display());
    }
    Ok(())
}

fn run_explain(args: ExplainArgs) -> Result<(), Failure> {
    // Only the group and the groups it uses are checked: the inputs the
    // rest of the file reads need not be given.
    let source = read_rules(&args.inputs.rules)?;
    let inputs = open_inputs(args.inputs.users.clone(), &args.inputs.data)?;
    let no_such_group = || {
        Failure::Usage(format!(
            "`--group {}`: no such group in {}",
            args.group,
            args.inputs.rules.display()
        ))
    };
    let (_, checked) =
        parse_and_check(&source, Some(&inputs), as_of(&args.inputs.data), Some(&args.group)).map_err(|failure| {
            match failure {
                Failure::Usage(_) => no_such_group(),
                other => other,
            }
        })?;
    let rules = checked.expect("checked against data").rules;
    let group = rules
        .groups
        .iter()
        .position(|g| g.key == args.group)
        .ok_or_else(no_such_group)?;
    // Every column, so that the trace shows each enrollment row whole.
    let keys = rules.groups.iter().map(|g| g.key.clone()).collect();
    let data = inputs.load_all(&keys).map_err(|e| Failure::Data(e.to_string()))?;
    let evaluation = evaluate(&rules, &data, Some(&dependency_closure(&rules, &[group])));
    let trace = dyngroups::explain::explain(&rules, &data, &evaluation, group, args.user, args.depth)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    print!("{}", trace.render());
    Ok(())
}

fn run_template(args: TemplateArgs) -> Result<(), Failure> {
    let TemplateKind::Memberships = args.kind;
    let header = format!("group,{}\n", args.match_by.as_deref().unwrap_or("user_id"));
    match &args.out {
        None => print!("{header}"),
        Some(path) => {
            dyngroups::output::write_text(path, &header).map_err(|e| Failure::Output(e.to_string()))?;
            println!("memberships template written to {}", path.display());
        }
    }
    Ok(())
}

/// The rules file checked against the data files' columns, for the
/// commands that translate rules rather than run them.
fn rules_checked_against_data(args: &RulesAndData) -> Result<(dyngroups::checked::CheckedRules, OpenInputs), Failure> {
    let source = read_rules(&args.rules)?;
    let inputs = open_inputs(args.users.clone(), &args.data)?;
    let (_, checked) = parse_and_check(&source, Some(&inputs), as_of(&args.data), None)?;
    Ok((checked.expect("checked against data").rules, inputs))
}

fn run_sql(args: SqlArgs) -> Result<(), Failure> {
    use dyngroups::sql::{Dialect, SqlOptions, combined_query, group_queries};
    let (rules, inputs) = rules_checked_against_data(&args.inputs)?;
    let options = SqlOptions {
        dialect: match args.dialect {
            SqlDialect::Duckdb => Dialect::DuckDb,
            SqlDialect::Postgres => Dialect::Postgres,
            SqlDialect::Spark => Dialect::Spark,
        },
        users_table: args.users_table,
        enrollments_table: args.enrollments_table,
        org_table: args.org_table,
        memberships_table: args.memberships_table,
        committed_table: args.committed_table,
        match_by: args.inputs.data.match_by.clone(),
        as_of: args.inputs.data.as_of,
    };
    let schema = inputs.schema();
    let unwritable = |e: dyngroups::sql::SqlError| match e {
        dyngroups::sql::SqlError::UnknownGroup(_) => Failure::Usage(e.to_string()),
        _ => {
            eprintln!("error: {e}");
            Failure::Rules
        }
    };
    let mut out = String::new();
    if args.combined {
        out = combined_query(&rules, &schema, &options).map_err(unwritable)?;
        out.push_str(";\n");
    } else {
        for query in group_queries(&rules, &schema, &options, &args.groups).map_err(unwritable)? {
            out.push_str(&format!("-- group {}\n{};\n\n", query.key, query.sql));
        }
        if args.groups.is_empty() {
            let all = combined_query(&rules, &schema, &options).map_err(unwritable)?;
            out.push_str(&format!("-- every group a run commits, as (group, user_id)\n{all};\n"));
        }
    }
    std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes())
        .map_err(|e| Failure::Output(format!("cannot write the SQL: {e}")))
}

fn run_polars(args: RulesAndData) -> Result<(), Failure> {
    let (rules, inputs) = rules_checked_against_data(&args)?;
    let module =
        dyngroups::polars::polars_module(&rules, &inputs.schema(), args.data.match_by.as_deref()).map_err(|e| {
            eprintln!("error: {e}");
            Failure::Rules
        })?;
    std::io::Write::write_all(&mut std::io::stdout().lock(), module.as_bytes())
        .map_err(|e| Failure::Output(format!("cannot write the module: {e}")))
}

fn run_gen(args: GenArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let spec = dyngroups::synth::SynthSpec {
        users: args.users,
        seed: args.seed,
        rules: args.rules,
        as_of: args.as_of.unwrap_or_else(|| chrono::Utc::now().date_naive()),
        shape: match args.shape {
            GenShape::Export => dyngroups::synth::Shape::Export,
            GenShape::Sequential => dyngroups::synth::Shape::Sequential,
        },
    };
    dyngroups::synth::generate(&spec, &args.out).map_err(|e| Failure::Output(e.to_string()))?;
    println!(
        "wrote {} users, their enrollments, the org tree{} to {} in {:.1} s",
        args.users,
        if args.rules > 0 {
            format!(" and {} rules", args.rules)
        } else {
            String::new()
        },
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
