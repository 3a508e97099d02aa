//! pest's "expected ..." errors turned into diagnostics an admin can act on,
//! with hints for the mistakes people really make (`&&`, `=>`, `AND`, ...).

use super::Rule;
use crate::diagnostic::Diagnostic;
use crate::source::Span;
use pest::error::{ErrorVariant, InputLocation};

/// Converts a pest error into one diagnostic.
pub(super) fn from_pest(error: &pest::error::Error<Rule>, text: &str) -> Diagnostic {
    let at = match error.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((start, _)) => start,
    };
    // The grammar may fail inside an operator (`<>` fails at `>`), so hints
    // look at the whole run of operator characters around the position.
    let (run_start, run) = operator_run(text, at);
    if let Some(hint) = hint_for(run) {
        return hint.at(Span::new(run_start, run_start + run.len()));
    }
    let token = token_at(text, at);
    let span = Span::new(at, at + token.len());
    if let Some(hint) = hint_for(token) {
        return hint.at(span);
    }
    let expected = match &error.variant {
        ErrorVariant::ParsingError { positives, .. } => describe(positives),
        ErrorVariant::CustomError { message } => message.clone(),
    };
    let found = if token.is_empty() {
        "the end of the file".to_string()
    } else {
        format!("`{token}`")
    };
    let diagnostic = Diagnostic::error(span, format!("expected {expected}, found {found}"));
    if crate::ast::RESERVED_WORDS.contains(&token) && expected.contains("a condition") {
        return diagnostic.with_help(format!(
            "`{token}` is a keyword; to test a column named `{token}`, write `field(\"{token}\")`"
        ));
    }
    diagnostic
}

const OPERATOR_CHARS: &str = "<>=!&|";

/// The run of operator characters around `at`, and where it starts.
fn operator_run(text: &str, at: usize) -> (usize, &str) {
    let at = at.min(text.len());
    let start = text[..at]
        .char_indices()
        .rev()
        .take_while(|(_, c)| OPERATOR_CHARS.contains(*c))
        .last()
        .map_or(at, |(i, _)| i);
    let end = text[at..]
        .find(|c| !OPERATOR_CHARS.contains(c))
        .map_or(text.len(), |i| at + i);
    (start, &text[start..end])
}

/// The word or symbol starting at `at`, for quoting in messages.
fn token_at(text: &str, at: usize) -> &str {
    let rest = &text[at.min(text.len())..];
    let word_len = rest
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
        .map_or(rest.len(), |(i, _)| i);
    if word_len > 0 {
        return &rest[..word_len];
    }
    let symbol_len = rest
        .char_indices()
        .find(|(_, c)| c.is_alphanumeric() || c.is_whitespace() || "\"([{}])".contains(*c))
        .map_or(rest.len(), |(i, _)| i);
    match symbol_len {
        0 => rest.chars().next().map_or("", |c| &rest[..c.len_utf8()]),
        n => &rest[..n],
    }
}

struct Hint {
    message: String,
    help: String,
}

impl Hint {
    fn at(self, span: Span) -> Diagnostic {
        Diagnostic::error(span, self.message).with_help(self.help)
    }
}

/// Tailored messages for tokens that are almost right.
fn hint_for(token: &str) -> Option<Hint> {
    let replacement = match token {
        "&&" | "&" => "and",
        "||" | "|" => "or",
        "!" => "not",
        "=>" => ">=",
        "=<" => "<=",
        "<>" => "!=",
        "===" => "==",
        "!==" => "!=",
        _ => {
            let lower = token.to_lowercase();
            let keyword = ["and", "or", "not", "in", "is", "empty", "true", "false", "today"]
                .into_iter()
                .find(|k| *k == lower && token != lower)?;
            return Some(Hint {
                message: format!("keywords are lowercase: `{token}` is not a keyword"),
                help: format!("write `{keyword}`"),
            });
        }
    };
    Some(Hint {
        message: format!("`{token}` is not an operator of the rules language"),
        help: format!("write `{replacement}`"),
    })
}

/// "a condition, `and` or `or`" from the rules the grammar tried.
fn describe(positives: &[Rule]) -> String {
    let mut names: Vec<&str> = positives.iter().map(|r| rule_name(*r)).collect();
    names.sort_unstable();
    names.dedup();
    // Where any value would do, name them once rather than one by one.
    if names.contains(&VALUE) {
        names.retain(|n| !["a number", "text in quotes", "a condition"].contains(n));
    }
    match names.as_slice() {
        [] => "something else".to_string(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

const VALUE: &str = "a value (text in quotes, a number, a date, `today`, `true` or `false`)";

fn rule_name(rule: Rule) -> &'static str {
    match rule {
        Rule::EOI => "the end of the file",
        Rule::group | Rule::kw_group => "`group`",
        Rule::group_key => "a group key (letters, digits, `_`, `-`)",
        Rule::status => "a status (`active`, `draft`, `paused`, `add_only`, `remove_only`)",
        Rule::clause | Rule::kw_include | Rule::kw_exclude => "an `include`/`exclude` list",
        Rule::id_list => "a list of user ids like `[1001, 1002]`",
        Rule::user_id => "a user id",
        Rule::cmp_op | Rule::compare => "an operator (`==`, `!=`, `<`, `<=`, `>`, `>=`)",
        Rule::kw_and => "`and`",
        Rule::kw_or => "`or`",
        Rule::in_test | Rule::kw_in | Rule::not_in_test => "`in [...]`",
        Rule::contains_test | Rule::starts_with_test | Rule::ends_with_test | Rule::matches_test => {
            "a text test (`contains`, `starts_with`, `ends_with`, `matches`)"
        }
        Rule::is_empty_test | Rule::is_not_empty_test | Rule::kw_is => "`is empty`",
        Rule::list => "a list like `[\"a\", \"b\"]`",
        Rule::text | Rule::text_body => "text in quotes",
        Rule::number => "a number",
        Rule::date | Rule::today | Rule::bool_value => VALUE,
        Rule::offset | Rule::offset_sign => "an offset like `- 30d`",
        _ => "a condition",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_words_or_symbol_runs() {
        assert_eq!(token_at("&& b", 0), "&&");
        assert_eq!(token_at("AND b", 0), "AND");
        assert_eq!(token_at("=> 5", 0), "=>");
        assert_eq!(token_at("", 0), "");
        assert_eq!(token_at(")", 0), ")");
    }

    #[test]
    fn operator_runs_extend_both_ways() {
        assert_eq!(operator_run("a <> 5", 3), (2, "<>"));
        assert_eq!(operator_run("a === 5", 4), (2, "==="));
        assert_eq!(operator_run("a b", 2), (2, ""));
    }

    #[test]
    fn almost_right_tokens_get_a_replacement() {
        assert_eq!(hint_for("&&").unwrap().help, "write `and`");
        assert_eq!(hint_for("OR").unwrap().help, "write `or`");
        assert!(hint_for("or").is_none());
        assert!(hint_for("xyz").is_none());
    }
}
