//! The library's one error type: what went wrong in any stage, with the
//! exit code the `dyngroups` command gives it.

use crate::diagnostic::Diagnostic;
use crate::source::SourceFile;

/// Why a run, or any command built on the library, failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The rules have errors: each with its span, rendered against
    /// `file` ([`crate::diagnostic::render_all`]).
    #[error("{} error(s) in {}", .errors.len(), .file.name)]
    Rules {
        /// The errors.
        errors: Vec<Diagnostic>,
        /// Warnings found beside them.
        warnings: Vec<Diagnostic>,
        /// The rules file.
        file: SourceFile,
    },
    /// Rules that are right but cannot be written in the language asked
    /// for (SQL of a dialect, a Polars module).
    #[error("{0}")]
    Untranslatable(String),
    /// A request that cannot be met as asked: a group that does not exist,
    /// an unreadable rules file.
    #[error("{0}")]
    Usage(String),
    /// An input file: missing, unreadable, or with bad cells.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// The memberships import has more bad rows than allowed.
    #[error("{0}")]
    TooManyBadRows(String),
    /// The state directory.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// An output file.
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    /// A guard stopped the run before anything was written or committed:
    /// static groups missing from the memberships input, or mass removals.
    /// The message has several lines, the last a help line.
    #[error("{0}")]
    Guard(String),
}

impl Error {
    /// The `dyngroups` command's exit code for this error: 1 rules, 2
    /// usage, 3 data, 4 state or output, 5 a guard.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Rules { .. } | Error::Untranslatable(_) => 1,
            Error::Usage(_) => 2,
            Error::Data(_) | Error::TooManyBadRows(_) => 3,
            Error::State(_) | Error::Output(_) => 4,
            Error::Guard(_) => 5,
        }
    }
}
