//! `dyngroups sql` and `dyngroups polars` against the engine: random rules
//! and data, written to Parquet, run by DuckDB (and PostgreSQL, when a
//! server is at hand) from the generated SQL, and by Polars from the
//! generated module, must give exactly the members the engine commits.

use crate::engine::cases;
use crate::generate::{Tables, as_of, tables, typed_rules};
use crate::skips::tool_present;
use arrow_array::{ArrayRef, BooleanArray, Date32Array, Float64Array, RecordBatch, StringArray, UInt32Array};
use dyngroups::ast::{GroupStatus, RulesFile};
use dyngroups::data::Column;
use dyngroups::diff::GroupChange;
use dyngroups::eval::evaluate_after;
use dyngroups::polars::polars_module;
use dyngroups::sql::{Dialect, SqlOptions, changes_query, combined_query, group_queries};
use dyngroups::{Span, Spanned};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use roaring::RoaringBitmap;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// One generated case: data, rules with statuses, the last committed run.
#[derive(Debug, Clone)]
struct Case {
    tables: Tables,
    rules: RulesFile,
    previous: BTreeMap<String, RoaringBitmap>,
    /// The most columns of a select: small ones split the groups into
    /// several scans.
    max_columns: Option<usize>,
}

impl Case {
    /// Users 1, 2, ... named by `texts`, in a department of the same text.
    fn hostile_tables(texts: &[&str]) -> Tables {
        let mut tables = generated(1, 3).remove(0).tables;
        let text = |v: &[&str]| Column::Text(v.iter().map(|s| Some(s.to_string())).collect());
        tables.users = vec![
            (
                "user_id".into(),
                Column::Number((1..=texts.len()).map(|i| i as f64).collect()),
            ),
            ("name".into(), text(texts)),
            ("dept".into(), text(texts)),
        ];
        tables
    }
}

fn case() -> impl Strategy<Value = Case> {
    tables().prop_flat_map(|t| {
        let ids = t.user_ids.clone();
        let status = prop::sample::select(vec![
            GroupStatus::Active,
            GroupStatus::Active,
            GroupStatus::Paused,
            GroupStatus::AddOnly,
            GroupStatus::RemoveOnly,
            GroupStatus::Draft,
        ]);
        let previous_ids = prop::collection::vec(
            prop_oneof![prop::sample::select(ids.clone().max(vec![0])), 500u32..503],
            0..8,
        );
        (
            Just(t),
            typed_rules(ids),
            prop::collection::vec((status, previous_ids), 4),
            prop::option::of(2usize..12),
        )
            .prop_map(|(tables, mut rules, extra, max_columns)| {
                let last = rules.groups.len() - 1;
                let mut previous = BTreeMap::new();
                for (g, (group, (status, ids))) in rules.groups.iter_mut().zip(extra).enumerate() {
                    // A draft may not be referred to: only the last group,
                    // which no other group refers to, may be one.
                    let status = if status == GroupStatus::Draft && g != last {
                        GroupStatus::Active
                    } else {
                        status
                    };
                    group.status = Some(Spanned::new(status, Span::default()));
                    previous.insert(group.key.value.clone(), ids.into_iter().collect());
                }
                Case {
                    tables,
                    rules,
                    previous,
                    max_columns,
                }
            })
    })
}

