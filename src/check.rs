//! Syntax tree + schema → checked rules. Every semantic error of the file is
//! collected, so an admin fixes them all in one go.

use crate::ast::*;
use crate::checked::*;
use crate::diagnostic::Diagnostic;
use crate::limits::{MAX_KEY_CHARS, MAX_LIST_ITEMS, MAX_NAME_CHARS, MAX_REGEX_BYTES, MAX_RULE_BYTES};
use crate::pattern::{Pattern, PatternError};
use crate::schema::{ColumnType, Resolution, Schema, TableSchema, ValueType};
use crate::source::{Span, Spanned};
use crate::suggest::{did_you_mean, list_some, nearest};
use chrono::{Days, Months, NaiveDate};
use std::collections::HashMap;

/// A rules file with semantic errors: all of them, never empty.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} error(s) in the rules", errors.len())]
pub struct CheckErrors {
    /// The errors, in file order.
    pub errors: Vec<Diagnostic>,
    /// Warnings found along the way.
    pub warnings: Vec<Diagnostic>,
}

/// Rules that passed the check, with any warnings.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The checked rules.
    pub rules: CheckedRules,
    /// Things that work but are probably not meant.
    pub warnings: Vec<Diagnostic>,
}

/// Checks `file` against the data's `schema`, for the run date `as_of`.
pub fn check(file: &RulesFile, schema: &Schema, as_of: NaiveDate) -> Result<Checked, CheckErrors> {
    let (rules, warnings) = Checker::new(file, Some(schema), as_of).run(file)?;
    Ok(Checked { rules, warnings })
}

/// Checks `expr`, typed at a prompt, as the rule of one more group `key`
/// after the groups of `base` (so it may use `member_of` on them). The
/// expression's spans are its own text's; the new group is the last one.
pub fn check_expression(
    base: &RulesFile,
    key: &str,
    expr: crate::ast::Expr,
    schema: &Schema,
    as_of: NaiveDate,
) -> Result<Checked, CheckErrors> {
    let span = expr.span;
    let mut file = base.clone();
    file.groups.push(crate::ast::GroupDef {
        key: crate::source::Spanned::new(key.to_string(), span),
        name: None,
        status: None,
        rule: expr,
        includes: Vec::new(),
        excludes: Vec::new(),
        span,
    });
    check(&file, schema, as_of)
}

/// Checks everything in `file` that needs no data: keys, references, cycles,
/// literal types, regexes and limits. Returns the warnings.
pub fn check_without_data(file: &RulesFile, as_of: NaiveDate) -> Result<Vec<Diagnostic>, CheckErrors> {
    Checker::new(file, None, as_of).run(file).map(|(_, warnings)| warnings)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Users,
    Enrollments,
}

