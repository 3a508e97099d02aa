//! The engine against the reference evaluator, on random rules and data.

use crate::generate::{Tables, as_of, tables, typed_rules};
use crate::reference;
use dyngroups::ast::RulesFile;
use dyngroups::eval::{dependency_closure, evaluate};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// Cases per property: `PROPTEST_CASES` if set (long local runs), else a
/// number that keeps the normal test run short.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default)
}

fn case() -> impl Strategy<Value = (Tables, RulesFile)> {
    tables().prop_flat_map(|t| {
        let ids = t.user_ids.clone();
        (Just(t), typed_rules(ids))
    })
}

/// Rules go through the printer and the parser too, as an admin's file would.
fn run_both(tables: &Tables, file: &RulesFile) -> (BTreeMap<String, BTreeSet<u32>>, BTreeMap<String, BTreeSet<u32>>) {
    let text = file.to_string();
    let parsed = dyngroups::parse_rules(&text).unwrap_or_else(|e| panic!("{text}\n{e:?}"));
    let inputs = tables.open();
    let checked =
        dyngroups::check(&parsed, &inputs.schema(), as_of()).unwrap_or_else(|e| panic!("{text}\n{:?}", e.errors));
    let data = inputs.load(&checked.rules).unwrap();
    let members = |data: &dyngroups::dataset::Dataset| -> BTreeMap<String, BTreeSet<u32>> {
        evaluate(&checked.rules, data, None)
            .groups
            .into_iter()
            .map(|g| (g.key, g.members.iter().collect()))
            .collect()
    };
    let engine = members(&data);
    // With the indexes an interactive session builds at load (postings,
    // sorted values, users by pair of enrollment values), the same members.
    let indexed = tables.open().load(&checked.rules).unwrap();
    indexed.build_indexes();
    assert_eq!(members(&indexed), engine, "with the session's indexes:\n{text}");
    (engine, reference::members(&checked.rules, &data))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(3000)))]

    /// Rows load in the order of their user ids, whatever the file's
    /// order: each user keeps every cell of its row, and each enrollment
    /// its user. The reference evaluator reads the loaded rows, so this is
    /// what ties it to the file.
    #[test]
    fn loaded_rows_keep_their_cells_in_user_id_order((tables, _) in case()) {
        let data = tables.open().load_all(&BTreeSet::new()).unwrap();
        let mut sorted = tables.user_ids.clone();
        sorted.sort_unstable();
        prop_assert_eq!(&data.user_ids, &sorted);
        for (file_row, &id) in tables.user_ids.iter().enumerate() {
            let row = data.row_of(id).unwrap() as usize;
            for (index, (name, column)) in tables.users.iter().enumerate() {
                prop_assert_eq!(data.users.column(index).cell_text(row), column.cell_text(file_row), "{} of {}", name, id);
            }
        }
        let enrollments = data.enrollments.as_ref().unwrap();
        let dyngroups::data::Column::Number(enrolled) = &tables.enrollments[0].1 else { unreachable!() };
        for (row, &user) in enrollments.user_rows.iter().enumerate() {
            let id = enrolled[row] as u32;
            let expected = data.row_of(id).unwrap_or(dyngroups::dataset::NO_USER);
            prop_assert_eq!(user, expected, "enrollment row {}", row);
        }
    }

    #[test]
    fn engine_equals_reference((tables, file) in case()) {
        let (engine, reference) = run_both(&tables, &file);
        prop_assert_eq!(engine, reference, "rules:\n{}", file);
    }

    #[test]
    fn selected_groups_equal_the_full_run((tables, file) in case(), pick in any::<prop::sample::Index>()) {
        let text = file.to_string();
        let parsed = dyngroups::parse_rules(&text).unwrap();
        let inputs = tables.open();
        let rules = dyngroups::check(&parsed, &inputs.schema(), as_of()).unwrap().rules;
        let data = inputs.load(&rules).unwrap();
        let full = evaluate(&rules, &data, None);
        let wanted = pick.index(rules.groups.len());
        let selected = dependency_closure(&rules, &[wanted]);
        let partial = evaluate(&rules, &data, Some(&selected));
        let key = &rules.groups[wanted].key;
        let find = |e: &dyngroups::eval::Evaluation| e.groups.iter().find(|g| &g.key == key).unwrap().members.clone();
        prop_assert_eq!(find(&partial), find(&full));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(1000)))]

    /// `explain` evaluates one user at a time, the engine whole columns:
    /// for every group and user they must agree.
    #[test]
    fn explain_agrees_with_the_engine((tables, file) in case()) {
        let text = file.to_string();
        let parsed = dyngroups::parse_rules(&text).unwrap();
        let inputs = tables.open();
        let rules = dyngroups::check(&parsed, &inputs.schema(), as_of()).unwrap().rules;
        let data = inputs.load(&rules).unwrap();
        let evaluation = evaluate(&rules, &data, None);
        for (g, group) in evaluation.groups.iter().enumerate() {
            for &user in &data.user_ids {
                let trace = dyngroups::explain::explain(&rules, &data, &evaluation, g, user, 0).unwrap();
                prop_assert_eq!(trace.member, group.members.contains(user), "group {} user {}\n{}\nrules:\n{}", group.key, user, trace.render(), file);
            }
        }
    }
}

