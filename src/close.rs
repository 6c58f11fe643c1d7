//! Why a session ended: a [`Close`], its [`CloseReason`] and the OS error
//! behind it.
#![forbid(unsafe_code)]

use std::fmt;
use std::io;

/// Why a session closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed the connection.
    RemoteClose,
    /// Reading from the socket failed.
    ReadError,
    /// Writing to the socket failed.
    SendError,
    /// Nothing was received for `Config::connection_timeout`.
    Timeout,
    /// This side closed the connection ([`ConnTx::close`](crate::ConnTx::close),
    /// a client's `stop`, a server's `stop` or drop).
    RequestClose,
    /// The peer sent a message larger than `Config::tcp_recv_buf_max_size`.
    MsgTooLarge,
    /// The peer sent a header whose size is below 8.
    SizeTooSmall,
    /// The peer acknowledged a message that was not sent.
    AckBeyondSent,
    /// The peer sent its login (or login response) again after login.
    LoginAfterLogin,
    /// The peer's shared-memory queue holds what an honest writer never writes.
    ShmCorrupt,
    /// Our own send queue file was altered under us.
    QueueCorrupt,
    /// The peer sent a message larger than this side's
    /// `Config::max_message_size` (0, the default, takes none larger than
    /// one frame). It stays in the peer's queue: raise the setting and
    /// the next session delivers it.
    LargeMessage,
    /// The peer sent a large message's fragments out of sequence.
    BadFragment,
}

const REASONS: [CloseReason; 13] = [
    CloseReason::RemoteClose,
    CloseReason::ReadError,
    CloseReason::SendError,
    CloseReason::Timeout,
    CloseReason::RequestClose,
    CloseReason::MsgTooLarge,
    CloseReason::SizeTooSmall,
    CloseReason::AckBeyondSent,
    CloseReason::LoginAfterLogin,
    CloseReason::ShmCorrupt,
    CloseReason::QueueCorrupt,
    CloseReason::LargeMessage,
    CloseReason::BadFragment,
];

impl CloseReason {
    /// The reason's text: the C++ library's text for the reasons it has
    /// ("Remote close", "Timeout", ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::RemoteClose => "Remote close",
            CloseReason::ReadError => "Read error",
            CloseReason::SendError => "Send error",
            CloseReason::Timeout => "Timeout",
            CloseReason::RequestClose => "Request close",
            CloseReason::MsgTooLarge => "Msg size larger than recv buf max size",
            CloseReason::SizeTooSmall => "Protocol violation: header size below 8",
            CloseReason::AckBeyondSent => "Protocol violation: ack beyond what was sent",
            CloseReason::LoginAfterLogin => "Protocol violation: login frame after login",
            CloseReason::ShmCorrupt => "Protocol violation: corrupt shm queue",
            CloseReason::QueueCorrupt => "Send queue file corrupt",
            CloseReason::LargeMessage => "Message larger than Config::max_message_size",
            CloseReason::BadFragment => "Protocol violation: fragment out of sequence",
        }
    }

    fn code(self) -> u32 {
        REASONS.iter().position(|&r| r == self).unwrap_or(0) as u32 + 1
    }

    fn from_code(c: u32) -> Option<CloseReason> {
        REASONS.get((c as usize).checked_sub(1)?).copied()
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A session's end: why, and the OS error number where a system call
/// failed ("Read error" and "Send error").
///
/// ```
/// # use tcpshm::{Close, CloseReason};
/// fn report(close: Close) -> String {
///     match close.io_error() {
///         Some(e) => format!("{}: {e}", close.reason),
///         None => close.reason.to_string(),
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Close {
    /// Why.
    pub reason: CloseReason,
    /// The OS error number (`errno`) of the failed call, if one failed.
    pub os_error: Option<i32>,
}

impl Close {
    /// A close for `reason` with no OS error.
    pub(crate) const fn new(reason: CloseReason) -> Close {
        Close {
            reason,
            os_error: None,
        }
    }

    /// A close for `reason` after a failed system call (errno 0: unknown).
    pub(crate) fn os(reason: CloseReason, errno: i32) -> Close {
        Close {
            reason,
            os_error: (errno != 0).then_some(errno),
        }
    }

    /// The OS error as an [`io::Error`], if there is one.
    pub fn io_error(&self) -> Option<io::Error> {
        self.os_error.map(io::Error::from_raw_os_error)
    }

    /// The close as one non-zero word (for the session's shared state).
    pub(crate) fn to_word(self) -> u64 {
        (u64::from(self.reason.code()) << 32) | u64::from(self.os_error.unwrap_or(0) as u32)
    }

    /// The close of a non-zero word made by [`to_word`](Self::to_word).
    pub(crate) fn from_word(w: u64) -> Close {
        let reason = CloseReason::from_code((w >> 32) as u32).unwrap_or(CloseReason::RequestClose);
        Close::os(reason, w as u32 as i32)
    }
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.io_error() {
            Some(e) => write!(f, "{}: {e}", self.reason),
            None => write!(f, "{}", self.reason),
        }
    }
}

impl std::error::Error for Close {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_round_trips_through_its_word() {
        for r in REASONS {
            for errno in [0, 104, -1] {
                let c = Close::os(r, errno);
                assert_ne!(c.to_word(), 0);
                assert_eq!(Close::from_word(c.to_word()), c);
            }
        }
        let c = Close::os(CloseReason::ReadError, 104);
        assert_eq!(c.io_error().unwrap().raw_os_error(), Some(104));
        assert!(c.to_string().starts_with("Read error: "), "{c}");
        assert_eq!(Close::new(CloseReason::Timeout).to_string(), "Timeout");
    }
}
