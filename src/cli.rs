//! Command-line commands over the library. Errors are reported here, once,
//! with the exit codes every command keeps: 0 ok, 1 rule errors, 2 usage
//! errors, 3 data errors, 4 state and output (I/O) errors, 5 the
//! mass-removal guard stopped a run.

use clap::{Args, Parser, Subcommand};
use dyngroups::ast::GroupStatus;
use dyngroups::dataset::{InputPaths, OpenInputs};
use dyngroups::diagnostic::render_all;
use dyngroups::diff::{ChangeCount, RemovalGuard};
use dyngroups::eval::{EvaluationSummary, evaluate};
use dyngroups::import::{BadRowLimit, MatchBy};
use dyngroups::output::{OutputError, TextTable};
use dyngroups::run::{PreparedRun, Progress, RunGroup, RunGroupKind, RunOptions, StateUse, select_groups};
use dyngroups::state::{GroupRecord, RunRecord, State, StateError};
use dyngroups::{Diagnostic, Error, SourceFile, check, check_without_data, parse_rules};
use roaring::RoaringBitmap;
use std::collections::HashMap;
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
        Err(error) => {
            report(&error);
            ExitCode::from(error.exit_code())
        }
    }
}

/// Prints an error for the user: rule errors with their spans, a guard's
/// message as it is, anything else on one line.
fn report(error: &Error) {
    match error {
        Error::Rules { errors, warnings, file } => {
            print_diagnostics(errors, file);
            print_diagnostics(warnings, file);
        }
        Error::Guard(message) => eprint!("{message}"),
        other => eprintln!("error: {other}"),
    }
}

/// A failed write to standard output.
fn stdout_error(e: std::io::Error) -> Error {
    Error::Output(OutputError {
        path: "standard output".into(),
        reason: e.to_string(),
    })
}

