//! The library's error types, each with its `source()` chain down to the
//! OS error where a system call failed.
#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::close::Close;
use crate::login::{Rejection, SeqMismatch};
use crate::wire::NameError;

/// A file or shared-memory object that could not be opened, mapped or
/// trusted. It always names the file.
#[derive(Debug)]
#[non_exhaustive]
pub struct FileError {
    /// The file or shared-memory object.
    pub path: PathBuf,
    /// What went wrong.
    pub kind: FileErrorKind,
}

/// What went wrong with a file.
#[derive(Debug)]
#[non_exhaustive]
pub enum FileErrorKind {
    /// A system call failed.
    Io {
        /// The operation ("open", "mmap", "reserve space", ...).
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Another process (or another object in this one) holds the file's lock.
    InUse,
    /// The file exists with a size other than the configured one.
    WrongSize {
        /// The size the configuration implies.
        expected: u64,
        /// The size on disk.
        found: u64,
    },
    /// The content is not a valid queue: wrong magic, version or state.
    Corrupt(String),
    /// The file is the queue of another pair of names that maps to the
    /// same file name: names may contain `_`, so `a_b`+`c` and `a`+`b_c`
    /// both make `a_b_c.shm` (the C++ library's naming). Rename one peer.
    NameCollision,
    /// The file exists and the operation never overwrites one.
    Exists,
}

impl FileError {
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        FileError {
            path: path.into(),
            kind: FileErrorKind::Io { op, source },
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, why: impl Into<String>) -> Self {
        FileError {
            path: path.into(),
            kind: FileErrorKind::Corrupt(why.into()),
        }
    }

    pub(crate) fn new(path: impl Into<PathBuf>, kind: FileErrorKind) -> Self {
        FileError {
            path: path.into(),
            kind,
        }
    }

    /// Whether a live process (or another object of this one) holds the
    /// file.
    pub fn is_in_use(&self) -> bool {
        matches!(self.kind, FileErrorKind::InUse)
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        match &self.kind {
            FileErrorKind::Io { op, source } => write!(f, "{p}: {op} failed: {source}"),
            FileErrorKind::InUse => write!(f, "{p}: in use by another process or connection"),
            FileErrorKind::WrongSize { expected, found } => write!(
                f,
                "{p}: size is {found} bytes, expected {expected} (configured size changed, or not a tcpshm file)"
            ),
            FileErrorKind::Corrupt(why) => write!(f, "{p}: corrupt: {why}"),
            FileErrorKind::NameCollision => write!(
                f,
                "{p}: belongs to another pair of names with the same file name (names with '_' \
                 can collide: a_b+c and a+b_c both make a_b_c); rename one of the peers"
            ),
            FileErrorKind::Exists => write!(f, "{p}: exists, and is never overwritten"),
        }
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            FileErrorKind::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A configuration that cannot work: the setting, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    /// The field of [`Config`](crate::Config) at fault.
    pub setting: &'static str,
    /// What is wrong with its value.
    pub why: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.why)
    }
}

impl std::error::Error for ConfigError {}

/// Why a client or a server could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum SetupError {
    /// The name is not usable.
    Name(NameError),
    /// The configuration is invalid.
    Config(ConfigError),
    /// The directory could not be created.
    Dir(FileError),
    /// A file of the server's own (a group's doorbell) cannot be used.
    File(FileError),
    /// The operating system refused a resource ("create epoll set": out
    /// of file descriptors, say).
    Io {
        /// What was being made.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Name(_) => f.write_str("invalid name"),
            SetupError::Config(_) => f.write_str("invalid configuration"),
            SetupError::Dir(_) => f.write_str("cannot create the directory"),
            SetupError::File(_) => f.write_str("a server file cannot be used"),
            SetupError::Io { op, .. } => write!(f, "{op} failed"),
        }
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetupError::Name(e) => Some(e),
            SetupError::Config(e) => Some(e),
            SetupError::Dir(e) | SetupError::File(e) => Some(e),
            SetupError::Io { source, .. } => Some(source),
        }
    }
}

/// Why [`Client::connect`](crate::Client::connect) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// The client is already connected.
    AlreadyConnected,
    /// A socket operation failed ("connect", "send login", "read login
    /// response", ...); a timeout shows as `TimedOut` or `WouldBlock`.
    Io {
        /// The operation.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A queue or name file could not be used.
    File(FileError),
    /// The server's answer was not a valid login response.
    BadResponse(String),
    /// The server refused the login (status 2).
    Rejected(Rejection),
    /// The two sides' sequence numbers do not fit (status 1): see the
    /// operations guide (`docs/operations.md`, "Sequence number mismatch").
    SeqMismatch(SeqMismatch),
    /// The login succeeded but the session could not start: the server
    /// acknowledged messages this side never sent, or sending failed.
    Session(Close),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::AlreadyConnected => f.write_str("already connected"),
            ConnectError::Io { op, .. } => write!(f, "{op} failed"),
            ConnectError::File(_) => f.write_str("a queue file cannot be used"),
            ConnectError::BadResponse(why) => write!(f, "invalid login response: {why}"),
            ConnectError::Rejected(why) => write!(f, "login rejected: {why}"),
            ConnectError::SeqMismatch(m) => write!(f, "sequence number mismatch: {m}"),
            ConnectError::Session(_) => f.write_str("the session closed at login"),
        }
    }
}

impl ConnectError {
    /// Whether connecting again later may succeed, for a reconnect loop:
    /// the server is down or unreachable, restarting, or still closing
    /// this name's previous session ([`Rejection::is_transient`]), or a
    /// process of ours that held the files is still exiting. `false`
    /// wants a person: a refusal by the application, a sequence mismatch,
    /// a corrupt file, a peer that is no tcpshm server.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Io { .. } | ConnectError::Session(_) => true,
            ConnectError::Rejected(why) => why.is_transient(),
            ConnectError::File(e) => e.is_in_use(),
            ConnectError::AlreadyConnected
            | ConnectError::BadResponse(_)
            | ConnectError::SeqMismatch(_) => false,
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Io { source, .. } => Some(source),
            ConnectError::File(e) => Some(e),
            ConnectError::Session(c) => Some(c),
            _ => None,
        }
    }
}

impl From<FileError> for ConnectError {
    fn from(e: FileError) -> Self {
        ConnectError::File(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    /// Every message of a chain, as `{}` of an error and its sources.
    fn chain(e: &dyn Error) -> String {
        let mut s = e.to_string();
        let mut at = e.source();
        while let Some(c) = at {
            s += ": ";
            s += &c.to_string();
            at = c.source();
        }
        s
    }

    #[test]
    fn sources_lead_to_the_os_error() {
        let io = io::Error::from_raw_os_error(libc::ENOSPC);
        let e = ConnectError::File(FileError::io("/q/a_b.ptcp", "reserve space", io));
        let s = chain(&e);
        assert!(
            s.starts_with("a queue file cannot be used: /q/a_b.ptcp: reserve space failed"),
            "{s}"
        );
        let os = e.source().unwrap().source().unwrap();
        let os = os.downcast_ref::<io::Error>().unwrap();
        assert_eq!(os.raw_os_error(), Some(libc::ENOSPC));
        let e = SetupError::Config(ConfigError {
            setting: "tcp_queue_size",
            why: "2001 is not a multiple of 8".into(),
        });
        assert_eq!(
            chain(&e),
            "invalid configuration: tcp_queue_size: 2001 is not a multiple of 8"
        );
    }
}
