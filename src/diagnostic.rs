//! Diagnostics: what is wrong in a rules file, where, and what would be right,
//! rendered as `file:line:col`, the source line and a caret under the span.

use crate::source::{SourceFile, Span};
use std::fmt::Write as _;

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The rules cannot be used.
    Error,
    /// The rules work, but probably not as meant.
    Warning,
}

/// One finding about a rules file.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, in lowercase, naming user text in backticks.
    pub message: String,
    /// Where.
    pub span: Span,
    /// What would be right, if we can tell.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn error(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            span,
            help: None,
        }
    }

    /// A warning at `span`.
    pub fn warning(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(span, message)
        }
    }

    /// The same diagnostic with a help text saying how to fix it.
    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Renders the diagnostic against the file it is about:
    ///
    /// ```text
    /// error: unknown field `departmnt`
    ///  --> groups.rules:3:5
    ///   |
    /// 3 |     departmnt == "Sales"
    ///   |     ^^^^^^^^^
    ///   = help: did you mean `department`?
    /// ```
    pub fn render(&self, source: &SourceFile) -> String {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let at = source.line_col(self.span.start);
        let (line_start, line_end) = source.line_range(self.span.start);
        let (line_start, line_end, cut_left, cut_right) = window(&source.text, line_start, line_end, self.span.start);
        let line_text = format!(
            "{}{}{}",
            if cut_left { "…" } else { "" },
            &source.text[line_start..line_end],
            if cut_right { "…" } else { "" }
        );
        let gutter = at.line.to_string().len();
        let pad = " ".repeat(gutter);
        // The caret runs to the end of the span or of its first line, whichever
        // comes first; an empty span still gets one caret.
        let caret_end = self.span.end.clamp(self.span.start, line_end);
        let start = self.span.start.clamp(line_start, line_end);
        let lead = display_width(&source.text[line_start..start]) + usize::from(cut_left);
        let carets = display_width(&source.text[start..caret_end]).max(1);

        let mut out = String::new();
        let _ = writeln!(out, "{kind}: {}", self.message);
        let _ = writeln!(out, "{pad}--> {}:{at}", source.name);
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{} | {}", at.line, line_text.replace('\t', " "));
        let _ = writeln!(out, "{pad} | {}{}", " ".repeat(lead), "^".repeat(carets));
        if let Some(help) = &self.help {
            let _ = writeln!(out, "{pad} = help: {help}");
        }
        out
    }
}

/// Characters of a long line shown around the span's start.
const WINDOW_CHARS: usize = 100;

/// Narrows a long line to [`WINDOW_CHARS`] around `at`: the new range, and
/// whether text was cut on the left and on the right.
fn window(text: &str, start: usize, end: usize, at: usize) -> (usize, usize, bool, bool) {
    let line = &text[start..end];
    if line.chars().count() <= WINDOW_CHARS {
        return (start, end, false, false);
    }
    let boundaries: Vec<usize> = line.char_indices().map(|(i, _)| start + i).chain([end]).collect();
    let at_char = boundaries.iter().position(|&b| b >= at).unwrap_or(boundaries.len() - 1);
    let first = at_char.saturating_sub(WINDOW_CHARS / 4);
    let last = (first + WINDOW_CHARS).min(boundaries.len() - 1);
    (
        boundaries[first],
        boundaries[last],
        first > 0,
        last < boundaries.len() - 1,
    )
}

/// Width of `text` on a terminal, counting each character as one column (tabs
/// are shown as one space in the source line, so they count as one too).
fn display_width(text: &str) -> usize {
    text.chars().count()
}

/// Renders several diagnostics, separated by blank lines.
pub fn render_all(diagnostics: &[Diagnostic], source: &SourceFile) -> String {
    diagnostics
        .iter()
        .map(|d| d.render(source))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_sits_under_the_span() {
        let src = SourceFile::new("g.rules", "group a {\n  grade == \"5\"\n}\n");
        let start = src.text.find("\"5\"").unwrap();
        let d = Diagnostic::error(Span::new(start, start + 3), "mismatch").with_help("drop quotes");
        assert_eq!(
            d.render(&src),
            "error: mismatch\n --> g.rules:2:12\n  |\n2 |   grade == \"5\"\n  |            ^^^\n  = help: drop quotes\n"
        );
    }

    #[test]
    fn empty_span_at_end_of_file_gets_one_caret() {
        let src = SourceFile::new("g.rules", "group a {");
        let d = Diagnostic::error(Span::new(9, 9), "expected `}`");
        assert!(d.render(&src).ends_with("1 | group a {\n  |          ^\n"));
    }

    #[test]
    fn long_lines_are_cut_around_the_span() {
        let text = format!("{}x{}", "a".repeat(500), "b".repeat(500));
        let src = SourceFile::new("g", text);
        let out = Diagnostic::error(Span::new(500, 501), "here").render(&src);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[3].starts_with("1 | …aaa") && lines[3].ends_with("bbb…"), "{out}");
        let caret = lines[4].find('^').unwrap();
        assert_eq!(lines[3].chars().nth(caret), Some('x'), "{out}");
    }
}
