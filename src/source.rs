//! Source text and positions: every syntax node and every diagnostic points
//! back into the rules file it came from.

use std::fmt;

/// A byte range `start..end` in a rules file.
///
/// Spans are position metadata only: two syntax trees that differ only in
/// where they were written compare equal, so `PartialEq` on `Span` is always
/// true. Compare `start` and `end` directly when the position itself matters.
#[derive(Clone, Copy, Debug, Default, Eq)]
pub struct Span {
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
}

impl PartialEq for Span {
    fn eq(&self, _other: &Span) -> bool {
        true
    }
}

impl Span {
    /// The span `start..end`.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both `self` and `other`.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }

    /// Length in bytes.
    pub fn len(self) -> usize {
        self.end - self.start
    }

    /// Whether the span covers no bytes.
    pub fn is_empty(self) -> bool {
        self.end == self.start
    }
}

/// A value together with the span it was written at.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub span: Span,
}

impl<T> Spanned<T> {
    /// Pairs `value` with `span`.
    pub fn new(value: T, span: Span) -> Spanned<T> {
        Spanned { value, span }
    }
}

/// A rules file's name (as given on the command line) and its text.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The name shown in diagnostics, usually the path.
    pub name: String,
    /// The whole text.
    pub text: String,
}

/// A 1-based line and column (the column counts characters, not bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineCol {
    /// Line number, from 1.
    pub line: usize,
    /// Column number in characters, from 1.
    pub col: usize,
}

impl fmt::Display for LineCol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl SourceFile {
    /// A source file named `name` holding `text`.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> SourceFile {
        SourceFile {
            name: name.into(),
            text: text.into(),
        }
    }

    /// Reads a rules file. A byte-order mark at its start, which editors on
    /// Windows write, is dropped: it is no part of the rules, and an error
    /// pointing at it would show nothing.
    pub fn read(path: &std::path::Path) -> std::io::Result<SourceFile> {
        let text = std::fs::read_to_string(path)?;
        let text = match text.strip_prefix('\u{feff}') {
            Some(rest) => rest.to_string(),
            None => text,
        };
        Ok(SourceFile::new(path.display().to_string(), text))
    }

    /// Line and column of byte offset `offset` (clamped to the text).
    pub fn line_col(&self, offset: usize) -> LineCol {
        let offset = self.floor_char_boundary(offset);
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = self.text[line_start..offset].chars().count() + 1;
        LineCol { line, col }
    }

    /// The byte range of the line holding `offset`, without its line break.
    pub fn line_range(&self, offset: usize) -> (usize, usize) {
        let offset = self.floor_char_boundary(offset);
        let start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let end = self.text[offset..].find('\n').map_or(self.text.len(), |i| offset + i);
        let end = if end > start && self.text.as_bytes()[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        (start, end.max(start))
    }

    fn floor_char_boundary(&self, offset: usize) -> usize {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_not_bytes() {
        let src = SourceFile::new("r", "ab\nçé x\n");
        assert_eq!(src.line_col(0), LineCol { line: 1, col: 1 });
        assert_eq!(src.line_col(3), LineCol { line: 2, col: 1 });
        let x = src.text.find('x').unwrap();
        assert_eq!(src.line_col(x), LineCol { line: 2, col: 4 });
        assert_eq!(src.line_range(x), (3, 3 + "çé x".len()));
    }

    #[test]
    fn line_range_at_end_of_text_and_crlf() {
        let src = SourceFile::new("r", "a\r\nbc");
        assert_eq!(src.line_range(0), (0, 1));
        assert_eq!(src.line_range(5), (3, 5));
        assert_eq!(src.line_col(5), LineCol { line: 2, col: 3 });
    }
}
