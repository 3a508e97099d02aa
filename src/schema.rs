//! What the checker knows about the data: the columns of users and
//! enrollments with their types, the org tree's branch codes and the static
//! groups' keys.

use std::collections::BTreeSet;
use std::fmt;

/// The value types rules work with (spec §2, "Types").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// Utf8, LargeUtf8, Utf8View, dictionaries of text.
    Text,
    /// Any integer or float.
    Number,
    /// Date32, Date64, Timestamp (the UTC calendar date).
    Date,
    /// Boolean.
    Boolean,
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueType::Text => "text",
            ValueType::Number => "a number",
            ValueType::Date => "a date",
            ValueType::Boolean => "a boolean",
        })
    }
}

/// A column's type as far as rules are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// A type rules can test.
    Usable(ValueType),
    /// A type rules cannot test (lists, structs, binary, ...), described.
    Unusable(String),
}

/// One column of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnSchema {
    /// The column name as in the data.
    pub name: String,
    /// Its type.
    pub column_type: ColumnType,
}

/// The columns of one input table, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableSchema {
    /// The columns.
    pub columns: Vec<ColumnSchema>,
}

/// How a field name matched a column.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The column at this index.
    Found(usize),
    /// Several columns match when case is ignored.
    Ambiguous(Vec<String>),
    /// No column matches.
    Missing,
}

impl TableSchema {
    /// A schema of the given `(name, type)` columns.
    pub fn new<'a>(columns: impl IntoIterator<Item = (&'a str, ValueType)>) -> TableSchema {
        TableSchema {
            columns: columns
                .into_iter()
                .map(|(name, t)| ColumnSchema {
                    name: name.to_string(),
                    column_type: ColumnType::Usable(t),
                })
                .collect(),
        }
    }

    /// Finds `name`: exact match first, then a unique case-insensitive one.
    pub fn resolve(&self, name: &str) -> Resolution {
        if let Some(i) = self.columns.iter().position(|c| c.name == name) {
            return Resolution::Found(i);
        }
        let lower = name.to_lowercase();
        let matches: Vec<usize> = (0..self.columns.len())
            .filter(|&i| self.columns[i].name.to_lowercase() == lower)
            .collect();
        match matches.as_slice() {
            [] => Resolution::Missing,
            [i] => Resolution::Found(*i),
            many => Resolution::Ambiguous(many.iter().map(|&i| self.columns[i].name.clone()).collect()),
        }
    }

    /// The column names, for suggestions.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.name.as_str())
    }
}

/// Everything the checker needs to know about the data.
#[derive(Clone, Debug, Default)]
pub struct Schema {
    /// Columns of the users table.
    pub users: TableSchema,
    /// Columns of the enrollments table, if an enrollments input is given.
    pub enrollments: Option<TableSchema>,
    /// Branch codes of the org tree, if one is given.
    pub branches: Option<BTreeSet<String>>,
    /// Keys of the static groups, if a memberships input is given. `None`
    /// means unknown: `member_of` a key not in the rules is then assumed to
    /// name a static group, with a warning.
    pub static_groups: Option<BTreeSet<String>>,
}
