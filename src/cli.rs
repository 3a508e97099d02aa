//! Command-line commands over the library. Errors are reported here, once,
//! with the exit codes every command keeps: 0 ok, 1 rule errors, 2 usage
//! errors, 3 data errors, 4 output (I/O) errors.

use clap::{Args, Parser, Subcommand};
use dyngroups::dataset::{InputPaths, OpenInputs};
use dyngroups::diagnostic::render_all;
use dyngroups::eval::{dependency_closure, evaluate};
use dyngroups::{Diagnostic, SourceFile, check, check_without_data, parse_rules};
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
    Run(RunArgs),
    /// Generate a synthetic population (Parquet) and optionally rules, for
    /// benchmarks and demos.
    Gen(GenArgs),
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
    #[arg(long, value_name = "YYYY-MM-DD")]
    as_of: Option<chrono::NaiveDate>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct DataArgs {
    /// Enrollments (Parquet or CSV): `user_id`, `course`, `status`, ...
    #[arg(long, value_name = "FILE")]
    enrollments: Option<PathBuf>,
    /// Org tree (Parquet or CSV): `branch`, `parent`.
    #[arg(long, value_name = "FILE")]
    org: Option<PathBuf>,
    /// Static group memberships (Parquet or CSV): `group`, `user_id`.
    #[arg(long, value_name = "FILE")]
    memberships: Option<PathBuf>,
    /// The date `today` means in rules (default: today, UTC).
    #[arg(long, value_name = "YYYY-MM-DD")]
    as_of: Option<chrono::NaiveDate>,
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

#[derive(Args)]
struct RunArgs {
    /// The rules file.
    #[arg(long, value_name = "FILE")]
    rules: PathBuf,
    /// Users (Parquet or CSV) with a unique `user_id` column.
    #[arg(long, value_name = "FILE")]
    users: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Write `group,user_id` rows here (.csv, .jsonl or .parquet).
    #[arg(long, value_name = "FILE")]
    members_out: Option<PathBuf>,
    /// Only these groups (and the groups they depend on).
    #[arg(long = "group", value_name = "KEY")]
    groups: Vec<String>,
}

/// How a command failed, mapped to its exit code.
enum Failure {
    Rules,
    Usage(String),
    Data(String),
    Output(String),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => run_check(args),
        Command::Run(args) => run_run(args),
        Command::Gen(args) => run_gen(args),
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
    }
}

fn read_rules(path: &Path) -> Result<SourceFile, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("cannot read rules file {}: {e}", path.display())))?;
    Ok(SourceFile::new(path.display().to_string(), text))
}

fn as_of(data: &DataArgs) -> chrono::NaiveDate {
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
) -> Result<(dyngroups::ast::RulesFile, Option<dyngroups::Checked>), Failure> {
    let file = parse_rules(&source.text).map_err(|e| {
        print_diagnostics(&[e.0], source);
        Failure::Rules
    })?;
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
    OpenInputs::open(&InputPaths {
        users,
        enrollments: data.enrollments.clone(),
        org: data.org.clone(),
        memberships: data.memberships.clone(),
    })
    .map_err(|e| Failure::Data(e.to_string()))
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
    let (file, _) = parse_and_check(&source, inputs.as_ref(), as_of(&args.data))?;
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

fn run_run(args: RunArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let source = read_rules(&args.rules)?;
    let inputs = stage(format!("opening {}", args.users.display()), || {
        open_inputs(args.users.clone(), &args.data)
    })?;
    let (_, checked) = parse_and_check(&source, Some(&inputs), as_of(&args.data))?;
    let rules = checked.expect("checked against data").rules;
    let selected = if args.groups.is_empty() {
        None
    } else {
        let mut wanted = Vec::new();
        for key in &args.groups {
            let index =
                rules.groups.iter().position(|g| &g.key == key).ok_or_else(|| {
                    Failure::Usage(format!("`--group {key}`: no such group in {}", args.rules.display()))
                })?;
            wanted.push(index);
        }
        Some((dependency_closure(&rules, &wanted), wanted))
    };
    let data = stage("loading the columns the rules use".into(), || inputs.load(&rules))
        .map_err(|e| Failure::Data(e.to_string()))?;
    let loaded = started.elapsed();
    let evaluation = stage(format!("evaluating {} groups", rules.groups.len()), || {
        evaluate(&rules, &data, selected.as_ref().map(|(s, _)| s.as_slice()))
    });
    let evaluated = started.elapsed() - loaded;

    let shown: Vec<&dyngroups::eval::GroupMembers> = evaluation
        .groups
        .iter()
        .filter(|g| args.groups.is_empty() || args.groups.contains(&g.key))
        .collect();
    for (key, ids) in &evaluation.unknown_listed_ids {
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
    if data.unknown_static_members > 0 {
        eprintln!(
            "warning: {} static membership rows name a user not in the users table (ignored)",
            data.unknown_static_members
        );
    }
    let key_width = shown.iter().map(|g| g.key.chars().count()).max().unwrap_or(0).max(5);
    let name_width = shown.iter().map(|g| g.name.chars().count()).max().unwrap_or(0).max(4);
    println!(
        "{:<key_width$}  {:<name_width$}  {:>9}  {:>10}",
        "group", "name", "members", "time"
    );
    for g in &shown {
        println!(
            "{:<key_width$}  {:<name_width$}  {:>9}  {:>10}",
            g.key,
            g.name,
            g.members.len(),
            format!("{:.2} ms", g.elapsed.as_secs_f64() * 1e3)
        );
    }
    let enrollment_rows = data.enrollments.as_ref().map_or(0, |e| e.user_rows.len());
    println!(
        "{} groups over {} users and {} enrollments; {} distinct atoms of {}; loaded in {:.1} ms, evaluated in {:.1} ms",
        shown.len(),
        data.user_count(),
        enrollment_rows,
        evaluation.distinct_atoms,
        evaluation.atom_uses,
        loaded.as_secs_f64() * 1e3,
        evaluated.as_secs_f64() * 1e3
    );
    if let Some(path) = &args.members_out {
        dyngroups::output::write_members(path, shown.iter().map(|g| (g.key.as_str(), &g.members)))
            .map_err(|e| Failure::Output(e.to_string()))?;
        println!("members written to {}", path.display());
    }
    Ok(())
}

fn run_gen(args: GenArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let spec = dyngroups::synth::SynthSpec {
        users: args.users,
        seed: args.seed,
        rules: args.rules,
        as_of: args.as_of.unwrap_or_else(|| chrono::Utc::now().date_naive()),
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
