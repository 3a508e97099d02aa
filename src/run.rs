//! The batch run: rules and data in, each group's members diffed against
//! the last committed run, guarded, written out and committed.
//!
//! [`run`] does it all; the phases are there for callers that report
//! between them, as the `dyngroups run` command does:
//! [`PreparedRun::prepare`] (rules checked, state taken, data loaded) →
//! [`PreparedRun::evaluate`] (guards on the inputs; members evaluated,
//! diffed and stored group by group) → [`EvaluatedRun::finish`] (the
//! mass-removal guard, the outputs, the commit).

use crate::ast::GroupStatus;
use crate::checked::CheckedRules;
use crate::dataset::{Dataset, InputPaths, OpenInputs};
use crate::diagnostic::Diagnostic;
use crate::diff::{ChangeCount, GroupChange, RemovalGuard};
use crate::error::Error;
use crate::eval::{EvaluationSummary, GroupMembers, dependency_closure, evaluate_each};
use crate::import::{BadRowLimit, ImportReport};
use crate::output::GroupSpool;
use crate::source::SourceFile;
use crate::state::{GroupRecord, GroupToCommit, InputFingerprint, RunRecord, RunWriter, State};
use roaring::RoaringBitmap;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What a run reads, writes and commits.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The rules file.
    pub rules: PathBuf,
    /// The data files, and how to read them.
    pub inputs: InputPaths,
    /// The date `today` means in rules.
    pub as_of: chrono::NaiveDate,
    /// Only these groups (and the groups they depend on); the other groups
    /// of the last committed run are kept as they were. Empty: every group.
    pub groups: Vec<String>,
    /// Whether and how the run uses a state directory.
    pub state: StateUse,
    /// How many committed runs the state keeps.
    pub keep_runs: usize,
    /// Write `group,user_id` rows of what each group commits here (see
    /// [`crate::output::write_members`] for the formats).
    pub members_out: Option<PathBuf>,
    /// Write the changes since the last committed run here.
    pub diff_out: Option<PathBuf>,
    /// Write the changes as SCIM 2.0 PATCH requests into this directory.
    pub scim_out: Option<PathBuf>,
    /// The most member changes in one SCIM request.
    pub scim_batch: usize,
    /// Write the memberships import report here (`.json`, else text).
    pub import_report: Option<PathBuf>,
    /// Stop before evaluating when the memberships import has more bad
    /// rows than this.
    pub max_bad_rows: BadRowLimit,
    /// When a run removes too many members to commit.
    pub removal_guard: RemovalGuard,
    /// Commit mass removals anyway: from these groups, or `*` for every
    /// group.
    pub allow_mass_removal: Vec<String>,
    /// Delete these static groups of the last run, which the memberships
    /// input no longer names, or `*` for every such group.
    pub delete_static: Vec<String>,
}

impl RunOptions {
    /// A run of every group of `rules` over `inputs`, committed to the
    /// state in `state_dir`, with no output files and the default guards.
    pub fn new(rules: PathBuf, inputs: InputPaths, as_of: chrono::NaiveDate, state_dir: PathBuf) -> RunOptions {
        RunOptions {
            rules,
            inputs,
            as_of,
            groups: Vec::new(),
            state: StateUse::Commit(state_dir),
            keep_runs: 10,
            members_out: None,
            diff_out: None,
            scim_out: None,
            scim_batch: 100,
            import_report: None,
            max_bad_rows: BadRowLimit::Count(0),
            removal_guard: RemovalGuard::default(),
            allow_mass_removal: Vec::new(),
            delete_static: Vec::new(),
        }
    }
}

/// Whether and how a run uses a state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateUse {
    /// Evaluate only: no state is read or written, no changes are found.
    None,
    /// Diff against the state in this directory (if it has a committed
    /// run), but commit nothing.
    DryRun(PathBuf),
    /// Diff against the state in this directory, created if need be, and
    /// commit the run to it.
    Commit(PathBuf),
}

/// Told when a long phase of a run begins and ends, e.g. to show a
/// spinner. Every method does nothing unless overridden.
pub trait Progress {
    /// A phase begins: `what` says what it does ("loading the columns the
    /// rules use").
    fn begin(&self, what: &str) {
        let _ = what;
    }
    /// The phase begun last has ended.
    fn end(&self) {}
}

/// Reports no progress.
pub struct Quiet;

impl Progress for Quiet {}

