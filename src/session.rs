//! An interactive session over loaded data: admins type a rule and see who
//! it catches, ask why a user is (not) caught, preview a group of the rules
//! file against the last committed run, and save a rule as a new group.
//! `dyngroups repl` is a line editor around this.

use crate::ast::{Expr, RulesFile};
use crate::check::check_expression;
use crate::checked::CheckedRules;
use crate::data::Column;
use crate::dataset::{Dataset, OpenInputs};
use crate::diagnostic::Diagnostic;
use crate::diff::GroupChange;
use crate::error::Error;
use crate::eval::{Evaluation, dependency_closure, evaluate, evaluate_after};
use crate::explain::{Trace, explain};
use crate::output::TextTable;
use crate::run::groups_needing_last_members;
use crate::schema::Schema;
use crate::source::SourceFile;
use crate::state::State;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Who a typed rule catches.
#[derive(Clone, Debug)]
pub struct RuleResult {
    /// Matching users.
    pub matched: u64,
    /// All users.
    pub users: usize,
    /// A few of the matching users with identifying columns.
    pub sample: TextTable,
    /// Time to check and evaluate the rule.
    pub elapsed: Duration,
}

/// A group of the rules file, evaluated now.
#[derive(Clone, Debug)]
pub struct GroupPreview {
    /// Members it would commit.
    pub members: u64,
    /// The changes against the last committed run, if a state is open.
    pub change: Option<GroupChange>,
    /// The first members by id, with their identifying columns.
    pub sample: TextTable,
    /// Time to evaluate it.
    pub elapsed: Duration,
}

/// A typed rule, checked and evaluated: who it catches, and what
/// [`Session::explain`] traces. Made by [`Session::test_rule`], which
/// changes nothing in the session, so several can be made at once.
pub struct TestedRule {
    /// Who it catches.
    pub result: RuleResult,
    /// The checker's warnings.
    pub warnings: Vec<Diagnostic>,
    text: String,
    checked: CheckedRules,
    evaluation: Evaluation,
}

impl TestedRule {
    /// The rule as typed, trimmed.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// A column a rule can name.
#[derive(Clone, Debug)]
pub struct Field {
    /// `users` or `enrollments`.
    pub table: &'static str,
    /// The column's name.
    pub name: String,
    /// Its type, as the checker names it.
    pub type_name: String,
    /// Whether rules can use it.
    pub usable: bool,
    /// Up to three distinct values, if the column was loaded.
    pub samples: Option<Vec<String>>,
}

/// The language's functions, as completion offers them.
pub const FUNCTIONS: [&str; 7] = [
    "enrollment(",
    "count(",
    "completed(",
    "enrolled(",
    "in_branch(",
    "member_of(",
    "field(",
];

/// The key the typed rule is checked under.
const PROMPT_KEY: &str = "_typed_rule";

/// Columns shown beside the user id of matching users, when present.
const IDENTIFYING_COLUMNS: &[&str] = &["email", "username", "name", "first_name", "last_name", "display_name"];

/// Users shown per typed rule.
const SAMPLE_SIZE: usize = 5;

/// Loaded data, the rules file (if any) and the last typed rule.
pub struct Session {
    data: Dataset,
    schema: Schema,
    as_of: chrono::NaiveDate,
    rules_path: Option<PathBuf>,
    rules_text: String,
    rules: RulesFile,
    state_dir: Option<PathBuf>,
    last: Option<TestedRule>,
}

impl Session {
    /// Loads every usable column of `inputs` once, with its indexes
    /// ([`Dataset::build_indexes`]). `rules` is the rules
    /// file (path and text), whose groups typed rules may refer to and to
    /// which `:save` appends; `state_dir` the committed state to compare with.
    pub fn open(
        inputs: OpenInputs,
        rules: Option<(PathBuf, String)>,
        as_of: chrono::NaiveDate,
        state_dir: Option<PathBuf>,
    ) -> Result<Session, Error> {
        let schema = inputs.schema();
        let (rules_path, rules_text) = match rules {
            Some((path, text)) => (Some(path), text),
            None => (None, String::new()),
        };
        let name = rules_path
            .as_ref()
            .map_or("<rules>".to_string(), |p| p.display().to_string());
        let rules = crate::parse_rules(&rules_text).map_err(|e| Error::Rules {
            errors: vec![e.0],
            warnings: Vec::new(),
            file: SourceFile::new(name.clone(), rules_text.clone()),
        })?;
        crate::check(&rules, &schema, as_of).map_err(|e| Error::Rules {
            errors: e.errors,
            warnings: Vec::new(),
            file: SourceFile::new(name, rules_text.clone()),
        })?;
        let keys: BTreeSet<String> = rules.groups.iter().map(|g| g.key.value.clone()).collect();
        let data = inputs.load_all(&keys)?;
        data.build_indexes();
        Ok(Session {
            data,
            schema,
            as_of,
            rules_path,
            rules_text,
            rules,
            state_dir,
            last: None,
        })
    }

