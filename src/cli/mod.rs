//! Command-line commands over the library. Errors are reported here, once,
//! with the exit codes every command keeps: 0 ok, 1 rule errors, 2 usage
//! errors, 3 data errors, 4 state and output (I/O) errors, 5 the
//! mass-removal guard stopped a run.

mod history;
mod repl;
mod rules;
mod run;
mod serve;
mod tools;

use clap::{Args, Parser, Subcommand};
use dyngroups::dataset::{InputPaths, OpenInputs};
use dyngroups::diagnostic::render_all;
use dyngroups::import::MatchBy;
use dyngroups::output::OutputError;
use dyngroups::run::Progress;
use dyngroups::{Diagnostic, Error, SourceFile, check, check_without_data, parse_rules};
use history::{
    DiffArgs, GroupsArgs, GroupsOfArgs, MembersArgs, UnassignedArgs, run_diff, run_groups, run_groups_of, run_history,
    run_members, run_unassigned,
};
use rules::{CheckArgs, ExplainArgs, TemplateArgs, run_check, run_explain, run_template};
use run::{RunArgs, run_run};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tools::{GenArgs, SqlArgs, run_gen, run_polars, run_sql};

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
    Repl(Box<repl::ReplArgs>),
    /// Serve a rule tester page and a JSON API over the data (read-only).
    Serve(Box<serve::ServeArgs>),
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
struct StateArgs {
    /// The state directory: committed runs and their members.
    #[arg(long = "state", value_name = "DIR", default_value = ".dyngroups")]
    dir: PathBuf,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Repl(args) => return repl::main(*args),
        Command::Serve(args) => return serve::main(*args),
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

/// The rules file checked against the data files' columns, for the
/// commands that translate rules rather than run them.
fn rules_checked_against_data(args: &RulesAndData) -> Result<(dyngroups::checked::CheckedRules, OpenInputs), Error> {
    let source = read_rules(&args.rules)?;
    let inputs = open_inputs(args.users.clone(), &args.data)?;
    let (_, checked) = parse_and_check(&source, Some(&inputs), as_of(&args.data), None)?;
    Ok((checked.expect("checked against data").rules, inputs))
}

/// Shows a spinner with the elapsed time on stderr during each long phase
/// (of a run, of the REPL's load); drawn only when stderr is a terminal, so logs and pipes stay
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
