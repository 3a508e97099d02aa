//! pest pairs → syntax tree, with the checks that need the text itself
//! (valid dates, escapes, numbers, nesting depth).

use super::Rule;
use super::scan::depth_error;
use crate::ast::*;
use crate::diagnostic::Diagnostic;
use crate::limits::MAX_DEPTH;
use crate::source::{Span, Spanned};
use chrono::NaiveDate;
use pest::iterators::Pair;

type Lowered<T> = Result<T, Diagnostic>;

fn span_of(pair: &Pair<'_, Rule>) -> Span {
    let span = pair.as_span();
    Span::new(span.start(), span.end())
}

pub(super) fn lower_file(pair: Pair<'_, Rule>) -> Lowered<RulesFile> {
    let groups = pair
        .into_inner()
        .filter(|p| p.as_rule() == Rule::group)
        .map(lower_group)
        .collect::<Lowered<Vec<_>>>()?;
    Ok(RulesFile { groups })
}

pub(super) fn lower_expr_only(pair: Pair<'_, Rule>) -> Lowered<Expr> {
    let expr = pair
        .into_inner()
        .find(|p| p.as_rule() == Rule::expr)
        .expect("expr_only holds an expr");
    lower_expr(expr, 0)
}

fn lower_group(pair: Pair<'_, Rule>) -> Lowered<GroupDef> {
    let span = span_of(&pair);
    let mut key = None;
    let mut name = None;
    let mut status = None;
    let mut rule = None;
    let mut includes = Vec::new();
    let mut excludes = Vec::new();
    for part in pair.into_inner() {
        match part.as_rule() {
            Rule::group_key => key = Some(Spanned::new(part.as_str().to_string(), span_of(&part))),
            Rule::text => name = Some(lower_text(part)?),
            Rule::status => {
                let value = GroupStatus::from_keyword(part.as_str()).expect("grammar lists statuses");
                status = Some(Spanned::new(value, span_of(&part)));
            }
            Rule::expr => rule = Some(lower_expr(part, 0)?),
            Rule::clause => {
                let clause_span = span_of(&part);
                let mut inner = part.into_inner();
                let word = inner.next().expect("clause starts with a keyword");
                let list = inner.next().expect("clause holds a list");
                let ids = list
                    .into_inner()
                    .map(|id| {
                        let span = span_of(&id);
                        id.as_str().parse::<u64>().map(|v| Spanned::new(v, span)).map_err(|_| {
                            Diagnostic::error(span, "user id out of range")
                                .with_help("user ids are whole numbers below 4294967296")
                        })
                    })
                    .collect::<Lowered<Vec<_>>>()?;
                let list = IdList { ids, span: clause_span };
                if word.as_rule() == Rule::kw_include {
                    includes.push(list);
                } else {
                    excludes.push(list);
                }
            }
            _ => {}
        }
    }
    Ok(GroupDef {
        key: key.expect("group has a key"),
        name,
        status,
        rule: rule.expect("group has a rule"),
        includes,
        excludes,
        span,
    })
}

fn lower_expr(pair: Pair<'_, Rule>, depth: usize) -> Lowered<Expr> {
    lower_chain(pair, depth, Rule::kw_or, lower_and, ExprKind::Or)
}

fn lower_and(pair: Pair<'_, Rule>, depth: usize) -> Lowered<Expr> {
    lower_chain(pair, depth, Rule::kw_and, lower_unary, ExprKind::And)
}

