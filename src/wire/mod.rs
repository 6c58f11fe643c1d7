//! The bytes on the wire: the 8-byte message header, the login frame and the
//! login-response frame of protocol version 1 (`docs/protocol.md` §1 and §4).
//!
//! Everything here is pure: no I/O, no `unsafe`, no allocation except
//! [`Login::encode`]/[`LoginResponse::encode`], which are used once per
//! connection. Decoding takes untrusted bytes and never panics: every
//! malformed input is a [`DecodeError`].
//!
//! All multi-byte fields are little-endian, whatever the host.
//!
//! The application's login data types are [`UserData`] (its docs show a
//! custom one).
#![forbid(unsafe_code)]

mod fragment;
mod header;
mod login;
mod name;
mod seq;

use std::fmt;

pub(crate) use self::fragment::{
    pieces, write_header as write_fragment_header, Assembler, FragmentError, Step, FRAGMENT_HEADER,
    FRAGMENT_TYPE, RESERVED_TYPES,
};
pub(crate) use self::header::MsgHeader;
pub use self::login::UserData;
pub(crate) use self::login::{error_msg_field, Login, LoginResponse, LoginStatus};
pub(crate) use self::name::opt_name_to_wire;
pub use self::name::{Name, NameError};
#[cfg(test)]
use self::seq::seq_newer;
pub(crate) use self::seq::seq_within;

/// Size of the message header that starts every message.
pub(crate) const HEADER_SIZE: usize = 8;
/// Bytes reserved for a name on the wire, including the terminating NUL.
pub(crate) const NAME_SIZE: usize = 16;
/// Longest name in bytes (one byte of [`NAME_SIZE`] is the NUL).
pub(crate) const MAX_NAME_LEN: usize = NAME_SIZE - 1;
/// Bytes of the error text in a login response, NUL-padded.
pub(crate) const ERROR_MSG_SIZE: usize = 32;
/// Largest payload a message can carry: `size` is a u16 that includes the header.
pub(crate) const MAX_PAYLOAD: usize = u16::MAX as usize - HEADER_SIZE;

/// `msg_type` of a heartbeat.
pub(crate) const MSG_TYPE_HEARTBEAT: u16 = 0;
/// `msg_type` of a login frame.
pub(crate) const MSG_TYPE_LOGIN: u16 = 1;
/// `msg_type` of a login-response frame.
pub(crate) const MSG_TYPE_LOGIN_RESPONSE: u16 = 2;

/// The little-endian u32 at `off` in `b` (which holds at least
/// `off + 4` bytes).
pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Rounds `n` up to a multiple of 8: the space a message of size `n` occupies.
#[inline]
pub(crate) const fn padded(n: usize) -> usize {
    (n + 7) & !7
}

/// Why bytes could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Fewer bytes than the structure needs.
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// A header whose `size` is below 8, the header alone.
    SizeTooSmall(u16),
    /// A frame of the wrong `msg_type`.
    WrongType {
        /// The type expected here.
        expected: u16,
        /// The type found.
        found: u16,
    },
    /// A frame whose header `size` is not the frame's fixed size.
    WrongSize {
        /// The size this frame has.
        expected: u16,
        /// The size found in the header.
        found: u16,
    },
    /// A login-response status other than 0, 1 or 2.
    BadStatus(u8),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::Truncated { need, have } => {
                write!(f, "truncated: need {need} bytes, have {have}")
            }
            DecodeError::SizeTooSmall(s) => write!(f, "header size {s} is below 8"),
            DecodeError::WrongType { expected, found } => {
                write!(f, "msg_type {found}, expected {expected}")
            }
            DecodeError::WrongSize { expected, found } => {
                write!(f, "frame size {found}, expected {expected}")
            }
            DecodeError::BadStatus(s) => write!(f, "login status {s} is not 0, 1 or 2"),
        }
    }
}