fn phase<T>(progress: &dyn Progress, what: &str, work: impl FnOnce() -> T) -> T {
    progress.begin(what);
    let value = work();
    progress.end();
    value
}

/// Runs every phase: the rules checked, the data loaded, the members
/// evaluated, diffed, guarded, written out and committed as `options` say.
pub fn run(options: RunOptions) -> Result<RunOutcome, Error> {
    let prepared = PreparedRun::prepare(options, &Quiet)?;
    let evaluated = prepared.evaluate(&Quiet)?;
    evaluated.finish(&Quiet)
}

/// Which groups to evaluate for `keys` and the groups they depend on, by
/// group index; `None` (every group) for no keys.
pub fn select_groups(rules: &CheckedRules, keys: &[String], rules_name: &str) -> Result<Option<Vec<bool>>, Error> {
    if keys.is_empty() {
        return Ok(None);
    }
    let wanted = keys
        .iter()
        .map(|key| {
            rules
                .groups
                .iter()
                .position(|g| &g.key == key)
                .ok_or_else(|| Error::Usage(format!("`--group {key}`: no such group in {rules_name}")))
        })
        .collect::<Result<Vec<usize>, Error>>()?;
    Ok(Some(dependency_closure(rules, &wanted)))
}

/// The keys of the groups among `selected` (every group for `None`) whose
/// members this run takes from the last committed run: frozen and paused
/// groups, which keep them.
pub fn groups_needing_last_members<'r>(
    rules: &'r CheckedRules,
    selected: Option<&'r [bool]>,
) -> impl Iterator<Item = &'r str> {
    rules
        .groups
        .iter()
        .enumerate()
        .filter(move |(g, group)| {
            selected.is_none_or(|s| s[*g]) && !matches!(group.status, GroupStatus::Active | GroupStatus::Draft)
        })
        .map(|(_, group)| group.key.as_str())
}

/// A run with its rules checked, its state taken and its data loaded.
pub struct PreparedRun {
    options: RunOptions,
    source: SourceFile,
    warnings: Vec<Diagnostic>,
    rules: CheckedRules,
    selected: Option<Vec<bool>>,
    state: Option<State>,
    previous: BTreeMap<String, RoaringBitmap>,
    last_run: Option<RunRecord>,
    data: Dataset,
    fingerprints: Option<Vec<InputFingerprint>>,
    loaded: Duration,
    /// Whether [`PreparedRun::evaluate`] was called: a run is evaluated
    /// once (a second writer on the state would wait for the first).
    evaluated: std::cell::Cell<bool>,
}

impl PreparedRun {
    /// Reads and checks the rules, takes the state (first, so that a second
    /// run on it fails at once) and loads the columns the rules use.
    pub fn prepare(options: RunOptions, progress: &dyn Progress) -> Result<PreparedRun, Error> {
        let started = Instant::now();
        let source = SourceFile::read(&options.rules)
            .map_err(|e| Error::Usage(format!("cannot read rules file {}: {e}", options.rules.display())))?;
        let state = match &options.state {
            StateUse::None => None,
            StateUse::DryRun(dir) => match State::open(dir) {
                Err(crate::state::StateError::Missing { .. }) => None,
                opened => Some(opened?),
            },
            StateUse::Commit(dir) => Some(State::open_or_create(dir)?),
        };
        let inputs = phase(progress, &format!("opening {}", options.inputs.users.display()), || {
            OpenInputs::open(&options.inputs)
        })?;
        let (rules, warnings) = check_rules(&source, &inputs, options.as_of)?;
        let selected = select_groups(&rules, &options.groups, &options.rules.display().to_string())?;
        let previous = match &state {
            Some(state) => state.last_members(groups_needing_last_members(&rules, None))?,
            None => BTreeMap::new(),
        };
        let committing = matches!(options.state, StateUse::Commit(_));
        let (data, fingerprints) = phase(progress, "loading the columns the rules use", || {
            rayon::join(
                || inputs.load(&rules),
                || committing.then(|| fingerprints(&options)).transpose(),
            )
        });
        let data = data?;
        let fingerprints = fingerprints?;
        let last_run = match &state {
            Some(state) => state.last_run()?,
            None => None,
        };
        Ok(PreparedRun {
            options,
            source,
            warnings,
            rules,
            selected,
            state,
            previous,
            last_run,
            data,
            fingerprints,
            loaded: started.elapsed(),
            evaluated: std::cell::Cell::new(false),
        })
    }

