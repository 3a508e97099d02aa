//! The JSON API of `dyngroups serve`, over a [`Session`]: what a rule
//! tester page and a host system (an LMS, an HR system) ask, and what they
//! get back, as serde types. Every call leaves the session as it is, so
//! calls can run side by side; none commits a run. Serving them over HTTP is
//! the binary's job (`dyngroups serve`), documented in `docs/api.md`.

use crate::diagnostic::{Diagnostic, Severity};
use crate::error::Error;
use crate::explain::{Trace, TraceNode};
use crate::output::TextTable;
use crate::session::Session;
use crate::source::SourceFile;
use serde::{Deserialize, Serialize};

/// Users shown for a preview unless the request asks for another number.
const DEFAULT_SAMPLE: usize = 10;
/// The most users a preview shows.
const MAX_SAMPLE: usize = 100;
/// Added and removed users listed per group.
const CHANGE_SAMPLE: usize = 20;

/// A rule to check or preview.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleRequest {
    /// The rule, as it would stand between a group's braces.
    pub rule: String,
    /// How many of the matching users to list (default 10, at most 100).
    #[serde(default)]
    pub sample: Option<usize>,
}

/// A rule and a user to explain it for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// The rule.
    pub rule: String,
    /// The user.
    pub user_id: u32,
    /// `member_of` levels to expand into the referenced group's rule.
    #[serde(default)]
    pub depth: usize,
}

/// One finding about a rule, placed in its text.
#[derive(Debug, Serialize, PartialEq)]
pub struct DiagnosticJson {
    /// `error` or `warning`.
    pub severity: &'static str,
    /// What is wrong.
    pub message: String,
    /// What would be right, if known.
    pub help: Option<String>,
    /// Line of the span's start, from 1.
    pub line: usize,
    /// Column of the span's start, in characters, from 1.
    pub column: usize,
    /// Line of the span's end.
    pub end_line: usize,
    /// Column of the span's end (one past its last character).
    pub end_column: usize,
    /// The finding as the command line prints it: the line, a caret under
    /// the span, the help.
    pub rendered: String,
}

impl DiagnosticJson {
    /// `diagnostic`, placed in `text`.
    pub fn new(diagnostic: &Diagnostic, text: &str) -> DiagnosticJson {
        let source = SourceFile::new("rule", text);
        let start = source.line_col(diagnostic.span.start);
        let end = source.line_col(diagnostic.span.end);
        DiagnosticJson {
            severity: match diagnostic.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            },
            message: diagnostic.message.clone(),
            help: diagnostic.help.clone(),
            line: start.line,
            column: start.col,
            end_line: end.line,
            end_column: end.col,
            rendered: diagnostic.render(&source),
        }
    }
}

/// What `check` says of a rule.
#[derive(Debug, Serialize)]
pub struct CheckAnswer {
    /// Whether the rule has no error.
    pub ok: bool,
    /// Its errors, or its warnings.
    pub diagnostics: Vec<DiagnosticJson>,
}

/// Cells of users, a row per user.
#[derive(Debug, Serialize)]
pub struct UsersJson {
    /// Column names, `user_id` first.
    pub columns: Vec<String>,
    /// A row of cells per user (`null` for no value).
    pub rows: Vec<Vec<Option<String>>>,
}

impl From<TextTable> for UsersJson {
    fn from(table: TextTable) -> UsersJson {
        UsersJson {
            columns: table.header,
            rows: table.rows,
        }
    }
}

/// Who a rule catches.
#[derive(Debug, Serialize)]
pub struct PreviewAnswer {
    /// Matching users.
    pub matched: u64,
    /// All users.
    pub users: usize,
    /// `matched / users` (0 with no users).
    pub share: f64,
    /// The first matching users by id, with their identifying columns.
    pub sample: UsersJson,
    /// The checker's warnings.
    pub warnings: Vec<DiagnosticJson>,
    /// Time to check and evaluate the rule, on the server.
    pub elapsed_ms: f64,
}

/// One node of an explained rule.
#[derive(Debug, Serialize)]
pub struct NodeJson {
    /// The node as the rules say it, names resolved.
    pub label: String,
    /// Whether it holds for the user.
    pub verdict: bool,
    /// The user's values the node looked at.
    pub values: Vec<String>,
    /// Operands.
    pub children: Vec<NodeJson>,
}

impl From<&TraceNode> for NodeJson {
    fn from(node: &TraceNode) -> NodeJson {
        NodeJson {
            label: node.label.clone(),
            verdict: node.verdict,
            values: node.values.clone(),
            children: node.children.iter().map(NodeJson::from).collect(),
        }
    }
}

/// Why a user is or is not caught by a rule.
#[derive(Debug, Serialize)]
pub struct ExplainAnswer {
    /// The user.
    pub user_id: u32,
    /// Whether the rule catches the user.
    pub member: bool,
    /// The rule as a tree, each node with its verdict.
    pub root: NodeJson,
    /// The trace as the command line prints it.
    pub rendered: String,
}