struct Checker<'a> {
    /// `None` when checking without data: names are then not resolved.
    schema: Option<&'a Schema>,
    as_of: NaiveDate,
    /// Rule groups by exact key (the first definition of each).
    group_index: HashMap<&'a str, usize>,
    keys: Vec<&'a str>,
    statuses: Vec<GroupStatus>,
    /// `member_of` references of each group to other rule groups.
    references: Vec<Vec<(usize, Span)>>,
    current_group: usize,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl<'a> Checker<'a> {
    fn new(file: &'a RulesFile, schema: Option<&'a Schema>, as_of: NaiveDate) -> Checker<'a> {
        Checker {
            schema,
            as_of,
            group_index: HashMap::new(),
            keys: file.groups.iter().map(|g| g.key.value.as_str()).collect(),
            statuses: file
                .groups
                .iter()
                .map(|g| g.status.as_ref().map(|s| s.value).unwrap_or_default())
                .collect(),
            references: vec![Vec::new(); file.groups.len()],
            current_group: 0,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn error(&mut self, diagnostic: Diagnostic) {
        self.errors.push(diagnostic);
    }

    fn run(mut self, file: &'a RulesFile) -> Result<(CheckedRules, Vec<Diagnostic>), CheckErrors> {
        self.index_keys(file);
        let groups: Vec<CheckedGroup> = file
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                self.current_group = i;
                self.group(g)
            })
            .collect();
        let evaluation_order = self.order_groups();
        self.errors.sort_by_key(|d| d.span.start);
        if self.errors.is_empty() {
            let rules = CheckedRules {
                groups,
                evaluation_order,
                as_of: self.as_of,
            };
            Ok((rules, self.warnings))
        } else {
            Err(CheckErrors {
                errors: self.errors,
                warnings: self.warnings,
            })
        }
    }

    fn index_keys(&mut self, file: &'a RulesFile) {
        let mut by_lowercase: HashMap<String, &Spanned<String>> = HashMap::new();
        for (i, group) in file.groups.iter().enumerate() {
            let key = &group.key;
            if key.value.chars().count() > MAX_KEY_CHARS {
                self.error(
                    Diagnostic::error(key.span, format!("group key is longer than {MAX_KEY_CHARS} characters"))
                        .with_help("use a shorter key; the display name can be long"),
                );
            }
            match by_lowercase.get(&key.value.to_lowercase()) {
                Some(first) if first.value == key.value => self.error(
                    Diagnostic::error(key.span, format!("group `{}` is defined twice", key.value))
                        .with_help("give each group its own key, or merge the two rules with `or`"),
                ),
                Some(first) => {
                    let message = format!(
                        "group key `{}` differs from `{}` only in letter case",
                        key.value, first.value
                    );
                    self.error(
                        Diagnostic::error(key.span, message)
                            .with_help("keys that differ only in case are confusing; rename one of them"),
                    )
                }
                None => {
                    by_lowercase.insert(key.value.to_lowercase(), key);
                    self.group_index.insert(&key.value, i);
                }
            }
        }
    }

    fn group(&mut self, group: &GroupDef) -> CheckedGroup {
        if let Some(name) = &group.name {
            let length = name.value.chars().count();
            if length == 0 || length > MAX_NAME_CHARS {
                self.error(
                    Diagnostic::error(
                        name.span,
                        format!("display name must be 1 to {MAX_NAME_CHARS} characters"),
                    )
                    .with_help("leave the name out to use the key, or shorten it"),
                );
            } else if name.value.chars().any(char::is_control) {
                self.error(
                    Diagnostic::error(name.span, "display name contains a control character")
                        .with_help("remove line breaks and tabs from the name"),
                );
            }
        }
        if group.rule.span.len() > MAX_RULE_BYTES {
            self.error(
                Diagnostic::error(
                    Span::new(group.rule.span.start, group.rule.span.start),
                    format!("rule is larger than {} KiB", MAX_RULE_BYTES / 1024),
                )
                .with_help("split it into several groups combined with `member_of`"),
            );
        }
        let rule = self.predicate(&group.rule, Scope::Users);
        let include = self.id_lists(&group.includes, "include");
        let exclude = self.id_lists(&group.excludes, "exclude");
        CheckedGroup {
            key: group.key.value.clone(),
            name: group
                .name
                .as_ref()
                .map_or_else(|| group.key.value.clone(), |n| n.value.clone()),
            status: group.status.as_ref().map(|s| s.value).unwrap_or_default(),
            rule,
            include,
            exclude,
        }
    }

    fn id_lists(&mut self, lists: &[IdList], word: &str) -> Vec<u32> {
        if let [_, extra, ..] = lists {
            self.error(
                Diagnostic::error(extra.span, format!("a group has at most one `{word}` list"))
                    .with_help(format!("merge the ids into the first `{word} [...]`")),
            );
        }
        let mut ids = Vec::new();
        for id in lists.iter().flat_map(|l| &l.ids) {
            match u32::try_from(id.value) {
                Ok(v) => ids.push(v),
                Err(_) => self.error(
                    Diagnostic::error(id.span, format!("user id `{}` is out of range", id.value))
                        .with_help("user ids are whole numbers below 4294967296"),
                ),
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The table a scope tests, or `None` when names are not being resolved
    /// (no data, or the table is missing and that was already reported).
    fn table(&self, scope: Scope) -> Option<&'a TableSchema> {
        let schema = self.schema?;
        match scope {
            Scope::Users => Some(&schema.users),
            Scope::Enrollments => schema.enrollments.as_ref(),
        }
    }

    fn predicate(&mut self, expr: &Expr, scope: Scope) -> Predicate {
        match &expr.kind {
            ExprKind::Or(operands) => Predicate::Or(operands.iter().map(|e| self.predicate(e, scope)).collect()),
            ExprKind::And(operands) => Predicate::And(operands.iter().map(|e| self.predicate(e, scope)).collect()),
            ExprKind::Not(inner) => Predicate::Not(Box::new(self.predicate(inner, scope))),
            ExprKind::Bool(b) => Predicate::Const(*b),
            ExprKind::Field(field, test) => self.field_test(field, test, scope),
            ExprKind::Enrollment(condition) => self.enrollment(expr.span, condition.as_deref(), None, scope),
            ExprKind::Count { condition, op, count } => {
                let n = if count.value >= 0.0 && count.value.fract() == 0.0 && count.value < u64::MAX as f64 {
                    count.value as u64
                } else {
                    self.error(
                        Diagnostic::error(count.span, format!("`{}` is not a count", count.value))
                            .with_help("compare the count with a whole number of 0 or more"),
                    );
                    0
                };
                self.enrollment(expr.span, condition.as_deref(), Some((*op, n)), scope)
            }
            ExprKind::Completed(course) => self.course_shorthand(expr.span, course, true, scope),
            ExprKind::Enrolled(course) => self.course_shorthand(expr.span, course, false, scope),
            ExprKind::InBranch(code) => self.in_branch(expr.span, code, scope),
            ExprKind::MemberOf(key) => self.member_of(expr.span, key, scope),
        }
    }

    /// Reports a user-level atom used inside `enrollment(...)`.
    fn only_on_users(&mut self, span: Span, scope: Scope, what: &str) -> bool {
        if scope == Scope::Enrollments {
            self.error(
                Diagnostic::error(span, format!("`{what}` cannot be used inside `enrollment(...)`")).with_help(
                    format!("enrollment conditions test enrollment columns; move `{what}` outside, joined with `and`"),
                ),
            );
        }
        scope == Scope::Users
    }

    fn enrollment(
        &mut self,
        span: Span,
        condition: Option<&Expr>,
        count: Option<(CmpOp, u64)>,
        scope: Scope,
    ) -> Predicate {
        if !self.only_on_users(span, scope, "enrollment(...)") {
            return Predicate::Const(false);
        }
        if let Some(schema) = self.schema
            && schema.enrollments.is_none()
        {
            self.error(
                Diagnostic::error(span, "enrollment conditions need an enrollments input")
                    .with_help("pass the enrollments file with `--enrollments FILE`"),
            );
        }
        let condition = condition.map(|c| Box::new(self.predicate(c, Scope::Enrollments)));
        Predicate::Enrollment(EnrollmentTest { condition, count })
    }

    /// `completed("C")` and `enrolled("C")`, expanded per spec §2.
    fn course_shorthand(&mut self, span: Span, course: &Spanned<String>, completed: bool, scope: Scope) -> Predicate {
        let word = if completed { "completed(...)" } else { "enrolled(...)" };
        if !self.only_on_users(span, scope, word) {
            return Predicate::Const(false);
        }
        let mut tests = vec![self.required_enrollment_text(span, "course", &course.value)];
        if completed {
            tests.push(self.required_enrollment_text(span, "status", "completed"));
        }
        let condition = if tests.len() == 1 {
            tests.pop().expect("one test")
        } else {
            Predicate::And(tests)
        };
        self.enrollment(span, None, None, scope);
        Predicate::Enrollment(EnrollmentTest {
            condition: Some(Box::new(condition)),
            count: None,
        })
    }

    fn required_enrollment_text(&mut self, span: Span, column: &str, value: &str) -> Predicate {
        let Some(table) = self.table(Scope::Enrollments) else {
            return Predicate::Const(false);
        };
        match table.resolve(column) {
            Resolution::Found(i) if table.columns[i].column_type == ColumnType::Usable(ValueType::Text) => {
                Predicate::Column(ColumnTest {
                    column: i,
                    test: Test::Compare(CmpOp::Eq, Scalar::Text(value.to_lowercase())),
                })
            }
            _ => {
                self.error(
                    Diagnostic::error(span, format!("the enrollments input has no text column `{column}`"))
                        .with_help("enrollments need `user_id`, `course` and `status` columns"),
                );
                Predicate::Const(false)
            }
        }
    }

    fn in_branch(&mut self, span: Span, code: &Spanned<String>, scope: Scope) -> Predicate {
        if !self.only_on_users(span, scope, "in_branch(...)") {
            return Predicate::Const(false);
        }
        let lower = code.value.to_lowercase();
        match self.schema.map(|s| &s.branches) {
            None => {}
            Some(None) => self.error(
                Diagnostic::error(span, "`in_branch` needs an org tree")
                    .with_help("pass the org tree with `--org FILE` (columns `branch`, `parent`)"),
            ),
            Some(Some(branches)) if !branches.iter().any(|b| b.to_lowercase() == lower) => {
                let near = nearest(&code.value, branches.iter().map(String::as_str));
                let help = did_you_mean(&near).unwrap_or_else(|| {
                    format!("the org tree has {}", list_some(branches.iter().map(String::as_str), 8))
                });
                self.error(Diagnostic::error(code.span, format!("unknown branch `{}`", code.value)).with_help(help));
            }
            Some(Some(_)) => {}
        }
        let column = self
            .table(Scope::Users)
            .and_then(|users| match users.resolve("branch") {
                Resolution::Found(i) if users.columns[i].column_type == ColumnType::Usable(ValueType::Text) => Some(i),
                _ => None,
            });
        match (column, self.schema) {
            (Some(column), _) => Predicate::InBranch(BranchTest { column, code: lower }),
            (None, Some(_)) => {
                self.error(
                    Diagnostic::error(
                        span,
                        "`in_branch` tests the users' `branch` column, which the users input lacks",
                    )
                    .with_help("add a text column `branch` holding each user's branch code"),
                );
                Predicate::Const(false)
            }
            (None, None) => Predicate::Const(false),
        }
    }

    fn member_of(&mut self, span: Span, key: &Spanned<String>, scope: Scope) -> Predicate {
        if !self.only_on_users(span, scope, "member_of(...)") {
            return Predicate::Const(false);
        }
        if let Some(&target) = self.group_index.get(key.value.as_str()) {
            self.references[self.current_group].push((target, key.span));
            let referrer = self.statuses[self.current_group];
            if self.statuses[target] == GroupStatus::Draft && referrer != GroupStatus::Draft {
                self.error(
                    Diagnostic::error(key.span, format!("`{}` is a draft group", key.value)).with_help(
                        "only draft groups may refer to draft groups; activate it or make this group a draft",
                    ),
                );
            }
            return Predicate::MemberOf(GroupRef::Rule(target));
        }
        let statics = self.schema.and_then(|s| s.static_groups.as_ref());
        if statics.is_some_and(|s| s.contains(&key.value)) {
            return Predicate::MemberOf(GroupRef::Static(key.value.clone()));
        }
        let candidates = self
            .keys
            .iter()
            .copied()
            .chain(statics.into_iter().flatten().map(String::as_str));
        let near = nearest(&key.value, candidates);
        match statics {
            Some(_) => {
                let help = did_you_mean(&near).unwrap_or_else(|| {
                    "define the group in the rules file, or give its members in the memberships input".to_string()
                });
                self.error(Diagnostic::error(key.span, format!("unknown group `{}`", key.value)).with_help(help));
            }
            None => {
                let help = did_you_mean(&near)
                    .unwrap_or_else(|| "pass `--memberships FILE` to check static groups".to_string());
                self.warnings.push(
                    Diagnostic::warning(
                        key.span,
                        format!(
                            "`{}` is not defined in the rules file; assuming a static group",
                            key.value
                        ),
                    )
                    .with_help(help),
                );
            }
        }
        Predicate::MemberOf(GroupRef::Static(key.value.clone()))
    }

    /// Resolves a field in the scope's table: `None` when it cannot be
    /// resolved (reported) or names are not being resolved.
    fn resolve(&mut self, field: &FieldRef, scope: Scope) -> Option<(usize, ValueType)> {
        let table = self.table(scope)?;
        match table.resolve(&field.name) {
            Resolution::Found(i) => match &table.columns[i].column_type {
                ColumnType::Usable(t) => Some((i, *t)),
                ColumnType::Unusable(described) => {
                    self.error(
                        Diagnostic::error(
                            field.span,
                            format!(
                                "column `{}` has type {described}, which rules cannot test",
                                table.columns[i].name
                            ),
                        )
                        .with_help("rules test text, number, date and boolean columns"),
                    );
                    None
                }
            },
            Resolution::Ambiguous(names) => {
                self.error(
                    Diagnostic::error(field.span, format!("field `{}` matches several columns", field.name)).with_help(
                        format!(
                            "name one exactly, e.g. `field(\"{}\")`; candidates: {}",
                            names[0],
                            list_some(names.iter().map(String::as_str), 5)
                        ),
                    ),
                );
                None
            }
            Resolution::Missing => {
                self.unknown_field(field, scope, table);
                None
            }
        }
    }

    fn unknown_field(&mut self, field: &FieldRef, scope: Scope, table: &TableSchema) {
        let other = match scope {
            Scope::Users => self.table(Scope::Enrollments),
            Scope::Enrollments => self.table(Scope::Users),
        };
        let in_other = other.is_some_and(|t| matches!(t.resolve(&field.name), Resolution::Found(_)));
        let diagnostic = match (scope, in_other) {
            (Scope::Users, true) => Diagnostic::error(
                field.span,
                format!("`{}` is a column of the enrollments, not of the users", field.name),
            )
            .with_help(format!(
                "test enrollment columns inside `enrollment(...)`, e.g. `enrollment({} == ...)`",
                field.name
            )),
            (Scope::Enrollments, true) => Diagnostic::error(
                field.span,
                format!("user column `{}` is not visible inside `enrollment(...)`", field.name),
            )
            .with_help("move the test on the user outside `enrollment(...)`, joined with `and`"),
            _ => {
                let table_name = if scope == Scope::Users { "users" } else { "enrollments" };
                let near = nearest(&field.name, table.names());
                let help = did_you_mean(&near).unwrap_or_else(|| {
                    format!(
                        "the {table_name} input has the columns {}",
                        list_some(table.names(), 12)
                    )
                });
                Diagnostic::error(
                    field.span,
                    format!("unknown field `{}` in the {table_name}", field.name),
                )
                .with_help(help)
            }
        };
        self.error(diagnostic);
    }

    fn field_test(&mut self, field: &FieldRef, test: &FieldTest, scope: Scope) -> Predicate {
        let column = self.resolve(field, scope);
        let column_type = column.map(|(_, t)| t);
        let test = match test {
            FieldTest::IsTrue => {
                if let Some(t) = column_type.filter(|t| *t != ValueType::Boolean) {
                    let help = match t {
                        ValueType::Text => {
                            format!("compare it, e.g. `{field} == \"...\"`, or write `{field} is not empty`")
                        }
                        _ => format!("compare it, e.g. `{field} >= ...`, or write `{field} is not empty`"),
                    };
                    self.error(
                        Diagnostic::error(
                            field.span,
                            format!("`{}` is {t}, not a boolean, so it cannot stand alone", field.name),
                        )
                        .with_help(help),
                    );
                }
                Some(Test::IsTrue)
            }
            FieldTest::Compare(op, literal) => {
                let scalar = self.scalar(literal);
                if let (Some(t), Some((_, lt))) = (column_type, &scalar) {
                    self.expect_type(field, scope, t, literal, *lt);
                    if t == ValueType::Boolean && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
                        self.error(
                            Diagnostic::error(
                                field.span.to(literal.span),
                                format!("`{}` does not apply to booleans", op.symbol()),
                            )
                            .with_help(format!("use `{field} == true` or `{field} == false`")),
                        );
                    }
                }
                let scalar = scalar.map(|(s, _)| s);
                return self.negatable(
                    column,
                    *op == CmpOp::Ne,
                    scalar.map(|s| Test::Compare(if *op == CmpOp::Ne { CmpOp::Eq } else { *op }, s)),
                );
            }
            FieldTest::In { negated, items } => {
                return self.in_list(field, scope, column_type, items, *negated, column);
            }
            FieldTest::Text(op, text) => {
                if let Some(t) = column_type.filter(|t| *t != ValueType::Text) {
                    let help = match t {
                        ValueType::Date => format!("compare dates with `<`, `>=`, ..., e.g. `{field} >= 2024-01-01`"),
                        ValueType::Number => format!("compare numbers with `==`, `<`, ..., e.g. `{field} >= 10`"),
                        _ => format!("use `{field} == true` or `{field} == false`"),
                    };
                    self.error(
                        Diagnostic::error(
                            field.span,
                            format!("`{}` applies to text, but `{}` is {t}", op.keyword(), field.name),
                        )
                        .with_help(help),
                    );
                }
                let lower = text.value.to_lowercase();
                match op {
                    TextOp::Contains => Some(Test::Contains(lower)),
                    TextOp::StartsWith => Some(Test::StartsWith(lower)),
                    TextOp::EndsWith => Some(Test::EndsWith(lower)),
                    TextOp::Matches => self.regex(text).map(Test::Matches),
                }
            }
            FieldTest::IsEmpty { negated } => {
                return self.negatable(column, *negated, Some(Test::IsEmpty));
            }
        };
        self.negatable(column, false, test)
    }

    fn negatable(&mut self, column: Option<(usize, ValueType)>, negated: bool, test: Option<Test>) -> Predicate {
        let (Some((column, _)), Some(test)) = (column, test) else {
            return Predicate::Const(false);
        };
        let p = Predicate::Column(ColumnTest { column, test });
        if negated { Predicate::Not(Box::new(p)) } else { p }
    }

    fn in_list(
        &mut self,
        field: &FieldRef,
        scope: Scope,
        column_type: Option<ValueType>,
        items: &Spanned<Vec<Spanned<Literal>>>,
        negated: bool,
        column: Option<(usize, ValueType)>,
    ) -> Predicate {
        if items.value.is_empty() {
            self.error(
                Diagnostic::error(items.span, "the list is empty")
                    .with_help("list at least one value, e.g. `[\"a\", \"b\"]`"),
            );
        }
        if items.value.len() > MAX_LIST_ITEMS {
            self.error(
                Diagnostic::error(
                    items.span,
                    format!(
                        "the list has {} items; at most {MAX_LIST_ITEMS} are allowed",
                        items.value.len()
                    ),
                )
                .with_help("put such populations in a static group and use `member_of`"),
            );
        }
        if column_type == Some(ValueType::Boolean) {
            self.error(
                Diagnostic::error(field.span, "`in` does not apply to booleans")
                    .with_help(format!("use `{field} == true` or `{field} == false`")),
            );
        }
        let mut scalars = Vec::with_capacity(items.value.len());
        let mut first_type = None;
        for item in &items.value {
            let Some((scalar, item_type)) = self.scalar(item) else {
                continue;
            };
            match column_type {
                Some(t) if t != ValueType::Boolean => self.expect_type(field, scope, t, item, item_type),
                Some(_) => {}
                None => {
                    let expected = *first_type.get_or_insert(item_type);
                    if expected != item_type {
                        self.error(
                            Diagnostic::error(item.span, format!("the list mixes {expected} and {item_type}"))
                                .with_help("all values of a list have the field's type"),
                        );
                    }
                }
            }
            scalars.push(scalar);
        }
        self.negatable(column, negated, Some(Test::In(scalars)))
    }

    fn expect_type(
        &mut self,
        field: &FieldRef,
        scope: Scope,
        column_type: ValueType,
        literal: &Spanned<Literal>,
        literal_type: ValueType,
    ) {
        if column_type == literal_type {
            return;
        }
        let help = match (&literal.value, column_type) {
            (Literal::Text(t), ValueType::Number) if t.trim().parse::<f64>().is_ok() => {
                format!("write the number without quotes: `{}`", t.trim())
            }
            (Literal::Text(t), ValueType::Date) if NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d").is_ok() => {
                format!("write the date without quotes: `{}`", t.trim())
            }
            (Literal::Text(t), ValueType::Boolean) if matches!(t.trim(), "true" | "false") => {
                format!("write `{}` without quotes", t.trim())
            }
            // Quoting the date would compare text with text: a wrong answer,
            // not a fix. The column is text because of how the data wrote it.
            (Literal::Date(_), ValueType::Text) => {
                let input = if scope == Scope::Users { "users" } else { "enrollments" };
                format!(
                    "the data holds `{field}` as text; if its cells are dates written another way (like \
                     `30/11/2025`), load them as dates with `--date-format {input}.{}=%d/%m/%Y` \
                     (or `%m/%d/%Y` for month first)",
                    field.name
                )
            }
            (Literal::Number(_) | Literal::Bool(_), ValueType::Text) => {
                format!("put the value in quotes: `\"{}\"`", literal.value)
            }
            (_, ValueType::Date) => "compare with a date like `2024-01-31` or `today - 30d`".to_string(),
            (_, ValueType::Number) => "compare with a number like `42` or `-3.5`".to_string(),
            (_, ValueType::Boolean) => "compare with `true` or `false`".to_string(),
            (_, ValueType::Text) => "compare with text in quotes".to_string(),
        };
        self.error(
            Diagnostic::error(
                literal.span,
                format!(
                    "`{}` is {column_type}, but `{}` is {literal_type}",
                    field.name, literal.value
                ),
            )
            .with_help(help),
        );
    }

    fn scalar(&mut self, literal: &Spanned<Literal>) -> Option<(Scalar, ValueType)> {
        Some(match &literal.value {
            Literal::Text(t) => (Scalar::Text(t.to_lowercase()), ValueType::Text),
            Literal::Number(n) => (Scalar::Number(*n), ValueType::Number),
            Literal::Bool(b) => (Scalar::Bool(*b), ValueType::Boolean),
            Literal::Date(d) => (Scalar::Date(days_since_epoch(*d), None), ValueType::Date),
            Literal::Today(offset) => match shift(self.as_of, *offset) {
                Some(d) => {
                    let from_today = offset.unwrap_or(DateOffset {
                        amount: 0,
                        unit: DateUnit::Days,
                    });
                    (Scalar::Date(days_since_epoch(d), Some(from_today)), ValueType::Date)
                }
                None => {
                    self.error(
                        Diagnostic::error(literal.span, "the date is out of range").with_help("use a smaller offset"),
                    );
                    return None;
                }
            },
        })
    }

    fn regex(&mut self, pattern: &Spanned<String>) -> Option<Pattern> {
        match Pattern::new(&pattern.value, MAX_REGEX_BYTES) {
            Ok(compiled) => Some(compiled),
            Err(error) => {
                let help = match &error {
                    PatternError::TooBig(_) => "simplify it, e.g. smaller repetition counts like `{1,100}`",
                    PatternError::Syntax(_) => "patterns use Rust regex syntax; escape special characters like `\\\\.`",
                    PatternError::NotAscii(_) => {
                        "`\\d`, `\\w`, `\\s` and `\\b` are ASCII classes; write other classes out"
                    }
                };
                self.error(Diagnostic::error(pattern.span, error.to_string()).with_help(help));
                None
            }
        }
    }

    /// Orders rule groups so that `member_of` targets come first, reporting
    /// every cycle as `a -> b -> a`. Iterative, so long chains are fine.
    fn order_groups(&mut self) -> Vec<usize> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        let n = self.references.len();
        let mut mark = vec![Mark::New; n];
        let mut order = Vec::with_capacity(n);
        let mut cycles = Vec::new();
        for root in 0..n {
            if mark[root] != Mark::New {
                continue;
            }
            // (group, index of the next reference to follow)
            let mut path: Vec<(usize, usize)> = vec![(root, 0)];
            mark[root] = Mark::OnPath;
            while let Some(&mut (group, ref mut next)) = path.last_mut() {
                if let Some(&(target, span)) = self.references[group].get(*next) {
                    *next += 1;
                    match mark[target] {
                        Mark::New => {
                            mark[target] = Mark::OnPath;
                            path.push((target, 0));
                        }
                        Mark::OnPath => {
                            let from = path
                                .iter()
                                .position(|(g, _)| *g == target)
                                .expect("target is on the path");
                            let mut names: Vec<&str> = path[from..].iter().map(|(g, _)| self.keys[*g]).collect();
                            names.push(self.keys[target]);
                            cycles.push(
                                Diagnostic::error(span, format!("`member_of` cycle: {}", names.join(" -> ")))
                                    .with_help("a group cannot depend on itself; remove one of these references"),
                            );
                        }
                        Mark::Done => {}
                    }
                } else {
                    mark[group] = Mark::Done;
                    order.push(group);
                    path.pop();
                }
            }
        }
        self.errors.extend(cycles);
        order
    }
}

