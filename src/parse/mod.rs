//! Text → syntax tree. The only module that sees pest.

mod error;
mod lower;
mod scan;

use crate::ast::{Expr, RulesFile};
use crate::diagnostic::Diagnostic;
use pest::Parser as _;

mod grammar {
    #![allow(missing_docs)]
    /// The pest parser generated from `grammar/rules.pest`.
    #[derive(pest_derive::Parser)]
    #[grammar = "../grammar/rules.pest"]
    pub(super) struct RulesParser;
}
use grammar::{Rule, RulesParser};

/// A rules file that does not parse: the first syntax error found.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.message)]
pub struct ParseError(pub Diagnostic);

/// Parses a whole rules file.
pub fn parse_rules(text: &str) -> Result<RulesFile, ParseError> {
    parse_with(text, Rule::file, lower::lower_file)
}

/// Parses a single expression, as typed at the REPL.
pub fn parse_expr(text: &str) -> Result<Expr, ParseError> {
    parse_with(text, Rule::expr_only, lower::lower_expr_only)
}

/// Whether `text` ends inside an open bracket, so that a prompt should read
/// another line before parsing.
pub fn is_incomplete(text: &str) -> bool {
    scan::scan(text).is_some_and(|problem| problem.incomplete)
}

fn parse_with<T: Send>(
    text: &str,
    rule: Rule,
    lower: fn(pest::iterators::Pair<'_, Rule>) -> Result<T, Diagnostic>,
) -> Result<T, ParseError> {
    let problem = scan::scan(text);
    if let Some(problem) = &problem
        && problem.fatal
    {
        return Err(ParseError(problem.diagnostic.clone()));
    }
    // The grammar is recursive descent: each bracket level costs several
    // stack frames, large in unoptimised builds. The scan bounds the depth;
    // a thread of our own makes that bound safe whatever stack the caller
    // runs on (2 MiB test and rayon threads included).
    const PARSER_STACK_BYTES: usize = 256 << 20;
    let parsed = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("dyngroups-parse".into())
            .stack_size(PARSER_STACK_BYTES)
            .spawn_scoped(scope, || parse_on_this_thread(text, rule, lower, problem))
            .map(|handle| handle.join())
    });
    match parsed {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        // No thread could be started: parse here, the depth bound still holds.
        Err(_) => parse_on_this_thread(text, rule, lower, scan::scan(text)),
    }
}

fn parse_on_this_thread<T>(
    text: &str,
    rule: Rule,
    lower: fn(pest::iterators::Pair<'_, Rule>) -> Result<T, Diagnostic>,
    problem: Option<scan::ScanProblem>,
) -> Result<T, ParseError> {
    match RulesParser::parse(rule, text) {
        Ok(mut pairs) => {
            let top = pairs.next().expect("pest yields the start rule's pair");
            lower(top).map_err(ParseError)
        }
        Err(pest_error) => {
            let diagnostic = error::from_pest(&pest_error, text);
            // A bracket or quote problem at or before the grammar's failure is
            // the real cause; its position is more useful than "expected ...".
            Err(ParseError(match problem {
                Some(p) if p.diagnostic.span.start <= diagnostic.span.start => p.diagnostic,
                _ => diagnostic,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn open_brackets_ask_for_more_input() {
        assert!(super::is_incomplete("department == \"sales\" and (grade > 3"));
        assert!(super::is_incomplete("country in [\"PT\",\n"));
        assert!(!super::is_incomplete("grade > 3)"));
        assert!(!super::is_incomplete("grade > 3"));
        assert!(!super::is_incomplete("name == \"open"), "text cannot span lines");
    }
}
