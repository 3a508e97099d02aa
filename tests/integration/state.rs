//! Committed runs and their diffs, through the `dyngroups` command: what a
//! downstream system would receive after each run.

use crate::workspace::{Workspace, text};
use dyngroups::state::{State, StateError};
use std::path::Path;
use std::process::Command;

/// What the tests of the state ask of a workspace.
trait Changes {
    /// `dyngroups run` with the changes written to `diff.csv`; returns the
    /// changes as `group,user_id,change` lines.
    fn changes(&self, extra: &[&str]) -> Vec<String>;
    /// The rows of a diff file, past its header.
    fn diff_rows(&self, name: &str) -> Vec<String>;
    /// The workspace's state, opened.
    fn state(&self) -> State;
}

impl Changes for Workspace {
    fn changes(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["--diff-out", "diff.csv"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        self.diff_rows("diff.csv")
    }

    fn diff_rows(&self, name: &str) -> Vec<String> {
        let content = self.read(name);
        let mut lines = content.lines();
        assert_eq!(lines.next(), Some("group,user_id,change"));
        lines.map(String::from).collect()
    }

    fn state(&self) -> State {
        open_state(&self.path(".dyngroups")).unwrap()
    }
}

/// A workspace with these rules and users.
fn workspace(rules: &str, users: &str) -> Workspace {
    Workspace::new(&[("groups.rules", rules), ("users.csv", users)])
}

/// Opens a state, waiting out a lock that a child process being started by
/// another test inherited for an instant (between its fork and its exec,
/// the child shares this process's open lock files).
pub fn open_state(dir: &Path) -> Result<State, StateError> {
    for _ in 0..200 {
        match State::open(dir) {
            Err(StateError::Locked { .. }) => std::thread::sleep(std::time::Duration::from_millis(10)),
            opened => return opened,
        }
    }
    State::open(dir)
}

const RULES: &str = r#"
group sales "Sales" { department == "sales" }
group seniors { grade >= 5 }
"#;

const USERS: &str = "user_id,department,grade\n1,Sales,5\n2,Eng,3\n3,sales,7\n4,Eng,6\n";

#[test]
fn first_run_adds_everyone_and_a_rerun_changes_nothing() {
    let w = workspace(RULES, USERS);
    assert_eq!(
        w.changes(&[]),
        [
            "sales,1,add",
            "sales,3,add",
            "seniors,1,add",
            "seniors,3,add",
            "seniors,4,add"
        ]
    );
    assert!(w.changes(&[]).is_empty());
    // The same users in another order, with columns swapped: no change.
    w.write(
        "users.csv",
        "grade,user_id,department\n6,4,Eng\n3,2,Eng\n7,3,sales\n5,1,Sales\n",
    );
    assert!(w.changes(&[]).is_empty());
    assert_eq!(w.state().runs().unwrap().len(), 3);
}

#[test]
fn changes_follow_the_data_and_the_rules() {
    let w = workspace(RULES, USERS);
    w.changes(&[]);
    // User 3 leaves, user 2 moves to sales, user 5 joins.
    w.write(
        "users.csv",
        "user_id,department,grade\n1,Sales,5\n2,Sales,3\n4,Eng,6\n5,Eng,9\n",
    );
    assert_eq!(
        w.changes(&[]),
        ["sales,2,add", "sales,3,remove", "seniors,3,remove", "seniors,5,add"]
    );
    // A renamed group causes no churn; a dropped group removes all; a new
    // group adds all.
    w.write(
        "groups.rules",
        "group sales \"Sales team\" { department == \"sales\" }\ngroup eng { department == \"eng\" }\n",
    );
    assert_eq!(
        w.changes(&[]),
        [
            "eng,4,add",
            "eng,5,add",
            "seniors,1,remove",
            "seniors,4,remove",
            "seniors,5,remove"
        ]
    );
    let last = w.state().last_run().unwrap().unwrap();
    let keys: Vec<&str> = last.groups.iter().map(|g| g.key.as_str()).collect();
    assert_eq!(keys, ["eng", "sales"]);
    assert_eq!(last.groups[1].name, "Sales team");
}

#[test]
fn dry_run_writes_the_diff_and_commits_nothing() {
    let w = workspace(RULES, USERS);
    assert_eq!(w.changes(&["--dry-run"]).len(), 5);
    assert!(!w.path(".dyngroups").exists(), "a dry run creates no state");
    w.changes(&[]);
    w.write("users.csv", "user_id,department,grade\n1,Sales,5\n");
    assert_eq!(
        w.changes(&["--dry-run"]),
        ["sales,3,remove", "seniors,3,remove", "seniors,4,remove"]
    );
    assert_eq!(w.state().runs().unwrap().len(), 1);
}

#[test]
fn group_selection_commits_those_groups_and_keeps_the_others() {
    let w = workspace(RULES, USERS);
    w.changes(&[]);
    w.write("users.csv", "user_id,department,grade\n1,Sales,5\n2,Sales,1\n");
    assert_eq!(w.changes(&["--group", "sales"]), ["sales,2,add", "sales,3,remove"]);
    let state = w.state();
    let last = state.last_run().unwrap().unwrap();
    let seniors = state.members(last.id, "seniors").unwrap().unwrap();
    assert_eq!(seniors.iter().collect::<Vec<_>>(), [1, 3, 4], "kept as committed");
}

#[test]
fn group_status_decides_what_is_committed() {
    let rules = r#"
group frozen paused { grade >= 5 }
group growing add_only { grade >= 5 }
group shrinking remove_only { grade >= 5 }
group trial draft { grade >= 5 }
group of_frozen { member_of(frozen) }
"#;
    let w = workspace(
        &rules
            .replace(" paused", "")
            .replace(" add_only", "")
            .replace(" remove_only", ""),
        USERS,
    );
    // First all active but the draft: everyone with grade >= 5 (1, 3, 4).
    assert_eq!(w.changes(&[]).len(), 12);
    w.write("groups.rules", rules);
    // Grades change: 1 drops out, 2 comes in, 4 leaves the users table.
    w.write("users.csv", "user_id,department,grade\n1,Sales,1\n2,Eng,8\n3,sales,7\n");
    assert_eq!(
        w.changes(&[]),
        [
            "frozen,4,remove",
            "growing,2,add",
            "growing,4,remove",
            "of_frozen,4,remove",
            "shrinking,1,remove",
            "shrinking,4,remove",
        ]
    );
    let state = w.state();
    let last = state.last_run().unwrap().unwrap();
    let members = |key: &str| -> Vec<u32> { state.members(last.id, key).unwrap().unwrap().iter().collect() };
    assert_eq!(members("frozen"), [1, 3]);
    assert_eq!(members("of_frozen"), [1, 3], "member_of sees what a group commits");
    assert_eq!(members("growing"), [1, 2, 3]);
    assert_eq!(members("shrinking"), [3]);
    assert!(
        state.members(last.id, "trial").unwrap().is_none(),
        "drafts are never committed"
    );
}

#[test]
fn history_members_and_diff_between_runs() {
    let w = workspace(RULES, USERS);
    w.changes(&[]);
    w.write("users.csv", "user_id,department,grade\n1,Sales,5\n2,Sales,9\n");
    w.changes(&[]);
    let history = w.dyngroups(&["history"]);
    assert_eq!(history.status.code(), Some(0));
    let history = text(&history.stdout);
    let rows: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{history}");
    assert!(rows[0].trim_start().starts_with("1  2026-11-22"), "{history}");
    assert!(rows[1].contains("+2") && rows[1].contains("-3"), "{history}");

    let members = w.dyngroups(&["members", "--group", "sales", "--run", "1"]);
    assert_eq!(text(&members.stdout), "1\n3\n");
    let members = w.dyngroups(&["members", "--group", "seniors", "--out", "seniors.csv"]);
    assert_eq!(members.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(w.path("seniors.csv")).unwrap(),
        "group,user_id\nseniors,1\nseniors,2\n"
    );
    let missing = w.dyngroups(&["members", "--group", "nope"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("it has: sales, seniors"));

    let diff = w.dyngroups(&["diff", "--from", "1", "--to", "2", "--out", "d.jsonl"]);
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff.stderr));
    assert_eq!(
        std::fs::read_to_string(w.path("d.jsonl")).unwrap(),
        "{\"group\":\"sales\",\"user_id\":2,\"change\":\"add\"}\n\
         {\"group\":\"sales\",\"user_id\":3,\"change\":\"remove\"}\n\
         {\"group\":\"seniors\",\"user_id\":2,\"change\":\"add\"}\n\
         {\"group\":\"seniors\",\"user_id\":3,\"change\":\"remove\"}\n\
         {\"group\":\"seniors\",\"user_id\":4,\"change\":\"remove\"}\n"
    );
    let unknown = w.dyngroups(&["diff", "--from", "1", "--to", "7"]);
    assert_eq!(unknown.status.code(), Some(4));
    assert!(text(&unknown.stderr).contains("run 7 is not in the state"));
}