/// `as_of` moved by a `today ± N unit` offset; months and years clamp to the
/// month's last day.
pub fn shift(as_of: NaiveDate, offset: Option<DateOffset>) -> Option<NaiveDate> {
    let Some(DateOffset { amount, unit }) = offset else {
        return Some(as_of);
    };
    let magnitude = amount.unsigned_abs();
    let (days, months) = match unit {
        DateUnit::Days => (magnitude, 0),
        DateUnit::Weeks => (magnitude.checked_mul(7)?, 0),
        DateUnit::Months => (0, magnitude),
        DateUnit::Years => (0, magnitude.checked_mul(12)?),
    };
    let months = Months::new(u32::try_from(months).ok()?);
    if amount < 0 {
        as_of.checked_sub_days(Days::new(days))?.checked_sub_months(months)
    } else {
        as_of.checked_add_days(Days::new(days))?.checked_add_months(months)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn month_steps_clamp_to_the_last_day() {
        let off = |amount, unit| Some(DateOffset { amount, unit });
        assert_eq!(
            shift(date(2024, 3, 31), off(-1, DateUnit::Months)),
            Some(date(2024, 2, 29))
        );
        assert_eq!(
            shift(date(2024, 2, 29), off(1, DateUnit::Years)),
            Some(date(2025, 2, 28))
        );
        assert_eq!(
            shift(date(2024, 1, 31), off(1, DateUnit::Months)),
            Some(date(2024, 2, 29))
        );
        assert_eq!(
            shift(date(2024, 1, 1), off(-2, DateUnit::Weeks)),
            Some(date(2023, 12, 18))
        );
        assert_eq!(shift(date(2024, 1, 1), None), Some(date(2024, 1, 1)));
        assert_eq!(shift(date(2024, 1, 1), off(1_000_000, DateUnit::Years)), None);
    }
}