    /// The checker's warnings, and the rules file they point into.
    pub fn warnings(&self) -> (&[Diagnostic], &SourceFile) {
        (&self.warnings, &self.source)
    }

    /// The report of the memberships import, if the run has memberships.
    pub fn import_report(&self) -> Option<&ImportReport> {
        self.data.import_report.as_ref()
    }

    /// The loaded data.
    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// The checked rules.
    pub fn rules(&self) -> &CheckedRules {
        &self.rules
    }

    /// Writes the import report if asked, applies the guards on the inputs
    /// (bad memberships rows, static groups gone from the memberships
    /// input), then evaluates the groups, diffing and storing each batch as
    /// it comes: only what the outputs ask for is kept. A run is evaluated
    /// once; a second call is an [`Error::Usage`].
    pub fn evaluate(&self, progress: &dyn Progress) -> Result<EvaluatedRun<'_>, Error> {
        if self.evaluated.replace(true) {
            return Err(Error::Usage("this run was evaluated already; prepare it again".into()));
        }
        let options = &self.options;
        if let Some(report) = &self.data.import_report {
            self.check_import(report)?;
        }
        if let Some(last) = self.last_run.as_ref().filter(|_| self.selected.is_none()) {
            self.guard_static_groups(last)?;
        }
        let carry_over = self.selected.is_some();
        let writer = match &self.state {
            Some(state) if matches!(options.state, StateUse::DryRun(_)) => Some(state.begin_dry_run(carry_over)?),
            Some(state) => Some(state.begin_run(carry_over)?),
            None => None,
        };
        let mut sink = RunSink {
            writer,
            // A dry run before any commit: everything would be added.
            finds_changes: options.state != StateUse::None,
            counts: Vec::new(),
            changes: options
                .diff_out
                .as_deref()
                .or(options.scim_out.as_deref())
                .map(GroupSpool::new),
            took: Duration::ZERO,
        };
        let preview = !matches!(options.state, StateUse::Commit(_)) || self.state.is_none();
        let shown_only = |key: &str| options.groups.is_empty() || options.groups.iter().any(|k| k == key);
        let mut groups: Vec<(usize, RunGroup)> = Vec::new();
        let mut kept_members = options.members_out.as_deref().map(GroupSpool::new);
        let rules = &self.rules;
        let summary = phase(progress, &format!("evaluating {} groups", rules.groups.len()), || {
            evaluate_each(
                rules,
                &self.data,
                self.selected.as_deref(),
                &self.previous,
                |batch| -> Result<(), Error> {
                    let shown: Vec<GroupMembers> = batch.into_iter().filter(|g| shown_only(&g.key)).collect();
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
                        // What each group commits; drafts only in previews,
                        // never in a run that commits.
                        let written = g.committed().or(preview.then_some(&g.members));
                        if let (Some(kept), Some(members)) = (&mut kept_members, written) {
                            kept.push_members(&g.key, members.clone())?;
                        }
                        groups.push((g.position, RunGroup::of_rule_group(g)));
                    }
                    Ok(())
                },
            )
        })?;
        groups.sort_by_key(|(position, _)| *position);
        let mut groups: Vec<RunGroup> = groups.into_iter().map(|(_, group)| group).collect();
        // Static groups are committed too, by a run of every group.
        if self.selected.is_none() {
            let statics: Vec<GroupToCommit> = summary
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
                .collect();
            sink.add(&statics)?;
            groups.extend(statics.iter().map(|g| RunGroup {
                key: g.key.to_string(),
                name: g.key.to_string(),
                kind: RunGroupKind::Static,
                members: g.members.len(),
                elapsed: None,
            }));
        }
        let was_static = |key: &str| {
            self.last_run
                .iter()
                .flat_map(|last| &last.groups)
                .any(|g| g.key == key && g.kind == "static")
        };
        for key in sink.add_gone()? {
            groups.push(RunGroup {
                kind: RunGroupKind::Gone {
                    was_static: was_static(&key),
                },
                name: key.clone(),
                key,
                members: 0,
                elapsed: None,
            });
        }
        Ok(EvaluatedRun {
            prepared: self,
            changes: sink.finds_changes.then(|| std::mem::take(&mut sink.counts)),
            kept_changes: sink.changes.take(),
            diff_took: sink.took,
            writer: sink.writer,
            groups,
            kept_members,
            summary,
        })
    }

    /// Writes the import report if asked; stops the run when it has more
    /// bad rows than allowed, before anything is evaluated or committed.
    fn check_import(&self, report: &ImportReport) -> Result<(), Error> {
        if let Some(path) = &self.options.import_report {
            let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
            let text = if is_json {
                serde_json::to_string_pretty(report).expect("a report serialises") + "\n"
            } else {
                report.render()
            };
            crate::output::write_text(path, &text)?;
        }
        if report.within(self.options.max_bad_rows) {
            Ok(())
        } else {
            Err(Error::TooManyBadRows(format!(
                "{}: {} of {} rows are bad, more than `--max-bad-rows` allows; nothing was committed",
                report.file,
                report.bad_rows(),
                report.rows_read
            )))
        }
    }

    /// Stops the run before anything is evaluated, written or committed
    /// when static groups of the last run, with members, are missing from
    /// the memberships input (or the run has none), unless deleted on
    /// purpose.
    fn guard_static_groups(&self, last: &RunRecord) -> Result<(), Error> {
        let deleted = |key: &str| self.options.delete_static.iter().any(|a| a == "*" || a == key);
        let statics_now = &self.data.static_groups;
        let missing: Vec<&GroupRecord> = last
            .static_groups_missing(
                |key| statics_now.contains_key(key),
                |key| self.rules.groups.iter().any(|g| g.key == key),
            )
            .into_iter()
            .filter(|g| !deleted(&g.key))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let input = match &self.options.inputs.memberships {
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
        Err(Error::Guard(message))
    }
}

