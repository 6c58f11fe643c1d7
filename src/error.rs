//! Error types shared by the modules.
#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::config::ConfigError;
use crate::wire::NameError;

/// A file or shared-memory object that could not be opened, mapped or
/// trusted. It always names the file.
#[derive(Debug)]
pub struct FileError {
    /// The file or shared-memory object.
    pub path: PathBuf,
    /// What went wrong.
    pub kind: FileErrorKind,
}

/// What went wrong with a file.
#[derive(Debug)]
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

    /// The OS errno behind the error, 0 if it did not come from the OS.
    pub fn errno(&self) -> i32 {
        match &self.kind {
            FileErrorKind::Io { source, .. } => source.raw_os_error().unwrap_or(0),
            _ => 0,
        }
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

/// Why a client or a server could not be made.
#[derive(Debug)]
pub enum SetupError {
    /// The name is not usable.
    Name(NameError),
    /// The configuration is invalid.
    Config(ConfigError),
    /// The directory could not be created.
    Dir(FileError),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Name(e) => write!(f, "invalid name: {e}"),
            SetupError::Config(e) => write!(f, "{e}"),
            SetupError::Dir(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SetupError {}
