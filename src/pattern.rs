//! The patterns of `matches` (spec §3): Rust `regex` syntax, in which
//! `\d`, `\w`, `\s` and `\b` are ASCII classes (`[0-9]`, `[0-9A-Za-z_]`,
//! ASCII whitespace, an ASCII word boundary), as in RE2, Java, PostgreSQL
//! and JavaScript, so that a pattern means the same in the engine and in
//! its SQL. The `regex` crate reads them as Unicode classes, so a pattern is
//! compiled from a copy with those classes written out.

use regex_syntax::ast::{self as rx, Ast};

/// A `matches` pattern: as written, and compiled with ASCII classes.
#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    regex: regex::Regex,
}

/// Why a pattern cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    /// It is not a regular expression.
    #[error("invalid regular expression: {0}")]
    Syntax(String),
    /// It compiles to more than the language's limit.
    #[error("the regular expression compiles to more than {} MiB", .0 >> 20)]
    TooBig(usize),
    /// It uses a class the ASCII reading has no form for.
    #[error("{0}")]
    NotAscii(&'static str),
}

impl Pattern {
    /// Compiles `source`, with its ASCII classes written out, within
    /// `size_limit` bytes of compiled program.
    pub fn new(source: &str, size_limit: usize) -> Result<Pattern, PatternError> {
        let ascii = with_ascii_classes(source)?;
        let regex = regex::RegexBuilder::new(&ascii)
            .size_limit(size_limit)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => PatternError::TooBig(size_limit),
                other => PatternError::Syntax(syntax_reason(&other.to_string())),
            })?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    /// The pattern as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The pattern the `regex` crate runs: the ASCII classes written out
    /// (for code generated to run on that crate, such as Polars).
    pub fn compiled(&self) -> &str {
        self.regex.as_str()
    }

    /// Whether the pattern finds a match in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

/// The last `error:` line of the `regex` crate's message, which says what
/// is wrong; the lines before it draw the pattern.
fn syntax_reason(message: &str) -> String {
    message
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or("invalid syntax")
        .trim_start_matches("error: ")
        .to_string()
}

/// ASCII whitespace: tab, line feed, vertical tab, form feed, carriage
/// return, space.
const SPACE: &str = "\\t\\n\\x0B\\x0C\\r ";
/// ASCII word characters.
const WORD: &str = "0-9A-Za-z_";
/// ASCII digits.
const DIGIT: &str = "0-9";

/// The ranges of a Perl class, to write inside brackets.
pub(crate) fn perl_ranges(kind: &rx::ClassPerlKind) -> &'static str {
    match kind {
        rx::ClassPerlKind::Digit => DIGIT,
        rx::ClassPerlKind::Space => SPACE,
        rx::ClassPerlKind::Word => WORD,
    }
}

/// Why a negated Perl class inside brackets is refused.
pub(crate) const NEGATED_IN_BRACKETS: &str =
    "`\\D`, `\\W` and `\\S` inside brackets have no ASCII form here; write the class negated, e.g. `[^0-9]`";

/// `pattern` with `\d`, `\w`, `\s` (and their negations) as ASCII classes
/// and `\b` as an ASCII word boundary. `\w` is written with case folding
/// off: `(?i)` would otherwise add the Kelvin sign to `K` and the long `ſ`
/// to `s`.
pub fn with_ascii_classes(pattern: &str) -> Result<String, PatternError> {
    let ast = rx::parse::Parser::new()
        .parse(pattern)
        .map_err(|e| PatternError::Syntax(syntax_reason(&format!("error: {}", e.kind()))))?;
    let mut edits = Vec::new();
    ascii_edits(&ast, &mut edits)?;
    Ok(apply_edits(pattern, edits))
}

/// `text` with each span replaced.
pub(crate) fn apply_edits(text: &str, mut edits: Vec<(rx::Span, String)>) -> String {
    edits.sort_by_key(|(span, _)| span.start.offset);
    let mut out = String::new();
    let mut at = 0;
    for (span, replacement) in edits {
        out.push_str(&text[at..span.start.offset]);
        out.push_str(&replacement);
        at = span.end.offset;
    }
    out.push_str(&text[at..]);
    out
}

