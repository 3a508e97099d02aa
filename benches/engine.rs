//! What's measured: the stages of a run on a generated population —
//! parse+check of many rules, evaluation of 100 rules of each rule family,
//! a full evaluation of a mixed rules file, the diff of that evaluation
//! against the one a month earlier, and committing it to the state (first
//! commit, and the month-later commit on top of it). Data loading is done
//! once, outside the timings.
//!
//! Run with: `cargo bench --bench engine` (users: `DYNGROUPS_BENCH_USERS`,
//! default 200,000; rules for the full run: `DYNGROUPS_BENCH_RULES`, default
//! 1,000). Figures are medians; compare runs made in the same session.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dyngroups::dataset::{InputPaths, OpenInputs};
use dyngroups::state::{GroupToCommit, State};
use dyngroups::synth::{FAMILIES, Shape, SynthSpec, family_rules, generate, rules};
use std::hint::black_box;
use std::sync::Arc;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn as_of() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap()
}

fn spec(users: u32, rules: usize) -> SynthSpec {
    SynthSpec {
        users,
        seed: 42,
        rules,
        as_of: as_of(),
        shape: Shape::default(),
    }
}

fn benches(c: &mut Criterion) {
    let users = env_number("DYNGROUPS_BENCH_USERS", 200_000) as u32;
    let rule_count = env_number("DYNGROUPS_BENCH_RULES", 1_000);
    let dir = tempfile::tempdir().unwrap();
    generate(&spec(users, 0), dir.path()).unwrap();
    let paths = InputPaths {
        users: dir.path().join("users.parquet"),
        enrollments: Some(dir.path().join("enrollments.parquet")),
        org: Some(dir.path().join("org.parquet")),
        memberships: None,
        ..InputPaths::default()
    };

    let mut group = c.benchmark_group("parse_check");
    for n in [1_000, 15_000] {
        let text = rules(&spec(users, n));
        let schema = OpenInputs::open(&paths).unwrap().schema();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &text, |b, text| {
            b.iter(|| {
                let file = dyngroups::parse_rules(black_box(text)).unwrap();
                dyngroups::check(&file, &schema, as_of()).unwrap()
            })
        });
    }
    group.finish();

    let mut evaluate = |name: &str, text: String, sample_size: usize| {
        let inputs = OpenInputs::open(&paths).unwrap();
        let file = dyngroups::parse_rules(&text).unwrap();
        let checked = dyngroups::check(&file, &inputs.schema(), as_of()).unwrap().rules;
        let data = inputs.load(&checked).unwrap();
        let mut group = c.benchmark_group("evaluate");
        group.sample_size(sample_size);
        group.throughput(Throughput::Elements(u64::from(users)));
        group.bench_function(BenchmarkId::new(name, users), |b| {
            b.iter(|| dyngroups::eval::evaluate(black_box(&checked), &data, None))
        });
        group.finish();
    };
    for (family, name) in FAMILIES.iter().enumerate() {
        evaluate(
            &format!("family_{name}_x100"),
            family_rules(&spec(users, 100), family),
            10,
        );
    }
    evaluate(&format!("mixed_x{rule_count}"), rules(&spec(users, rule_count)), 10);
    diff_and_commit(c, &paths, users, rule_count);
}

/// The same rules evaluated as of a month earlier and as of today: the
/// relative-date rules move, the rest stays, as between two real runs.
fn diff_and_commit(c: &mut Criterion, paths: &InputPaths, users: u32, rule_count: usize) {
    use roaring::RoaringBitmap;
    let text = rules(&spec(users, rule_count));
    let file = dyngroups::parse_rules(&text).unwrap();
    let month_earlier = as_of() - chrono::Months::new(1);
    let members_as_of = |day| -> Vec<(String, RoaringBitmap)> {
        let inputs = OpenInputs::open(paths).unwrap();
        let checked = dyngroups::check(&file, &inputs.schema(), day).unwrap().rules;
        let data = inputs.load(&checked).unwrap();
        dyngroups::eval::evaluate(&checked, &data, None)
            .groups
            .into_iter()
            .map(|g| (g.key, Arc::unwrap_or_clone(g.members)))
            .collect()
    };
    let before = members_as_of(month_earlier);
    let after = members_as_of(as_of());
    let keys: Vec<String> = before.iter().map(|(k, _)| k.clone()).collect();
    let before_of: std::collections::HashMap<&str, &RoaringBitmap> =
        before.iter().map(|(k, m)| (k.as_str(), m)).collect();
    let after_refs: Vec<(&str, &RoaringBitmap)> = after.iter().map(|(k, m)| (k.as_str(), m)).collect();

    let mut group = c.benchmark_group("diff");
    group.sample_size(10);
    group.bench_function(BenchmarkId::new(format!("month_x{rule_count}"), users), |b| {
        b.iter(|| {
            dyngroups::diff::changes::<std::convert::Infallible>(
                &keys,
                |key| Ok(before_of[key].clone()),
                black_box(&after_refs),
            )
            .unwrap()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("state_commit");
    group.sample_size(10);
    group.bench_function(BenchmarkId::new(format!("first_x{rule_count}"), users), |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                let state = State::open_or_create(dir.path()).unwrap();
                commit(&state, &before, month_earlier);
                dir
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.bench_function(BenchmarkId::new(format!("month_later_x{rule_count}"), users), |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                commit(&State::open_or_create(dir.path()).unwrap(), &before, month_earlier);
                dir
            },
            |dir| {
                let state = State::open_or_create(dir.path()).unwrap();
                commit(&state, &after, as_of());
                dir
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// Commits `groups` as they are, as of `day`: each diffed against the last
/// run and stored, then the run committed.
fn commit(state: &State, groups: &[(String, roaring::RoaringBitmap)], day: chrono::NaiveDate) {
    let groups: Vec<GroupToCommit> = groups
        .iter()
        .map(|(key, members)| GroupToCommit::active(key, members))
        .collect();
    let mut run = state.begin_run(false).unwrap();
    run.add(&groups).unwrap();
    run.commit(&day.to_string(), Vec::new(), 10).unwrap();
}

criterion_group!(engine, benches);
criterion_main!(engine);