/// Hand-written cases from spec §3, each a rule and the expected members.
#[test]
fn spec_meaning_table() {
    let tables = fixed_tables();
    let cases: &[(&str, &[u32])] = &[
        // 1. Text ignores case; `<` compares lowercased bytes.
        (r#"dept == "SALES""#, &[1, 2]),
        (r#"dept < "f""#, &[3, 4]),
        // 2. Missing values never compare; "" is a value; is empty covers both.
        (r#"dept == """#, &[4]),
        (r#"dept is empty"#, &[4, 5]),
        (r#"score >= 0"#, &[1, 2, 3]),
        (r#"score is empty"#, &[4, 5]),
        // 3. Negations are complements, missing values included.
        (r#"dept != "sales""#, &[3, 4, 5]),
        (r#"not (score >= 0)"#, &[4, 5]),
        (r#"dept not in ["sales", "eng"]"#, &[4, 5]),
        // `or` with negated operands is the complement of an `and`.
        (r#"not (dept == "sales") or active"#, &[1, 3, 4, 5]),
        (r#"not (score >= 0) or not (dept == "eng")"#, &[1, 2, 4, 5]),
        (r#"not (score >= 0) or not (score is empty)"#, &[1, 2, 3, 4, 5]),
        (
            r#"not (score >= 1) or not (dept == "sales") or score >= 2"#,
            &[2, 3, 4, 5],
        ),
        (
            r#"not (score >= 1 or active) or (dept == "sales" and not active)"#,
            &[2, 4, 5],
        ),
        // 4. Enrollments: existence, counts with zero, unknown users ignored.
        (r#"completed("C1")"#, &[1]),
        (r#"count(enrollment()) == 0"#, &[3, 4, 5]),
        (r#"count(enrollment(status == "completed")) >= 1"#, &[1]),
        // 5. Org tree with descendants, codes ignoring case.
        (r#"in_branch("emea")"#, &[1, 2]),
        // Bare booleans and their complement.
        (r#"active"#, &[1]),
        (r#"not active"#, &[2, 3, 4, 5]),
        // Unicode lowercase: İ lowercases to "i̇", so "i" is a prefix.
        (r#"name starts_with "i""#, &[2]),
        (r#"name matches "^İ""#, &[2]),
        (r#"name contains "ss""#, &[]),
        (r#"name contains "ß""#, &[3]),
    ];
    for (rule, expected) in cases {
        let file = dyngroups::parse_rules(&format!("group g {{ {rule} }}")).unwrap();
        let inputs = tables.open();
        let rules = dyngroups::check(&file, &inputs.schema(), as_of()).unwrap().rules;
        let data = inputs.load(&rules).unwrap();
        let members: Vec<u32> = evaluate(&rules, &data, None).groups[0].members.iter().collect();
        assert_eq!(&members, expected, "rule: {rule}");
        let reference: Vec<u32> = reference::members(&rules, &data)["g"].iter().copied().collect();
        assert_eq!(&reference, expected, "reference, rule: {rule}");
    }
}

/// `in` lists that are the same set, in any order and with repeats, are
/// one atom, evaluated once; lists that differ are not.
#[test]
fn in_lists_of_the_same_set_share_one_atom() {
    let tables = fixed_tables();
    let file = dyngroups::parse_rules(
        r#"group a { dept in ["sales", "eng"] }
           group b { dept in ["ENG", "sales", "eng"] }
           group c { dept in ["eng"] }"#,
    )
    .unwrap();
    let inputs = tables.open();
    let rules = dyngroups::check(&file, &inputs.schema(), as_of()).unwrap().rules;
    let data = inputs.load(&rules).unwrap();
    let evaluation = evaluate(&rules, &data, None);
    assert_eq!(
        (evaluation.summary.atom_uses, evaluation.summary.distinct_atoms),
        (3, 2)
    );
    let members = |g: usize| evaluation.groups[g].members.iter().collect::<Vec<u32>>();
    assert_eq!(
        (members(0), members(1), members(2)),
        (vec![1, 2, 3], vec![1, 2, 3], vec![3])
    );
}

/// The enrollments' `user_id` column is kept after load only when a rule
/// reads it, and a rule that does still sees it.
#[test]
fn enrollment_user_ids_are_kept_only_for_rules_that_read_them() {
    let tables = fixed_tables();
    let inputs = tables.open();
    let load = |text: &str| {
        let file = dyngroups::parse_rules(text).unwrap();
        let rules = dyngroups::check(&file, &inputs.schema(), as_of()).unwrap().rules;
        let data = tables.open().load(&rules).unwrap();
        let members = evaluate(&rules, &data, None).groups[0]
            .members
            .iter()
            .collect::<Vec<u32>>();
        let kept = data.enrollments.as_ref().unwrap().table.columns[0].is_some();
        (members, kept)
    };
    assert_eq!(load(r#"group a { enrollment(user_id >= 2) }"#), (vec![2], true));
    assert_eq!(load(r#"group a { enrollment(course == "c1") }"#), (vec![1, 2], false));
}

/// A column of many distinct values of which the rules name a few: the
/// rows of those values are gathered in one pass (no postings of every
/// value), and an equality, an `in` list and a value no row holds each
/// find exactly their users, across several blocks of 65,536 rows.
#[test]
fn few_named_values_of_many_find_their_rows() {
    use dyngroups::data::{Column, TextColumn};
    let users = 200_000u32;
    let course_of = |u: u32| (!(u * 7).is_multiple_of(400)).then(|| format!("Course-{}", u * 13 % 400));
    let mut tables = fixed_tables();
    tables.user_ids = (1..=users).collect();
    tables.users = vec![
        ("user_id".into(), Column::Number((1..=users).map(f64::from).collect())),
        (
            "course".into(),
            Column::Text((1..=users).map(course_of).collect::<TextColumn>()),
        ),
    ];
    let file = dyngroups::parse_rules(
        r#"group one { course == "course-7" }
           group some { course in ["COURSE-3", "course-399", "course-3"] or course == "none" }
           group none { course == "course-400" }"#,
    )
    .unwrap();
    let inputs = tables.open();
    let rules = dyngroups::check(&file, &inputs.schema(), as_of()).unwrap().rules;
    let data = inputs.load(&rules).unwrap();
    let evaluation = evaluate(&rules, &data, None);
    let holding = |values: &[&str]| -> Vec<u32> {
        (1..=users)
            .filter(|&u| course_of(u).is_some_and(|c| values.contains(&c.to_lowercase().as_str())))
            .collect()
    };
    let members = |g: usize| evaluation.groups[g].members.iter().collect::<Vec<u32>>();
    assert_eq!(members(0), holding(&["course-7"]));
    assert_eq!(members(1), holding(&["course-3", "course-399"]));
    assert!(!members(1).is_empty());
    assert_eq!(members(2), Vec::<u32>::new());
}

/// A group with the same rule as a group of an earlier batch (more than
/// 64 groups before it) takes that group's members, and `member_of` it
/// sees them; a group of the same rule with another status or an
/// `include` list is evaluated on its own. All agree with the reference.
#[test]
fn a_group_with_the_rule_of_an_earlier_batch_takes_its_members() {
    let tables = fixed_tables();
    let rule = r#"dept == "sales" or score >= 2"#;
    let fillers: String = (0..70).map(|i| format!("group f{i} {{ score >= {i} }}\n")).collect();
    // `again` differs from `first` only in the letter case of a literal.
    let text = format!(
        "group first {{ {rule} }}\n{fillers}\
         group again {{ dept == \"SALES\" or score >= 2 }}\n\
         group via {{ member_of(again) and not dept == \"eng\" }}\n\
         group frozen paused {{ {rule} }}\n\
         group listed {{ {rule} include [4] }}\n"
    );
    let file = dyngroups::parse_rules(&text).unwrap();
    let (engine, reference) = run_both(&tables, &file);
    assert_eq!(engine, reference);
    let expected = BTreeSet::from([1, 2, 3]);
    assert_eq!((&engine["first"], &engine["again"]), (&expected, &expected));
    assert_eq!(engine["via"], BTreeSet::from([1, 2]));
    assert_eq!(engine["listed"], BTreeSet::from([1, 2, 3, 4]));

    let inputs = tables.open();
    let rules = dyngroups::check(&file, &inputs.schema(), as_of()).unwrap().rules;
    let data = inputs.load(&rules).unwrap();
    let evaluation = evaluate(&rules, &data, None);
    let same_as: BTreeMap<&str, Option<usize>> = evaluation
        .groups
        .iter()
        .filter(|g| ["first", "again", "via", "frozen", "listed"].contains(&g.key.as_str()))
        .map(|g| (g.key.as_str(), g.same_members_as))
        .collect();
    assert_eq!(
        same_as,
        BTreeMap::from([
            ("first", None),
            ("again", Some(0)),
            ("via", None),
            ("frozen", None),
            ("listed", None)
        ])
    );
}

/// Enrollment conditions on a course column of too many values for
/// per-user counts, answered from the users of each (course, status) pair:
/// rows out of user order, unknown users, missing courses and statuses,
/// values in two letter cases, counts beyond "any", two tests on the
/// status, and a course atom also used by a condition on a number column.
/// All agree with the reference, and each group has some users but not all.
#[test]
fn enrollment_conditions_on_many_courses_agree_with_the_reference() {
    use dyngroups::data::{Column, TextColumn};
    let rows = 5_000u32;
    // A fixed scramble of the rows, so users come in no order.
    let user_of = |r: u32| (r * 7_919) % 311 + 1; // ids 301..=311 are unknown
    let mix = |r: u32| (r ^ (r >> 3)).wrapping_mul(2_654_435_761) >> 7;
    let course_of = |r: u32| match mix(r) % 43 {
        42 => None,
        c if c % 5 == 0 => Some(format!("COURSE-{c}")),
        c => Some(format!("course-{c}")),
    };
    let status_of = |r: u32| {
        ["completed", "Completed", "in_progress", "dropped"]
            .get((mix(r + 1) % 5) as usize)
            .copied()
    };
    let mut tables = fixed_tables();
    tables.user_ids = (1..=300).collect();
    tables.users = vec![("user_id".into(), Column::Number((1..=300).map(f64::from).collect()))];
    tables.enrollments = vec![
        (
            "user_id".into(),
            Column::Number((0..rows).map(|r| f64::from(user_of(r))).collect()),
        ),
        (
            "course".into(),
            Column::Text((0..rows).map(course_of).collect::<TextColumn>()),
        ),
        (
            "status".into(),
            Column::Text(
                (0..rows)
                    .map(|r| status_of(r).map(String::from))
                    .collect::<TextColumn>(),
            ),
        ),
        (
            "grade".into(),
            Column::Number((0..rows).map(|r| f64::from(r % 4)).collect()),
        ),
    ];
    let file = dyngroups::parse_rules(
        r#"group enrolled { enrolled("course-3") }
           group completed { completed("course-5") }
           group twice { count(enrollment(course == "course-10")) >= 2 }
           group never { count(enrollment(course == "course-10")) < 1 }
           group once_open { count(enrollment(course in ["course-1", "COURSE-20"] and status in ["in_progress", "dropped"])) == 1 }
           group two_on_status { enrollment(course == "course-7" and status in ["dropped", "completed"] and status in ["completed", "in_progress"]) }
           group prefix { count(enrollment(course starts_with "course-1")) >= 7 }
           group graded { enrollment(course == "course-9" and grade >= 2) }
           group nine { enrolled("course-9") or completed("course-41") }"#,
    )
    .unwrap();
    let (engine, reference) = run_both(&tables, &file);
    assert_eq!(engine, reference);
    for (key, members) in &engine {
        assert!(
            !members.is_empty() && members.len() < 300,
            "{key}: {} members",
            members.len()
        );
    }
}

fn fixed_tables() -> Tables {
    use dyngroups::data::{Column, TextColumn};
    let text = |v: &[Option<&str>]| Column::Text(v.iter().map(|s| s.map(String::from)).collect::<TextColumn>());
    Tables {
        user_ids: vec![1, 2, 3, 4, 5],
        users: vec![
            ("user_id".into(), Column::Number(vec![1.0, 2.0, 3.0, 4.0, 5.0])),
            (
                "dept".into(),
                text(&[Some("Sales"), Some("sAlEs"), Some("Eng"), Some(""), None]),
            ),
            (
                "name".into(),
                text(&[Some("Ana"), Some("İris"), Some("Straße"), None, Some("")]),
            ),
            (
                "branch".into(),
                text(&[Some("EMEA-PT"), Some("emea"), Some("AMER"), Some("nowhere"), None]),
            ),
            ("score".into(), Column::Number(vec![1.0, 0.0, 2.5, f64::NAN, f64::NAN])),
            (
                "active".into(),
                Column::Boolean(vec![Some(true), Some(false), None, Some(false), None]),
            ),
        ],
        enrollments: vec![
            ("user_id".into(), Column::Number(vec![1.0, 1.0, 2.0, 42.0])),
            ("course".into(), text(&[Some("c1"), Some("C2"), Some("C1"), Some("C1")])),
            (
                "status".into(),
                text(&[
                    Some("Completed"),
                    Some("in_progress"),
                    Some("completed "),
                    Some("completed"),
                ]),
            ),
        ],
        org: vec![
            (
                "branch".into(),
                text(&[Some("HQ"), Some("EMEA"), Some("EMEA-PT"), Some("AMER")]),
            ),
            ("parent".into(), text(&[None, Some("HQ"), Some("EMEA"), Some("HQ")])),
        ],
        memberships: vec![
            ("group".into(), text(&[Some("st")])),
            ("user_id".into(), Column::Number(vec![1.0])),
        ],
    }
}