    /// The loaded data.
    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// Checks and evaluates a typed rule; it becomes the last rule.
    pub fn evaluate(&mut self, text: &str) -> Result<RuleResult, Error> {
        let tested = self.test_rule(text, SAMPLE_SIZE)?;
        let result = tested.result.clone();
        self.last = Some(tested);
        Ok(result)
    }

    /// Checks a typed rule without evaluating it: its warnings, or its
    /// errors as [`Error::Rules`].
    pub fn check_rule(&self, text: &str) -> Result<Vec<Diagnostic>, Error> {
        Ok(self.checked_rule(text)?.warnings)
    }

    fn checked_rule(&self, text: &str) -> Result<crate::check::Checked, Error> {
        let typed_error = |diagnostics| Error::Rules {
            errors: diagnostics,
            warnings: Vec::new(),
            file: SourceFile::new("<input>".to_string(), text.to_string()),
        };
        let expr: Expr = crate::parse_expr(text).map_err(|e| typed_error(vec![e.0]))?;
        check_expression(&self.rules, PROMPT_KEY, expr, &self.schema, self.as_of).map_err(|e| typed_error(e.errors))
    }

    /// Checks and evaluates a typed rule, with up to `sample` of the users
    /// it catches, leaving the session as it is.
    pub fn test_rule(&self, text: &str, sample: usize) -> Result<TestedRule, Error> {
        let started = Instant::now();
        let crate::check::Checked {
            rules: checked,
            warnings,
        } = self.checked_rule(text)?;
        let group = checked.groups.len() - 1;
        let evaluation = evaluate(&checked, &self.data, Some(&dependency_closure(&checked, &[group])));
        let members = &evaluation
            .groups
            .iter()
            .find(|g| g.key == PROMPT_KEY)
            .expect("the typed rule is evaluated")
            .members;
        let result = RuleResult {
            matched: members.len(),
            users: self.data.user_count(),
            sample: self.user_table(members.iter().take(sample)),
            elapsed: started.elapsed(),
        };
        Ok(TestedRule {
            result,
            warnings,
            text: text.trim().to_string(),
            checked,
            evaluation,
        })
    }

    /// Rows of `ids` with the identifying columns the users table has.
    fn user_table(&self, ids: impl Iterator<Item = u32>) -> TextTable {
        let users = &self.data.users;
        let columns: Vec<usize> = IDENTIFYING_COLUMNS
            .iter()
            .filter_map(|name| users.schema.names().position(|n| n == *name))
            .filter(|&c| users.columns[c].is_some())
            .collect();
        let mut header = vec!["user_id".to_string()];
        header.extend(columns.iter().map(|&c| users.column_name(c).to_string()));
        let rows = ids
            .filter_map(|id| {
                let row = self.data.row_of(id)? as usize;
                let mut cells = vec![Some(id.to_string())];
                cells.extend(columns.iter().map(|&c| users.column(c).cell_text(row)));
                Some(cells)
            })
            .collect();
        TextTable { header, rows }
    }

    /// Every column of users and enrollments: table, name, type and up to
    /// three distinct sample values.
    pub fn fields(&self) -> TextTable {
        TextTable {
            header: ["table", "field", "type", "samples"].map(String::from).to_vec(),
            rows: self
                .field_list()
                .into_iter()
                .map(|f| {
                    vec![
                        Some(f.table.to_string()),
                        Some(f.name),
                        Some(f.type_name),
                        f.samples.map(|s| s.join(", ")),
                    ]
                })
                .collect(),
        }
    }

    /// Every column of users and enrollments, as [`Session::fields`]
    /// shows them.
    pub fn field_list(&self) -> Vec<Field> {
        let mut fields = Vec::new();
        let mut tables = vec![("users", &self.data.users)];
        if let Some(e) = &self.data.enrollments {
            tables.push(("enrollments", &e.table));
        }
        for (table_name, table) in tables {
            for (c, column) in table.schema.columns.iter().enumerate() {
                let (type_name, usable) = match &column.column_type {
                    crate::schema::ColumnType::Usable(t) => (t.to_string(), true),
                    crate::schema::ColumnType::Unusable(t) => (format!("{t} (not usable)"), false),
                };
                fields.push(Field {
                    table: table_name,
                    name: column.name.clone(),
                    type_name,
                    usable,
                    samples: table.columns[c].as_ref().map(|values| samples(values, table.rows)),
                });
            }
        }
        fields
    }

    /// Why `user_id` is or is not caught by the last typed rule;
    /// `member_of` expanded `depth` levels.
    pub fn explain_last(&self, user_id: u32, depth: usize) -> Result<Trace, Error> {
        let last = self
            .last
            .as_ref()
            .ok_or_else(|| Error::Usage("type a rule first; `:explain ID` traces the last rule".into()))?;
        self.explain(last, user_id, depth)
    }

    /// Why `user_id` is or is not caught by `rule`; `member_of` expanded
    /// `depth` levels.
    pub fn explain(&self, rule: &TestedRule, user_id: u32, depth: usize) -> Result<Trace, Error> {
        let group = rule.checked.groups.len() - 1;
        explain(&rule.checked, &self.data, &rule.evaluation, group, user_id, depth)
            .map_err(|e| Error::Usage(e.to_string()))
    }

