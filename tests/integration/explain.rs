//! `dyngroups explain` on the example data: why a user is or is not in a
//! group, snapshot-tested.

use crate::workspace::EXAMPLE;
use std::path::Path;
use std::process::Command;

fn explain(group: &str, user: &str, depth: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dyngroups"))
        .arg("explain")
        .args(EXAMPLE)
        .args(["--group", group, "--user", user, "--depth", depth])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    format!("exit {}\n{stdout}{stderr}", out.status.code().unwrap_or(-1))
}

#[test]
fn a_member_by_rule() {
    insta::assert_snapshot!(explain("sales_emea", "1002", "0"));
}

#[test]
fn a_member_by_the_include_list_only() {
    insta::assert_snapshot!(explain("sales_emea", "1007", "0"));
}

#[test]
fn enrollment_rows_that_match() {
    insta::assert_snapshot!(explain("busy_learners", "1003", "0"));
}

#[test]
fn relative_dates_and_empty_values() {
    insta::assert_snapshot!(explain("new_hires", "1012", "0"));
}

#[test]
fn member_of_expanded_one_level() {
    insta::assert_snapshot!(explain("drivers_not_in_sales", "1003", "1"));
}

#[test]
fn member_of_unexpanded_and_static_groups() {
    insta::assert_snapshot!(explain("council_or_managers", "1006", "0"));
}

#[test]
fn an_unknown_user_is_a_usage_error() {
    insta::assert_snapshot!(explain("sales_emea", "42", "0"));
}

/// A group that reads only the users needs only `--users`, though other
/// groups of the file read enrollments, the org tree and static groups.
#[test]
fn explain_needs_only_the_inputs_of_the_groups_it_uses() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dyngroups"))
            .args([
                "explain",
                "--rules",
                "examples/groups.rules",
                "--users",
                "examples/data/users.csv",
            ])
            .args(["--as-of", "2026-11-22"])
            .args(args)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
            .output()
            .unwrap()
    };
    let out = run(&["--group", "managers", "--user", "1001"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("user 1001 is a member"));
    // One that uses a group reading enrollments still needs them.
    let out = run(&["--group", "drivers_not_in_sales", "--user", "1001"]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&["--group", "nope", "--user", "1001"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`--group nope`: no such group in examples/groups.rules"));
}