/// Parses and checks the rules against the inputs' schema.
fn check_rules(
    source: &SourceFile,
    inputs: &OpenInputs,
    as_of: chrono::NaiveDate,
) -> Result<(CheckedRules, Vec<Diagnostic>), Error> {
    let rules_error = |errors, warnings| Error::Rules {
        errors,
        warnings,
        file: source.clone(),
    };
    let file = crate::parse_rules(&source.text).map_err(|e| rules_error(vec![e.0], Vec::new()))?;
    let checked = crate::check(&file, &inputs.schema(), as_of).map_err(|e| rules_error(e.errors, e.warnings))?;
    Ok((checked.rules, checked.warnings))
}

/// The rules file and every data file of a run, fingerprinted; a file
/// that cannot be read is a data error naming it.
fn fingerprints(options: &RunOptions) -> Result<Vec<InputFingerprint>, crate::data::DataError> {
    let inputs = &options.inputs;
    let files = [
        ("rules", Some(&options.rules)),
        ("users", Some(&inputs.users)),
        ("enrollments", inputs.enrollments.as_ref()),
        ("org", inputs.org.as_ref()),
        ("memberships", inputs.memberships.as_ref()),
    ];
    files
        .into_iter()
        .filter_map(|(role, path)| {
            path.map(|path| {
                InputFingerprint::of(role, path)
                    .map_err(|e| crate::data::DataError::file(path, format!("cannot read it: {e}")))
            })
        })
        .collect()
}

/// One group of a run, as evaluated.
#[derive(Clone, Debug, PartialEq)]
pub struct RunGroup {
    /// The group's key.
    pub key: String,
    /// Its display name.
    pub name: String,
    /// What kind of group it is.
    pub kind: RunGroupKind,
    /// The members it commits (for a draft, those it would have).
    pub members: u64,
    /// Time to evaluate it (a rule group's).
    pub elapsed: Option<Duration>,
}

/// What kind of group a [`RunGroup`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunGroupKind {
    /// A group of the rules file, with its status.
    Rule(GroupStatus),
    /// A static group of the memberships input.
    Static,
    /// A group of the last committed run that this run no longer has.
    Gone {
        /// Whether it was a static group (gone from the memberships input),
        /// else a rule group (gone from the rules).
        was_static: bool,
    },
}

impl RunGroup {
    fn of_rule_group(g: &GroupMembers) -> RunGroup {
        RunGroup {
            key: g.key.clone(),
            name: g.name.clone(),
            kind: RunGroupKind::Rule(g.status),
            members: g.committed().unwrap_or(&g.members).len(),
            elapsed: Some(g.elapsed),
        }
    }
}

/// A run whose groups are evaluated, diffed and stored, not yet guarded
/// against mass removals, written out or committed.
pub struct EvaluatedRun<'p> {
    prepared: &'p PreparedRun,
    writer: Option<RunWriter<'p>>,
    groups: Vec<RunGroup>,
    changes: Option<Vec<ChangeCount>>,
    kept_changes: Option<GroupSpool>,
    kept_members: Option<GroupSpool>,
    summary: EvaluationSummary,
    diff_took: Duration,
}

