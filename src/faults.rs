//! A test hook for crash safety: with `DYNGROUPS_TEST_ABORT_AFTER_WRITES=N`
//! set, the process aborts (as a kill would stop it) right after its Nth
//! durable write step: a state table write, a commit, an output file write
//! or rename. The kill tests use it to stop a real run at every such point.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static ABORT_AFTER: OnceLock<Option<u64>> = OnceLock::new();
static WRITES: AtomicU64 = AtomicU64::new(0);

/// Counts one write step, and aborts the process if it is the one the
/// environment names.
pub(crate) fn count_write() {
    let abort_after = ABORT_AFTER.get_or_init(|| {
        std::env::var("DYNGROUPS_TEST_ABORT_AFTER_WRITES")
            .ok()
            .and_then(|n| n.parse().ok())
    });
    if let Some(n) = abort_after {
        let done = WRITES.fetch_add(1, Ordering::SeqCst) + 1;
        if done == *n {
            std::process::abort();
        }
    }
}