/// A table as Parquet; numbers missing as null on even rows and NaN on odd
/// ones, since both mean missing.
fn write_parquet(path: &Path, columns: &[(String, Column)], integer_ids: bool) {
    let arrays: Vec<(String, ArrayRef)> = columns
        .iter()
        .map(|(name, column)| {
            let array: ArrayRef = match column {
                Column::Number(values) if integer_ids && name == "user_id" => {
                    Arc::new(UInt32Array::from_iter_values(values.iter().map(|&v| v as u32)))
                }
                Column::Number(values) => Arc::new(Float64Array::from_iter(
                    values
                        .iter()
                        .enumerate()
                        .map(|(row, &v)| if v.is_nan() && row % 2 == 0 { None } else { Some(v) }),
                )),
                Column::Text(text) => Arc::new(StringArray::from_iter((0..column.len()).map(|r| text.get(r)))),
                Column::Date(days) => Arc::new(Date32Array::from(days.clone())),
                Column::Boolean(values) => Arc::new(BooleanArray::from(values.clone())),
            };
            (name.clone(), array)
        })
        .collect();
    let batch = RecordBatch::try_from_iter(arrays).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// What the rules are translated into: SQL of a dialect (`query.sql`), the
/// changes query of a dialect (`query.sql` too), one query per group that
/// a run commits (`group-KEY.sql`), or a Polars module (`members.py`).
#[derive(Clone, Copy, Debug)]
enum Translation {
    Sql(Dialect),
    Changes(Dialect),
    Groups(Dialect),
    Polars,
}

/// Writes the case's tables and its translation into `dir`; returns what
/// the engine commits, as `(group, user_id)` rows.
fn prepare(case: &Case, translation: Translation, dir: &Path) -> (String, BTreeSet<(String, u32)>) {
    std::fs::create_dir_all(dir).unwrap();
    let text = case.rules.to_string();
    let parsed = dyngroups::parse_rules(&text).unwrap_or_else(|e| panic!("{text}\n{e:?}"));
    let inputs = case.tables.open();
    let schema = inputs.schema();
    let rules = dyngroups::check(&parsed, &schema, as_of())
        .unwrap_or_else(|e| panic!("{text}\n{:?}", e.errors))
        .rules;
    let data = inputs.load(&rules).unwrap();
    let evaluation = evaluate_after(&rules, &data, None, &case.previous);
    let committed = evaluation.groups.iter().filter_map(|g| g.committed().map(|m| (g, m)));
    let expected = match translation {
        Translation::Changes(_) => {
            // What `run --diff-out` writes against `previous`: a group the
            // run does not commit (gone from the rules, or a draft now)
            // loses every member. A row as ("group change", user_id), as
            // `run_engine` reads it.
            let empty = RoaringBitmap::new();
            let gone = case
                .previous
                .iter()
                .filter(|(key, _)| {
                    !evaluation
                        .groups
                        .iter()
                        .any(|g| &g.key == *key && g.committed().is_some())
                })
                .map(|(key, before)| GroupChange::between(key, before, &empty));
            committed
                .map(|(g, members)| GroupChange::between(&g.key, case.previous.get(&g.key).unwrap_or(&empty), members))
                .chain(gone)
                .flat_map(|change| {
                    let key = change.key.clone();
                    change
                        .rows()
                        .map(move |(id, added)| (format!("{key} {}", if added { "add" } else { "remove" }), id))
                        .collect::<Vec<_>>()
                })
                .collect()
        }
        _ => committed
            .flat_map(|(g, members)| members.iter().map(|id| (g.key.clone(), id)))
            .collect(),
    };
    let sql_options = |dialect| {
        let mut options = SqlOptions::new(dialect);
        options.as_of = Some(as_of());
        if let Some(columns) = case.max_columns {
            options.max_columns = columns;
        }
        options
    };
    let translated: Vec<(String, String)> = match translation {
        Translation::Sql(dialect) => {
            let sql = combined_query(&rules, &schema, &sql_options(dialect)).unwrap_or_else(|e| panic!("{text}\n{e}"));
            vec![("query.sql".into(), sql)]
        }
        Translation::Changes(dialect) => {
            let sql = changes_query(&rules, &schema, &sql_options(dialect)).unwrap_or_else(|e| panic!("{text}\n{e}"));
            vec![("query.sql".into(), sql)]
        }
        Translation::Groups(dialect) => {
            let committing: Vec<String> = rules
                .groups
                .iter()
                .filter(|g| g.status != GroupStatus::Draft)
                .map(|g| g.key.clone())
                .collect();
            // No keys would ask for every group.
            let queries = match committing.is_empty() {
                true => Vec::new(),
                false => group_queries(&rules, &schema, &sql_options(dialect), &committing)
                    .unwrap_or_else(|e| panic!("{text}\n{e}")),
            };
            queries
                .into_iter()
                .map(|query| (format!("group-{}.sql", query.key), query.sql))
                .collect()
        }
        Translation::Polars => {
            let module = polars_module(&rules, &schema, None).unwrap_or_else(|e| panic!("{text}\n{e}"));
            vec![("members.py".into(), module)]
        }
    };
    let t = &case.tables;
    write_parquet(&dir.join("users.parquet"), &t.users, true);
    write_parquet(&dir.join("enrollments.parquet"), &t.enrollments, true);
    write_parquet(&dir.join("org.parquet"), &t.org, false);
    write_parquet(&dir.join("memberships.parquet"), &t.memberships, true);
    let committed: Vec<(String, u32)> = case
        .previous
        .iter()
        .flat_map(|(k, ids)| ids.iter().map(move |id| (k.clone(), id)))
        .collect();
    let committed_columns = vec![
        (
            "group".to_string(),
            Column::Text(committed.iter().map(|(k, _)| Some(k.clone())).collect()),
        ),
        (
            "user_id".to_string(),
            Column::Number(committed.iter().map(|&(_, id)| f64::from(id)).collect()),
        ),
    ];
    write_parquet(&dir.join("committed.parquet"), &committed_columns, true);
    for (file, text) in translated {
        std::fs::write(dir.join(file), text).unwrap();
    }
    std::fs::write(dir.join("rules.rules"), &text).unwrap();
    (text, expected)
}

fn generated(n: u32, seed: u8) -> Vec<Case> {
    let config = proptest::test_runner::Config::default();
    let mut runner = TestRunner::new_with_rng(
        config,
        proptest::test_runner::TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &[seed; 32]),
    );
    let strategy = case();
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

pub(crate) fn has_python_module(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A PostgreSQL server answers `psql -d postgres`, and the loader's DuckDB
/// is installed.
fn postgres_reachable() -> bool {
    has_python_module("duckdb")
        && Command::new("psql")
            .args(["-X", "-d", "postgres", "-c", "SELECT 1"])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Runs every case directory's `query.sql` in the given engine runner and
/// returns the rows per directory (or the engine's error).
fn run_engine(script: &str, dirs: &[PathBuf]) -> BTreeMap<PathBuf, Result<BTreeSet<(String, u32)>, String>> {
    let output = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql").join(script))
        .args(dirs)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut results = BTreeMap::new();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let dir = PathBuf::from(value["case"].as_str().unwrap());
        let result = match value.get("error") {
            Some(error) => Err(error.as_str().unwrap().to_string()),
            None => Ok(value["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    // A changes row's change goes with its group.
                    let group = match r.get(2) {
                        Some(change) => format!("{} {}", r[0].as_str().unwrap(), change.as_str().unwrap()),
                        None => r[0].as_str().unwrap().to_string(),
                    };
                    (group, r[1].as_u64().unwrap() as u32)
                })
                .collect()),
        };
        results.insert(dir, result);
    }
    results
}

/// Every generated case agrees, or the test fails naming the case's rules,
/// its directory (kept) and the rows that differ.
fn differential(translation: Translation, script: &str, n: u32, seed: u8) {
    differential_many(&[(translation, n, seed)], script);
}

/// [`differential`] for several translations at once, `n` cases of seed
/// `seed` each, all run by one call of `script`.
fn differential_many(translations: &[(Translation, u32, u8)], script: &str) {
    let root = tempfile::tempdir().unwrap();
    let mut expected = BTreeMap::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for &(translation, n, seed) in translations {
        for (i, case) in generated(n, seed).iter().enumerate() {
            let dir = root.path().join(format!("{translation:?}-{i:05}"));
            expected.insert(dir.clone(), prepare(case, translation, &dir));
            dirs.push(dir);
        }
    }
    let actual = run_engine(script, &dirs);
    let mut failures = Vec::new();
    for dir in &dirs {
        let (rules, want) = &expected[dir];
        match &actual[dir] {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!(
                "{}\nrules:\n{rules}\nonly in the translation: {:?}\nonly in dyngroups: {:?}",
                dir.display(),
                got.difference(want).collect::<Vec<_>>(),
                want.difference(got).collect::<Vec<_>>()
            )),
            Err(error) => failures.push(format!(
                "{}\nrules:\n{rules}\nthe engine failed: {error}",
                dir.display()
            )),
        }
    }
    if !failures.is_empty() {
        let kept = root.keep();
        panic!(
            "{} of {} cases disagree (kept in {}):\n\n{}",
            failures.len(),
            dirs.len(),
            kept.display(),
            failures.iter().take(3).cloned().collect::<Vec<_>>().join("\n\n")
        );
    }
}

