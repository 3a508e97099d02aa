//! No input makes the front end panic or overflow its stack.

use proptest::prelude::*;

use crate::schema::admin_schema as schema;

fn parse_and_check(text: &str) {
    let as_of = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    if let Ok(file) = dyngroups::parse_rules(text) {
        let _ = dyngroups::check_without_data(&file, as_of);
        let _ = dyngroups::check(&file, &schema(), as_of);
    }
    let _ = dyngroups::parse_expr(text);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        parse_and_check(&text);
    }

    #[test]
    fn near_miss_rules_never_panic(
        parts in prop::collection::vec(prop::sample::select(vec![
            "group", "g", "{", "}", "(", ")", "[", "]", "\"x\"", "\"", "and", "or", "not", "==", "=>", "&&",
            "department", "grade", "5", "-1.5", "2024-02-30", "today", "-", "30d", "in", "is", "empty",
            "enrollment(", "count(", "completed(", "member_of(", "in_branch(", "matches", "\"(\"", "\\u{D800}",
            ",", "include", "exclude", "field(", "#", "\n", "draft", "9999999999999",
        ]), 0..40)
    ) {
        parse_and_check(&parts.join(" "));
    }
}

fn depth_error(text: &str) -> String {
    let error = dyngroups::parse_rules(text).expect_err("too deep");
    error.0.message
}

#[test]
fn hundred_thousand_parentheses_give_the_depth_error() {
    let deep = format!("group g {{ {}x{} }}", "(".repeat(100_000), ")".repeat(100_000));
    assert_eq!(depth_error(&deep), "the rule nests deeper than 256 levels");
}

#[test]
fn hundred_thousand_nots_give_the_depth_error() {
    let deep = format!("group g {{ {}x }}", "not ".repeat(100_000));
    assert_eq!(depth_error(&deep), "the rule nests deeper than 256 levels");
}

#[test]
fn nested_enrollments_and_mixed_nesting_give_the_depth_error() {
    let deep = format!("group g {{ {}x{} }}", "enrollment(".repeat(300), ")".repeat(300));
    assert_eq!(depth_error(&deep), "the rule nests deeper than 256 levels");
    let mixed = format!("group g {{ {}x{} }}", "not (".repeat(200), ")".repeat(200));
    assert_eq!(depth_error(&mixed), "the rule nests deeper than 256 levels");
}

#[test]
fn nesting_at_the_limit_is_fine() {
    let ok = format!(
        "group g {{ {}department == \"x\"{} }}",
        "(".repeat(255),
        ")".repeat(255)
    );
    let file = dyngroups::parse_rules(&ok).unwrap();
    let as_of = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    assert!(dyngroups::check(&file, &schema(), as_of).is_ok());
}

#[test]
fn long_flat_rules_and_long_member_of_chains_are_fine() {
    let wide = format!("group g {{ {} }}", vec!["grade > 1"; 5_000].join(" or "));
    assert!(dyngroups::parse_rules(&wide).is_ok());
    let chain: String = (0..20_000)
        .map(|i| format!("group g{i} {{ member_of(g{}) }}\n", i + 1))
        .collect::<String>()
        + "group g20000 { true }";
    let file = dyngroups::parse_rules(&chain).unwrap();
    let as_of = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    let checked = dyngroups::check(&file, &schema(), as_of).unwrap();
    assert_eq!(checked.rules.evaluation_order.first(), Some(&20_000));
}