impl std::error::Error for DecodeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_frame_sizes_match_protocol() {
        assert_eq!(Login::<u8>::SIZE, 52);
        assert_eq!(Login::<u8>::FRAME, 56);
        assert_eq!(LoginResponse::<u8>::SIZE, 68);
        assert_eq!(LoginResponse::<u8>::FRAME, 72);
    }

    fn name16(s: &str) -> [u8; 16] {
        Name::new(s).unwrap().to_wire()
    }

    /// docs/protocol.md §4, written out byte by byte.
    #[test]
    fn golden_login_frame() {
        #[rustfmt::skip]
        let want: [u8; 56] = [
            // header: size 52, msg_type 1, ack_seq 0x01020304
            0x34, 0x00, 0x01, 0x00, 0x04, 0x03, 0x02, 0x01,
            // client_seq_start 0x0A0B0C0D, client_seq_end 0x11121314
            0x0D, 0x0C, 0x0B, 0x0A, 0x14, 0x13, 0x12, 0x11,
            // login user data 0x7E, use_shm 1
            0x7E, 0x01,
            // client_name "client1", NUL-padded to 16
            b'c', b'l', b'i', b'e', b'n', b't', b'1', 0, 0, 0, 0, 0, 0, 0, 0, 0,
            // last_server_name "server", NUL-padded to 16
            b's', b'e', b'r', b'v', b'e', b'r', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            // body padding to 44, frame padding to 56
            0, 0, 0, 0, 0, 0,
        ];
        let login = Login::<u8> {
            client_seq_start: 0x0A0B_0C0D,
            client_seq_end: 0x1112_1314,
            user_data: 0x7E,
            use_shm: true,
            client_name: name16("client1"),
            last_server_name: name16("server"),
        };
        assert_eq!(login.encode(0x0102_0304), want);
        let (h, back) = Login::<u8>::decode(&want).unwrap();
        assert_eq!((h.size, h.msg_type, h.ack_seq), (52, 1, 0x0102_0304));
        assert_eq!(back, login);
    }

    #[test]
    fn golden_login_response_frame() {
        #[rustfmt::skip]
        let want: [u8; 72] = [
            // header: size 68, msg_type 2, ack_seq 5
            0x44, 0x00, 0x02, 0x00, 0x05, 0x00, 0x00, 0x00,
            // server_seq_start 7, server_seq_end 9
            0x07, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00,
            // login-response user data 0x2A, status 2 (rejected)
            0x2A, 0x02,
            // server_name "server", NUL-padded to 16
            b's', b'e', b'r', b'v', b'e', b'r', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            // error_msg "Login Reject", NUL-padded to 32
            b'L', b'o', b'g', b'i', b'n', b' ', b'R', b'e', b'j', b'e', b'c', b't',
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            // body padding to 60, frame padding to 72
            0, 0, 0, 0, 0, 0,
        ];
        let rsp = LoginResponse::<u8> {
            server_seq_start: 7,
            server_seq_end: 9,
            user_data: 0x2A,
            status: LoginStatus::Rejected,
            server_name: name16("server"),
            error_msg: error_msg_field("Login Reject"),
        };
        assert_eq!(rsp.encode(5), want);
        let (h, back) = LoginResponse::<u8>::decode(&want).unwrap();
        assert_eq!((h.size, h.msg_type, h.ack_seq), (68, 2, 5));
        assert_eq!(back, rsp);
        assert_eq!(back.error_text(), "Login Reject");
    }

    #[test]
    fn frames_reject_wrong_type_size_and_truncation() {
        let f = Login::<u8>::default().encode(0);
        assert_eq!(
            Login::<u8>::decode(&f[..40]),
            Err(DecodeError::Truncated { need: 52, have: 40 })
        );
        assert!(matches!(
            LoginResponse::<u8>::decode(&f),
            Err(DecodeError::WrongType {
                expected: 2,
                found: 1
            })
        ));
        let mut g = f.clone();
        g[0] = 60;
        assert!(matches!(
            Login::<u8>::decode(&g),
            Err(DecodeError::WrongSize {
                expected: 52,
                found: 60
            })
        ));
        let mut r = LoginResponse::<u8>::default().encode(0);
        r[8 + 9] = 3;
        assert_eq!(
            LoginResponse::<u8>::decode(&r),
            Err(DecodeError::BadStatus(3))
        );
    }

    #[test]
    fn header_round_trip_and_rejects() {
        let h = MsgHeader {
            size: 300,
            msg_type: 7,
            ack_seq: 0xdead_beef,
        };
        assert_eq!(MsgHeader::decode(&h.encode()), Ok(h));
        assert_eq!(h.encode(), [44, 1, 7, 0, 0xef, 0xbe, 0xad, 0xde]);
        assert_eq!(
            MsgHeader::decode(&[1, 2, 3]),
            Err(DecodeError::Truncated { need: 8, have: 3 })
        );
        for s in 0..8u16 {
            let b = MsgHeader { size: s, ..h }.encode();
            assert_eq!(MsgHeader::decode(&b), Err(DecodeError::SizeTooSmall(s)));
        }
    }

    #[test]
    fn names() {
        assert!(Name::new("c1").is_ok());
        assert_eq!(
            Name::new("abcdefghijklmno").unwrap().as_str(),
            "abcdefghijklmno"
        );
        assert_eq!(Name::new(""), Err(NameError::Empty));
        assert_eq!(Name::new("abcdefghijklmnop"), Err(NameError::TooLong(16)));
        for bad in ["a/b", "..", "a..b", "a\0b", "a\nb", "\x7f"] {
            assert_eq!(Name::new(bad), Err(NameError::Forbidden), "{bad:?}");
        }
        assert_eq!(Name::from_wire(&[b'x'; 16]), Err(NameError::Unterminated));
        assert_eq!(Name::from_wire_opt(&[0; 16]), Ok(None));
        let n = Name::new("srv").unwrap();
        assert_eq!(Name::from_wire(&n.to_wire()), Ok(n));
        assert_eq!(error_msg_field(&"x".repeat(40))[31], 0);
    }

    #[test]
    fn seq_compare_wraps() {
        assert!(seq_newer(1, 0));
        assert!(seq_newer(0, u32::MAX));
        assert!(!seq_newer(u32::MAX, 0));
        assert!(seq_within(0, u32::MAX - 1, 2));
        assert!(!seq_within(3, u32::MAX - 1, 2));
    }
}