/// DuckDB, from PyPI (`.ci/run` installs it and sets
/// `DYNGROUPS_REQUIRE_DUCKDB`); elsewhere the test is recorded as skipped.
#[test]
fn duckdb_agrees_with_the_engine() {
    if tool_present(
        has_python_module("duckdb"),
        "sql::duckdb_agrees_with_the_engine",
        "DYNGROUPS_REQUIRE_DUCKDB",
        "python3 with duckdb",
    ) {
        differential(Translation::Sql(Dialect::DuckDb), "duckdb_members.py", cases(400), 1);
        differential(Translation::Groups(Dialect::DuckDb), "duckdb_members.py", cases(100), 6);
    }
}

/// The changes query (`dyngroups sql --changes`) gives in DuckDB the rows
/// `run --diff-out` writes, against a previous run's members that include
/// groups the rules no longer have.
#[test]
fn duckdb_changes_agree_with_the_engine() {
    if tool_present(
        has_python_module("duckdb"),
        "sql::duckdb_changes_agree_with_the_engine",
        "DYNGROUPS_REQUIRE_DUCKDB",
        "python3 with duckdb",
    ) {
        differential(
            Translation::Changes(Dialect::DuckDb),
            "duckdb_members.py",
            cases(200),
            4,
        );
    }
}

