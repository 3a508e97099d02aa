//! The syntax tree of a rules file, exactly as written (with spans), and the
//! printer that writes it back in canonical form.
//!
//! Trees compare equal when they mean the same text, wherever it was written
//! (see [`Span`]'s equality). Printing then parsing gives back an equal tree.

use crate::source::{Span, Spanned};
use chrono::NaiveDate;
use std::fmt::{self, Write as _};

/// A parsed rules file.
#[derive(Clone, Debug, PartialEq)]
pub struct RulesFile {
    /// The group definitions, in file order.
    pub groups: Vec<GroupDef>,
}

impl RulesFile {
    /// Each group's `include` ids, by key (to tell members by `include`
    /// from members by rule).
    pub fn include_lists(&self) -> std::collections::HashMap<String, Vec<u64>> {
        self.groups
            .iter()
            .map(|g| {
                let ids = g
                    .includes
                    .iter()
                    .flat_map(|list| list.ids.iter().map(|id| id.value))
                    .collect();
                (g.key.value.clone(), ids)
            })
            .collect()
    }

    /// The file with only group `key` and the groups it uses through
    /// `member_of`, directly or not, in file order; `None` without such a
    /// group. Explaining one group then needs only the inputs those groups
    /// read. Keys are matched as written; `member_of` keys that name no
    /// group of the file (static groups) are left to the checker.
    pub fn closure_of(&self, key: &str) -> Option<RulesFile> {
        let by_key: std::collections::HashMap<&str, &GroupDef> =
            self.groups.iter().map(|g| (g.key.value.as_str(), g)).collect();
        let mut kept = std::collections::HashSet::new();
        let mut pending = vec![by_key.get(key)?.key.value.as_str()];
        while let Some(next) = pending.pop() {
            if !kept.insert(next) {
                continue;
            }
            let mut used = Vec::new();
            by_key[next].rule.member_of_keys(&mut used);
            pending.extend(used.into_iter().filter(|k| by_key.contains_key(k)));
        }
        Some(RulesFile {
            groups: self
                .groups
                .iter()
                .filter(|g| kept.contains(g.key.value.as_str()))
                .cloned()
                .collect(),
        })
    }
}

impl Expr {
    /// Appends the keys this expression names with `member_of`.
    fn member_of_keys<'e>(&'e self, keys: &mut Vec<&'e str>) {
        match &self.kind {
            ExprKind::MemberOf(key) => keys.push(&key.value),
            ExprKind::Or(operands) | ExprKind::And(operands) => {
                operands.iter().for_each(|e| e.member_of_keys(keys));
            }
            ExprKind::Not(operand) => operand.member_of_keys(keys),
            ExprKind::Bool(_)
            | ExprKind::Field(..)
            | ExprKind::Enrollment(_)
            | ExprKind::Count { .. }
            | ExprKind::Completed(_)
            | ExprKind::Enrolled(_)
            | ExprKind::InBranch(_) => {}
        }
    }
}

/// `group KEY ["Name"] [STATUS] { RULE [include [...]] [exclude [...]] }`.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupDef {
    /// The stable key.
    pub key: Spanned<String>,
    /// The display name, if given.
    pub name: Option<Spanned<String>>,
    /// The lifecycle status, if given (`active` otherwise).
    pub status: Option<Spanned<GroupStatus>>,
    /// The membership rule.
    pub rule: Expr,
    /// `include [...]` clauses, in order (more than one is a check error).
    pub includes: Vec<IdList>,
    /// `exclude [...]` clauses, in order (more than one is a check error).
    pub excludes: Vec<IdList>,
    /// The whole definition.
    pub span: Span,
}

/// A group's lifecycle status (spec §6, "Group status").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum GroupStatus {
    /// Members are evaluated and committed.
    #[default]
    Active,
    /// Evaluated for previews only, never committed.
    Draft,
    /// Keeps its last committed members.
    Paused,
    /// Only adds members.
    AddOnly,
    /// Only removes members.
    RemoveOnly,
}

impl GroupStatus {
    /// The keyword for this status.
    pub fn keyword(self) -> &'static str {
        match self {
            GroupStatus::Active => "active",
            GroupStatus::Draft => "draft",
            GroupStatus::Paused => "paused",
            GroupStatus::AddOnly => "add_only",
            GroupStatus::RemoveOnly => "remove_only",
        }
    }

    /// The status named by `keyword`, if any.
    pub fn from_keyword(keyword: &str) -> Option<GroupStatus> {
        [
            GroupStatus::Active,
            GroupStatus::Draft,
            GroupStatus::Paused,
            GroupStatus::AddOnly,
            GroupStatus::RemoveOnly,
        ]
        .into_iter()
        .find(|s| s.keyword() == keyword)
    }
}

/// `[1001, 1002]` after `include` or `exclude`.
#[derive(Clone, Debug, PartialEq)]
pub struct IdList {
    /// The user ids as written (range is checked later).
    pub ids: Vec<Spanned<u64>>,
    /// The whole clause.
    pub span: Span,
}

