//! The language's limits (spec §4). Each one, when exceeded, is a clear error.

/// Deepest nesting of parentheses, `not`s and `enrollment(...)`.
pub const MAX_DEPTH: usize = 256;
/// Largest rule, in bytes of source text.
pub const MAX_RULE_BYTES: usize = 64 * 1024;
/// Most items in one `in [...]` list.
pub const MAX_LIST_ITEMS: usize = 100_000;
/// Largest compiled regular expression, in bytes.
pub const MAX_REGEX_BYTES: usize = 1024 * 1024;
/// Longest group key, in characters.
pub const MAX_KEY_CHARS: usize = 128;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
