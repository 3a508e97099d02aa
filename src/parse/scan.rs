//! A lexical pass before the grammar: it finds unbalanced brackets,
//! unterminated text and nesting beyond the depth limit with precise
//! positions, and it guarantees the recursive descent parser never goes
//! deeper than [`MAX_DEPTH`] brackets.

use crate::diagnostic::Diagnostic;
use crate::limits::MAX_DEPTH;
use crate::source::Span;

/// What the scan found, if anything.
pub(super) struct ScanProblem {
    /// The problem.
    pub diagnostic: Diagnostic,
    /// Whether the grammar must not be run at all (nesting too deep).
    pub fatal: bool,
    /// Whether the text ends inside a bracket: more input could complete it.
    pub incomplete: bool,
}

/// Scans `text` for bracket, quote and depth problems; returns the first one.
pub(super) fn scan(text: &str) -> Option<ScanProblem> {
    let bytes = text.as_bytes();
    let mut open: Vec<(u8, usize)> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' => match closing_quote(bytes, i) {
                Some(end) => i = end,
                None => {
                    let line_end = text[i..].find('\n').map_or(text.len(), |n| i + n);
                    return Some(ScanProblem {
                        diagnostic: Diagnostic::error(
                            Span::new(i, line_end),
                            "unterminated text: the closing quote is missing",
                        )
                        .with_help("end the text with `\"` on the same line (write a line break as `\\n`)"),
                        fatal: false,
                        incomplete: false,
                    });
                }
            },
            c @ (b'(' | b'[' | b'{') => {
                open.push((c, i));
                if c == b'(' && open.iter().filter(|(c, _)| *c == b'(').count() > MAX_DEPTH {
                    return Some(ScanProblem {
                        diagnostic: depth_error(Span::new(i, i + 1)),
                        fatal: true,
                        incomplete: false,
                    });
                }
            }
            c @ (b')' | b']' | b'}') => {
                let expected_open = match c {
                    b')' => b'(',
                    b']' => b'[',
                    _ => b'{',
                };
                if !open.iter().any(|(o, _)| *o == expected_open) {
                    return Some(ScanProblem {
                        diagnostic: Diagnostic::error(
                            Span::new(i, i + 1),
                            format!("`{}` without a matching `{}`", c as char, expected_open as char),
                        )
                        .with_help(format!("remove it, or add the `{}` it closes", expected_open as char)),
                        fatal: false,
                        incomplete: false,
                    });
                }
                match open.pop() {
                    Some((o, at)) if o != expected_open => return Some(unclosed(o, at, Some(c))),
                    _ => {}
                }
            }
            _ => {}
        }
        i += 1;
    }
    open.pop().map(|(o, at)| unclosed(o, at, None))
}

/// The index of the quote closing the text that opens at `start`, if it is
/// closed on the same line.
fn closing_quote(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            b'\n' => return None,
            _ => i += 1,
        }
    }
    None
}

fn closer(open: u8) -> char {
    match open {
        b'(' => ')',
        b'[' => ']',
        _ => '}',
    }
}

fn unclosed(open: u8, at: usize, found: Option<u8>) -> ScanProblem {
    let help = match found {
        Some(found) => format!("close it with `{}` before this `{}`", closer(open), found as char),
        None => format!("close it with `{}`", closer(open)),
    };
    ScanProblem {
        diagnostic: Diagnostic::error(Span::new(at, at + 1), format!("unclosed `{}`", open as char)).with_help(help),
        fatal: false,
        incomplete: found.is_none(),
    }
}

/// The error for nesting beyond [`MAX_DEPTH`].
pub(super) fn depth_error(span: Span) -> Diagnostic {
    Diagnostic::error(span, format!("the rule nests deeper than {MAX_DEPTH} levels"))
        .with_help("split the rule into several groups and combine them with `member_of`")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str) -> Option<(String, usize)> {
        scan(text).map(|p| (p.diagnostic.message, p.diagnostic.span.start))
    }

    #[test]
    fn balanced_text_has_no_problem() {
        assert!(problem("group a { (x == \"(\") and y in [1] } # (").is_none());
    }

    #[test]
    fn reports_the_unclosed_bracket_where_it_opens() {
        assert_eq!(problem("group a { (x }"), Some(("unclosed `(`".into(), 10)));
        assert_eq!(problem("group a { x"), Some(("unclosed `{`".into(), 8)));
    }

    #[test]
    fn reports_unmatched_closer_and_unterminated_text() {
        assert_eq!(
            problem("group a { x) }"),
            Some(("`)` without a matching `(`".into(), 11))
        );
        let (message, at) = problem("group a { x == \"abc\n}").unwrap();
        assert!(message.starts_with("unterminated text"));
        assert_eq!(at, 15);
    }

    #[test]
    fn deep_nesting_is_fatal_without_recursion() {
        let text = "(".repeat(100_000);
        let p = scan(&text).unwrap();
        assert!(p.fatal);
        assert_eq!(p.diagnostic.span.start, MAX_DEPTH);
    }
}
