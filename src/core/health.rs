//! What `sluice check` reports: one line per finding, ok or FAIL. Each
//! source and sink contributes its own lines through its health check.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Fail,
}

/// One finding: what was checked and what to know or fix.
#[derive(Debug, Clone)]
pub struct CheckLine {
    pub status: Status,
    pub subject: String,
    pub message: String,
}

impl fmt::Display for CheckLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self.status {
            Status::Ok => "ok  ",
            Status::Fail => "FAIL",
        };
        write!(f, "{s} {}: {}", self.subject, self.message)
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<CheckLine>,
}

impl Report {
    pub fn ok(&mut self, subject: &str, message: impl Into<String>) {
        self.push(Status::Ok, subject, message);
    }

    pub fn fail(&mut self, subject: &str, message: impl Into<String>) {
        self.push(Status::Fail, subject, message);
    }

    fn push(&mut self, status: Status, subject: &str, message: impl Into<String>) {
        self.lines.push(CheckLine {
            status,
            subject: subject.to_owned(),
            message: message.into(),
        });
    }

    pub fn extend(&mut self, other: Report) {
        self.lines.extend(other.lines);
    }

    pub fn all_ok(&self) -> bool {
        self.lines.iter().all(|l| l.status == Status::Ok)
    }
}
