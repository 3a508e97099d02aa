//! Every example of the language spec parses and checks. The spec's example
//! file is copied in tests/fixtures/spec_example.rules; when the spec itself
//! is beside the repository (as in CI), its code blocks are read directly.

use crate::schema::admin_schema as schema;

fn check_file(text: &str) {
    let file = dyngroups::parse_rules(text).unwrap_or_else(|e| panic!("{text}\n{}", e.0.message));
    let as_of = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
    dyngroups::check(&file, &schema(), as_of).unwrap_or_else(|e| panic!("{text}\n{:?}", e.errors));
}

#[test]
fn the_spec_example_file_checks() {
    check_file(include_str!("../fixtures/spec_example.rules"));
}

#[test]
fn the_spec_code_blocks_check_when_the_spec_is_present() {
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/spec/RULES.md");
    let Ok(text) = std::fs::read_to_string(spec) else {
        crate::skips::skipped(
            "spec::the_spec_code_blocks_check_when_the_spec_is_present",
            "needs the language contract beside the repository (its fixture copy is tested instead)",
        );
        return;
    };
    let blocks: Vec<&str> = text
        .split("```")
        .skip(1)
        .step_by(2)
        .filter(|b| b.contains("group "))
        .collect();
    assert!(!blocks.is_empty());
    for block in blocks {
        check_file(block);
    }
}

#[test]
fn the_spec_expression_examples_parse() {
    for expr in [
        r#"department != "Sales""#,
        r#"department is not empty and department != "Sales""#,
        r#"x == """#,
        r#"start_date >= today - 90d and status == "active""#,
        r#"department == "Sales" and in_branch("EMEA")"#,
        r#"grade == "5""#,
        r#"enrollment()"#,
        r#"count(enrollment(course == "C")) >= 2"#,
        r#"field("Start Date") = 2024-01-31"#,
        r#"x == "\"\\\n\t\u{1F600}""#,
    ] {
        dyngroups::parse_expr(expr).unwrap_or_else(|e| panic!("{expr}: {}", e.0.message));
    }
}
