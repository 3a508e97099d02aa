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
