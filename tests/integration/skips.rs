//! Tests that cannot run for want of a tool say so where the summary of
//! `scripts/test` finds it, instead of passing quietly.

use std::io::Write;

/// Whether a tool a test needs is there. When it is not, the test fails if
/// `require` is set (CI sets it: nothing may skip there), and is otherwise
/// recorded as skipped, with `what` it needed.
pub fn tool_present(present: bool, test: &str, require: &str, what: &str) -> bool {
    if !present {
        assert!(
            std::env::var_os(require).is_none(),
            "{what} is required here ({require} is set)"
        );
        skipped(test, &format!("needs {what}"));
    }
    present
}

/// Records that `test` did not run, and why.
pub fn skipped(test: &str, reason: &str) {
    eprintln!("SKIPPED {test}: {reason}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.txt");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("the skipped-tests list opens");
    writeln!(file, "{test}: {reason}").expect("the skipped-tests list takes a line");
}
