//! dyngroups: a rule engine for dynamic user groups.
//!
//! Admins write conditions ("everyone who completed course DSF-101"); dyngroups
//! turns them into the exact members of every group, and the add/remove
//! changes since the last run.
//!
//! A daily job is one call to [`run()`]: it checks the rules against the
//! data, loads the columns they use, evaluates every group, diffs each
//! against the last committed run in the state directory, guards against
//! mass removals, writes the outputs asked for and commits.
//!
//! ```
//! use dyngroups::dataset::InputPaths;
//! use dyngroups::state::State;
//! use dyngroups::{NaiveDate, RunOptions, run};
//!
//! # fn main() -> Result<(), dyngroups::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let dir = dir.path();
//! let rules = dir.join("groups.rules");
//! std::fs::write(&rules, r#"group sales "Sales" { department == "Sales" }"#).unwrap();
//! let users = dir.join("users.csv");
//! std::fs::write(&users, "user_id,department\n1,Sales\n2,Engineering\n3,Sales\n").unwrap();
//! let inputs = InputPaths { users: users.clone(), ..InputPaths::default() };
//! let as_of = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
//! let state = dir.join("state");
//!
//! // The first run adds every member.
//! let first = run(RunOptions::new(rules.clone(), inputs.clone(), as_of, state.clone()))?;
//! let sales = &first.changes.unwrap()[0];
//! assert_eq!((sales.key.as_str(), sales.added, sales.removed), ("sales", 2, 0));
//!
//! // The next day user 1 has left and user 2 moved to Sales.
//! std::fs::write(&users, "user_id,department\n2,Sales\n3,Sales\n").unwrap();
//! let next = run(RunOptions::new(rules, inputs, as_of, state.clone()))?;
//! let sales = &next.changes.unwrap()[0];
//! assert_eq!((sales.added, sales.removed), (1, 1));
//! assert_eq!(next.committed.unwrap().id, 2);
//!
//! // What the state now holds, for any system downstream.
//! let members = State::open(&state)?.last_members(["sales"])?;
//! assert_eq!(members["sales"].iter().collect::<Vec<u32>>(), [2, 3]);
//! # Ok(())
//! # }
//! ```
//!
//! The stages, each a module handing the next its type: text →
//! [`ast::RulesFile`] ([`parse`]) → [`checked::CheckedRules`] ([`check()`],
//! against a [`schema::Schema`]) → [`dataset::Dataset`] (the columns the
//! rules use) → [`eval::Evaluation`] (members per group) →
//! [`diff::GroupChange`] → [`state::State`] and [`output`]. [`mod@run`] ties
//! them together for the batch run, [`session`] for an interactive one.
//!
//! ```
//! use dyngroups::{parse_rules, check, schema::{Schema, TableSchema, ValueType}};
//!
//! let file = parse_rules(r#"group sales "Sales" { department == "sales" }"#).unwrap();
//! let schema = Schema {
//!     users: TableSchema::new([("user_id", ValueType::Number), ("department", ValueType::Text)]),
//!     ..Schema::default()
//! };
//! let as_of = dyngroups::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
//! let checked = check(&file, &schema, as_of).unwrap();
//! assert_eq!(checked.rules.groups[0].name, "Sales");
//! ```

pub mod api;
pub mod ast;
pub mod check;
pub mod checked;
pub mod data;
pub mod dataset;
pub mod diagnostic;
pub mod diff;
pub mod error;
pub mod eval;
pub mod explain;
pub mod export;
pub(crate) mod faults;
pub mod import;
pub mod limits;
pub mod output;
pub mod parse;
pub mod pattern;
pub mod polars;
pub mod run;
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
pub use error::Error;
pub use parse::{ParseError, parse_expr, parse_rules};
pub use run::{RunOptions, RunOutcome, StateUse, run};
pub use source::{SourceFile, Span, Spanned};

/// Dates, as rules and [`RunOptions::as_of`] take them (from `chrono`).
pub use chrono::NaiveDate;
/// Sets of user ids, as groups' members are (from `roaring`).
pub use roaring::RoaringBitmap;
