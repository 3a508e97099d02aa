//! `dyngroups repl`: load the data once, then type rules and see at once
//! who they catch; `:explain ID` says why a user is (not) caught.
//!
//! ```sh
//! dyngroups repl --users examples/data/users.csv \
//!     --enrollments examples/data/enrollments.csv --org examples/data/org.csv \
//!     --memberships examples/data/memberships.csv --rules examples/groups.rules
//! ```
//!
//! With a terminal it edits lines (history in `~/.dyngroups_history`, tab
//! completion of keywords, fields and group keys); without one it reads
//! standard input line by line, so sessions can be scripted.

use dyngroups::Error;
use dyngroups::dataset::OpenInputs;
use dyngroups::diagnostic::render_all;
use dyngroups::parse::is_incomplete;
use dyngroups::run::Progress;
use dyngroups::session::Session;
use rustyline::completion::{Completer, Pair};
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::time::Instant;

/// The REPL's options.
#[derive(clap::Args)]
pub struct ReplArgs {
    #[command(flatten)]
    session: SessionArgs,
}

/// What a session loads: the options of `repl` and `serve`.
#[derive(clap::Args)]
pub(super) struct SessionArgs {
    /// Users (Parquet or CSV).
    #[arg(long, value_name = "FILE")]
    users: PathBuf,
    /// The other inputs, as `run` takes them.
    #[command(flatten)]
    data: super::DataArgs,
    /// A rules file: its groups can be used with `member_of` and previewed
    /// (the REPL's `:save` appends to it).
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// A state directory: group previews then show the changes a run would
    /// make, and users their committed groups. Never written.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
}

const HELP: &str = "\
Type a rule, e.g.  department == \"sales\" and in_branch(\"EMEA\")
(lines continue while a bracket is open)
  :fields             the fields you can use, with sample values
  :explain ID [N]     why user ID is or is not caught by the last rule
                      (N: expand member_of N levels)
  :group KEY          evaluate a group of the rules file (and its changes)
  :groups-of ID       the groups user ID is in after the last committed run
  :save KEY \"Name\"    add the last rule to the rules file as a group
  :help               this text
  :quit               leave
";

/// Tab completion of keywords, fields and group keys; no hints, colours
/// or validation (multi-line input is handled by the reader).
struct Completion {
    words: Vec<String>,
}

impl rustyline::Helper for Completion {}
impl rustyline::highlight::Highlighter for Completion {}
impl rustyline::validate::Validator for Completion {}
impl rustyline::hint::Hinter for Completion {
    type Hint = String;
}

impl Completer for Completion {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _: &rustyline::Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let prefix = &line[start..pos];
        let candidates = self
            .words
            .iter()
            .filter(|w| !prefix.is_empty() && w.starts_with(prefix))
            .map(|w| Pair {
                display: w.clone(),
                replacement: w.clone(),
            })
            .collect();
        Ok((start, candidates))
    }
}

/// Runs a session until `:quit` or the end of input; exit code 3 when the
/// data or the rules file cannot be loaded.
pub fn main(args: ReplArgs) -> std::process::ExitCode {
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprint!("{message}");
            std::process::ExitCode::from(3)
        }
    }
}

fn report(error: &Error) -> String {
    match error {
        Error::Rules { errors, file, .. } => render_all(errors, file),
        other => format!("error: {other}\n"),
    }
}