/// A group of the rules file.
#[derive(Debug, Serialize)]
pub struct GroupSummary {
    /// Its key.
    pub key: String,
    /// Its display name.
    pub name: String,
    /// `active`, `draft`, `paused`, `add_only` or `remove_only`.
    pub status: String,
}

/// The groups of the rules file, in its order.
#[derive(Debug, Serialize)]
pub struct GroupsAnswer {
    /// The groups.
    pub groups: Vec<GroupSummary>,
    /// Whether the server has a state, so a group has changes.
    pub has_state: bool,
}

/// A group's changes against the last committed run.
#[derive(Debug, Serialize)]
pub struct ChangesJson {
    /// Users a run would add.
    pub added: u64,
    /// Users a run would remove.
    pub removed: u64,
    /// The first added user ids.
    pub added_sample: Vec<u32>,
    /// The first removed user ids.
    pub removed_sample: Vec<u32>,
}

/// A group of the rules file, evaluated now.
#[derive(Debug, Serialize)]
pub struct GroupAnswer {
    /// The group.
    #[serde(flatten)]
    pub group: GroupSummary,
    /// Members a run would commit (a draft: the members it previews).
    pub members: u64,
    /// The first of them by id, with their identifying columns.
    pub sample: UsersJson,
    /// Its changes against the last committed run, with a state.
    pub changes: Option<ChangesJson>,
    /// Time to evaluate it, on the server.
    pub elapsed_ms: f64,
}

/// A group a user is in.
#[derive(Debug, Serialize)]
pub struct UserGroup {
    /// Its key.
    pub key: String,
    /// Its display name.
    pub name: String,
    /// Why the user is in it: `rule`, `include` or `static`.
    pub why: String,
}

/// The groups a user is in after the last committed run.
#[derive(Debug, Serialize)]
pub struct UserGroupsAnswer {
    /// The user.
    pub user_id: u32,
    /// The groups.
    pub groups: Vec<UserGroup>,
}

/// A column rules can name.
#[derive(Debug, Serialize)]
pub struct FieldJson {
    /// `users` or `enrollments`.
    pub table: &'static str,
    /// The column's name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Whether rules can use it.
    pub usable: bool,
    /// Up to three distinct values.
    pub samples: Vec<String>,
}

/// What a rule can name: for an editor's completion.
#[derive(Debug, Serialize)]
pub struct FieldsAnswer {
    /// Number of users.
    pub users: usize,
    /// The columns of users and enrollments.
    pub fields: Vec<FieldJson>,
    /// The language's keywords and functions.
    pub keywords: Vec<String>,
    /// Group keys `member_of` can name.
    pub groups: Vec<String>,
}

/// Why a call failed, with the HTTP status it answers with.
#[derive(Debug, Serialize)]
pub struct ApiError {
    /// The HTTP status.
    #[serde(skip)]
    pub status: u16,
    /// A word for programs: `bad_request`, `invalid_rule`, `not_found`, ...
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// The rule's errors, for `invalid_rule`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<DiagnosticJson>,
}

impl ApiError {
    /// A failure with no diagnostics.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            diagnostics: Vec::new(),
        }
    }

    /// The error a failed call of the session makes, `text` being the rule.
    fn from_session(error: Error, text: &str) -> ApiError {
        match error {
            Error::Rules { errors, .. } => ApiError {
                status: 422,
                code: "invalid_rule",
                message: format!(
                    "the rule has {} error{}",
                    errors.len(),
                    if errors.len() == 1 { "" } else { "s" }
                ),
                diagnostics: errors.iter().map(|d| DiagnosticJson::new(d, text)).collect(),
            },
            Error::Usage(message) => ApiError::new(400, "bad_request", message),
            other => ApiError::new(500, "server_error", other.to_string()),
        }
    }
}

/// A finished call: its answer, or why it failed.
pub type ApiResult<T> = Result<T, ApiError>;

/// The API's calls, over a loaded session.
pub struct Api {
    session: Session,
}

impl Api {
    /// The API over `session`.
    pub fn new(session: Session) -> Api {
        Api { session }
    }

    /// The session answered from.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// `POST /api/check`: the rule's errors, or its warnings.
    pub fn check(&self, request: &RuleRequest) -> ApiResult<CheckAnswer> {
        match self.session.check_rule(&request.rule) {
            Ok(warnings) => Ok(CheckAnswer {
                ok: true,
                diagnostics: warnings.iter().map(|d| DiagnosticJson::new(d, &request.rule)).collect(),
            }),
            Err(Error::Rules { errors, .. }) => Ok(CheckAnswer {
                ok: false,
                diagnostics: errors.iter().map(|d| DiagnosticJson::new(d, &request.rule)).collect(),
            }),
            Err(other) => Err(ApiError::from_session(other, &request.rule)),
        }
    }

