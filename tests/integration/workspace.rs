//! A scratch directory to run the `dyngroups` command in.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The bundled example's inputs, relative to the repository root.
pub const EXAMPLE: &[&str] = &[
    "--rules",
    "examples/groups.rules",
    "--users",
    "examples/data/users.csv",
    "--enrollments",
    "examples/data/enrollments.csv",
    "--org",
    "examples/data/org.csv",
    "--memberships",
    "examples/data/memberships.csv",
    "--as-of",
    "2026-11-22",
];

/// Lossy UTF-8 of a command's output.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A temporary working directory with input files.
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    /// A directory holding `files` (name, content).
    pub fn new(files: &[(&str, &str)]) -> Workspace {
        let w = Workspace {
            dir: tempfile::tempdir().unwrap(),
        };
        for (name, content) in files {
            w.write(name, content);
        }
        w
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, content: &str) {
        std::fs::write(self.path(name), content).unwrap();
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    /// `dyngroups ARGS`, run in the directory.
    pub fn dyngroups(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dyngroups"));
        command.args(args).current_dir(self.dir.path());
        output_past_inherited_locks(&mut command)
    }

    /// `dyngroups run` of `groups.rules` over `users.csv` as of 2026-11-22,
    /// with `extra` options.
    pub fn run(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "run",
            "--rules",
            "groups.rules",
            "--users",
            "users.csv",
            "--as-of",
            "2026-11-22",
        ];
        args.extend_from_slice(extra);
        self.dyngroups(&args)
    }
}

/// Runs `command`, again while it fails because the state is locked by this
/// test process itself. Tests run in parallel threads: a child that another
/// test forks shares, until it execs, the lock file this process had open
/// in that instant, so the lock can outlive its `State` for a moment. A
/// lock held by this process for real (a test holding a `State`) still
/// fails after the retries.
pub fn output_past_inherited_locks(command: &mut Command) -> Output {
    let own_lock = format!("in use by dyngroups (pid {})", std::process::id());
    let mut output = command.output().unwrap();
    for _ in 0..20 {
        if output.status.code() != Some(4) || !text(&output.stderr).contains(&own_lock) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        output = command.output().unwrap();
    }
    output
}
