//! Regexes of `matches` rewritten for each dialect's regex engine, so that
//! they match what the engine's own (Rust `regex`) matching matches.

use super::Dialect;
use regex_syntax::ast::{self as rx, Ast};

/// The pattern as the dialect's regex engine must read it to mean what the
/// Rust `regex` crate means, or why it cannot be.
///
/// Accepted everywhere: literal characters, `.`, `^`, `$`, bracket classes
/// of characters and ranges, `\d`, `\w`, `\s` and their negations (ASCII,
/// written out as classes), `\b` (an ASCII word boundary: RE2's own, a
/// lookaround elsewhere), groups, alternation, repetition up to 255, and
/// the `i` flag. Refused, with the reason: Unicode classes, nested or
/// set-operation classes, named groups, other flags.
pub fn translate_regex(pattern: &str, dialect: Dialect) -> Result<String, String> {
    let ast = rx::parse::Parser::new()
        .parse(pattern)
        .map_err(|e| format!("it does not parse: {e}"))?;
    let mut edits: Vec<(rx::Span, String)> = Vec::new();
    check_regex(&ast, dialect, &mut edits)?;
    Ok(crate::pattern::apply_edits(pattern, edits))
}

/// An ASCII word boundary where the engine has none: between a word
/// character and a non-word one (or an end), by lookarounds, which
/// PostgreSQL and Java have and RE2 does not.
const WORD_BOUNDARY_LOOKAROUND: &str = "(?:(?<=[0-9A-Za-z_])(?![0-9A-Za-z_])|(?<![0-9A-Za-z_])(?=[0-9A-Za-z_]))";

fn check_regex(ast: &Ast, dialect: Dialect, edits: &mut Vec<(rx::Span, String)>) -> Result<(), String> {
    match ast {
        Ast::Empty(_) => Ok(()),
        Ast::Literal(literal) => check_literal(literal),
        Ast::Dot(span) => {
            // Rust's `.` is any character but `\n`; PostgreSQL's and
            // ClickHouse's match `\n` too, Java's excludes `\r` and more.
            if dialect != Dialect::DuckDb {
                edits.push((**span, "[^\\n]".into()));
            }
            Ok(())
        }
        Ast::Assertion(assertion) => match assertion.kind {
            rx::AssertionKind::StartLine => Ok(()),
            rx::AssertionKind::EndLine => {
                // Java's `$` also matches before a final line break.
                if dialect == Dialect::Spark {
                    edits.push((assertion.span, "\\z".into()));
                }
                Ok(())
            }
            rx::AssertionKind::WordBoundary => {
                // RE2's `\b` is ASCII; Java's follows Unicode letters.
                if !matches!(dialect, Dialect::DuckDb | Dialect::ClickHouse) {
                    edits.push((assertion.span, WORD_BOUNDARY_LOOKAROUND.into()));
                }
                Ok(())
            }
            _ => Err("`\\B`, `\\b{..}` and `\\A`/`\\z` differ between engines; use `\\b`, `^` and `$`".into()),
        },
        Ast::ClassPerl(class) => {
            // Spelt out, the same in every engine whatever its own classes.
            let negated = if class.negated { "^" } else { "" };
            edits.push((
                class.span,
                format!("[{negated}{}]", crate::pattern::perl_ranges(&class.kind)),
            ));
            Ok(())
        }
        Ast::ClassUnicode(_) => Err("Unicode classes like `\\p{L}` differ between engines".into()),
        Ast::ClassBracketed(class) => check_class(&class.kind, edits),
        Ast::Repetition(repetition) => {
            if let rx::RepetitionKind::Range(range) = &repetition.op.kind {
                let most = match range {
                    rx::RepetitionRange::Exactly(n) | rx::RepetitionRange::AtLeast(n) => *n,
                    rx::RepetitionRange::Bounded(_, n) => *n,
                };
                if most > 255 {
                    return Err("repetition counts above 255 are not accepted everywhere".into());
                }
            }
            check_regex(&repetition.ast, dialect, edits)
        }
        Ast::Group(group) => match &group.kind {
            rx::GroupKind::CaptureIndex(_) => check_regex(&group.ast, dialect, edits),
            rx::GroupKind::NonCapturing(flags) if flags.items.is_empty() => check_regex(&group.ast, dialect, edits),
            rx::GroupKind::NonCapturing(_) => Err("flags on a group, like `(?i:...)`: put `(?i)` at the start".into()),
            rx::GroupKind::CaptureName { .. } => Err("named groups: use `(...)`".into()),
        },
        Ast::Flags(set) => {
            let only_i = matches!(
                set.flags.items.as_slice(),
                [rx::FlagsItem {
                    kind: rx::FlagsItemKind::Flag(rx::Flag::CaseInsensitive),
                    ..
                }]
            );
            if !only_i || set.span.start.offset != 0 {
                return Err("the only flag accepted is `(?i)`, at the start of the pattern".into());
            }
            // Java folds only ASCII case unless told Unicode.
            if dialect == Dialect::Spark {
                edits.push((set.span, "(?iu)".into()));
            }
            Ok(())
        }
        Ast::Alternation(alternation) => alternation.asts.iter().try_for_each(|a| check_regex(a, dialect, edits)),
        Ast::Concat(concat) => concat.asts.iter().try_for_each(|a| check_regex(a, dialect, edits)),
    }
}