/// An expression with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where it was written.
    pub span: Span,
}

/// The forms an expression takes.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// `a or b or ...` (at least two operands).
    Or(Vec<Expr>),
    /// `a and b and ...` (at least two operands).
    And(Vec<Expr>),
    /// `not a`.
    Not(Box<Expr>),
    /// `true` or `false`.
    Bool(bool),
    /// A test on a field: `department == "Sales"`, `email contains "@acme"`, ...
    Field(FieldRef, FieldTest),
    /// `enrollment(COND)`; `enrollment()` has no condition.
    Enrollment(Option<Box<Expr>>),
    /// `count(enrollment(COND)) OP N`.
    Count {
        /// The enrollment condition, if any.
        condition: Option<Box<Expr>>,
        /// The comparison.
        op: CmpOp,
        /// The number compared with.
        count: Spanned<f64>,
    },
    /// `completed("C")`.
    Completed(Spanned<String>),
    /// `enrolled("C")`.
    Enrolled(Spanned<String>),
    /// `in_branch("B")`.
    InBranch(Spanned<String>),
    /// `member_of(KEY)`.
    MemberOf(Spanned<String>),
}

/// A field name as written: bare, or `field("...")`.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldRef {
    /// The column name.
    pub name: String,
    /// Where it was written.
    pub span: Span,
}

/// What is tested about a field.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldTest {
    /// A field alone: a boolean field that is true.
    IsTrue,
    /// `FIELD OP VALUE`.
    Compare(CmpOp, Spanned<Literal>),
    /// `FIELD in [...]`, or `FIELD not in [...]` when `negated`.
    In {
        /// Whether it was `not in`.
        negated: bool,
        /// The list.
        items: Spanned<Vec<Spanned<Literal>>>,
    },
    /// `contains`, `starts_with`, `ends_with` or `matches` with its text.
    Text(TextOp, Spanned<String>),
    /// `is empty`, or `is not empty` when `negated`.
    IsEmpty {
        /// Whether it was `is not empty`.
        negated: bool,
    },
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `==` (also written `=`).
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

impl CmpOp {
    /// The canonical symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// The operator written as `symbol` (`=` means `==`).
    pub fn from_symbol(symbol: &str) -> Option<CmpOp> {
        Some(match symbol {
            "==" | "=" => CmpOp::Eq,
            "!=" => CmpOp::Ne,
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            ">" => CmpOp::Gt,
            ">=" => CmpOp::Ge,
            _ => return None,
        })
    }

    /// Applies the comparison to two ordered values.
    pub fn holds<T: PartialOrd>(self, left: T, right: T) -> bool {
        match self {
            CmpOp::Eq => left == right,
            CmpOp::Ne => left != right,
            CmpOp::Lt => left < right,
            CmpOp::Le => left <= right,
            CmpOp::Gt => left > right,
            CmpOp::Ge => left >= right,
        }
    }
}

/// Substring and pattern tests on text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TextOp {
    /// `contains`.
    Contains,
    /// `starts_with`.
    StartsWith,
    /// `ends_with`.
    EndsWith,
    /// `matches` (a regular expression).
    Matches,
}

impl TextOp {
    /// The keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            TextOp::Contains => "contains",
            TextOp::StartsWith => "starts_with",
            TextOp::EndsWith => "ends_with",
            TextOp::Matches => "matches",
        }
    }
}

/// A literal value.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// `"text"`.
    Text(String),
    /// `42`, `-3.5`.
    Number(f64),
    /// `2024-01-31`.
    Date(NaiveDate),
    /// `today`, or `today ± N unit`.
    Today(Option<DateOffset>),
    /// `true`, `false`.
    Bool(bool),
}

/// `± N unit` after `today`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DateOffset {
    /// Signed amount: `today - 30d` is -30 days.
    pub amount: i64,
    /// The unit.
    pub unit: DateUnit,
}

/// Units of a date offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DateUnit {
    /// `d`: days.
    Days,
    /// `w`: weeks.
    Weeks,
    /// `m`: calendar months, clamped to the month's last day.
    Months,
    /// `y`: calendar years, clamped to the month's last day.
    Years,
}

impl DateUnit {
    /// The unit's letter.
    pub fn letter(self) -> char {
        match self {
            DateUnit::Days => 'd',
            DateUnit::Weeks => 'w',
            DateUnit::Months => 'm',
            DateUnit::Years => 'y',
        }
    }
}

/// Words that cannot be bare field names (use `field("...")` for such columns).
pub const RESERVED_WORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "is",
    "empty",
    "true",
    "false",
    "today",
    "contains",
    "starts_with",
    "ends_with",
    "matches",
];

/// Whether `name` can be written as a bare field name.
pub fn is_bare_field_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first == '_' || unicode_ident::is_xid_start(first))
        && chars.all(unicode_ident::is_xid_continue)
        && !RESERVED_WORDS.contains(&name)
}

