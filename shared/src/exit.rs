//! How the command-line programs end: a sysexits(3) status and, on failure, one line on
//! stderr (`PROGRAM: error: …`), so that a pipeline log shows the whole error in one place.
//! `leased` (daemon, guard, on-call commands) and `orchestrator` share these.

use std::fmt;
use std::io::Write as _;
use std::process::ExitCode;

/// The exit statuses we use (sysexits(3)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// 0.
    Ok,
    /// 64 EX_USAGE: the command line or the configuration is wrong.
    Usage,
    /// 65 EX_DATAERR: the input is wrong (a bad key, a wrong password, a damaged file).
    DataErr,
    /// 66 EX_NOINPUT: an input is missing or unreadable.
    NoInput,
    /// 69 EX_UNAVAILABLE: a store or service cannot be used.
    Unavailable,
    /// 70 EX_SOFTWARE: something that should not happen did.
    Software,
    /// 71 EX_OSERR: the operating system refused what the program needs.
    OsErr,
    /// 73 EX_CANTCREAT: an output cannot be created.
    CantCreat,
    /// 74 EX_IOERR: any other input/output failure.
    IoErr,
    /// 75 EX_TEMPFAIL: try again later (a busy store, another daemon holds the lock).
    TempFail,
}

impl Status {
    /// The number the process exits with.
    pub const fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Usage => 64,
            Self::DataErr => 65,
            Self::NoInput => 66,
            Self::Unavailable => 69,
            Self::Software => 70,
            Self::OsErr => 71,
            Self::CantCreat => 73,
            Self::IoErr => 74,
            Self::TempFail => 75,
        }
    }
}

impl From<Status> for ExitCode {
    fn from(s: Status) -> Self {
        ExitCode::from(s.code())
    }
}

/// A command failed: what to tell the user, in one line, and the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    status: Status,
    message: String,
}

impl Failure {
    /// A failure with `status`; line breaks in `message` become spaces.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        let message = message.into().replace(['\n', '\r'], " ");
        Self { status, message }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Status::Usage, message)
    }

    pub fn data(message: impl Into<String>) -> Self {
        Self::new(Status::DataErr, message)
    }

    pub fn no_input(message: impl Into<String>) -> Self {
        Self::new(Status::NoInput, message)
    }

    pub fn cant_create(message: impl Into<String>) -> Self {
        Self::new(Status::CantCreat, message)
    }

    pub fn io(message: impl Into<String>) -> Self {
        Self::new(Status::IoErr, message)
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Writes `PROGRAM: error: MESSAGE` to stderr and returns the exit status.
    pub fn report(self, program: &str) -> ExitCode {
        let _ = writeln!(std::io::stderr(), "{program}: error: {}", self.message);
        self.status.into()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Every problem found in one input (a configuration file, a document), reported together:
/// `PROGRAM: error: WHAT has N problem(s):` and one indented line each; exit 64.
pub fn report_problems(program: &str, what: &str, problems: &[String]) -> ExitCode {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "{program}: error: {what} has {} problem{}:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        let _ = writeln!(err, "  {}", p.replace(['\n', '\r'], " "));
    }
    Status::Usage.into()
}

/// A clap parse failure in our form: help and version on stdout with status 0, anything
/// else as one `PROGRAM: error: … (see --help)` line and status 64.
pub fn clap_error(program: &str, e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            Status::Usage.into()
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
            Failure::usage(format!("{first} (see --help)")).report(program)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_sysexits() {
        let all = [
            (Status::Ok, 0),
            (Status::Usage, 64),
            (Status::DataErr, 65),
            (Status::NoInput, 66),
            (Status::Unavailable, 69),
            (Status::Software, 70),
            (Status::OsErr, 71),
            (Status::CantCreat, 73),
            (Status::IoErr, 74),
            (Status::TempFail, 75),
        ];
        for (s, n) in all {
            assert_eq!(s.code(), n, "{s:?}");
        }
    }

    #[test]
    fn a_failure_is_one_line() {
        let f = Failure::data("two\nlines\r\nhere");
        assert_eq!(f.message(), "two lines  here");
        assert_eq!(f.status(), Status::DataErr);
        assert_eq!(f.to_string(), "two lines  here");
    }
}
