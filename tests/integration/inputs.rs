//! Loading inputs: files written by other tools, and bad data reported with
//! file, column and row.

use dyngroups::checked::CheckedRules;
use dyngroups::data::{Column, DataError};
use dyngroups::dataset::{Dataset, InputPaths, OpenInputs};
use dyngroups::eval::evaluate;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Members of `g` for `rule` over the given users file.
fn members(users: &Path, rule: &str) -> Vec<u32> {
    let inputs = OpenInputs::open(&InputPaths {
        users: users.to_path_buf(),
        ..InputPaths::default()
    })
    .unwrap();
    let file = dyngroups::parse_rules(&format!("group g {{ {rule} }}")).unwrap();
    let as_of = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
    let rules = dyngroups::check(&file, &inputs.schema(), as_of)
        .unwrap_or_else(|e| panic!("{:?}", e.errors))
        .rules;
    let data = inputs.load(&rules).unwrap();
    evaluate(&rules, &data, None).groups[0].members.iter().collect()
}

fn open_error(users: &Path) -> DataError {
    match OpenInputs::open(&InputPaths {
        users: users.to_path_buf(),
        ..InputPaths::default()
    }) {
        Ok(inputs) => {
            let file = dyngroups::parse_rules("group g { true }").unwrap();
            let as_of = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
            let rules = dyngroups::check(&file, &inputs.schema(), as_of).unwrap().rules;
            inputs.load(&rules).err().expect("a data error")
        }
        Err(e) => e,
    }
}

