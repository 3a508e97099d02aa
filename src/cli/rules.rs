//! The commands about rules: `check`, `explain`, `template`.

use super::{DataArgs, RulesAndData, as_of, open_inputs, parse_and_check, read_rules};
use clap::Args;
use dyngroups::Error;
use dyngroups::eval::evaluate;
use dyngroups::run::select_groups;
use std::path::PathBuf;

#[derive(Args)]
pub(super) struct CheckArgs {
    /// The rules file.
    rules: PathBuf,
    /// Users (Parquet or CSV), to check field names and types.
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Args)]
pub(super) struct ExplainArgs {
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
pub(super) struct TemplateArgs {
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
pub(super) enum TemplateKind {
    /// Static group memberships: `group` and a user identifier.
    Memberships,
}

pub(super) fn run_check(args: CheckArgs) -> Result<(), Error> {
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

pub(super) fn run_explain(args: ExplainArgs) -> Result<(), Error> {
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

pub(super) fn run_template(args: TemplateArgs) -> Result<(), Error> {
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
