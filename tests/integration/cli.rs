//! The `dyngroups` command as a user runs it: output and exit codes.

use crate::workspace::{EXAMPLE, Workspace};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn dyngroups(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dyngroups"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `dyngroups run` on the example data, evaluating only (tests of the
/// state give their own `--state`).
fn run_example(extra: &[&str]) -> Output {
    let mut args = vec!["run", "--no-state"];
    args.extend_from_slice(EXAMPLE);
    args.extend_from_slice(extra);
    dyngroups(&args)
}

#[test]
fn check_without_data_counts_groups() {
    let out = dyngroups(&["check", "examples/groups.rules"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "21 groups OK\n");
}

#[test]
fn check_with_data_checks_fields() {
    let mut args = vec!["check", "examples/groups.rules"];
    args.extend_from_slice(&EXAMPLE[2..]);
    let out = dyngroups(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "21 groups OK\n");
}

#[test]
fn check_reports_every_error_with_position_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("bad.rules");
    std::fs::write(
        &rules,
        "group a {\n    departmnt == \"Sales\"\n}\ngroup b { grade == \"5\" }\n",
    )
    .unwrap();
    let rules = rules.to_str().unwrap();
    let out = dyngroups(&["check", rules, "--users", "examples/data/users.csv"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("{rules}:2:5")), "{stderr}");
    assert!(stderr.contains("did you mean `department`?"), "{stderr}");
    assert!(stderr.contains(&format!("{rules}:4:20")), "{stderr}");
    assert!(stderr.contains("write the number without quotes: `5`"), "{stderr}");
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn missing_data_file_is_one_line_and_exits_3() {
    let out = dyngroups(&["check", "examples/groups.rules", "--users", "nope.csv"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: nope.csv: cannot read the file"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(
        dyngroups(&["run", "--rules", "examples/groups.rules"]).status.code(),
        Some(2)
    );
    assert_eq!(
        dyngroups(&["check", "examples/groups.rules", "--org", "examples/data/org.csv"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(run_example(&["--group", "no_such_group"]).status.code(), Some(2));
}

#[test]
fn run_prints_the_members_table() {
    let out = run_example(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let row = |key: &str| -> Vec<String> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("{stdout}"));
        line.split("  ")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    assert_eq!(
        row("approved_drivers")[..3],
        ["approved_drivers", "Approved Drivers", "4"]
    );
    assert_eq!(row("sales_emea")[2], "4");
    assert_eq!(row("everyone")[2], "12");
    assert!(text(&out.stderr).contains("1 enrollment rows name a user not in the users table"));
}

fn members_file(extension: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("members.{extension}"));
    (dir, path)
}

#[test]
fn members_out_csv_is_sorted_by_group_then_user() {
    let (_dir, path) = members_file("csv");
    let out = run_example(&[
        "--members-out",
        path.to_str().unwrap(),
        "--group",
        "sales_emea",
        "--group",
        "approved_drivers",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "group,user_id\napproved_drivers,1001\napproved_drivers,1003\napproved_drivers,1005\napproved_drivers,1007\n\
         sales_emea,1001\nsales_emea,1002\nsales_emea,1007\nsales_emea,1011\n"
    );
}

#[test]
fn group_selection_evaluates_dependencies_but_shows_only_the_asked() {
    let out = run_example(&["--group", "drivers_not_in_sales"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("drivers_not_in_sales ") && l.contains(" 2 ")),
        "{stdout}"
    );
    assert!(!stdout.contains("approved_drivers "), "{stdout}");
}

#[test]
fn members_out_jsonl_and_parquet() {
    let (_dir, jsonl) = members_file("jsonl");
    run_example(&["--members-out", jsonl.to_str().unwrap(), "--group", "managers"]);
    assert_eq!(
        std::fs::read_to_string(&jsonl).unwrap(),
        "{\"group\":\"managers\",\"user_id\":1001}\n{\"group\":\"managers\",\"user_id\":1005}\n{\"group\":\"managers\",\"user_id\":1008}\n"
    );
    let (_dir, parquet) = members_file("parquet");
    run_example(&["--members-out", parquet.to_str().unwrap(), "--group", "managers"]);
    let table = dyngroups::data::OpenTable::open(&parquet).unwrap();
    let names: Vec<&str> = table.schema().names().collect();
    assert_eq!(names, ["group", "user_id"]);
    let table = table.load(&[1]).unwrap();
    assert_eq!(
        table.column(1),
        &dyngroups::data::Column::Number(vec![1001.0, 1005.0, 1008.0])
    );
}

#[test]
fn data_errors_exit_3_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.csv");
    std::fs::write(&users, "user_id,department\n1,Sales\n1,Eng\n").unwrap();
    let out_path = dir.path().join("m.csv");
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let run = |rules: &str| {
        dyngroups(&[
            "run",
            "--rules",
            rules,
            "--users",
            users.to_str().unwrap(),
            "--members-out",
            out_path.to_str().unwrap(),
            "--state",
            state,
        ])
    };
    // The rules use columns this file lacks: rule errors come first.
    assert_eq!(run("examples/groups.rules").status.code(), Some(1));
    let rules = dir.path().join("r.rules");
    std::fs::write(&rules, "group s { department == \"sales\" }").unwrap();
    let out = run(rules.to_str().unwrap());
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("column `user_id`, row 3: user id 1 appears twice"),
        "{}",
        text(&out.stderr)
    );
    assert!(!out_path.exists());
    let history = dyngroups(&["history", "--state", state]);
    assert_eq!(history.status.code(), Some(0), "{}", text(&history.stderr));
    assert_eq!(
        text(&history.stdout).lines().count(),
        1,
        "only the header: no run committed"
    );
}

#[test]
fn unwritable_output_exits_4() {
    let out = run_example(&["--members-out", "/nonexistent-dir/members.csv"]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: cannot write /nonexistent-dir/members.csv: its directory does not exist"),
        "{stderr}"
    );
}

/// The README's two runs: the example data, then the next day's export.
#[test]
fn the_next_days_export_gives_the_changes_the_readme_shows() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let diff = dir.path().join("changes.csv");
    let run = |users: &str, as_of: &str| {
        let mut args = vec!["run"];
        args.extend_from_slice(&EXAMPLE[..10]);
        args[4] = users;
        args.extend_from_slice(&[
            "--as-of",
            as_of,
            "--state",
            state.to_str().unwrap(),
            "--diff-out",
            diff.to_str().unwrap(),
        ]);
        let out = dyngroups(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        (text(&out.stdout), std::fs::read_to_string(&diff).unwrap())
    };
    let (_, first) = run("examples/data/users.csv", "2026-11-22");
    assert_eq!(
        first.lines().count(),
        1 + 80 + 3,
        "rule groups and the static `works_council`"
    );
    let (table, next) = run("examples/data/users_next.csv", "2026-11-23");
    assert_eq!(
        next,
        "group,user_id,change\ncost_center_100,1013,add\ncouncil_or_managers,1008,remove\n\
         everyone,1008,remove\neveryone,1013,add\nlong_tenure,1008,remove\nmanagers,1008,remove\n\
         never_enrolled,1013,add\nnew_hires,1013,add\nnon_managers,1013,add\nreview_due,1013,add\n\
         sales_emea,1002,remove\nsales_emea,1013,add\nsenior_grades,1008,remove\n"
    );
    let sales = table.lines().find(|l| l.starts_with("sales_emea ")).unwrap();
    assert!(sales.contains(" +1 ") && sales.contains(" -1 "), "{sales}");
    let (_, again) = run("examples/data/users_next.csv", "2026-11-23");
    assert_eq!(again, "group,user_id,change\n");
}

#[test]
fn sql_prints_a_query_per_group_and_one_for_all() {
    let mut args = vec!["sql"];
    args.extend_from_slice(EXAMPLE);
    let out = dyngroups(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sql = text(&out.stdout);
    assert_eq!(
        sql.matches("\n-- group ").count() + usize::from(sql.starts_with("-- group ")),
        21
    );
    assert!(sql.contains("-- group sales_emea\nWITH RECURSIVE\n"), "{sql}");
    assert!(sql.contains("-- every group a run commits, as (group, user_id)\n"));

    args.extend_from_slice(&["--combined", "--dialect", "postgres"]);
    let out = dyngroups(&args);
    let combined = text(&out.stdout);
    assert!(combined.starts_with("WITH RECURSIVE\n"), "{combined}");
    assert_eq!(combined.matches(';').count(), 1, "one statement, ready to pipe");
    assert!(
        combined.contains("unnest(ARRAY[CASE WHEN"),
        "rows from one scan: {combined}"
    );
    assert!(!combined.contains("ORDER BY"), "rows for a table, unordered");

    args.pop();
    args.pop();
    args.pop();
    args.push("--changes");
    let out = dyngroups(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let changes = text(&out.stdout);
    assert!(changes.contains("'add' AS \"change\"") && changes.contains("'remove' AS \"change\""));
    assert!(changes.contains("EXCEPT"), "{changes}");
    args.push("--combined");
    assert_eq!(
        dyngroups(&args).status.code(),
        Some(2),
        "--changes is one query, not --combined too"
    );
}

#[test]
fn sql_refuses_what_a_dialect_would_read_differently() {
    let w = Workspace::new(&[
        ("users.csv", "user_id,code\n1,A1\n"),
        ("letters.rules", "group g { code matches \"\\\\pL\" }\n"),
        ("digits.rules", "group g { code matches \"\\\\d\" }\n"),
    ]);
    let sql = |rules: &str, extra: &[&str]| {
        let mut args = vec!["sql", "--rules", rules, "--users", "users.csv"];
        args.extend_from_slice(extra);
        w.dyngroups(&args)
    };
    let out = sql("letters.rules", &["--dialect", "postgres"]);
    assert_eq!(out.status.code(), Some(1));
    let error = text(&out.stderr);
    assert!(
        error.contains("group `g`") && error.contains("PostgreSQL") && error.contains("Unicode classes"),
        "{error}"
    );
    // `\d` is ASCII in the language, so it has an exact form everywhere.
    let out = sql("digits.rules", &["--dialect", "postgres"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("~ '[0-9]'"), "{}", text(&out.stdout));

    let out = sql("digits.rules", &["--group", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn sql_can_leave_out_the_groups_a_dialect_cannot_hold() {
    let w = Workspace::new(&[
        ("users.csv", "user_id,code\n1,A1\n"),
        (
            "mixed.rules",
            "group good { code == \"a1\" }\n\
             group letters { code matches \"\\\\pL\" }\n\
             group uses_letters { member_of(letters) or code == \"b\" }\n",
        ),
    ]);
    let sql = |extra: &[&str]| {
        let mut args = vec![
            "sql",
            "--rules",
            "mixed.rules",
            "--users",
            "users.csv",
            "--dialect",
            "postgres",
        ];
        args.extend_from_slice(extra);
        w.dyngroups(&args)
    };
    assert_eq!(sql(&[]).status.code(), Some(1));
    let out = sql(&["--skip-untranslatable"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stdout.contains("-- group good") && !stdout.contains("letters"),
        "{stdout}"
    );
    assert!(
        stderr.contains("skipped group `letters`: the pattern")
            && stderr.contains("skipped group `uses_letters`, which uses group `letters`"),
        "{stderr}"
    );
    // Their committed members are left as they are, not removed.
    let out = sql(&["--skip-untranslatable", "--changes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("FROM committed WHERE \"group\" NOT IN ('letters', 'uses_letters')"),
        "{}",
        text(&out.stdout)
    );
}

/// The user ids of a users (or enrollments) file, in its row order.
fn user_ids_of(path: &Path) -> Vec<u32> {
    let table = dyngroups::data::OpenTable::open(path).unwrap();
    let column = table.schema().names().position(|n| n == "user_id").unwrap();
    let table = table.load(&[column]).unwrap();
    let dyngroups::data::Column::Number(ids) = table.column(column) else {
        panic!("user_id is a number column");
    };
    ids.iter().map(|&id| id as u32).collect()
}

/// Memberships and changes written as Parquet read back in DuckDB as the
/// rows the CSV files hold, in the same order, on a population of `gen`'s
/// default shape (ids out of row order, some past 2^31, pages of many
/// groups). `.ci/run` installs DuckDB and sets `DYNGROUPS_REQUIRE_DUCKDB`.
#[test]
fn parquet_outputs_read_back_in_duckdb() {
    if !crate::skips::tool_present(
        crate::sql::has_python_module("duckdb"),
        "cli::parquet_outputs_read_back_in_duckdb",
        "DYNGROUPS_REQUIRE_DUCKDB",
        "python3 with duckdb",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let made = dyngroups(&["gen", "--users", "20000", "--rules", "40", "--out", &at("pop")]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let run = |as_of: &str, extra: &[&str]| {
        let (rules, users, enrollments, org) = (
            at("pop/rules.rules"),
            at("pop/users.parquet"),
            at("pop/enrollments.parquet"),
            at("pop/org.parquet"),
        );
        let mut args = vec!["run", "--rules", &rules];
        args.extend(["--users", &users, "--enrollments", &enrollments, "--org", &org]);
        let state = at("state");
        args.extend(["--as-of", as_of, "--state", &state, "--allow-mass-removal"]);
        args.extend_from_slice(extra);
        let ran = dyngroups(&args);
        assert!(ran.status.success(), "{}", text(&ran.stderr));
    };
    // Half a year on, relative dates add some members and remove others.
    run("2026-05-22", &[]);
    for extension in ["parquet", "csv"] {
        let (members, changes) = (at(&format!("members.{extension}")), at(&format!("changes.{extension}")));
        run(
            "2026-11-22",
            &["--dry-run", "--members-out", &members, "--diff-out", &changes],
        );
    }
    let script = r#"
import csv, duckdb, sys
for name in ["members", "changes"]:
    parquet = duckdb.sql(f"SELECT * FROM read_parquet('{sys.argv[1]}/{name}.parquet')").fetchall()
    with open(f"{sys.argv[1]}/{name}.csv") as text:
        rows = [tuple(int(cell) if column == "user_id" else cell for column, cell in row.items()) for row in csv.DictReader(text)]
    assert parquet == rows, (name, len(parquet), len(rows), next(((p, r) for p, r in zip(parquet, rows) if p != r), None))
    kinds = {row[2] for row in rows} if name == "changes" else {"add"}
    assert len(rows) > (10_000 if name == "members" else 100) and "add" in kinds, (name, len(rows), kinds)
    print(name, len(rows), sorted(kinds))
"#;
    let read = Command::new("python3")
        .args(["-c", script, dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(read.status.success(), "{}", text(&read.stderr));
    assert!(text(&read.stdout).contains("remove"), "{}", text(&read.stdout));
}

#[test]
fn gen_makes_the_shapes_of_real_exports_by_default() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| dir.path().join(name);
    let users = "140000";
    let made = dyngroups(&[
        "gen",
        "--users",
        users,
        "--rules",
        "1000",
        "--out",
        out("export").to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{}", text(&made.stderr));

    let ids = user_ids_of(&out("export/users.parquet"));
    assert_eq!(ids.len(), 140_000);
    assert!(!ids.is_sorted(), "rows in no id order");
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "ids are distinct");
    let below_2_31 = sorted.iter().filter(|&&id| id < 1 << 31).count();
    assert!(sorted[below_2_31 - 1] > 150_000, "ids with gaps");
    assert_eq!(sorted.len() - below_2_31, 140, "one id in 1,000 near 2^32 - 1");
    let file = std::fs::File::open(out("export/users.parquet")).unwrap();
    assert!(SerializedFileReader::new(file).unwrap().metadata().num_row_groups() >= 2);
    let enrolled = user_ids_of(&out("export/enrollments.parquet"));
    let user_changes = enrolled.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(user_changes > enrolled.len() / 2, "enrollments not user by user");

    // At least 10% of rules test text, with mostly distinct literals.
    let rules = std::fs::read_to_string(out("export/rules.rules")).unwrap();
    let text_tests: Vec<&str> = rules
        .split(['(', ')', '\n'])
        .filter(|t| {
            ["contains", "starts_with", "ends_with"]
                .iter()
                .any(|op| t.contains(&format!(" {op} ")))
        })
        .collect();
    let groups_testing_text = rules
        .split("group ")
        .filter(|g| g.contains("contains") || g.contains("_with"))
        .count();
    assert!(
        groups_testing_text >= 100,
        "{groups_testing_text} of 1000 groups test text"
    );
    let distinct: std::collections::BTreeSet<&str> = text_tests.iter().map(|t| t.trim()).collect();
    assert!(
        distinct.len() * 3 >= text_tests.len() * 2,
        "{} of {}",
        distinct.len(),
        text_tests.len()
    );

    // The earlier shape, on request: ids are rows, enrollments user by user.
    let made = dyngroups(&[
        "gen",
        "--users",
        "1000",
        "--shape",
        "sequential",
        "--out",
        out("sequential").to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    assert_eq!(
        user_ids_of(&out("sequential/users.parquet")),
        (0..1000).collect::<Vec<u32>>()
    );
    assert!(user_ids_of(&out("sequential/enrollments.parquet")).is_sorted());
}

#[test]
fn a_rules_file_saved_with_a_byte_order_mark_checks() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("bom.rules");
    std::fs::write(&rules, "\u{feff}# saved by a Windows editor\ngroup all { true }\n").unwrap();
    let out = dyngroups(&["check", rules.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1 group OK\n");
    // Errors still point at the right line and column.
    std::fs::write(&rules, "\u{feff}group all { ( }\n").unwrap();
    let out = dyngroups(&["check", rules.to_str().unwrap()]);
    assert!(text(&out.stderr).contains("bom.rules:1:13"), "{}", text(&out.stderr));
}

#[test]
fn as_of_dates_not_written_iso_get_plain_words() {
    let check = |date: &str| {
        let out = dyngroups(&["check", "examples/groups.rules", "--as-of", date]);
        assert_eq!(out.status.code(), Some(2), "{date}");
        text(&out.stderr)
    };
    assert!(check("22/11/2026").contains("`22/11/2026` is not written YYYY-MM-DD: did you mean 2026-11-22?"));
    assert!(check("03/12/2026").contains("did you mean 2026-12-03 (day first) or 2026-03-12 (month first)?"));
    assert!(check("tomorrow").contains("`tomorrow` is not a date: write it as YYYY-MM-DD, e.g. 2026-11-22"));
    assert!(!check("31/02/2026").contains("did you mean"));
}
