//! A test hook for crash safety: in a build with the `test-faults` feature
//! and `DYNGROUPS_TEST_ABORT_AFTER_WRITES=N` set, the process aborts (as a
//! kill would stop it) right after its Nth durable write step: a state
//! table write, a commit, an output file write or rename. The kill tests
//! use it to stop a real run at every such point. Other builds count
//! nothing and cannot abort.

#[cfg(feature = "test-faults")]
use std::sync::OnceLock;
#[cfg(feature = "test-faults")]
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(feature = "test-faults")]
static ABORT_AFTER: OnceLock<Option<u64>> = OnceLock::new();
#[cfg(feature = "test-faults")]
static WRITES: AtomicU64 = AtomicU64::new(0);

/// Counts one write step, and aborts the process if it is the one the
/// environment names.
#[cfg(feature = "test-faults")]
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

/// Without the `test-faults` feature, a write step is not counted.
#[cfg(not(feature = "test-faults"))]
#[inline(always)]
pub(crate) fn count_write() {}
