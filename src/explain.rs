//! Why a user is or is not in a group: the group's rule as a tree, each node
//! with its verdict for that user and the user's actual values, and for
//! `enrollment(...)` the user's matching enrollment rows.
//!
//! The trace evaluates one user row by row, straight from spec §3; the
//! engine evaluates whole columns as bitmaps. A property test holds the two
//! to the same verdict for every user.

use crate::ast::GroupStatus;
use crate::checked::{CheckedRules, ColumnTest, EnrollmentTest, GroupRef, Predicate, Scalar, Test};
use crate::data::{Column, Table};
use crate::dataset::Dataset;
use crate::eval::Evaluation;
use std::fmt::Write;

/// One node of a trace.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceNode {
    /// The node as the rules say it, with names resolved and literals as
    /// compared (text lowercased, `today` as a date).
    pub label: String,
    /// Whether it holds for the user.
    pub verdict: bool,
    /// The user's values the node looked at, e.g. `department = "Sales"`.
    pub values: Vec<String>,
    /// Sub-nodes (operands, or the referenced group's rule when expanded).
    pub children: Vec<TraceNode>,
}

/// Why a user is or is not in a group.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// The group's key.
    pub group: String,
    /// Its display name.
    pub name: String,
    /// The user.
    pub user_id: u32,
    /// Whether the rule holds.
    pub rule_holds: bool,
    /// Whether the `include` list names the user.
    pub included: bool,
    /// Whether the `exclude` list names the user.
    pub excluded: bool,
    /// Whether the user is a member as evaluated now (before status).
    pub member: bool,
    /// The group's status.
    pub status: GroupStatus,
    /// The rule.
    pub root: TraceNode,
}

/// What can stop a trace.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExplainError {
    /// No such user.
    #[error("user {0} is not in the users table")]
    UnknownUser(u32),
}

/// Traces group `group` of `rules` for `user_id`. `evaluation` holds the
/// groups `member_of` refers to (evaluated by the engine); `depth` levels
/// of `member_of` are expanded into the referenced group's own rule.
pub fn explain(
    rules: &CheckedRules,
    data: &Dataset,
    evaluation: &Evaluation,
    group: usize,
    user_id: u32,
    depth: usize,
) -> Result<Trace, ExplainError> {
    let row = data.row_of(user_id).ok_or(ExplainError::UnknownUser(user_id))? as usize;
    let tracer = Tracer {
        rules,
        data,
        evaluation,
        user_id,
    };
    let definition = &rules.groups[group];
    let root = tracer.node(&definition.rule, &data.users, row, depth);
    let included = definition.include.contains(&user_id);
    let excluded = definition.exclude.contains(&user_id);
    Ok(Trace {
        group: definition.key.clone(),
        name: definition.name.clone(),
        user_id,
        rule_holds: root.verdict,
        included,
        excluded,
        member: (root.verdict || included) && !excluded,
        status: definition.status,
        root,
    })
}

struct Tracer<'a> {
    rules: &'a CheckedRules,
    data: &'a Dataset,
    evaluation: &'a Evaluation,
    user_id: u32,
}

