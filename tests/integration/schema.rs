//! The schema the front-end tests check rules against: the columns an HR or
//! learning platform export typically has.

use dyngroups::schema::{Schema, TableSchema, ValueType};

pub fn admin_schema() -> Schema {
    Schema {
        users: TableSchema::new([
            ("user_id", ValueType::Number),
            ("email", ValueType::Text),
            ("department", ValueType::Text),
            ("grade", ValueType::Number),
            ("start_date", ValueType::Date),
            ("is_manager", ValueType::Boolean),
            ("branch", ValueType::Text),
            ("status", ValueType::Text),
            ("country", ValueType::Text),
            ("x", ValueType::Text),
        ]),
        enrollments: Some(TableSchema::new([
            ("user_id", ValueType::Number),
            ("course", ValueType::Text),
            ("status", ValueType::Text),
            ("score", ValueType::Number),
            ("completed_at", ValueType::Date),
        ])),
        branches: Some(
            ["HQ", "EMEA", "EMEA-PT", "AMER"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
        static_groups: Some(["works_council".to_string()].into_iter().collect()),
    }
}