/// The rule `enrolled("c1")` checked against the users and enrollments
/// files, and the data loaded for it.
fn load_enrolled_in_c1(users: PathBuf, enrollments: PathBuf) -> (CheckedRules, Result<Dataset, DataError>) {
    let inputs = OpenInputs::open(&InputPaths {
        users,
        enrollments: Some(enrollments),
        ..InputPaths::default()
    })
    .unwrap();
    let file = dyngroups::parse_rules(r#"group g { enrolled("c1") }"#).unwrap();
    let rules = dyngroups::check(&file, &inputs.schema(), chrono::NaiveDate::MIN)
        .unwrap()
        .rules;
    let loaded = inputs.load(&rules);
    (rules, loaded)
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn pyarrow_parquet_types_load() {
    let users = fixture("users_pyarrow.parquet");
    assert_eq!(members(&users, r#"email ends_with "@acme.com""#), vec![10, 11]);
    assert_eq!(members(&users, r#"department == "SALES""#), vec![10, 11]);
    assert_eq!(members(&users, r#"title is empty"#), vec![11, 13]);
    assert_eq!(members(&users, r#"nickname starts_with "i""#), vec![13]);
    assert_eq!(members(&users, r#"grade is empty"#), vec![11, 12]);
    assert_eq!(members(&users, r#"level >= 2"#), vec![11, 13]);
    assert_eq!(members(&users, r#"start_date == 2024-02-29"#), vec![10]);
    // Timestamps count by their UTC calendar date, before 1970 too.
    assert_eq!(members(&users, r#"last_login == 2026-11-21"#), vec![10]);
    assert_eq!(members(&users, r#"last_login == 1969-12-31"#), vec![13]);
    assert_eq!(members(&users, r#"is_manager == false"#), vec![11, 13]);
}

#[test]
fn a_list_column_is_a_clear_check_error() {
    let inputs = OpenInputs::open(&InputPaths {
        users: fixture("users_pyarrow.parquet"),
        ..InputPaths::default()
    })
    .unwrap();
    let file = dyngroups::parse_rules(r#"group g { tags contains "x" }"#).unwrap();
    let as_of = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
    let errors = dyngroups::check(&file, &inputs.schema(), as_of).unwrap_err().errors;
    assert_eq!(
        errors[0].message,
        "column `tags` has type `List(Utf8, field: 'element')`, which rules cannot test"
    );
}

#[test]
fn semicolon_csv_with_bom_crlf_and_decimal_commas_loads() {
    let users = fixture("users_semicolon.csv");
    assert_eq!(members(&users, r#"department == "vendas""#), vec![1, 2]);
    assert_eq!(members(&users, r#"email contains ";""#), vec![2]);
    assert_eq!(members(&users, r#"grade < 2"#), vec![3]);
    assert_eq!(members(&users, r#"start_date is empty"#), vec![3]);
}

#[test]
fn bad_user_ids_name_file_column_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "user_id,x\n1,a\n2,b\n1,c\n",
            "column `user_id`, row 4: user id 1 appears twice",
        ),
        (
            // Row numbers stay right with CRLF line ends.
            "user_id,x\r\n1,a\r\n2,b\r\n\r\n1,c\r\n",
            "column `user_id`, row 5: user id 1 appears twice",
        ),
        (
            "user_id,x\n1,a\n,b\n",
            "column `user_id`, row 3: is empty; every user needs a user id",
        ),
        (
            "user_id,x\n-1,a\n",
            "column `user_id`, row 2: `-1` is not a user id (a whole number from 0 to 4294967295)",
        ),
        (
            "user_id,x\n4294967296,a\n",
            "column `user_id`, row 2: `4294967296` is not a user id (a whole number from 0 to 4294967295)",
        ),
        (
            "user_id,x\n1.5,a\n",
            "column `user_id`, row 2: `1.5` is not a user id (a whole number from 0 to 4294967295)",
        ),
        (
            "userid,x\n1,a\n",
            "missing required column `user_id` (did you mean `userid`?); the file has `userid`, `x`",
        ),
        ("user_id,x\nabc,a\n", "column `user_id`: must be a number, found text"),
        ("user_id,x\n1,a,extra\n", "row 2: has 3 fields, but the header has 2"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = write(&dir, &format!("users{i}.csv"), text);
        let message = open_error(&path).to_string();
        let separator = if expected.starts_with("row") { ", " } else { ": " };
        assert_eq!(
            message,
            format!("{}{separator}{expected}", path.display()),
            "input:\n{text}"
        );
    }
}

#[test]
fn bad_enrollment_user_ids_name_file_column_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let users = write(&dir, "u.csv", "user_id,name\n5,a\n");
    let enrollments = write(&dir, "e.csv", "user_id,course,status\n5,C1,done\n5.5,C1,done\n");
    let (_, loaded) = load_enrolled_in_c1(users, enrollments.clone());
    let message = loaded.err().expect("a data error").to_string();
    assert_eq!(
        message,
        format!(
            "{}: column `user_id`, row 3: `5.5` is not a user id (a whole number from 0 to 4294967295)",
            enrollments.display()
        )
    );
}

#[test]
fn missing_and_truncated_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.csv");
    assert!(open_error(&missing).to_string().contains("cannot read the file"));
    let bytes = std::fs::read(fixture("users_pyarrow.parquet")).unwrap();
    let truncated = dir.path().join("cut.parquet");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let message = open_error(&truncated).to_string();
    assert!(
        message.starts_with(&format!("{}: not a readable Parquet file", truncated.display())),
        "{message}"
    );
}

#[test]
fn enrollments_of_unknown_users_are_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let users = write(&dir, "u.csv", "user_id,name\n5,a\n7,b\n");
    let enrollments = write(&dir, "e.csv", "user_id,course,status\n5,C1,done\n9,C1,done\n,C1,done\n");
    let (rules, loaded) = load_enrolled_in_c1(users, enrollments);
    let data = loaded.unwrap();
    assert_eq!(data.enrollments.as_ref().unwrap().unknown_users, 2);
    assert_eq!(
        evaluate(&rules, &data, None).groups[0]
            .members
            .iter()
            .collect::<Vec<_>>(),
        vec![5]
    );
}

#[test]
fn only_the_columns_the_rules_use_are_decoded() {
    let inputs = OpenInputs::open(&InputPaths {
        users: fixture("users_pyarrow.parquet"),
        ..InputPaths::default()
    })
    .unwrap();
    let file = dyngroups::parse_rules(r#"group g { grade > 1 }"#).unwrap();
    let rules = dyngroups::check(&file, &inputs.schema(), chrono::NaiveDate::MIN)
        .unwrap()
        .rules;
    let data = inputs.load(&rules).unwrap();
    let decoded: Vec<&str> = (0..data.users.columns.len())
        .filter(|&i| data.users.columns[i].is_some())
        .map(|i| data.users.column_name(i))
        .collect();
    assert_eq!(decoded, vec!["user_id", "grade"]);
    assert!(matches!(data.users.column(5), Column::Number(_)));
}

#[test]
fn org_tree_problems_are_data_errors() {
    let dir = tempfile::tempdir().unwrap();
    let users = write(&dir, "u.csv", "user_id,branch\n1,A\n");
    for (text, expected) in [
        (
            "branch,parent\nA,\nA,\n",
            "column `branch`, row 3: branch `A` appears twice",
        ),
        (
            "branch,parent\nA,B\n",
            "column `parent`, row 2: `B` is not a branch of the tree",
        ),
        (
            "branch,parent\nA,B\nB,A\n",
            "column `parent`: branch `A` is its own ancestor",
        ),
    ] {
        let org = write(&dir, "org.csv", text);
        let error = OpenInputs::open(&InputPaths {
            users: users.clone(),
            org: Some(org.clone()),
            ..InputPaths::default()
        })
        .err()
        .unwrap();
        assert_eq!(error.to_string(), format!("{}: {expected}", org.display()));
    }
}