    /// `POST /api/preview`: who the rule catches.
    pub fn preview(&self, request: &RuleRequest) -> ApiResult<PreviewAnswer> {
        let sample = request.sample.unwrap_or(DEFAULT_SAMPLE).min(MAX_SAMPLE);
        let tested = self
            .session
            .test_rule(&request.rule, sample)
            .map_err(|e| ApiError::from_session(e, &request.rule))?;
        let result = tested.result;
        Ok(PreviewAnswer {
            matched: result.matched,
            users: result.users,
            share: if result.users == 0 {
                0.0
            } else {
                result.matched as f64 / result.users as f64
            },
            sample: result.sample.into(),
            warnings: tested
                .warnings
                .iter()
                .map(|d| DiagnosticJson::new(d, &request.rule))
                .collect(),
            elapsed_ms: result.elapsed.as_secs_f64() * 1e3,
        })
    }

    /// `POST /api/explain`: why the user is or is not caught by the rule.
    pub fn explain(&self, request: &ExplainRequest) -> ApiResult<ExplainAnswer> {
        self.known_user(request.user_id)?;
        let tested = self
            .session
            .test_rule(&request.rule, 0)
            .map_err(|e| ApiError::from_session(e, &request.rule))?;
        let trace: Trace = self
            .session
            .explain(&tested, request.user_id, request.depth)
            .map_err(|e| ApiError::from_session(e, &request.rule))?;
        Ok(ExplainAnswer {
            user_id: request.user_id,
            member: trace.member,
            root: NodeJson::from(&trace.root),
            rendered: trace.render_as("the rule"),
        })
    }

    /// `GET /api/groups`: the groups of the rules file.
    pub fn groups(&self) -> GroupsAnswer {
        GroupsAnswer {
            groups: self.session.rules().groups.iter().map(summary).collect(),
            has_state: self.session.has_state(),
        }
    }

    /// `GET /api/groups/{key}`: the group evaluated now, and its changes.
    pub fn group(&self, key: &str) -> ApiResult<GroupAnswer> {
        let group = self
            .session
            .rules()
            .groups
            .iter()
            .find(|g| g.key.value == key)
            .ok_or_else(|| ApiError::new(404, "not_found", format!("no group `{key}` in the rules file")))?;
        let preview = self.session.group(key).map_err(|e| ApiError::from_session(e, ""))?;
        Ok(GroupAnswer {
            group: summary(group),
            members: preview.members,
            sample: preview.sample.into(),
            changes: preview.change.map(|change| ChangesJson {
                added: change.added.len(),
                removed: change.removed.len(),
                added_sample: change.added.iter().take(CHANGE_SAMPLE).collect(),
                removed_sample: change.removed.iter().take(CHANGE_SAMPLE).collect(),
            }),
            elapsed_ms: preview.elapsed.as_secs_f64() * 1e3,
        })
    }

    /// `GET /api/users/{id}/groups`: the groups the user is in after the
    /// last committed run.
    pub fn user_groups(&self, user_id: u32) -> ApiResult<UserGroupsAnswer> {
        self.known_user(user_id)?;
        if !self.session.has_state() {
            return Err(ApiError::new(
                409,
                "no_state",
                "the server has no state: start `dyngroups serve` with `--state DIR` to see committed groups",
            ));
        }
        let groups = self
            .session
            .groups_of(user_id)
            .map_err(|e| ApiError::from_session(e, ""))?;
        Ok(UserGroupsAnswer {
            user_id,
            groups: groups
                .into_iter()
                .map(|(key, name, why)| UserGroup {
                    key,
                    name,
                    why: why.word().to_string(),
                })
                .collect(),
        })
    }

    /// `GET /api/fields`: what a rule can name.
    pub fn fields(&self) -> FieldsAnswer {
        let fields = self
            .session
            .field_list()
            .into_iter()
            .map(|f| FieldJson {
                table: f.table,
                name: f.name,
                type_name: f.type_name,
                usable: f.usable,
                samples: f.samples.unwrap_or_default(),
            })
            .collect();
        let groups: Vec<String> = self
            .session
            .rules()
            .groups
            .iter()
            .map(|g| g.key.value.clone())
            .collect();
        let keywords = crate::ast::RESERVED_WORDS
            .iter()
            .copied()
            .chain(crate::session::FUNCTIONS)
            .map(String::from)
            .collect();
        FieldsAnswer {
            users: self.session.data().user_count(),
            fields,
            keywords,
            groups,
        }
    }

    fn known_user(&self, user_id: u32) -> ApiResult<()> {
        match self.session.data().row_of(user_id) {
            Some(_) => Ok(()),
            None => Err(ApiError::new(
                404,
                "not_found",
                format!("user {user_id} is not in the users table"),
            )),
        }
    }
}

fn summary(group: &crate::ast::GroupDef) -> GroupSummary {
    GroupSummary {
        key: group.key.value.clone(),
        name: group
            .name
            .as_ref()
            .map_or_else(|| group.key.value.clone(), |n| n.value.clone()),
        status: group
            .status
            .as_ref()
            .map_or(crate::ast::GroupStatus::Active, |s| s.value)
            .keyword()
            .to_string(),
    }
}