fn ascii_edits(ast: &Ast, edits: &mut Vec<(rx::Span, String)>) -> Result<(), PatternError> {
    match ast {
        Ast::ClassPerl(class) => {
            let ranges = perl_ranges(&class.kind);
            let negated = if class.negated { "^" } else { "" };
            let written = match class.kind {
                rx::ClassPerlKind::Word => format!("(?-i:[{negated}{ranges}])"),
                _ => format!("[{negated}{ranges}]"),
            };
            edits.push((class.span, written));
            Ok(())
        }
        Ast::Assertion(assertion) => match assertion.kind {
            rx::AssertionKind::WordBoundary => {
                edits.push((assertion.span, "(?-u:\\b)".into()));
                Ok(())
            }
            rx::AssertionKind::StartLine
            | rx::AssertionKind::EndLine
            | rx::AssertionKind::StartText
            | rx::AssertionKind::EndText => Ok(()),
            _ => Err(PatternError::NotAscii(
                "of the word-boundary assertions only `\\b` is accepted; `\\B` and `\\b{..}` have no ASCII form here",
            )),
        },
        Ast::ClassBracketed(class) => class_edits(&class.kind, edits),
        Ast::Repetition(repetition) => ascii_edits(&repetition.ast, edits),
        Ast::Group(group) => ascii_edits(&group.ast, edits),
        Ast::Alternation(alternation) => alternation.asts.iter().try_for_each(|a| ascii_edits(a, edits)),
        Ast::Concat(concat) => concat.asts.iter().try_for_each(|a| ascii_edits(a, edits)),
        Ast::Empty(_) | Ast::Literal(_) | Ast::Dot(_) | Ast::ClassUnicode(_) | Ast::Flags(_) => Ok(()),
    }
}

fn class_edits(set: &rx::ClassSet, edits: &mut Vec<(rx::Span, String)>) -> Result<(), PatternError> {
    match set {
        rx::ClassSet::BinaryOp(op) => {
            class_edits(&op.lhs, edits)?;
            class_edits(&op.rhs, edits)
        }
        rx::ClassSet::Item(item) => class_item_edits(item, edits),
    }
}

fn class_item_edits(item: &rx::ClassSetItem, edits: &mut Vec<(rx::Span, String)>) -> Result<(), PatternError> {
    match item {
        rx::ClassSetItem::Perl(class) if class.negated => Err(PatternError::NotAscii(NEGATED_IN_BRACKETS)),
        rx::ClassSetItem::Perl(class) => {
            edits.push((class.span, perl_ranges(&class.kind).to_string()));
            Ok(())
        }
        rx::ClassSetItem::Bracketed(class) => class_edits(&class.kind, edits),
        rx::ClassSetItem::Union(union) => union.items.iter().try_for_each(|i| class_item_edits(i, edits)),
        rx::ClassSetItem::Empty(_)
        | rx::ClassSetItem::Literal(_)
        | rx::ClassSetItem::Range(_)
        | rx::ClassSetItem::Ascii(_)
        | rx::ClassSetItem::Unicode(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, text: &str) -> bool {
        Pattern::new(pattern, 1 << 20).unwrap().is_match(text)
    }

    #[test]
    fn perl_classes_and_word_boundaries_are_ascii() {
        // Arabic-Indic three, a superscript two, a no-break space, é.
        assert!(matches("\\d", "a7") && !matches("\\d", "٣") && !matches("\\d", "²"));
        assert!(matches("^\\D$", "٣") && !matches("^\\D$", "3"));
        assert!(matches("^\\w+$", "Ana_1") && !matches("\\w", "é") && !matches("(?i)^\\w$", "\u{212A}"));
        assert!(matches("^\\W$", "é") && matches("(?i)^\\W$", "\u{212A}"));
        assert!(matches("a\\sb", "a\tb") && !matches("a\\sb", "a\u{a0}b") && matches("a\\Sb", "a\u{a0}b"));
        assert!(matches("^[\\d.]+$", "1.5") && !matches("^[\\d.]+$", "١.٥"));
        assert!(matches("^[^\\s]+$", "a\u{a0}b") && !matches("^[^\\s]+$", "a b"));
        // `é` is no ASCII word character: a boundary falls before it.
        assert!(matches("caf\\b", "café") && !matches("caf\\b", "cafe"));
        assert!(matches("(?i)\\bsales\\b", "EMEA Sales team") && !matches("\\bsales\\b", "presales"));
        // What is not a Perl class stays as written.
        assert!(matches("^.$", "é") && matches("\\pL", "é") && !matches("(?i)straße", "STRASSE"));
    }

    #[test]
    fn classes_with_no_ascii_form_are_refused() {
        for pattern in ["[\\Da]", "[^\\W]", "a\\B", "\\b{start}x"] {
            assert!(
                matches!(Pattern::new(pattern, 1 << 20), Err(PatternError::NotAscii(_))),
                "{pattern}"
            );
        }
        assert!(matches!(Pattern::new("a(", 1 << 20), Err(PatternError::Syntax(_))));
        assert!(matches!(
            Pattern::new("\\w{1000}{1000}", 1 << 20),
            Err(PatternError::TooBig(_))
        ));
    }

    #[test]
    fn the_source_is_kept_as_written() {
        let pattern = Pattern::new("^\\d{3}\\b", 1 << 20).unwrap();
        assert_eq!(pattern.source(), "^\\d{3}\\b");
        assert_eq!(pattern.compiled(), "^[0-9]{3}(?-u:\\b)");
    }
}