impl Tracer<'_> {
    fn node(&self, predicate: &Predicate, table: &Table, row: usize, depth: usize) -> TraceNode {
        let leaf = |label: String, verdict: bool, values: Vec<String>| TraceNode {
            label,
            verdict,
            values,
            children: Vec::new(),
        };
        match predicate {
            Predicate::Const(b) => leaf(b.to_string(), *b, Vec::new()),
            Predicate::And(operands) | Predicate::Or(operands) => {
                let children: Vec<TraceNode> = operands.iter().map(|p| self.node(p, table, row, depth)).collect();
                let is_and = matches!(predicate, Predicate::And(_));
                let verdict = if is_and {
                    children.iter().all(|c| c.verdict)
                } else {
                    children.iter().any(|c| c.verdict)
                };
                TraceNode {
                    label: if is_and { "and" } else { "or" }.to_string(),
                    verdict,
                    values: Vec::new(),
                    children,
                }
            }
            Predicate::Not(inner) => {
                if let Predicate::Column(test) = inner.as_ref() {
                    // `!=`, `not in`, `is not empty`: one line, as written.
                    let (label, holds, values) = self.column(test, table, row, true);
                    return leaf(label, !holds, values);
                }
                let child = self.node(inner, table, row, depth);
                TraceNode {
                    label: "not".to_string(),
                    verdict: !child.verdict,
                    values: Vec::new(),
                    children: vec![child],
                }
            }
            Predicate::Column(test) => {
                let (label, verdict, values) = self.column(test, table, row, false);
                leaf(label, verdict, values)
            }
            Predicate::InBranch(test) => {
                let value = cell(table.column(test.column), row);
                let verdict = match (&self.data.org, &value) {
                    (Some(org), Some(branch)) => org
                        .branch(branch)
                        .zip(org.branch(&test.code))
                        .is_some_and(|(b, ancestor)| org.is_within(b, ancestor)),
                    _ => false,
                };
                leaf(
                    format!("in_branch(\"{}\")", test.code),
                    verdict,
                    vec![shown(table, test.column, row)],
                )
            }
            Predicate::Enrollment(test) => self.enrollment(test, row),
            Predicate::MemberOf(GroupRef::Static(key)) => {
                let verdict = self.data.static_groups.get(key).is_some_and(|m| m.contains(row as u32));
                leaf(format!("member_of({key})"), verdict, vec!["static group".to_string()])
            }
            Predicate::MemberOf(GroupRef::Rule(g)) => {
                let referenced = &self.rules.groups[*g];
                let verdict = self
                    .evaluation
                    .groups
                    .iter()
                    .find(|m| m.key == referenced.key)
                    .and_then(|m| m.committed().or(Some(&m.members)))
                    .is_some_and(|members| members.contains(self.user_id));
                let children = if depth > 0 {
                    vec![self.node(&referenced.rule, &self.data.users, row, depth - 1)]
                } else {
                    Vec::new()
                };
                TraceNode {
                    label: format!("member_of({})", referenced.key),
                    verdict,
                    values: Vec::new(),
                    children,
                }
            }
        }
    }

    /// A column test's label, verdict (before any negation) and value.
    fn column(&self, test: &ColumnTest, table: &Table, row: usize, negated: bool) -> (String, bool, Vec<String>) {
        let column = table.column(test.column);
        let label = describe(table.column_name(test.column), &test.test, negated);
        (
            label,
            holds(column, row, &test.test),
            vec![shown(table, test.column, row)],
        )
    }

    fn enrollment(&self, test: &EnrollmentTest, user_row: usize) -> TraceNode {
        let condition = test.condition.as_deref();
        let label = match (condition, test.count) {
            (Some(c), None) => format!("enrollment({})", describe_predicate(c, self.enrollment_table())),
            (None, None) => "enrollment()".to_string(),
            (c, Some((op, n))) => format!(
                "count(enrollment({})) {} {n}",
                c.map(|c| describe_predicate(c, self.enrollment_table()))
                    .unwrap_or_default(),
                op.symbol()
            ),
        };
        let Some(enrollments) = &self.data.enrollments else {
            return TraceNode {
                label,
                verdict: test.count.is_some_and(|(op, n)| op.holds(0, n)),
                values: vec!["no enrollments input".to_string()],
                children: Vec::new(),
            };
        };
        let table = &enrollments.table;
        let mut children = Vec::new();
        for (row, _) in enrollments
            .user_rows
            .iter()
            .enumerate()
            .filter(|(_, u)| **u as usize == user_row)
        {
            let matched = condition.is_none_or(|c| self.node(c, table, row, 0).verdict);
            if !matched {
                continue;
            }
            let values = (0..table.schema.columns.len())
                .filter(|&c| table.columns[c].is_some())
                .map(|c| shown(table, c, row))
                .collect();
            children.push(TraceNode {
                label: format!("enrollment row {}", table.row_label(row)),
                verdict: true,
                values,
                children: Vec::new(),
            });
        }
        let count = children.len() as u64;
        let verdict = match test.count {
            None => count > 0,
            Some((op, n)) => op.holds(count, n),
        };
        TraceNode {
            label,
            verdict,
            values: vec![format!("{count} matching enrollment rows")],
            children,
        }
    }

    fn enrollment_table(&self) -> Option<&Table> {
        self.data.enrollments.as_ref().map(|e| &e.table)
    }
}