/// Polars, from PyPI (`.ci/run` installs it and sets
/// `DYNGROUPS_REQUIRE_POLARS`); elsewhere the test is recorded as skipped.
#[test]
fn polars_agrees_with_the_engine() {
    if tool_present(
        has_python_module("polars"),
        "sql::polars_agrees_with_the_engine",
        "DYNGROUPS_REQUIRE_POLARS",
        "python3 with polars",
    ) {
        differential(Translation::Polars, "polars_members.py", cases(400), 3);
    }
}

/// PostgreSQL through `psql`, on the server `.ci/run` installs and starts
/// (it sets `DYNGROUPS_REQUIRE_POSTGRES`); elsewhere the test is recorded as skipped.
#[test]
fn postgres_agrees_with_the_engine() {
    let what = "a PostgreSQL server reachable by `psql -d postgres`, and python3 with duckdb,";
    let test = "sql::postgres_agrees_with_the_engine";
    if tool_present(postgres_reachable(), test, "DYNGROUPS_REQUIRE_POSTGRES", what) {
        differential(Translation::Sql(Dialect::Postgres), "postgres_members.py", cases(60), 2);
        differential(
            Translation::Changes(Dialect::Postgres),
            "postgres_members.py",
            cases(30),
            5,
        );
        differential(
            Translation::Groups(Dialect::Postgres),
            "postgres_members.py",
            cases(20),
            7,
        );
    }
}

/// Apache Spark in local mode, through pyspark (`.ci/run` installs it and
/// a Java runtime, and sets `DYNGROUPS_REQUIRE_SPARK`); elsewhere the test
/// is recorded as skipped. Spark is slow to start and to plan, so every
/// translation's cases go to one Spark session.
#[test]
fn spark_agrees_with_the_engine() {
    if tool_present(
        has_python_module("pyspark"),
        "sql::spark_agrees_with_the_engine",
        "DYNGROUPS_REQUIRE_SPARK",
        "python3 with pyspark, and Java",
    ) {
        differential_many(
            &[
                (Translation::Sql(Dialect::Spark), cases(40), 8),
                (Translation::Changes(Dialect::Spark), cases(20), 9),
                (Translation::Groups(Dialect::Spark), cases(10), 10),
            ],
            "spark_members.py",
        );
    }
}

/// ClickHouse, embedded through chDB from PyPI (`.ci/run` installs it and
/// sets `DYNGROUPS_REQUIRE_CHDB`); elsewhere the test is recorded as skipped.
#[test]
fn clickhouse_agrees_with_the_engine() {
    if tool_present(
        has_python_module("chdb"),
        "sql::clickhouse_agrees_with_the_engine",
        "DYNGROUPS_REQUIRE_CHDB",
        "python3 with chdb",
    ) {
        differential_many(
            &[
                (Translation::Sql(Dialect::ClickHouse), cases(200), 11),
                (Translation::Changes(Dialect::ClickHouse), cases(100), 12),
                (Translation::Groups(Dialect::ClickHouse), cases(50), 13),
            ],
            "chdb_members.py",
        );
    }
}