/// `a OP b OP ...`: one operand stays itself, more become one n-ary node.
fn lower_chain(
    pair: Pair<'_, Rule>,
    depth: usize,
    keyword: Rule,
    lower_operand: fn(Pair<'_, Rule>, usize) -> Lowered<Expr>,
    combine: fn(Vec<Expr>) -> ExprKind,
) -> Lowered<Expr> {
    let span = span_of(&pair);
    let mut operands = pair
        .into_inner()
        .filter(|p| p.as_rule() != keyword)
        .map(|p| lower_operand(p, depth))
        .collect::<Lowered<Vec<_>>>()?;
    Ok(if operands.len() == 1 {
        operands.pop().expect("one operand")
    } else {
        Expr {
            kind: combine(operands),
            span,
        }
    })
}

fn lower_unary(pair: Pair<'_, Rule>, depth: usize) -> Lowered<Expr> {
    let end = span_of(&pair).end;
    let mut nots = Vec::new();
    let mut primary = None;
    for part in pair.into_inner() {
        if part.as_rule() == Rule::not_op {
            nots.push(span_of(&part));
            // Checked before building anything, so a chain of 100,000 `not`s
            // never becomes a tree that deep.
            if depth + nots.len() > MAX_DEPTH {
                return Err(depth_error(span_of(&part)));
            }
        } else {
            primary = Some(part);
        }
    }
    let mut expr = lower_primary(primary.expect("unary has a primary"), depth + nots.len())?;
    for not in nots.into_iter().rev() {
        expr = Expr {
            kind: ExprKind::Not(Box::new(expr)),
            span: Span::new(not.start, end),
        };
    }
    Ok(expr)
}

fn lower_primary(pair: Pair<'_, Rule>, depth: usize) -> Lowered<Expr> {
    let span = span_of(&pair);
    let kind = match pair.as_rule() {
        Rule::paren => {
            if depth + 1 > MAX_DEPTH {
                return Err(depth_error(span));
            }
            let inner = pair.into_inner().next().expect("paren holds an expr");
            // The parentheses are not kept: the tree's shape says it all.
            return lower_expr(inner, depth + 1);
        }
        Rule::bool_atom => ExprKind::Bool(first_inner(pair).as_rule() == Rule::kw_true),
        Rule::enrollment_atom => ExprKind::Enrollment(lower_enrollment(pair, depth)?),
        Rule::count_atom => {
            let mut inner = pair.into_inner().filter(|p| p.as_rule() != Rule::kw_count);
            let enrollment = inner.next().expect("count holds enrollment");
            let condition = lower_enrollment(enrollment, depth)?;
            let op = lower_cmp_op(&inner.next().expect("count has an operator"));
            let count_pair = inner.next().expect("count has a number");
            let count = Spanned::new(lower_number(&count_pair)?, span_of(&count_pair));
            ExprKind::Count { condition, op, count }
        }
        Rule::completed_atom => ExprKind::Completed(lower_text(last_inner(pair))?),
        Rule::enrolled_atom => ExprKind::Enrolled(lower_text(last_inner(pair))?),
        Rule::in_branch_atom => ExprKind::InBranch(lower_text(last_inner(pair))?),
        Rule::member_of_atom => {
            let key = last_inner(pair);
            if key.as_rule() == Rule::text {
                ExprKind::MemberOf(lower_text(key)?)
            } else {
                ExprKind::MemberOf(Spanned::new(key.as_str().to_string(), span_of(&key)))
            }
        }
        Rule::field_atom => {
            let mut inner = pair.into_inner();
            let field = lower_field(inner.next().expect("field_atom has a field"))?;
            let test = match inner.next() {
                None => FieldTest::IsTrue,
                Some(test) => lower_field_test(test)?,
            };
            ExprKind::Field(field, test)
        }
        other => unreachable!("not a primary: {other:?}"),
    };
    Ok(Expr { kind, span })
}

fn first_inner(pair: Pair<'_, Rule>) -> Pair<'_, Rule> {
    pair.into_inner().next().expect("rule has an inner pair")
}

fn last_inner(pair: Pair<'_, Rule>) -> Pair<'_, Rule> {
    pair.into_inner().last().expect("rule has an inner pair")
}

fn lower_enrollment(pair: Pair<'_, Rule>, depth: usize) -> Lowered<Option<Box<Expr>>> {
    let span = span_of(&pair);
    match pair.into_inner().find(|p| p.as_rule() == Rule::expr) {
        None => Ok(None),
        Some(_) if depth + 1 > MAX_DEPTH => Err(depth_error(span)),
        Some(condition) => Ok(Some(Box::new(lower_expr(condition, depth + 1)?))),
    }
}

fn lower_field(pair: Pair<'_, Rule>) -> Lowered<FieldRef> {
    let span = span_of(&pair);
    let inner = first_inner(pair);
    let name = match inner.as_rule() {
        Rule::field_call => lower_text(last_inner(inner))?.value,
        _ => inner.as_str().to_string(),
    };
    Ok(FieldRef { name, span })
}

fn lower_field_test(pair: Pair<'_, Rule>) -> Lowered<FieldTest> {
    let rule = pair.as_rule();
    let mut inner = pair.into_inner();
    Ok(match rule {
        Rule::compare => {
            let op = lower_cmp_op(&inner.next().expect("compare has an operator"));
            FieldTest::Compare(op, lower_value(inner.next().expect("compare has a value"))?)
        }
        Rule::in_test | Rule::not_in_test => {
            let list = inner.next_back().expect("in has a list");
            let span = span_of(&list);
            let items = list.into_inner().map(lower_value).collect::<Lowered<Vec<_>>>()?;
            FieldTest::In {
                negated: rule == Rule::not_in_test,
                items: Spanned::new(items, span),
            }
        }
        Rule::is_empty_test => FieldTest::IsEmpty { negated: false },
        Rule::is_not_empty_test => FieldTest::IsEmpty { negated: true },
        Rule::contains_test | Rule::starts_with_test | Rule::ends_with_test | Rule::matches_test => {
            let op = match rule {
                Rule::contains_test => TextOp::Contains,
                Rule::starts_with_test => TextOp::StartsWith,
                Rule::ends_with_test => TextOp::EndsWith,
                _ => TextOp::Matches,
            };
            FieldTest::Text(op, lower_text(inner.next_back().expect("test has text"))?)
        }
        other => unreachable!("not a field test: {other:?}"),
    })
}

fn lower_cmp_op(pair: &Pair<'_, Rule>) -> CmpOp {
    CmpOp::from_symbol(pair.as_str()).expect("grammar lists operators")
}

fn lower_value(pair: Pair<'_, Rule>) -> Lowered<Spanned<Literal>> {
    let span = span_of(&pair);
    let literal = match pair.as_rule() {
        Rule::text => Literal::Text(lower_text(pair)?.value),
        Rule::number => Literal::Number(lower_number(&pair)?),
        Rule::bool_value => Literal::Bool(first_inner(pair).as_rule() == Rule::kw_true),
        Rule::date => Literal::Date(NaiveDate::parse_from_str(pair.as_str(), "%Y-%m-%d").map_err(|_| {
            Diagnostic::error(span, format!("`{}` is not a calendar date", pair.as_str()))
                .with_help("write dates as YYYY-MM-DD with a real month and day, e.g. 2024-02-29")
        })?),
        Rule::today => Literal::Today(lower_offset(pair)?),
        other => unreachable!("not a value: {other:?}"),
    };
    Ok(Spanned::new(literal, span))
}

fn lower_offset(pair: Pair<'_, Rule>) -> Lowered<Option<DateOffset>> {
    let mut inner = pair.into_inner().skip(1);
    let (Some(sign), Some(offset)) = (inner.next(), inner.next()) else {
        return Ok(None);
    };
    let text = offset.as_str();
    let (digits, unit) = text.split_at(text.len() - 1);
    let amount: i64 = digits
        .parse::<u32>()
        .ok()
        .filter(|n| *n <= 1_000_000)
        .ok_or_else(|| {
            Diagnostic::error(span_of(&offset), format!("date offset `{text}` is too large"))
                .with_help("offsets go up to 1000000 units")
        })?
        .into();
    let unit = match unit {
        "d" => DateUnit::Days,
        "w" => DateUnit::Weeks,
        "m" => DateUnit::Months,
        _ => DateUnit::Years,
    };
    let amount = if sign.as_str() == "-" { -amount } else { amount };
    Ok(Some(DateOffset { amount, unit }))
}

fn lower_number(pair: &Pair<'_, Rule>) -> Lowered<f64> {
    pair.as_str()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .ok_or_else(|| Diagnostic::error(span_of(pair), format!("number `{}` is too large", pair.as_str())))
}

/// Unescapes a `text` pair (quotes included in its span).
fn lower_text(pair: Pair<'_, Rule>) -> Lowered<Spanned<String>> {
    let span = span_of(&pair);
    let raw = first_inner(pair);
    let body_start = span_of(&raw).start;
    let raw = raw.as_str();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some((_, 'n')) => out.push('\n'),
            Some((_, 't')) => out.push('\t'),
            Some((_, 'u')) => {
                let close = raw[i..].find('}').expect("grammar closes \\u{...}") + i;
                let hex = &raw[i + 3..close];
                let c = u32::from_str_radix(hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| {
                        Diagnostic::error(
                            Span::new(body_start + i, body_start + close + 1),
                            format!("`\\u{{{hex}}}` is not a Unicode character"),
                        )
                        .with_help("use a code point up to 10FFFF, outside D800-DFFF")
                    })?;
                out.push(c);
                while chars.next().is_some_and(|(j, _)| j < close) {}
            }
            Some((_, escaped)) => out.push(escaped),
            None => {}
        }
    }
    Ok(Spanned::new(out, span))
}