fn cell(column: &Column, row: usize) -> Option<String> {
    column.cell_text(row)
}

/// `name = value` as the rules would write the value (text quoted).
fn shown(table: &Table, column: usize, row: usize) -> String {
    let name = table.column_name(column);
    match (table.column(column), cell(table.column(column), row)) {
        (_, None) => format!("{name} is empty"),
        (Column::Text(_), Some(v)) => format!("{name} = {v:?}"),
        (_, Some(v)) => format!("{name} = {v}"),
    }
}

/// Whether `test` holds for row `row` of `column`, per spec §3: text
/// compared ignoring case, a missing value false for all but `is empty`.
fn holds(column: &Column, row: usize, test: &Test) -> bool {
    match column {
        Column::Text(text) => {
            let code = text.codes[row];
            if code == crate::data::NULL_CODE {
                return matches!(test, Test::IsEmpty);
            }
            let (raw, lower) = (text.values.get(code as usize), text.lowercase.get(code as usize));
            match test {
                Test::IsEmpty => raw.is_empty(),
                Test::Compare(op, Scalar::Text(t)) => op.holds(lower, t.as_str()),
                Test::In(items) => items.iter().any(|i| *i == Scalar::Text(lower.to_string())),
                Test::Contains(t) => lower.contains(t.as_str()),
                Test::StartsWith(t) => lower.starts_with(t.as_str()),
                Test::EndsWith(t) => lower.ends_with(t.as_str()),
                Test::Matches(pattern) => pattern.is_match(raw),
                Test::Compare(..) | Test::IsTrue => false,
            }
        }
        Column::Number(values) => {
            let v = values[row];
            match test {
                Test::IsEmpty => v.is_nan(),
                _ if v.is_nan() => false,
                Test::Compare(op, Scalar::Number(n)) => op.holds(v, *n),
                Test::In(items) => items.contains(&Scalar::Number(v)),
                _ => false,
            }
        }
        Column::Date(values) => match (values[row], test) {
            (None, Test::IsEmpty) => true,
            (None, _) | (Some(_), Test::IsEmpty) => false,
            (Some(v), Test::Compare(op, Scalar::Date(d, _))) => op.holds(v, *d),
            (Some(v), Test::In(items)) => items.contains(&Scalar::Date(v, None)),
            _ => false,
        },
        Column::Boolean(values) => match (values[row], test) {
            (None, Test::IsEmpty) => true,
            (Some(v), Test::IsTrue) => v,
            (Some(v), Test::Compare(_, Scalar::Bool(b))) => v == *b,
            _ => false,
        },
    }
}

fn literal(value: &Scalar) -> String {
    match value {
        Scalar::Text(t) => format!("{t:?}"),
        Scalar::Number(n) => n.to_string(),
        Scalar::Date(d, _) => chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|epoch| epoch.checked_add_signed(chrono::TimeDelta::days(i64::from(*d))))
            .map_or_else(|| d.to_string(), |date| date.to_string()),
        Scalar::Bool(b) => b.to_string(),
    }
}