    /// The rules file the session was opened with.
    pub fn rules(&self) -> &RulesFile {
        &self.rules
    }

    /// Whether a state directory was given, so groups have changes and
    /// users committed groups.
    pub fn has_state(&self) -> bool {
        self.state_dir.is_some()
    }

    /// Evaluates group `key` of the rules file and, with a state, its changes
    /// against the last committed run.
    pub fn group(&self, key: &str) -> Result<GroupPreview, Error> {
        let started = Instant::now();
        let checked = crate::check(&self.rules, &self.schema, self.as_of)
            .map_err(|e| self.rules_error(e.errors))?
            .rules;
        let index = checked.groups.iter().position(|g| g.key == key).ok_or_else(|| {
            Error::Usage(format!(
                "no group `{key}` in the rules file; it has: {}",
                checked
                    .groups
                    .iter()
                    .map(|g| g.key.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let state = match &self.state_dir {
            Some(dir) => Some(State::open(dir)?),
            None => None,
        };
        let closure = dependency_closure(&checked, &[index]);
        // The previewed group's last committed members are what its
        // changes are against.
        let previous = match &state {
            Some(state) => state.last_members(groups_needing_last_members(&checked, Some(&closure)).chain([key]))?,
            None => Default::default(),
        };
        let evaluation = evaluate_after(&checked, &self.data, Some(&closure), &previous);
        let evaluated = evaluation.groups.iter().find(|g| g.key == key).expect("evaluated");
        let committed = evaluated.committed().unwrap_or(&evaluated.members);
        let change = state.map(|_| {
            let before = previous.get(key).cloned().unwrap_or_default();
            GroupChange::between(key, &before, committed)
        });
        Ok(GroupPreview {
            members: committed.len(),
            change,
            sample: self.user_table(committed.iter().take(SAMPLE_SIZE)),
            elapsed: started.elapsed(),
        })
    }

    /// The groups `user_id` is in after the last committed run, with why.
    pub fn groups_of(&self, user_id: u32) -> Result<Vec<(String, String, crate::export::Why)>, Error> {
        let dir = self
            .state_dir
            .as_ref()
            .ok_or_else(|| Error::Usage("start the REPL with `--state DIR` to see committed groups".into()))?;
        let state = State::open(dir)?;
        let run = state.last_run()?.ok_or_else(|| crate::state::StateError::Missing {
            dir: dir.display().to_string(),
        })?;
        Ok(crate::export::groups_of(
            &state,
            &run,
            user_id,
            &self.rules.include_lists(),
        )?)
    }

    /// Appends the last typed rule to the rules file as group `key` named
    /// `name`, after checking the whole new file; the file is replaced at
    /// once, never left half-written.
    pub fn save_last(&mut self, key: &str, name: &str) -> Result<PathBuf, Error> {
        let last = self
            .last
            .as_ref()
            .ok_or_else(|| Error::Usage("type a rule first; `:save` saves the last rule".into()))?;
        let path = self
            .rules_path
            .clone()
            .ok_or_else(|| Error::Usage("start the REPL with `--rules FILE` to save groups".into()))?;
        let mut text = self.rules_text.clone();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let quoted = crate::ast::quote(name);
        text += &format!(
            "\ngroup {key} {quoted} {{\n    {}\n}}\n",
            last.text.replace('\n', "\n    ")
        );
        let file = crate::parse_rules(&text).map_err(|e| self.saved_error(vec![e.0], &text))?;
        crate::check(&file, &self.schema, self.as_of).map_err(|e| self.saved_error(e.errors, &text))?;
        crate::output::write_text(&path, &text)?;
        self.rules_text = text;
        self.rules = file;
        Ok(path)
    }

    fn rules_error(&self, diagnostics: Vec<Diagnostic>) -> Error {
        self.saved_error(diagnostics, &self.rules_text)
    }

    fn saved_error(&self, diagnostics: Vec<Diagnostic>, text: &str) -> Error {
        Error::Rules {
            errors: diagnostics,
            warnings: Vec::new(),
            file: SourceFile::new(
                self.rules_path
                    .as_ref()
                    .map_or("<rules>".to_string(), |p| p.display().to_string()),
                text.to_string(),
            ),
        }
    }

    /// Words to complete at the prompt: keywords, field names, group keys.
    pub fn completions(&self) -> Vec<String> {
        let mut words: BTreeSet<String> = crate::ast::RESERVED_WORDS.iter().map(|k| k.to_string()).collect();
        words.extend(FUNCTIONS.map(String::from));
        words.extend(self.schema.users.names().map(String::from));
        if let Some(e) = &self.schema.enrollments {
            words.extend(e.names().map(String::from));
        }
        words.extend(self.rules.groups.iter().map(|g| g.key.value.clone()));
        words.into_iter().collect()
    }
}

/// Up to three distinct values of a column.
fn samples(column: &Column, rows: usize) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for row in 0..rows {
        if let Some(value) = column.cell_text(row)
            && !seen.contains(&value)
        {
            seen.push(value);
            if seen.len() == 3 {
                break;
            }
        }
    }
    seen
}
