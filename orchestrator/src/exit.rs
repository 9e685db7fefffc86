//! Failures of the CLI: a one-line message and a sysexits(3) status.

use std::fmt;
use std::process::ExitCode;

/// A command failed: what to tell the user, and the exit status.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// EX_USAGE: the command line is wrong.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(64, message)
    }

    /// EX_DATAERR: the input is wrong (bad key, wrong password, damaged file).
    pub fn data(message: impl Into<String>) -> Self {
        Self::new(65, message)
    }

    /// EX_NOINPUT: an input file is missing or unreadable.
    pub fn no_input(message: impl Into<String>) -> Self {
        Self::new(66, message)
    }

    /// EX_CANTCREAT: an output cannot be created (it exists, or the directory is missing).
    pub fn cant_create(message: impl Into<String>) -> Self {
        Self::new(73, message)
    }

    /// EX_IOERR: any other I/O failure.
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(74, message)
    }

    fn new(code: u8, message: impl Into<String>) -> Self {
        // One line, always: a pipeline log shows the whole error in one place.
        let message = message.into().replace(['\n', '\r'], " ");
        Self { code, message }
    }

    /// Prints the error line and returns the exit status.
    pub fn report(self) -> ExitCode {
        eprintln!("orchestrator: error: {}", self.message);
        ExitCode::from(self.code)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Turns a clap parse failure into our one-line form; help and version go to stdout as usual.
pub(crate) fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            // clap spreads one error over several lines (the message, the missing
            // arguments, a usage hint); keep the parts before the usage hint, on one line.
            let text = e.to_string();
            let parts: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            let joined = parts.join(" ");
            let first = joined.strip_prefix("error: ").unwrap_or(&joined);
            let first = if first.is_empty() {
                "invalid arguments"
            } else {
                first
            };
            Failure::usage(format!("{first} (see --help)")).report()
        }
    }
}