fn read_rules(path: &Path) -> Result<SourceFile, Error> {
    SourceFile::read(path).map_err(|e| Error::Usage(format!("cannot read rules file {}: {e}", path.display())))
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

/// Parses and checks; prints the warnings of rules that pass.
fn parse_and_check(
    source: &SourceFile,
    inputs: Option<&OpenInputs>,
    as_of: chrono::NaiveDate,
    only_group: Option<&str>,
) -> Result<(dyngroups::ast::RulesFile, Option<dyngroups::Checked>), Error> {
    let rules_error = |errors, warnings| Error::Rules {
        errors,
        warnings,
        file: source.clone(),
    };
    let file = parse_rules(&source.text).map_err(|e| rules_error(vec![e.0], Vec::new()))?;
    let file = match only_group {
        Some(key) => file
            .closure_of(key)
            .ok_or_else(|| Error::Usage(format!("no group `{key}`")))?,
        None => file,
    };
    let checked = match inputs {
        Some(inputs) => {
            let checked = check(&file, &inputs.schema(), as_of).map_err(|e| rules_error(e.errors, e.warnings))?;
            print_diagnostics(&checked.warnings, source);
            Some(checked)
        }
        None => {
            let warnings = check_without_data(&file, as_of).map_err(|e| rules_error(e.errors, e.warnings))?;
            print_diagnostics(&warnings, source);
            None
        }
    };
    Ok((file, checked))
}

fn open_inputs(users: PathBuf, data: &DataArgs) -> Result<OpenInputs, Error> {
    OpenInputs::open(&input_paths(users, data)).map_err(Error::Data)
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

fn run_check(args: CheckArgs) -> Result<(), Error> {
    let source = read_rules(&args.rules)?;
    let inputs = match args.users {
        Some(users) => Some(open_inputs(users, &args.data)?),
        None if args.data.enrollments.is_some() || args.data.org.is_some() || args.data.memberships.is_some() => {
            return Err(Error::Usage("checking against data needs `--users FILE` too".into()));
        }
        None => None,
    };
    let (file, _) = parse_and_check(&source, inputs.as_ref(), as_of(&args.data), None)?;
    let n = file.groups.len();
    println!("{n} group{} OK", if n == 1 { "" } else { "s" });
    Ok(())
}

fn run_run(args: RunArgs) -> Result<(), Error> {
    let options = args.options();
    let spinner = Spinner::default();
    let prepared = PreparedRun::prepare(options, &spinner)?;
    let (warnings, source) = prepared.warnings();
    print_diagnostics(warnings, source);
    if let Some(report) = prepared.import_report() {
        print!("{}", report.render());
    }
    let evaluated = prepared.evaluate(&spinner)?;
    let data = prepared.data();
    print_data_warnings(evaluated.summary(), data);
    let groups = evaluated.groups();
    print_run_table(groups, evaluated.changes());
    let rule_groups = groups
        .iter()
        .filter(|g| matches!(g.kind, RunGroupKind::Rule(_)))
        .count();
    let summary = evaluated.summary();
    println!(
        "{rule_groups} groups over {} users and {} enrollments; {} distinct atoms of {}; loaded in {:.1} ms, evaluated in {:.1} ms",
        data.user_count(),
        data.enrollments.as_ref().map_or(0, |e| e.user_rows.len()),
        summary.distinct_atoms,
        summary.atom_uses,
        evaluated.load_took().as_secs_f64() * 1e3,
        summary.elapsed.as_secs_f64() * 1e3
    );
    if let Some(counts) = evaluated.changes() {
        let changed = counts.iter().filter(|c| c.added + c.removed > 0).count();
        let added: u64 = counts.iter().map(|c| c.added).sum();
        let removed: u64 = counts.iter().map(|c| c.removed).sum();
        println!(
            "changes since the last committed run: +{added} -{removed} in {changed} groups, found in {:.1} ms",
            evaluated.diff_took().as_secs_f64() * 1e3
        );
    }
    let outcome = evaluated.finish(&spinner)?;
    if let Some(path) = &outcome.members_written {
        println!("members written to {}", path.display());
    }
    if let Some(path) = &outcome.changes_written {
        println!("changes written to {}", path.display());
    }
    if let Some((dir, requests)) = &outcome.scim_requests {
        println!("{requests} SCIM requests written to {}", dir.display());
    }
    match (&outcome.committed, args.dry_run) {
        (Some(record), _) => println!(
            "committed run {} to {} in {:.1} ms",
            record.id,
            args.state.dir.display(),
            outcome.commit_took.unwrap_or_default().as_secs_f64() * 1e3
        ),
        (None, true) if outcome.last_run.is_none() => println!(
            "dry run: no committed run in {}; nothing committed",
            args.state.dir.display()
        ),
        (None, true) => println!("dry run: nothing committed"),
        (None, false) => {}
    }
    Ok(())
}

impl RunArgs {
    /// The library's options for these arguments.
    fn options(&self) -> RunOptions {
        let state = if self.no_state {
            StateUse::None
        } else if self.dry_run {
            StateUse::DryRun(self.state.dir.clone())
        } else {
            StateUse::Commit(self.state.dir.clone())
        };
        RunOptions {
            groups: self.groups.clone(),
            state,
            keep_runs: self.keep as usize,
            members_out: self.members_out.clone(),
            diff_out: self.diff_out.clone(),
            scim_out: self.scim_out.clone(),
            scim_batch: self.scim_batch as usize,
            import_report: self.import_report.clone(),
            max_bad_rows: self.max_bad_rows,
            removal_guard: RemovalGuard {
                share: self.mass_removal_share / 100.0,
                min: self.mass_removal_min,
                run_share: self.mass_removal_run_share / 100.0,
            },
            allow_mass_removal: self.allow_mass_removal.clone(),
            delete_static: self.delete_static.clone(),
            ..RunOptions::new(
                self.inputs.rules.clone(),
                input_paths(self.inputs.users.clone(), &self.inputs.data),
                as_of(&self.inputs.data),
                self.state.dir.clone(),
            )
        }
    }
}

/// Shows a spinner with the elapsed time on stderr during each long phase
/// of a run; drawn only when stderr is a terminal, so logs and pipes stay
/// clean.
#[derive(Default)]
struct Spinner(std::cell::RefCell<Option<indicatif::ProgressBar>>);

impl Progress for Spinner {
    fn begin(&self, what: &str) {
        let spinner = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        spinner.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("a valid progress template"),
        );
        spinner.set_message(what.to_string());
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
        self.0.replace(Some(spinner));
    }

    fn end(&self) {
        if let Some(spinner) = self.0.take() {
            spinner.finish_and_clear();
        }
    }
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

/// One line per group, and with a state the changes since the last run.
fn print_run_table(groups: &[RunGroup], changes: Option<&[ChangeCount]>) {
    let by_key: HashMap<&str, &ChangeCount> = changes
        .unwrap_or_default()
        .iter()
        .map(|c| (c.key.as_str(), c))
        .collect();
    let name = |g: &RunGroup| match g.kind {
        RunGroupKind::Rule(GroupStatus::Active) => g.name.clone(),
        RunGroupKind::Rule(status) => format!("{} [{}]", g.name, status.keyword()),
        RunGroupKind::Static => "(static)".into(),
        RunGroupKind::Gone { was_static: true } => "(gone from the memberships input)".into(),
        RunGroupKind::Gone { was_static: false } => "(gone from the rules)".into(),
    };
    let names: Vec<String> = groups.iter().map(name).collect();
    let key_width = groups.iter().map(|g| g.key.chars().count()).max().unwrap_or(0).max(5);
    let name_width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0).max(4);
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
    for (group, name) in groups.iter().zip(&names) {
        let (added, removed) = by_key.get(group.key.as_str()).map_or((0, 0), |c| (c.added, c.removed));
        let time = group
            .elapsed
            .map_or(String::new(), |t| format!("{:.2} ms", t.as_secs_f64() * 1e3));
        let row = format!(
            "{:<key_width$}  {:<name_width$}  {:>9}{}  {:>10}",
            group.key,
            name,
            group.members,
            change_columns(&format!("+{added}"), &format!("-{removed}")),
            time
        );
        println!("{}", row.trim_end());
    }
}

fn run_history(args: StateArgs) -> Result<(), Error> {
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
fn chosen_run(state: &State, id: Option<u64>) -> Result<RunRecord, Error> {
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
fn committed_members(state: &State, run: &RunRecord, key: &str) -> Result<RoaringBitmap, Error> {
    state.members(run.id, key).map_err(Error::State)?.ok_or_else(|| {
        Error::Usage(format!(
            "run {} committed no group `{key}`; it has: {}",
            run.id,
            run.groups.iter().map(|g| g.key.as_str()).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Prints a table as CSV, or writes it by extension.
fn emit_table(table: &TextTable, out: Option<&Path>, raw: bool, what: &str) -> Result<(), Error> {
    match out {
        None => print!("{}", table.to_csv(raw)),
        Some(path) => {
            dyngroups::output::write_table(path, table, raw).map_err(Error::Output)?;
            println!("{} {what} written to {}", table.rows.len(), path.display());
        }
    }
    Ok(())
}

fn run_members(args: MembersArgs) -> Result<(), Error> {
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

fn run_groups(args: GroupsArgs) -> Result<(), Error> {
    let export = &args.export;
    let (state, run) = export.open()?;
    let table = dyngroups::export::groups_table(&state, &run).map_err(Error::State)?;
    if let Some(path) = &export.out {
        return emit_table(&table, Some(path), export.raw, "groups");
    }
    print!("{}", table.to_aligned());
    Ok(())
}

fn run_unassigned(args: UnassignedArgs) -> Result<(), Error> {
    let export = &args.export;
    let (state, run) = export.open()?;
    let members = committed_members(&state, &run, &args.group)?;
    let table = dyngroups::export::user_rows(&args.users, &args.with, None, Some(&members)).map_err(Error::Data)?;
    emit_table(&table, export.out.as_deref(), export.raw, "users")
}

fn run_groups_of(args: GroupsOfArgs) -> Result<(), Error> {
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

fn run_diff(args: DiffArgs) -> Result<(), Error> {
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

fn run_explain(args: ExplainArgs) -> Result<(), Error> {
    // Only the group and the groups it uses are checked: the inputs the
    // rest of the file reads need not be given.
    let source = read_rules(&args.inputs.rules)?;
    let inputs = open_inputs(args.inputs.users.clone(), &args.inputs.data)?;
    let no_such_group = || {
        Error::Usage(format!(
            "`--group {}`: no such group in {}",
            args.group,
            args.inputs.rules.display()
        ))
    };
    let (_, checked) =
        parse_and_check(&source, Some(&inputs), as_of(&args.inputs.data), Some(&args.group)).map_err(|failure| {
            match failure {
                Error::Usage(_) => no_such_group(),
                other => other,
            }
        })?;
    let rules = checked.expect("checked against data").rules;
    let group = rules
        .groups
        .iter()
        .position(|g| g.key == args.group)
        .ok_or_else(no_such_group)?;
    let selected = select_groups(
        &rules,
        std::slice::from_ref(&args.group),
        &args.inputs.rules.display().to_string(),
    )?;
    // Every column, so that the trace shows each enrollment row whole.
    let keys = rules.groups.iter().map(|g| g.key.clone()).collect();
    let data = inputs.load_all(&keys).map_err(Error::Data)?;
    let evaluation = evaluate(&rules, &data, selected.as_deref());
    let trace = dyngroups::explain::explain(&rules, &data, &evaluation, group, args.user, args.depth)
        .map_err(|e| Error::Usage(e.to_string()))?;
    print!("{}", trace.render());
    Ok(())
}

fn run_template(args: TemplateArgs) -> Result<(), Error> {
    let TemplateKind::Memberships = args.kind;
    let header = format!("group,{}\n", args.match_by.as_deref().unwrap_or("user_id"));
    match &args.out {
        None => print!("{header}"),
        Some(path) => {
            dyngroups::output::write_text(path, &header).map_err(Error::Output)?;
            println!("memberships template written to {}", path.display());
        }
    }
    Ok(())
}

/// The rules file checked against the data files' columns, for the
/// commands that translate rules rather than run them.
fn rules_checked_against_data(args: &RulesAndData) -> Result<(dyngroups::checked::CheckedRules, OpenInputs), Error> {
    let source = read_rules(&args.rules)?;
    let inputs = open_inputs(args.users.clone(), &args.data)?;
    let (_, checked) = parse_and_check(&source, Some(&inputs), as_of(&args.data), None)?;
    Ok((checked.expect("checked against data").rules, inputs))
}

fn run_sql(args: SqlArgs) -> Result<(), Error> {
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
        dyngroups::sql::SqlError::UnknownGroup(_) => Error::Usage(e.to_string()),
        _ => Error::Untranslatable(e.to_string()),
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
    std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes()).map_err(stdout_error)
}

fn run_polars(args: RulesAndData) -> Result<(), Error> {
    let (rules, inputs) = rules_checked_against_data(&args)?;
    let module = dyngroups::polars::polars_module(&rules, &inputs.schema(), args.data.match_by.as_deref())
        .map_err(|e| Error::Untranslatable(e.to_string()))?;
    std::io::Write::write_all(&mut std::io::stdout().lock(), module.as_bytes()).map_err(stdout_error)
}

fn run_gen(args: GenArgs) -> Result<(), Error> {
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
    dyngroups::synth::generate(&spec, &args.out)?;
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
