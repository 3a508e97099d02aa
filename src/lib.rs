//! dyngroups: a rule engine for dynamic user groups.
//!
//! Admins write conditions ("everyone who completed course DSF-101"); dyngroups
//! turns them into the exact members of every group, and the add/remove
//! changes since the last run. The stages, in order:
//!
//! text → [`ast::RulesFile`] ([`parse`]) → [`checked::CheckedRules`]
//! ([`check()`], against a [`schema::Schema`]) → memberships.
//!
//! ```
//! use dyngroups::{parse_rules, check, schema::{Schema, TableSchema, ValueType}};
//!
//! let file = parse_rules(r#"group sales "Sales" { department == "sales" }"#).unwrap();
//! let schema = Schema {
//!     users: TableSchema::new([("user_id", ValueType::Number), ("department", ValueType::Text)]),
//!     ..Schema::default()
//! };
//! let as_of = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
//! let checked = check(&file, &schema, as_of).unwrap();
//! assert_eq!(checked.rules.groups[0].name, "Sales");
//! ```

pub mod ast;
pub mod check;
pub mod checked;
pub mod data;
pub mod dataset;
pub mod diagnostic;
pub mod diff;
pub mod eval;
pub mod explain;
pub mod export;
pub(crate) mod faults;
pub mod import;
pub mod limits;
pub mod output;
pub mod parse;
pub mod polars;
pub mod schema;
pub mod scim;
pub mod session;
pub mod source;
pub mod sql;
pub mod state;
pub(crate) mod suggest;
pub mod synth;

pub use check::{CheckErrors, Checked, check, check_without_data};
pub use diagnostic::{Diagnostic, Severity};
pub use parse::{ParseError, parse_expr, parse_rules};
pub use source::{SourceFile, Span, Spanned};
