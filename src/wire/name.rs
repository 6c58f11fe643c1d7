//! Peer names: 1 to 15 bytes, safe in a file path and a shared-memory
//! object name, NUL-padded to 16 bytes on the wire.
#![forbid(unsafe_code)]

use std::fmt;

use super::{MAX_NAME_LEN, NAME_SIZE};

/// Why a name was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than 15 bytes.
    TooLong(usize),
    /// The name contains a byte that could escape a directory or the shm
    /// namespace, or that is invisible in a file name: '/', NUL, a control
    /// character, or the sequence "..".
    Forbidden,
    /// A wire name field with no NUL terminator in its 16 bytes.
    Unterminated,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NameError::Empty => f.write_str("name is empty"),
            NameError::TooLong(n) => {
                write!(f, "name is {n} bytes, the limit is {MAX_NAME_LEN}")
            }
            NameError::Forbidden => f.write_str(
                "name contains '/', \"..\", NUL or a control character (names become file names)",
            ),
            NameError::Unterminated => f.write_str("name field has no NUL terminator"),
        }
    }
}

impl std::error::Error for NameError {}

/// A validated peer name: 1 to 15 bytes, safe to use in a file path and a
/// shared-memory object name.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name {
    bytes: [u8; NAME_SIZE],
    len: u8,
}

impl Name {
    /// Validates `s` as a name.
    ///
    /// # Errors
    /// A [`NameError`] saying what is wrong.
    pub fn new(s: &str) -> Result<Name, NameError> {
        Self::from_bytes(s.as_bytes())
    }

    /// Validates raw bytes (without NUL) as a name.
    ///
    /// # Errors
    /// A [`NameError`] saying what is wrong.
    pub fn from_bytes(b: &[u8]) -> Result<Name, NameError> {
        if b.is_empty() {
            return Err(NameError::Empty);
        }
        if b.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(b.len()));
        }
        if b.iter().any(|&c| c == b'/' || c < 0x20 || c == 0x7f) || b.windows(2).any(|w| w == b"..")
        {
            return Err(NameError::Forbidden);
        }
        if std::str::from_utf8(b).is_err() {
            return Err(NameError::Forbidden);
        }
        let mut bytes = [0u8; NAME_SIZE];
        bytes[..b.len()].copy_from_slice(b);
        Ok(Name {
            bytes,
            len: b.len() as u8,
        })
    }

    /// Validates a NUL-padded wire field. An all-NUL field is [`NameError::Empty`].
    ///
    /// # Errors
    /// A [`NameError`] saying what is wrong.
    pub fn from_wire(field: &[u8; NAME_SIZE]) -> Result<Name, NameError> {
        let len = field
            .iter()
            .position(|&c| c == 0)
            .ok_or(NameError::Unterminated)?;
        Self::from_bytes(&field[..len])
    }

    /// Like [`Name::from_wire`], but an empty field is `Ok(None)`.
    ///
    /// # Errors
    /// A [`NameError`] for a field that is neither empty nor a valid name.
    pub fn from_wire_opt(field: &[u8; NAME_SIZE]) -> Result<Option<Name>, NameError> {
        if field[0] == 0 {
            return Ok(None);
        }
        Self::from_wire(field).map(Some)
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        // Validated as UTF-8 at construction; the fallback is unreachable.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }

    /// The NUL-padded 16-byte wire field.
    pub fn to_wire(&self) -> [u8; NAME_SIZE] {
        self.bytes
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The NUL-padded wire field of an optional name (all zero for `None`).
pub(crate) fn opt_name_to_wire(n: Option<&Name>) -> [u8; NAME_SIZE] {
    n.map_or([0; NAME_SIZE], Name::to_wire)
}
