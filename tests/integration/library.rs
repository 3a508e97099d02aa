//! The batch run through the library's API, as a program embedding the
//! engine calls it: what it returns, what it commits, and how it fails.

use crate::workspace::Workspace;
use dyngroups::dataset::InputPaths;
use dyngroups::run::{PreparedRun, Quiet, RunGroupKind, StateUse};
use dyngroups::state::State;
use dyngroups::{Error, NaiveDate, RunOptions, run};

const RULES: &str = r#"group sales "Sales" { department == "Sales" }
group seniors { grade >= 5 }
group senior_sales { member_of(sales) and member_of(seniors) }
group trial draft { grade >= 1 }
"#;

/// `count` users, ids from 1, grade the id's last digit.
fn users(count: u32, department_of: impl Fn(u32) -> &'static str) -> String {
    let rows: String = (1..=count)
        .map(|id| format!("{id},{},{}\n", department_of(id), id % 10))
        .collect();
    format!("user_id,department,grade\n{rows}")
}

fn half_in_sales(id: u32) -> &'static str {
    if id.is_multiple_of(2) { "Sales" } else { "Engineering" }
}

fn options(w: &Workspace, state: StateUse) -> RunOptions {
    let inputs = InputPaths {
        users: w.path("users.csv"),
        ..InputPaths::default()
    };
    RunOptions {
        state,
        ..RunOptions::new(
            w.path("groups.rules"),
            inputs,
            NaiveDate::from_ymd_opt(2026, 11, 22).unwrap(),
            w.path("state"),
        )
    }
}

fn members(w: &Workspace, key: &str) -> Vec<u32> {
    // Past a lock a child forked by another test may share for a moment.
    let state = crate::state::open_state(&w.path("state")).unwrap();
    let last = state.last_members([key]).unwrap();
    last.get(key).map(|m| m.iter().collect()).unwrap_or_default()
}

#[test]
fn a_run_commits_every_group_and_reports_what_it_did() {
    let w = Workspace::new(&[("groups.rules", RULES), ("users.csv", &users(300, half_in_sales))]);
    let outcome = run(RunOptions {
        members_out: Some(w.path("members.csv")),
        ..options(&w, StateUse::Commit(w.path("state")))
    })
    .unwrap();
    let shown: Vec<(&str, u64, RunGroupKind)> = outcome
        .groups
        .iter()
        .map(|g| (g.key.as_str(), g.members, g.kind))
        .collect();
    use dyngroups::ast::GroupStatus::{Active, Draft};
    assert_eq!(
        shown,
        [
            ("sales", 150, RunGroupKind::Rule(Active)),
            ("seniors", 150, RunGroupKind::Rule(Active)),
            ("senior_sales", 60, RunGroupKind::Rule(Active)),
            ("trial", 270, RunGroupKind::Rule(Draft)),
        ]
    );
    assert_eq!(outcome.committed.as_ref().unwrap().id, 1);
    assert_eq!(outcome.last_run, None);
    let added: Vec<(String, u64)> = outcome.changes.unwrap().into_iter().map(|c| (c.key, c.added)).collect();
    assert_eq!(
        added,
        [
            ("sales".into(), 150),
            ("seniors".into(), 150),
            ("senior_sales".into(), 60)
        ]
    );
    assert_eq!(members(&w, "senior_sales")[..3], [6, 8, 16]);
    // Drafts are never committed, nor written among a committing run's members.
    assert!(members(&w, "trial").is_empty());
    assert!(!w.read("members.csv").contains("trial"));
    assert_eq!(w.read("members.csv").lines().count(), 1 + 150 + 150 + 60);
}

#[test]
fn the_phases_report_between_them_and_a_dry_run_commits_nothing() {
    let w = Workspace::new(&[("groups.rules", RULES), ("users.csv", &users(300, half_in_sales))]);
    run(options(&w, StateUse::Commit(w.path("state")))).unwrap();
    w.write("users.csv", &users(300, |_| "Sales"));
    let prepared = PreparedRun::prepare(options(&w, StateUse::DryRun(w.path("state"))), &Quiet).unwrap();
    assert_eq!(prepared.data().user_count(), 300);
    assert!(prepared.import_report().is_none());
    let evaluated = prepared.evaluate(&Quiet).unwrap();
    let sales = evaluated.changes().unwrap().iter().find(|c| c.key == "sales").unwrap();
    assert_eq!((sales.added, sales.removed), (150, 0));
    let outcome = evaluated.finish(&Quiet).unwrap();
    assert!(matches!(prepared.evaluate(&Quiet), Err(Error::Usage(_))));
    assert!(outcome.committed.is_none());
    assert_eq!(outcome.last_run, Some(1));
    // The state is held until the run is dropped.
    assert!(matches!(
        State::open(&w.path("state")),
        Err(dyngroups::state::StateError::Locked { .. })
    ));
    drop(prepared);
    assert_eq!(members(&w, "sales").len(), 150);
}

#[test]
fn failures_are_typed_with_their_exit_codes_and_leave_the_state_as_it_was() {
    let w = Workspace::new(&[("groups.rules", RULES), ("users.csv", &users(3000, half_in_sales))]);
    run(options(&w, StateUse::Commit(w.path("state")))).unwrap();

    // An emptied column removes every member of sales: the guard stops the
    // run before anything is committed.
    w.write("users.csv", &users(3000, |_| ""));
    let error = run(options(&w, StateUse::Commit(w.path("state")))).unwrap_err();
    assert!(matches!(&error, Error::Guard(message) if message.contains("sales: 1500 -> 0 members")));
    assert_eq!(error.exit_code(), 5);
    assert_eq!(members(&w, "sales").len(), 1500);
    let allowed = RunOptions {
        allow_mass_removal: vec!["*".into()],
        ..options(&w, StateUse::Commit(w.path("state")))
    };
    assert_eq!(run(allowed).unwrap().committed.unwrap().id, 2);

    // A group that does not exist, a typo in the rules, a missing file.
    let unknown = RunOptions {
        groups: vec!["nope".into()],
        ..options(&w, StateUse::None)
    };
    let error = run(unknown).unwrap_err();
    assert!(matches!(&error, Error::Usage(message) if message.contains("`--group nope`")));
    assert_eq!(error.exit_code(), 2);
    w.write("groups.rules", "group sales { departmnt == \"Sales\" }\n");
    let error = run(options(&w, StateUse::None)).unwrap_err();
    let Error::Rules { errors, file, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(file.text, "group sales { departmnt == \"Sales\" }\n");
    assert!(errors[0].message.contains("departmnt"), "{errors:?}");
    assert_eq!(error.exit_code(), 1);
    std::fs::remove_file(w.path("users.csv")).unwrap();
    let error = run(options(&w, StateUse::None)).unwrap_err();
    assert!(matches!(error, Error::Data(_)), "{error:?}");
    assert_eq!(error.exit_code(), 3);
    assert_eq!(members(&w, "sales"), Vec::<u32>::new());
}