/// Text that would end a literal, start a comment or a second statement
/// in a careless translation stays text: the queries run and match exactly
/// the users holding that text.
#[test]
fn hostile_text_stays_text() {
    const HOSTILE: &[&str] = &[
        "'; DROP TABLE users; --",
        "\\'; DROP TABLE users; --",
        "' OR '1'='1",
        "$$; DROP TABLE users; $$",
        "*/ OR 1=1 /*",
        "\\",
        "\"",
        "`group`",
        "line\nbreak",
        "😀 İ",
    ];
    let mut tables = Case::hostile_tables(HOSTILE);
    tables.user_ids = (1..=HOSTILE.len() as u32).collect();
    let quote = |s: &str| dyngroups::ast::quote(s);
    let mut rules = String::new();
    for (i, text) in HOSTILE.iter().enumerate() {
        rules.push_str(&format!(
            "group h{i} {{ name == {q} or dept contains {q} or name starts_with {q} or name ends_with {q} or name in [{q}, \"x\"] }}\n",
            q = quote(text)
        ));
    }
    let case = Case {
        tables,
        rules: dyngroups::parse_rules(&rules).unwrap(),
        previous: BTreeMap::new(),
        max_columns: None,
    };
    let expected = every_translation_agrees(&case);
    for i in 0..HOSTILE.len() {
        assert!(
            expected.contains(&(format!("h{i}"), i as u32 + 1)),
            "each group holds its user"
        );
    }
}

/// `true` and `false` inside `enrollment(...)` hold for every row or for
/// none: counted, they count rows, not one per user.
#[test]
fn constant_enrollment_conditions_count_rows() {
    let mut case = generated(1, 5).remove(0);
    let rules = "group any_two { count(enrollment(true)) >= 2 }\n\
                 group not_none { count(enrollment(not false)) >= 2 }\n\
                 group never { enrollment(false) }\n";
    case.rules = dyngroups::parse_rules(rules).unwrap();
    let expected = every_translation_agrees(&case);
    assert!(
        expected.iter().any(|(group, _)| group == "any_two"),
        "someone has two rows"
    );
}

#[test]
fn enrollment_tests_past_one_word_read_their_own_bits() {
    // 70 distinct any-row conditions fill two words of 63 bits (and, with
    // the case's narrow width, several summaries); the counts of three
    // conditions are compared with four numbers.
    let mut case = generated(1, 21).remove(0);
    let courses = ["C1", "C2", "Ç3"];
    let rules: String = (0..70u32)
        .map(|i| {
            let course = courses[i as usize % 3];
            let grade = f64::from(i / 3) / 2.0 - 1.5;
            format!(
                "group e{i} {{ enrollment(course == \"{course}\" and grade >= {grade}) or count(enrollment(course == \"{course}\")) == {} }}\n",
                i % 4
            )
        })
        .collect();
    case.rules = dyngroups::parse_rules(&rules).unwrap();
    let expected = every_translation_agrees(&case);
    let sizes: BTreeSet<usize> = (0..70)
        .map(|i| expected.iter().filter(|(g, _)| *g == format!("e{i}")).count())
        .collect();
    assert!(sizes.len() >= 4, "groups of different sizes: {sizes:?}");
}

/// Runs `case` through every translation whose engine is at hand, each of
/// which must commit what the engine commits; returns that.
fn every_translation_agrees(case: &Case) -> BTreeSet<(String, u32)> {
    let mut engine = None;
    for (translation, script, available) in [
        (
            Translation::Sql(Dialect::DuckDb),
            "duckdb_members.py",
            has_python_module("duckdb"),
        ),
        (
            Translation::Sql(Dialect::Postgres),
            "postgres_members.py",
            postgres_reachable(),
        ),
        (
            Translation::Sql(Dialect::Spark),
            "spark_members.py",
            has_python_module("pyspark"),
        ),
        (
            Translation::Sql(Dialect::ClickHouse),
            "chdb_members.py",
            has_python_module("chdb"),
        ),
        (Translation::Polars, "polars_members.py", has_python_module("polars")),
    ] {
        if !available {
            continue;
        }
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("case");
        let (_, expected) = prepare(case, translation, &dir);
        let actual = run_engine(script, std::slice::from_ref(&dir));
        assert_eq!(actual[&dir].as_ref().unwrap(), &expected, "{translation:?}");
        engine = Some(expected);
    }
    engine.unwrap_or_else(|| {
        let root = tempfile::tempdir().unwrap();
        prepare(case, Translation::Sql(Dialect::DuckDb), &root.path().join("case")).1
    })
}
