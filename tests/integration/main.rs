//! Integration tests, one binary: the language front end, the engine against
//! a reference evaluator, data loading and the command line.

mod admin;
mod cli;
mod dates;
mod diagnostics;
mod engine;
mod explain;
mod generate;
mod guard;
mod inputs;
mod kill;
mod language;
mod library;
mod reference;
mod repl;
mod robustness;
mod roundtrip;
mod schema;
mod serve;
mod skips;
mod spec;
mod sql;
mod state;
mod workspace;