#[test]
fn only_the_last_runs_are_kept_and_shared_bitmaps_survive_pruning() {
    let w = workspace(RULES, USERS);
    for grade in 1..=5 {
        w.write(
            "users.csv",
            &format!("user_id,department,grade\n1,Sales,5\n2,Eng,{grade}\n"),
        );
        w.changes(&["--keep", "3"]);
    }
    let state = w.state();
    let ids: Vec<u64> = state.runs().unwrap().iter().map(|r| r.id).collect();
    assert_eq!(ids, [3, 4, 5]);
    // `sales` never changed: every kept run shares run 1's bitmap.
    for id in ids {
        let sales: Vec<u32> = state.members(id, "sales").unwrap().unwrap().iter().collect();
        assert_eq!(sales, [1]);
    }
    assert!(matches!(
        state.run(2),
        Err(dyngroups::state::StateError::UnknownRun { id: 2, .. })
    ));
}

#[test]
fn a_run_records_its_inputs() {
    let w = workspace(RULES, USERS);
    w.changes(&[]);
    let run = w.state().last_run().unwrap().unwrap();
    let roles: Vec<&str> = run.inputs.iter().map(|i| i.role.as_str()).collect();
    assert_eq!(roles, ["rules", "users"]);
    assert_eq!(run.inputs[1].bytes, USERS.len() as u64);
    // sha256 of USERS, as `sha256sum users.csv` prints it.
    let expected = Command::new("sha256sum").arg(w.path("users.csv")).output().unwrap();
    assert!(text(&expected.stdout).starts_with(&run.inputs[1].sha256));
    assert_eq!(run.as_of, "2026-11-22");
    let seniors = run.groups.iter().find(|g| g.key == "seniors").unwrap();
    assert_eq!((seniors.members, seniors.added, seniors.removed), (3, 3, 0));
}

