//! Arbitrary text through parse, check (with and without a schema) and the
//! printer: nothing may panic, and whatever parses must print to text that
//! parses to the same tree.
#![no_main]

use dyngroups::schema::{Schema, TableSchema, ValueType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let as_of = chrono::NaiveDate::from_ymd_opt(2026, 1, 31).unwrap();
    let _ = dyngroups::parse_expr(text);
    let Ok(file) = dyngroups::parse_rules(text) else { return };
    let printed = file.to_string();
    let reparsed = dyngroups::parse_rules(&printed).expect("printed rules parse");
    assert_eq!(reparsed, file, "{printed}");
    let _ = dyngroups::check_without_data(&file, as_of);
    let schema = Schema {
        users: TableSchema::new([
            ("user_id", ValueType::Number),
            ("department", ValueType::Text),
            ("grade", ValueType::Number),
            ("start_date", ValueType::Date),
            ("is_manager", ValueType::Boolean),
            ("branch", ValueType::Text),
        ]),
        enrollments: Some(TableSchema::new([
            ("user_id", ValueType::Number),
            ("course", ValueType::Text),
            ("status", ValueType::Text),
        ])),
        branches: Some(["HQ".to_string(), "EMEA".to_string()].into_iter().collect()),
        static_groups: Some(["staff".to_string()].into_iter().collect()),
    };
    let _ = dyngroups::check(&file, &schema, as_of);
});
