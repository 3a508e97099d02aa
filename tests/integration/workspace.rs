//! A scratch directory to run the `dyngroups` command in.

use std::path::PathBuf;
use std::process::{Command, Output};

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
        Command::new(env!("CARGO_BIN_EXE_dyngroups"))
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
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