#[test]
fn a_second_run_on_a_held_state_fails_at_once_naming_the_holder() {
    let w = workspace(RULES, USERS);
    w.changes(&[]);
    let held = w.state();
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("is in use by dyngroups (pid {})", std::process::id())),
        "{stderr}"
    );
    drop(held);
    assert!(w.changes(&[]).is_empty(), "the state is intact");
}

#[test]
fn a_state_of_a_newer_format_is_refused() {
    let w = workspace(RULES, USERS);
    w.changes(&[]);
    {
        let db = redb::Database::create(w.path(".dyngroups/state.redb")).unwrap();
        let write = db.begin_write().unwrap();
        {
            let mut meta = write
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .unwrap();
            meta.insert("format_version", 5).unwrap();
        }
        write.commit().unwrap();
    }
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("has format version 5, but this dyngroups reads only up to version 4"),
        "{stderr}"
    );
    let history = w.dyngroups(&["history"]);
    assert_eq!(history.status.code(), Some(4));
}

#[test]
fn a_corrupt_or_unwritable_state_is_a_clear_error() {
    let w = workspace(RULES, USERS);
    std::fs::create_dir(w.path(".dyngroups")).unwrap();
    w.write(".dyngroups/state.redb", &"not a database ".repeat(1000));
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: the state in .dyngroups is corrupt"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    w.write("file", "");
    let out = w.run(&["--state", "file/state"]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: cannot use the state in file/state:"),
        "{stderr}"
    );
}