fn check_literal(literal: &rx::Literal) -> Result<(), String> {
    use rx::{LiteralKind, SpecialLiteralKind};
    match literal.kind {
        LiteralKind::Verbatim | LiteralKind::Meta => Ok(()),
        LiteralKind::Superfluous if literal.c.is_ascii_punctuation() => Ok(()),
        LiteralKind::Special(
            SpecialLiteralKind::LineFeed | SpecialLiteralKind::Tab | SpecialLiteralKind::CarriageReturn,
        ) => Ok(()),
        _ => Err(format!(
            "the escape for {:?} is written differently in other engines; write the character itself",
            literal.c
        )),
    }
}

fn check_class(set: &rx::ClassSet, edits: &mut Vec<(rx::Span, String)>) -> Result<(), String> {
    let rx::ClassSet::Item(item) = set else {
        return Err("class set operations (`&&`, `--`, `~~`) exist only in Rust's syntax".into());
    };
    let mut item_ok = |item: &rx::ClassSetItem| -> Result<(), String> {
        match item {
            rx::ClassSetItem::Empty(_) => Ok(()),
            rx::ClassSetItem::Literal(l) => check_literal(l),
            rx::ClassSetItem::Range(r) => check_literal(&r.start).and(check_literal(&r.end)),
            rx::ClassSetItem::Ascii(_) => Err("POSIX classes like `[[:alpha:]]`: write the ranges out".into()),
            rx::ClassSetItem::Perl(class) if class.negated => Err(crate::pattern::NEGATED_IN_BRACKETS.into()),
            rx::ClassSetItem::Perl(class) => {
                edits.push((class.span, crate::pattern::perl_ranges(&class.kind).into()));
                Ok(())
            }
            rx::ClassSetItem::Unicode(_) => {
                Err("Unicode classes like `\\p{L}` inside a class differ between engines; write the ranges out".into())
            }
            rx::ClassSetItem::Bracketed(_) => Err("nested classes exist only in Rust's syntax".into()),
            rx::ClassSetItem::Union(_) => unreachable!("unions are flattened below"),
        }
    };
    match item {
        rx::ClassSetItem::Union(union) => union.items.iter().try_for_each(item_ok),
        single => item_ok(single),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_translate_or_say_why_not() {
        let pg = |p| translate_regex(p, Dialect::Postgres);
        assert_eq!(pg("^a.c$").unwrap(), "^a[^\\n]c$");
        assert_eq!(translate_regex("(?i)x$", Dialect::Spark).unwrap(), "(?iu)x\\z");
        assert_eq!(translate_regex("a.b", Dialect::DuckDb).unwrap(), "a.b");
        assert_eq!(
            pg("[a-z0-9_]+@(acme|ACME)\\.com").unwrap(),
            "[a-z0-9_]+@(acme|ACME)\\.com"
        );
        // The ASCII classes, spelt out the same everywhere.
        assert_eq!(pg("\\d+\\S").unwrap(), "[0-9]+[^\\t\\n\\x0B\\x0C\\r ]");
        assert_eq!(pg("[\\w.-]").unwrap(), "[0-9A-Za-z_.-]");
        assert!(pg("[\\Wa]").unwrap_err().contains("[^0-9]"));
        assert_eq!(translate_regex("\\bab", Dialect::DuckDb).unwrap(), "\\bab");
        // ClickHouse runs RE2 with `.` matching `\n`.
        assert_eq!(translate_regex("\\ba.b", Dialect::ClickHouse).unwrap(), "\\ba[^\\n]b");
        assert_eq!(
            translate_regex("\\bab", Dialect::Spark).unwrap(),
            format!("{WORD_BOUNDARY_LOOKAROUND}ab")
        );
        assert!(pg("a\\B").is_err());
        assert!(pg("a(?i)b").is_err());
        assert!(pg("(?P<x>a)").is_err());
        assert!(pg("[[:alpha:]]").is_err());
        assert!(pg("\\pL").is_err());
        assert!(pg("a{300}").is_err());
        assert!(pg("(").unwrap_err().contains("does not parse"));
    }
}
