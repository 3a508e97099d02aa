//! Diagnostics for mistakes admins really make, snapshot-tested as rendered:
//! file:line:col, the source line, a caret under the span, and a help text.

use dyngroups::SourceFile;
use dyngroups::diagnostic::render_all;

use crate::schema::admin_schema as schema;

/// Everything an admin would see for `text`: the syntax error, or every
/// check error and warning.
fn report(text: &str) -> String {
    let source = SourceFile::new("groups.rules", text);
    let file = match dyngroups::parse_rules(text) {
        Ok(file) => file,
        Err(e) => return e.0.render(&source),
    };
    let as_of = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
    match dyngroups::check(&file, &schema(), as_of) {
        Ok(checked) if checked.warnings.is_empty() => "no errors".to_string(),
        Ok(checked) => render_all(&checked.warnings, &source),
        Err(e) => render_all(&e.errors, &source),
    }
}

/// One snapshot per mistake, named for it.
macro_rules! mistakes {
    ($($name:ident: $text:expr;)*) => {
        $(
            #[test]
            fn $name() {
                insta::assert_snapshot!(stringify!($name), report($text));
            }
        )*
    };
}

mistakes! {
    typo_in_field_name: "group sales {\n    departmnt == \"Sales\"\n}\n";
    number_compared_with_text: "group seniors {\n    grade == \"5\"\n}\n";
    date_in_quotes: "group recent {\n    start_date >= \"2024-01-01\"\n}\n";
    text_compared_with_number: "group d {\n    department == 5\n}\n";
    contains_on_a_date: "group d {\n    start_date contains \"2024\"\n}\n";
    contains_on_a_number: "group d {\n    grade contains \"5\"\n}\n";
    unknown_branch: "group emea {\n    in_branch(\"EMAE\")\n}\n";
    missing_closing_quote: "group sales {\n    department == \"Sales\n}\n";
    double_ampersand: "group s {\n    department == \"Sales\" && grade > 3\n}\n";
    double_pipe: "group s {\n    department == \"Sales\" || grade > 3\n}\n";
    arrow_instead_of_greater_equal: "group s {\n    grade => 5\n}\n";
    not_equal_as_angle_brackets: "group s {\n    grade <> 5\n}\n";
    bang_instead_of_not: "group s {\n    !is_manager\n}\n";
    uppercase_keyword: "group s {\n    department == \"Sales\" AND grade > 3\n}\n";
    unclosed_parenthesis: "group s {\n    (department == \"Sales\" and grade > 3\n}\n";
    extra_closing_parenthesis: "group s {\n    department == \"Sales\")\n}\n";
    missing_closing_brace: "group s {\n    department == \"Sales\"\n";
    duplicate_group_key: "group sales { department == \"Sales\" }\ngroup sales { grade > 3 }\n";
    keys_differing_only_in_case: "group sales { department == \"Sales\" }\ngroup Sales { grade > 3 }\n";
    member_of_cycle: "group a { member_of(b) }\ngroup b { member_of(c) }\ngroup c { member_of(a) }\n";
    unknown_member_of_key: "group a { member_of(work_council) }\n";
    enrollment_column_outside_enrollment: "group a {\n    course == \"DSF-101\"\n}\n";
    user_column_inside_enrollment: "group a {\n    enrollment(department == \"Sales\" and course == \"DSF-101\")\n}\n";
    unknown_enrollment_column: "group a {\n    enrollment(scor > 50)\n}\n";
    bare_text_field: "group a {\n    department\n}\n";
    ordering_a_boolean: "group a {\n    is_manager > false\n}\n";
    invalid_date: "group a {\n    start_date >= 2024-02-30\n}\n";
    invalid_regex: "group a {\n    email matches \"(acme\"\n}\n";
    empty_list: "group a {\n    country in []\n}\n";
    list_with_wrong_type: "group a {\n    country in [\"PT\", 5]\n}\n";
    in_on_a_boolean: "group a {\n    is_manager in [true]\n}\n";
    fractional_count: "group a {\n    count(enrollment()) >= 1.5\n}\n";
    in_branch_inside_enrollment: "group a {\n    enrollment(in_branch(\"EMEA\"))\n}\n";
    member_of_a_draft: "group pilot draft { grade > 3 }\ngroup live { member_of(pilot) }\n";
    two_include_lists: "group a {\n    grade > 3\n    include [1]\n    include [2]\n}\n";
    user_id_out_of_range: "group a {\n    grade > 3\n    exclude [4294967296]\n}\n";
    empty_display_name: "group a \"\" { grade > 3 }\n";
    nesting_too_deep: &format!("group a {{\n    {}grade > 3{}\n}}\n", "(".repeat(300), ")".repeat(300));
    bad_unicode_escape: "group a {\n    email == \"\\u{D800}\"\n}\n";
    keyword_as_a_field_name: "group a {\n    in == \"x\"\n}\n";
    missing_value: "group a {\n    grade >= \n}\n";
    every_error_of_a_file_at_once: "group a {\n    departmnt == \"Sales\" and grade == \"5\"\n}\ngroup b {\n    in_branch(\"EMAE\") or member_of(c)\n}\n";
}