#[test]
fn diff_files_in_every_format() {
    let w = workspace(RULES, USERS);
    for name in ["d.csv", "d.jsonl", "d.parquet"] {
        let out = w.run(&["--dry-run", "--diff-out", name]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let table = dyngroups::data::OpenTable::open(&w.path("d.parquet")).unwrap();
    let names: Vec<&str> = table.schema().names().collect();
    assert_eq!(names, ["group", "user_id", "change"]);
    let table = table.load(&[1, 2]).unwrap();
    assert_eq!(
        table.column(1),
        &dyngroups::data::Column::Number(vec![1.0, 3.0, 1.0, 3.0, 4.0])
    );
    assert_eq!(w.diff_rows("d.csv").len(), 5);
    assert_eq!(std::fs::read_to_string(w.path("d.jsonl")).unwrap().lines().count(), 5);
}

/// The portable bitmap dyngroups stores reads back identically in pyroaring
/// (CRoaring). `.ci/run` installs pyroaring and sets
/// `DYNGROUPS_REQUIRE_PYROARING`; elsewhere, without pyroaring, the test
/// is recorded as skipped.
#[test]
fn stored_bitmaps_read_back_in_pyroaring() {
    let has_pyroaring = Command::new("python3")
        .args(["-c", "import pyroaring"])
        .output()
        .is_ok_and(|o| o.status.success());
    let test = "state::stored_bitmaps_read_back_in_pyroaring";
    if !crate::skips::tool_present(
        has_pyroaring,
        test,
        "DYNGROUPS_REQUIRE_PYROARING",
        "python3 with pyroaring",
    ) {
        return;
    }
    let users: String = std::iter::once("user_id,department,grade\n".to_string())
        .chain((0..200_000u32).map(|i| {
            // Runs, dense and sparse stretches: every container kind.
            let grade = if i < 70_000 || (i % 7 == 0) || (i > 150_000 && i % 1000 < 3) {
                5
            } else {
                1
            };
            format!("{},Eng,{grade}\n", i * 3 / 2)
        }))
        .collect();
    let w = workspace(RULES, &users);
    w.changes(&[]);
    let out = w.dyngroups(&["members", "--group", "seniors", "--out", "seniors.roaring"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let state = w.state();
    let stored = state.members_portable(1, "seniors").unwrap().unwrap();
    assert_eq!(std::fs::read(w.path("seniors.roaring")).unwrap(), stored);
    let members = state.members(1, "seniors").unwrap().unwrap();
    let script = r#"
import sys, pyroaring
data = open(sys.argv[1], "rb").read()
bm = pyroaring.BitMap.deserialize(data)
print(len(bm), sum(bm), bm.min(), bm.max())
# Written back by CRoaring, after run optimisation as dyngroups does.
sys.stdout.flush()
open(sys.argv[2], "wb").write(bm.serialize())
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(w.path("seniors.roaring"))
        .arg(w.path("back.roaring"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sum: u64 = members.iter().map(u64::from).sum();
    assert_eq!(
        text(&out.stdout).trim(),
        format!(
            "{} {sum} {} {}",
            members.len(),
            members.min().unwrap(),
            members.max().unwrap()
        )
    );
    let back = std::fs::read(w.path("back.roaring")).unwrap();
    let back = roaring::RoaringBitmap::deserialize_from(back.as_slice()).unwrap();
    assert_eq!(back, members);

    // A run's directory of bitmaps, one per group, listed in groups.json.
    let sales = state.members(1, "sales").unwrap().unwrap();
    drop(state);
    let out = w.run(&["--dry-run", "--members-out", "all.roaring"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let script = r#"
import json, os, sys, pyroaring
listed = json.load(open(os.path.join(sys.argv[1], "groups.json")))
for entry in listed:
    bm = pyroaring.BitMap.deserialize(open(os.path.join(sys.argv[1], entry["file"]), "rb").read())
    assert len(bm) == entry["members"], entry
    print(entry["group"], len(bm), sum(bm))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(w.path("all.roaring"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line =
        |key: &str, m: &roaring::RoaringBitmap| format!("{key} {} {}", m.len(), m.iter().map(u64::from).sum::<u64>());
    assert_eq!(
        text(&out.stdout),
        format!("{}\n{}\n", line("sales", &sales), line("seniors", &members))
    );
}

#[test]
fn drafts_are_in_the_members_file_only_of_a_preview() {
    let rules = "group sales { department == \"sales\" }\ngroup trial draft { grade >= 5 }\n";
    let w = workspace(rules, USERS);
    let groups = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["--members-out", "members.csv"];
        args.extend_from_slice(extra);
        assert_eq!(w.run(&args).status.code(), Some(0));
        let mut keys: Vec<String> = w
            .read("members.csv")
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().to_string())
            .collect();
        keys.dedup();
        keys
    };
    assert_eq!(groups(&["--dry-run"]), ["sales", "trial"]);
    assert_eq!(groups(&["--no-state"]), ["sales", "trial"]);
    assert_eq!(groups(&[]), ["sales"]);
}

mod history {
    //! Random histories of runs committed through the library: every kept
    //! run reads back exactly, and the changes between any two kept runs
    //! are the set differences, whatever pruning and bitmap sharing did.

    use dyngroups::diff::GroupChange;
    use dyngroups::state::{GroupToCommit, State, StateError};
    use proptest::prelude::*;
    use roaring::RoaringBitmap;
    use std::collections::{BTreeMap, BTreeSet};

    type Run = BTreeMap<String, RoaringBitmap>;

    fn runs() -> impl Strategy<Value = Vec<Run>> {
        let members =
            prop::collection::btree_set(0u32..300, 0..40).prop_map(|s| s.into_iter().collect::<RoaringBitmap>());
        let run = prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c", "d"]), members, 0..4)
            .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Run>());
        // Runs often repeat a group unchanged, as real runs do.
        prop::collection::vec((run, any::<bool>()), 1..8).prop_map(|steps| {
            let mut out: Vec<Run> = Vec::new();
            for (run, repeat) in steps {
                match (repeat, out.last()) {
                    (true, Some(last)) => {
                        let mut next = last.clone();
                        next.extend(run.into_iter().take(1));
                        out.push(next);
                    }
                    _ => out.push(run),
                }
            }
            out
        })
    }

    /// Commits `run` in two batches after a dry run of it. Both find the
    /// set differences from `last` for every group of either run (the dry
    /// run counts them, the run builds them); the dry run stores nothing
    /// and cannot commit.
    fn commit(state: &State, last: Option<&Run>, run: &Run, keep: usize) {
        let groups: Vec<GroupToCommit> = run
            .iter()
            .map(|(key, members)| GroupToCommit::active(key, members))
            .collect();
        let (first, second) = groups.split_at(groups.len() / 2);
        let mut dry = state.begin_dry_run(false).unwrap();
        let mut dry_counts = dry.add(first).unwrap();
        dry_counts.extend(dry.add(second).unwrap());
        dry_counts.extend(dry.gone().unwrap().iter().map(GroupChange::count));
        assert!(matches!(
            dry.commit("2026-11-22", Vec::new(), keep),
            Err(StateError::DryRun { .. })
        ));
        let mut writer = state.begin_run(false).unwrap();
        let mut changes = writer.add_with_changes(first).unwrap();
        changes.extend(writer.add_with_changes(second).unwrap());
        changes.extend(writer.gone().unwrap());
        assert_eq!(dry_counts, changes.iter().map(GroupChange::count).collect::<Vec<_>>());
        let none = RoaringBitmap::new();
        let last = last.cloned().unwrap_or_default();
        let keys: BTreeSet<&String> = run.keys().chain(last.keys()).collect();
        assert_eq!(changes.len(), keys.len());
        for change in &changes {
            let before = last.get(&change.key).unwrap_or(&none);
            let after = run.get(&change.key).unwrap_or(&none);
            assert_eq!(change.added, after - before, "group {}", change.key);
            assert_eq!(change.removed, before - after, "group {}", change.key);
        }
        let record = writer.commit("2026-11-22", Vec::new(), keep).unwrap();
        for group in &record.groups {
            let change = changes.iter().find(|c| c.key == group.key).unwrap();
            assert_eq!((group.added, group.removed), (change.added.len(), change.removed.len()));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::engine::cases(64)))]

        #[test]
        fn kept_runs_read_back_and_diff_exactly(history in runs(), keep in 1usize..4) {
            let dir = tempfile::tempdir().unwrap();
            let state = State::open_or_create(dir.path()).unwrap();
            for (i, run) in history.iter().enumerate() {
                commit(&state, i.checked_sub(1).map(|p| &history[p]), run, keep);
            }
            let kept = state.runs().unwrap();
            prop_assert_eq!(kept.len(), history.len().min(keep));
            let first_kept = history.len() - kept.len();
            for (record, run) in kept.iter().zip(&history[first_kept..]) {
                let stored: Run = record
                    .groups
                    .iter()
                    .map(|g| (g.key.clone(), state.members(record.id, &g.key).unwrap().unwrap()))
                    .collect();
                prop_assert_eq!(&stored, run);
            }
            for (i, from) in kept.iter().enumerate() {
                for (j, to) in kept.iter().enumerate().skip(i) {
                    let changes = state.changes_between(from.id, to.id).unwrap();
                    let (old, new) = (&history[first_kept + i], &history[first_kept + j]);
                    for change in changes {
                        let none = RoaringBitmap::new();
                        let o = old.get(&change.key).unwrap_or(&none);
                        let n = new.get(&change.key).unwrap_or(&none);
                        prop_assert_eq!(&change.added, &(n - o));
                        prop_assert_eq!(&change.removed, &(o - n));
                    }
                }
            }
        }
    }
}
