//! The `dyngroups` command: a thin layer over the library.

mod cli;

fn main() -> std::process::ExitCode {
    // Piped into `head`, a command should stop quietly when the reader
    // goes away, as Unix tools do, instead of panicking on a failed print.
    // SAFETY: called first, before any thread starts; SIG_DFL is always a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    cli::main()
}