/// Loads the inputs and the rules file into a session, with a spinner,
/// and says what was loaded, then `next`; the error is the report to print.
pub(super) fn open_session(args: &SessionArgs, next: &str) -> Result<Session, String> {
    let SessionArgs {
        users,
        data,
        rules,
        state,
    } = args;
    let started = Instant::now();
    let spinner = super::Spinner::default();
    spinner.begin(&format!("loading {}", users.display()));
    let inputs =
        OpenInputs::open(&super::input_paths(users.to_path_buf(), data)).map_err(|e| format!("error: {e}\n"))?;
    let rules = match rules {
        Some(path) => Some((
            path.clone(),
            dyngroups::SourceFile::read(path)
                .map_err(|e| format!("error: cannot read {}: {e}\n", path.display()))?
                .text,
        )),
        None => None,
    };
    let session = Session::open(inputs, rules, super::as_of(data), state.clone()).map_err(|e| report(&e))?;
    spinner.end();
    let enrollments = session.data().enrollments.as_ref().map_or(0, |e| e.user_rows.len());
    println!(
        "loaded {} users and {} enrollments in {:.0} ms{next}",
        session.data().user_count(),
        enrollments,
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(session)
}

fn run(args: ReplArgs) -> Result<(), String> {
    let mut session = open_session(&args.session, "; type a rule, or :help")?;

    let mut lines = Lines::new(session.completions());
    while let Some(input) = lines.read()? {
        let input = input.trim();
        if input.is_empty() {
            continue;
        }
        if input == ":quit" || input == ":q" {
            break;
        }
        match command(&mut session, input) {
            Ok(output) => print!("{output}"),
            Err(error) => print!("{}", report(&error)),
        }
        lines.set_words(session.completions());
    }
    Ok(())
}

/// Runs one command or rule and returns what to print.
fn command(session: &mut Session, input: &str) -> Result<String, Error> {
    let usage = |text: &str| Err(Error::Usage(text.to_string()));
    let (word, rest) = input.split_once(char::is_whitespace).unwrap_or((input, ""));
    let rest = rest.trim();
    match word {
        ":help" | ":h" => Ok(HELP.to_string()),
        ":fields" => Ok(session.fields().to_aligned()),
        ":explain" => {
            let mut parts = rest.split_whitespace();
            let (Some(Ok(user)), depth) = (parts.next().map(str::parse::<u32>), parts.next()) else {
                return usage("write `:explain ID`, e.g. `:explain 1001`");
            };
            let depth = depth.and_then(|d| d.parse().ok()).unwrap_or(0);
            Ok(session.explain_last(user, depth)?.render_as("the rule"))
        }
        ":group" if !rest.is_empty() => {
            let preview = session.group(rest)?;
            let change = preview.change.map_or(String::new(), |c| {
                format!(
                    ", +{} -{} against the last committed run",
                    c.added.len(),
                    c.removed.len()
                )
            });
            Ok(format!(
                "{rest}: {} members{change} ({:.1} ms)\n",
                preview.members,
                preview.elapsed.as_secs_f64() * 1e3
            ))
        }
        ":groups-of" => {
            let Ok(user) = rest.parse::<u32>() else {
                return usage("write `:groups-of ID`, e.g. `:groups-of 1001`");
            };
            let groups = session.groups_of(user)?;
            let mut out = format!("user {user} is in {} groups\n", groups.len());
            for (key, name, why) in groups {
                out += &format!("  {key}  {name}  ({})\n", why.word());
            }
            Ok(out)
        }
        ":save" => {
            let Some((key, name)) = rest.split_once(char::is_whitespace) else {
                return usage("write `:save KEY \"Name\"`");
            };
            let name = name.trim().trim_matches('"');
            let path = session.save_last(key, name)?;
            Ok(format!("saved group `{key}` to {}\n", path.display()))
        }
        _ if word.starts_with(':') => usage(&format!("unknown command `{word}`; :help lists them")),
        _ => {
            let result = session.evaluate(input)?;
            let share = if result.users == 0 {
                0.0
            } else {
                100.0 * result.matched as f64 / result.users as f64
            };
            let mut out = format!(
                "{} of {} users ({share:.1}%) in {:.1} ms\n",
                result.matched,
                result.users,
                result.elapsed.as_secs_f64() * 1e3
            );
            if !result.sample.rows.is_empty() {
                out += &result.sample.to_aligned();
            }
            Ok(out)
        }
    }
}

/// Input lines: a line editor on a terminal, plain lines otherwise; a rule
/// continues over lines while a bracket is open.
enum Lines {
    Editor(
        Box<rustyline::Editor<Completion, rustyline::history::FileHistory>>,
        Option<PathBuf>,
    ),
    Plain(std::io::StdinLock<'static>),
}

impl Lines {
    fn new(words: Vec<String>) -> Lines {
        if !std::io::stdin().is_terminal() {
            return Lines::Plain(std::io::stdin().lock());
        }
        let Ok(mut editor) = rustyline::Editor::new() else {
            return Lines::Plain(std::io::stdin().lock());
        };
        editor.set_helper(Some(Completion { words }));
        let history = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".dyngroups_history"));
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        Lines::Editor(Box::new(editor), history)
    }

    fn set_words(&mut self, words: Vec<String>) {
        if let Lines::Editor(editor, _) = self {
            editor.set_helper(Some(Completion { words }));
        }
    }

    /// The next rule or command, `None` at the end of input.
    fn read(&mut self) -> Result<Option<String>, String> {
        let mut text = String::new();
        loop {
            let prompt = if text.is_empty() { "rule> " } else { "  ... " };
            let line = match self {
                Lines::Editor(editor, _) => match editor.readline(prompt) {
                    Ok(line) => Some(line),
                    Err(rustyline::error::ReadlineError::Interrupted) if !text.is_empty() => {
                        text.clear();
                        continue;
                    }
                    Err(rustyline::error::ReadlineError::Interrupted | rustyline::error::ReadlineError::Eof) => None,
                    Err(e) => return Err(format!("error: {e}\n")),
                },
                Lines::Plain(stdin) => {
                    let mut line = String::new();
                    match stdin.read_line(&mut line) {
                        Ok(0) => None,
                        Ok(_) => Some(line.trim_end_matches(['\n', '\r']).to_string()),
                        Err(e) => return Err(format!("error: {e}\n")),
                    }
                }
            };
            let Some(line) = line else {
                return Ok((!text.is_empty()).then_some(text));
            };
            if !text.is_empty() {
                text.push('\n');
            }
            text += &line;
            if !is_incomplete(&text) || text.starts_with(':') {
                break;
            }
        }
        if let Lines::Editor(editor, history) = self {
            let _ = editor.add_history_entry(text.as_str());
            if let Some(path) = history {
                let _ = editor.save_history(path);
            }
        }
        Ok(Some(text))
    }
}
