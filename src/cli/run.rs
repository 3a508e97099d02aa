//! `dyngroups run`: the batch run's arguments, its progress and its report.

use super::{RulesAndData, Spinner, StateArgs, as_of, input_paths, print_diagnostics};
use clap::Args;
use dyngroups::Error;
use dyngroups::ast::GroupStatus;
use dyngroups::diff::{ChangeCount, RemovalGuard};
use dyngroups::eval::EvaluationSummary;
use dyngroups::import::BadRowLimit;
use dyngroups::run::{PreparedRun, RunGroup, RunGroupKind, RunOptions, StateUse};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Args)]
pub(super) struct RunArgs {
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

pub(super) fn run_run(args: RunArgs) -> Result<(), Error> {
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

pub(super) fn print_data_warnings(summary: &EvaluationSummary, data: &dyngroups::dataset::Dataset) {
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
pub(super) fn print_run_table(groups: &[RunGroup], changes: Option<&[ChangeCount]>) {
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