impl EvaluatedRun<'_> {
    /// Every group: rule groups in the rules file's order, then static
    /// groups, then the groups gone since the last committed run.
    pub fn groups(&self) -> &[RunGroup] {
        &self.groups
    }

    /// Each group's added and removed members since the last committed run
    /// (all added before the first), unless the run has no state.
    pub fn changes(&self) -> Option<&[ChangeCount]> {
        self.changes.as_deref()
    }

    /// Atoms, static groups, listed ids not found, evaluation time.
    pub fn summary(&self) -> &EvaluationSummary {
        &self.summary
    }

    /// Time from the start of the run to the data loaded.
    pub fn load_took(&self) -> Duration {
        self.prepared.loaded
    }

    /// Time spent finding the changes and storing the members.
    pub fn diff_took(&self) -> Duration {
        self.diff_took
    }

    /// Stops the run if it removes too many members (of a group, or of the
    /// whole run) unless allowed; then writes the outputs asked for and,
    /// unless a dry run or a run without state, commits.
    pub fn finish(self, progress: &dyn Progress) -> Result<RunOutcome, Error> {
        let EvaluatedRun {
            prepared,
            writer,
            groups,
            changes,
            kept_changes,
            kept_members,
            summary,
            diff_took,
        } = self;
        let options = &prepared.options;
        if let (Some(last), Some(counts)) = (&prepared.last_run, &changes) {
            let now: HashSet<&str> = groups
                .iter()
                .filter(|g| !matches!(g.kind, RunGroupKind::Gone { .. }))
                .map(|g| g.key.as_str())
                .collect();
            guard_removals(last, counts, |key| now.contains(key), options)?;
        }
        let mut outcome = RunOutcome {
            members_written: None,
            changes_written: None,
            scim_requests: None,
            committed: None,
            commit_took: None,
            groups,
            changes,
            summary,
            last_run: prepared.last_run.as_ref().map(|r| r.id),
            load_took: prepared.loaded,
            diff_took,
        };
        if let (Some(path), Some(kept)) = (&options.members_out, &kept_members) {
            kept.write_members(path)?;
            outcome.members_written = Some(path.clone());
        }
        if let (Some(path), Some(kept)) = (&options.diff_out, &kept_changes) {
            kept.write_changes(path)?;
            outcome.changes_written = Some(path.clone());
        }
        if let (Some(dir), Some(kept)) = (&options.scim_out, &kept_changes) {
            let mut changed = kept.changes()?;
            changed.sort_by(|a, b| a.key.cmp(&b.key));
            let requests = crate::scim::patch_requests(&changed, options.scim_batch);
            let mut files: Vec<(String, Vec<u8>)> = requests
                .iter()
                .map(|r| (r.file.clone(), pretty_json(&r.body)))
                .collect();
            files.push(("manifest.json".into(), pretty_json(&crate::scim::manifest(&requests))));
            crate::output::write_directory(dir, &files)?;
            outcome.scim_requests = Some((dir.clone(), requests.len()));
        }
        if let (Some(writer), StateUse::Commit(_)) = (writer, &options.state) {
            let started = Instant::now();
            let fingerprints = prepared.fingerprints.clone().expect("fingerprinted when committing");
            let record = phase(progress, "committing", || {
                writer.commit(&options.as_of.to_string(), fingerprints, options.keep_runs)
            })?;
            outcome.committed = Some(record);
            outcome.commit_took = Some(started.elapsed());
        }
        Ok(outcome)
    }
}

fn pretty_json(value: &serde_json::Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("JSON values serialise");
    bytes.push(b'\n');
    bytes
}

/// The groups a guard's message lists, those losing most first.
const GUARD_GROUPS_LISTED: usize = 20;