/// Whether `key` is a valid group key (`[A-Za-z_][A-Za-z0-9_-]*`).
pub fn is_group_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Writes `text` as a quoted literal with the language's escapes.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:X}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl fmt::Display for RulesFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, group) in self.groups.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{group}")?;
        }
        Ok(())
    }
}

impl fmt::Display for GroupDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group {}", self.key.value)?;
        if let Some(name) = &self.name {
            write!(f, " {}", quote(&name.value))?;
        }
        if let Some(status) = &self.status {
            write!(f, " {}", status.value.keyword())?;
        }
        writeln!(f, " {{")?;
        writeln!(f, "    {}", self.rule)?;
        for (word, lists) in [("include", &self.includes), ("exclude", &self.excludes)] {
            for list in lists {
                let ids: Vec<String> = list.ids.iter().map(|id| id.value.to_string()).collect();
                writeln!(f, "    {word} [{}]", ids.join(", "))?;
            }
        }
        writeln!(f, "}}")
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Or(operands) => write_operands(f, operands, " or "),
            ExprKind::And(operands) => write_operands(f, operands, " and "),
            ExprKind::Not(inner) => {
                f.write_str("not ")?;
                write_operand(f, inner, matches!(inner.kind, ExprKind::Or(_) | ExprKind::And(_)))
            }
            ExprKind::Bool(b) => write!(f, "{b}"),
            ExprKind::Field(field, test) => write_field_test(f, field, test),
            ExprKind::Enrollment(condition) => write_enrollment(f, condition.as_deref()),
            ExprKind::Count { condition, op, count } => {
                f.write_str("count(")?;
                write_enrollment(f, condition.as_deref())?;
                write!(f, ") {} {}", op.symbol(), count.value)
            }
            ExprKind::Completed(course) => write!(f, "completed({})", quote(&course.value)),
            ExprKind::Enrolled(course) => write!(f, "enrolled({})", quote(&course.value)),
            ExprKind::InBranch(branch) => write!(f, "in_branch({})", quote(&branch.value)),
            ExprKind::MemberOf(key) if is_group_key(&key.value) => {
                write!(f, "member_of({})", key.value)
            }
            ExprKind::MemberOf(key) => write!(f, "member_of({})", quote(&key.value)),
        }
    }
}

/// Operands of `and`/`or` that are themselves `and`/`or` get parentheses, so
/// the printed text parses back to the same tree shape.
fn write_operands(f: &mut fmt::Formatter<'_>, operands: &[Expr], separator: &str) -> fmt::Result {
    for (i, operand) in operands.iter().enumerate() {
        if i > 0 {
            f.write_str(separator)?;
        }
        let nested = matches!(operand.kind, ExprKind::Or(_) | ExprKind::And(_));
        write_operand(f, operand, nested)?;
    }
    Ok(())
}

fn write_operand(f: &mut fmt::Formatter<'_>, operand: &Expr, parenthesize: bool) -> fmt::Result {
    if parenthesize {
        write!(f, "({operand})")
    } else {
        write!(f, "{operand}")
    }
}

fn write_enrollment(f: &mut fmt::Formatter<'_>, condition: Option<&Expr>) -> fmt::Result {
    match condition {
        Some(condition) => write!(f, "enrollment({condition})"),
        None => f.write_str("enrollment()"),
    }
}

fn write_field_test(f: &mut fmt::Formatter<'_>, field: &FieldRef, test: &FieldTest) -> fmt::Result {
    write!(f, "{field}")?;
    match test {
        FieldTest::IsTrue => Ok(()),
        FieldTest::Compare(op, value) => write!(f, " {} {}", op.symbol(), value.value),
        FieldTest::In { negated, items } => {
            let items: Vec<String> = items.value.iter().map(|v| v.value.to_string()).collect();
            let word = if *negated { "not in" } else { "in" };
            write!(f, " {word} [{}]", items.join(", "))
        }
        FieldTest::Text(op, text) => write!(f, " {} {}", op.keyword(), quote(&text.value)),
        FieldTest::IsEmpty { negated: false } => f.write_str(" is empty"),
        FieldTest::IsEmpty { negated: true } => f.write_str(" is not empty"),
    }
}

impl fmt::Display for FieldRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_bare_field_name(&self.name) {
            f.write_str(&self.name)
        } else {
            write!(f, "field({})", quote(&self.name))
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Text(text) => f.write_str(&quote(text)),
            Literal::Number(n) => write!(f, "{n}"),
            Literal::Date(date) => write!(f, "{}", date.format("%Y-%m-%d")),
            Literal::Today(None) => f.write_str("today"),
            Literal::Today(Some(offset)) => {
                let sign = if offset.amount < 0 { '-' } else { '+' };
                write!(
                    f,
                    "today {sign} {}{}",
                    offset.amount.unsigned_abs(),
                    offset.unit.letter()
                )
            }
            Literal::Bool(b) => write!(f, "{b}"),
        }
    }
}