/// A column test as the rules would write it.
fn describe(name: &str, test: &Test, negated: bool) -> String {
    let list = |items: &[Scalar]| items.iter().map(literal).collect::<Vec<_>>().join(", ");
    match (test, negated) {
        (Test::Compare(crate::ast::CmpOp::Eq, v), true) => format!("{name} != {}", literal(v)),
        (Test::Compare(op, v), false) => format!("{name} {} {}", op.symbol(), literal(v)),
        (Test::In(items), false) => format!("{name} in [{}]", list(items)),
        (Test::In(items), true) => format!("{name} not in [{}]", list(items)),
        (Test::IsEmpty, false) => format!("{name} is empty"),
        (Test::IsEmpty, true) => format!("{name} is not empty"),
        (Test::IsTrue, false) => name.to_string(),
        (test, true) => format!("not {}", describe(name, test, false)),
        (Test::Contains(t), false) => format!("{name} contains {t:?}"),
        (Test::StartsWith(t), false) => format!("{name} starts_with {t:?}"),
        (Test::EndsWith(t), false) => format!("{name} ends_with {t:?}"),
        (Test::Matches(p), false) => format!("{name} matches {:?}", p.source()),
    }
}

/// A whole condition on one line (for `enrollment(...)` labels).
fn describe_predicate(predicate: &Predicate, table: Option<&Table>) -> String {
    let name = |c: usize| table.map_or_else(|| format!("column {c}"), |t| t.column_name(c).to_string());
    match predicate {
        Predicate::Const(b) => b.to_string(),
        Predicate::And(ps) | Predicate::Or(ps) => {
            let joiner = if matches!(predicate, Predicate::And(_)) {
                " and "
            } else {
                " or "
            };
            let parts: Vec<String> = ps
                .iter()
                .map(|p| match p {
                    Predicate::And(_) | Predicate::Or(_) => format!("({})", describe_predicate(p, table)),
                    _ => describe_predicate(p, table),
                })
                .collect();
            parts.join(joiner)
        }
        Predicate::Not(inner) => match inner.as_ref() {
            Predicate::Column(test) => describe(&name(test.column), &test.test, true),
            other => format!("not ({})", describe_predicate(other, table)),
        },
        Predicate::Column(test) => describe(&name(test.column), &test.test, false),
        Predicate::InBranch(test) => format!("in_branch(\"{}\")", test.code),
        Predicate::Enrollment(_) => "enrollment(...)".to_string(),
        Predicate::MemberOf(GroupRef::Static(key)) => format!("member_of({key})"),
        Predicate::MemberOf(GroupRef::Rule(g)) => format!("member_of(#{g})"),
    }
}

impl Trace {
    /// The trace as text: one node per line, indented, with its verdict and
    /// the user's values.
    pub fn render(&self) -> String {
        self.render_as(&format!("group {} {:?}", self.group, self.name))
    }

    /// The trace as text, headed by `subject` (e.g. `the rule`) instead of
    /// the group's key and name.
    pub fn render_as(&self, subject: &str) -> String {
        let mut out = format!(
            "{subject}: user {} {}\n",
            self.user_id,
            if self.member { "is a member" } else { "is not a member" }
        );
        render_node(&self.root, 1, &mut out);
        let _ = writeln!(
            out,
            "  rule {}{}{}",
            if self.rule_holds { "holds" } else { "does not hold" },
            if self.included { "; in the include list" } else { "" },
            if self.excluded { "; in the exclude list" } else { "" }
        );
        if self.status != GroupStatus::Active {
            let _ = writeln!(
                out,
                "  the group is {}: what it commits also depends on its last committed members",
                self.status.keyword()
            );
        }
        out
    }
}

fn render_node(node: &TraceNode, depth: usize, out: &mut String) {
    let mark = if node.verdict { "true " } else { "false" };
    let indent = "  ".repeat(depth);
    let values = if node.values.is_empty() {
        String::new()
    } else {
        format!("    ({})", node.values.join(", "))
    };
    let _ = writeln!(out, "{indent}{mark}  {}{values}", node.label);
    for child in &node.children {
        render_node(child, depth + 1, out);
    }
}