/// Stops the run before the diff is written or anything committed when a
/// group, or the run as a whole, would lose too many members, unless allowed.
fn guard_removals(
    last: &RunRecord,
    counts: &[ChangeCount],
    still_committed: impl Fn(&str) -> bool,
    options: &RunOptions,
) -> Result<(), Error> {
    let before: HashMap<&str, u64> = last.groups.iter().map(|g| (g.key.as_str(), g.members)).collect();
    let guard = options.removal_guard;
    let allowed = |key: &str| options.allow_mass_removal.iter().any(|a| a == "*" || a == key);
    let trips = guard.check(
        counts,
        |k| before.get(k).copied().unwrap_or(0),
        |k| still_committed(k) && !allowed(k),
    );
    if trips.is_empty() {
        return Ok(());
    }
    // A share as the percentage it was given as: 0.07 as `7`, not
    // `7.000000000000001`.
    let percent = |share: f64| {
        let text = format!("{:.6}", share * 100.0);
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    let mut message = String::from("error: the mass-removal guard stopped the run; nothing was written or committed\n");
    if !trips.groups.is_empty() {
        message += &format!(
            "  {} group{} would lose more than {}% of their members (and at least {}):\n",
            trips.groups.len(),
            if trips.groups.len() == 1 { "" } else { "s" },
            percent(guard.share),
            guard.min
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
            run.removed,
            run.before,
            percent(guard.run_share),
            guard.min
        );
    }
    message += "  = help: check the input data; if the removals are right, run again with \
                `--allow-mass-removal` (every group) or `--allow-mass-removal KEY`\n";
    Err(Error::Guard(message))
}

/// Where a run's groups go as they are evaluated: diffed against the last
/// committed run and stored (or, in a dry run before any commit, all
/// added), keeping every group's change counts and, when the outputs need
/// them, the changes themselves.
struct RunSink<'s> {
    writer: Option<RunWriter<'s>>,
    finds_changes: bool,
    counts: Vec<ChangeCount>,
    /// The changes themselves, for the outputs that list them.
    changes: Option<GroupSpool>,
    /// Time spent diffing and storing.
    took: Duration,
}

impl RunSink<'_> {
    fn add(&mut self, groups: &[GroupToCommit<'_>]) -> Result<(), Error> {
        let started = Instant::now();
        let empty = RoaringBitmap::new();
        let keeps_changes = self.changes.is_some();
        match &mut self.writer {
            Some(writer) if keeps_changes => {
                let changes = writer.add_with_changes(groups)?;
                self.keep(changes)?;
            }
            Some(writer) => self.counts.extend(writer.add(groups)?),
            None if !self.finds_changes => {}
            None if keeps_changes => self.keep(
                groups
                    .iter()
                    .map(|g| GroupChange::between(g.key, &empty, g.members))
                    .collect(),
            )?,
            None => self
                .counts
                .extend(groups.iter().map(|g| ChangeCount::between(g.key, &empty, g.members))),
        }
        self.took += started.elapsed();
        Ok(())
    }

    /// Adds the groups of the last run that this run does not have; returns
    /// their keys.
    fn add_gone(&mut self) -> Result<Vec<String>, Error> {
        let started = Instant::now();
        let gone = match &self.writer {
            Some(writer) => writer.gone()?,
            None => Vec::new(),
        };
        let keys = gone.iter().map(|c| c.key.clone()).collect();
        self.keep(gone)?;
        self.took += started.elapsed();
        Ok(keys)
    }

    fn keep(&mut self, changes: Vec<GroupChange>) -> Result<(), Error> {
        self.counts.extend(changes.iter().map(GroupChange::count));
        if let Some(kept) = &mut self.changes {
            for change in changes {
                kept.push_change(change)?;
            }
        }
        Ok(())
    }
}

/// What a finished run did.
#[derive(Debug)]
pub struct RunOutcome {
    /// Every group, as [`EvaluatedRun::groups`] lists them.
    pub groups: Vec<RunGroup>,
    /// Each group's changes since the last committed run, unless the run
    /// has no state.
    pub changes: Option<Vec<ChangeCount>>,
    /// Atoms, static groups, listed ids not found, evaluation time.
    pub summary: EvaluationSummary,
    /// The id of the last committed run, which the changes are against.
    pub last_run: Option<u64>,
    /// Time from the start of the run to the data loaded.
    pub load_took: Duration,
    /// Time spent finding the changes and storing the members.
    pub diff_took: Duration,
    /// Where the members were written.
    pub members_written: Option<PathBuf>,
    /// Where the changes were written.
    pub changes_written: Option<PathBuf>,
    /// Where the SCIM requests were written, and how many.
    pub scim_requests: Option<(PathBuf, usize)>,
    /// The run committed, unless a dry run or a run without state.
    pub committed: Option<RunRecord>,
    /// Time to commit.
    pub commit_took: Option<Duration>,
}
