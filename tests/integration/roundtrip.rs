//! The printer writes the canonical form: parsing it gives the same tree.

use crate::generate::{any_expr, any_rules_file};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn printed_files_parse_back_to_the_same_tree(file in any_rules_file()) {
        let text = file.to_string();
        let parsed = dyngroups::parse_rules(&text).map_err(|e| TestCaseError::fail(format!("{text}\n{}", e.0.message)))?;
        prop_assert_eq!(&parsed, &file, "text:\n{}", text);
        // Canonical: printing again changes nothing.
        prop_assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn printed_expressions_parse_back_to_the_same_tree(expr in any_expr()) {
        let text = expr.to_string();
        let parsed = dyngroups::parse_expr(&text).map_err(|e| TestCaseError::fail(format!("{text}\n{}", e.0.message)))?;
        prop_assert_eq!(parsed, expr, "text: {}", text);
    }
}

#[test]
fn canonical_form_normalises_spelling() {
    let file = dyngroups::parse_rules(
        "group  a  \"A\"  draft {x = 1 # note\n}\ngroup b{ not(p or q) and field(\"Cost Center\") = \"x\" include[1,2,] }",
    )
    .unwrap();
    assert_eq!(
        file.to_string(),
        "group a \"A\" draft {\n    x == 1\n}\n\ngroup b {\n    not (p or q) and field(\"Cost Center\") == \"x\"\n    include [1, 2]\n}\n"
    );
}
