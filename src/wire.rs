//! The bytes on the wire: the 8-byte message header, the login frame and the
//! login-response frame of protocol version 1 (`PROTOCOL.md` §1 and §4).
//!
//! Everything here is pure: no I/O, no `unsafe`, no allocation except
//! [`Login::encode`]/[`LoginResponse::encode`], which are used once per
//! connection. Decoding takes untrusted bytes and never panics: every
//! malformed input is a [`DecodeError`].
//!
//! All multi-byte fields are little-endian, whatever the host.
//!
//! # Custom login user data
//!
//! The default configuration carries one byte of application data in the
//! login (`u8`) and one in the response (`u8`). An application that needs
//! more (a token, a user name) implements [`UserData`] for its own fixed-size
//! `#[repr(C)]` plain-data type; the frame layout then follows the C rules a
//! C++ peer built with the same type would use (the field is placed at its
//! natural alignment after the two sequence numbers).
//!
//! ```
//! use tcpshm::wire::UserData;
//!
//! #[derive(Clone, Copy, Default, Debug, PartialEq)]
//! #[repr(C)]
//! struct Token { user: u32, secret: u32 }
//!
//! impl UserData for Token {
//!     const SIZE: usize = 8;
//!     const ALIGN: usize = 4;
//!     fn write_to(&self, out: &mut [u8]) {
//!         out[..4].copy_from_slice(&self.user.to_le_bytes());
//!         out[4..8].copy_from_slice(&self.secret.to_le_bytes());
//!     }
//!     fn read_from(b: &[u8]) -> Self {
//!         let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
//!         Token { user: u32_at(0), secret: u32_at(4) }
//!     }
//! }
//! // 8 (seqs) + 8 (token) + 1 (use_shm) + 32 (names) = 49, padded to 52; plus header 8.
//! assert_eq!(tcpshm::wire::Login::<Token>::SIZE, 60);
//! ```
#![forbid(unsafe_code)]

use std::fmt;

/// Size of the message header that starts every message.
pub const HEADER_SIZE: usize = 8;
/// Bytes reserved for a name on the wire, including the terminating NUL.
pub const NAME_SIZE: usize = 16;
/// Longest name in bytes (one byte of [`NAME_SIZE`] is the NUL).
pub const MAX_NAME_LEN: usize = NAME_SIZE - 1;
/// Bytes of the error text in a login response, NUL-padded.
pub const ERROR_MSG_SIZE: usize = 32;
/// Largest payload a message can carry: `size` is a u16 that includes the header.
pub const MAX_PAYLOAD: usize = u16::MAX as usize - HEADER_SIZE;

/// `msg_type` of a heartbeat.
pub const MSG_TYPE_HEARTBEAT: u16 = 0;
/// `msg_type` of a login frame.
pub const MSG_TYPE_LOGIN: u16 = 1;
/// `msg_type` of a login-response frame.
pub const MSG_TYPE_LOGIN_RESPONSE: u16 = 2;

/// Rounds `n` up to a multiple of 8: the space a message of size `n` occupies.
#[inline]
pub const fn padded(n: usize) -> usize {
    (n + 7) & !7
}

const fn align_up(n: usize, align: usize) -> usize {
    n.div_ceil(align) * align
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// Why bytes could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
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

/// The 8-byte header in front of every message (`PROTOCOL.md` §1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsgHeader {
    /// Header plus payload in bytes, padding excluded.
    pub size: u16,
    /// 0 heartbeat, 1 login, 2 login response, else application-defined.
    pub msg_type: u16,
    /// Application messages the sender has consumed from the receiver.
    pub ack_seq: u32,
}

impl MsgHeader {
    /// The header as it goes on the wire.
    #[inline]
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        self.encode_into(&mut b);
        b
    }

    /// Writes the header into the first 8 bytes of `out`.
    ///
    /// # Panics
    /// If `out` is shorter than 8 bytes (a caller bug, never input-driven).
    #[inline]
    pub fn encode_into(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.size.to_le_bytes());
        out[2..4].copy_from_slice(&self.msg_type.to_le_bytes());
        out[4..8].copy_from_slice(&self.ack_seq.to_le_bytes());
    }

    /// Reads a header from the first 8 bytes of `b` without judging it.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] if `b` has fewer than 8 bytes.
    #[inline]
    pub fn read(b: &[u8]) -> Result<MsgHeader, DecodeError> {
        match b.get(..HEADER_SIZE) {
            Some(h) => Ok(MsgHeader {
                size: u16::from_le_bytes([h[0], h[1]]),
                msg_type: u16::from_le_bytes([h[2], h[3]]),
                ack_seq: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
            }),
            None => Err(DecodeError::Truncated {
                need: HEADER_SIZE,
                have: b.len(),
            }),
        }
    }

    /// Reads and validates a header: `size` must be at least 8.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] or [`DecodeError::SizeTooSmall`].
    #[inline]
    pub fn decode(b: &[u8]) -> Result<MsgHeader, DecodeError> {
        let h = Self::read(b)?;
        if (h.size as usize) < HEADER_SIZE {
            return Err(DecodeError::SizeTooSmall(h.size));
        }
        Ok(h)
    }

    /// Bytes the message occupies on the wire and in the TCP queue.
    #[inline]
    pub fn padded_size(&self) -> usize {
        padded(self.size as usize)
    }
}

/// Why a name was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
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
pub fn opt_name_to_wire(n: Option<&Name>) -> [u8; NAME_SIZE] {
    n.map_or([0; NAME_SIZE], Name::to_wire)
}

/// Application data carried in the login or login-response frame.
///
/// Implemented for `u8` (the default, one byte) and `[u8; N]`. Implement it
/// for your own `#[repr(C)]` plain-data type: `SIZE` and `ALIGN` must be its
/// C `sizeof` and `alignof`, so the frame layout matches a C++ peer's.
pub trait UserData: Copy + Default + Send + 'static {
    /// `sizeof` of the C type.
    const SIZE: usize;
    /// `alignof` of the C type (1, 2, 4 or 8).
    const ALIGN: usize;
    /// Writes exactly `SIZE` bytes into `out` (which is `SIZE` long).
    fn write_to(&self, out: &mut [u8]);
    /// Reads the value back from exactly `SIZE` bytes.
    fn read_from(bytes: &[u8]) -> Self;
}

impl UserData for u8 {
    const SIZE: usize = 1;
    const ALIGN: usize = 1;
    fn write_to(&self, out: &mut [u8]) {
        out[0] = *self;
    }
    fn read_from(bytes: &[u8]) -> Self {
        bytes[0]
    }
}

impl<const N: usize> UserData for [u8; N]
where
    [u8; N]: Default,
{
    const SIZE: usize = N;
    const ALIGN: usize = 1;
    fn write_to(&self, out: &mut [u8]) {
        out.copy_from_slice(self);
    }
    fn read_from(bytes: &[u8]) -> Self {
        let mut a = [0u8; N];
        a.copy_from_slice(&bytes[..N]);
        a
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn field16(b: &[u8], off: usize) -> [u8; NAME_SIZE] {
    let mut a = [0u8; NAME_SIZE];
    a.copy_from_slice(&b[off..off + NAME_SIZE]);
    a
}

/// Checks a frame's header against the expected type and size and returns
/// the header and the body.
fn frame_body(b: &[u8], msg_type: u16, size: usize) -> Result<(MsgHeader, &[u8]), DecodeError> {
    let h = MsgHeader::decode(b)?;
    if h.msg_type != msg_type {
        return Err(DecodeError::WrongType {
            expected: msg_type,
            found: h.msg_type,
        });
    }
    if h.size as usize != size {
        return Err(DecodeError::WrongSize {
            expected: size as u16,
            found: h.size,
        });
    }
    if b.len() < size {
        return Err(DecodeError::Truncated {
            need: size,
            have: b.len(),
        });
    }
    Ok((h, &b[HEADER_SIZE..size]))
}

/// The login frame a client sends first (`PROTOCOL.md` §4), msg_type 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Login<U: UserData = u8> {
    /// Sequence number of the oldest unacknowledged message the client holds.
    pub client_seq_start: u32,
    /// One past the newest message the client holds.
    pub client_seq_end: u32,
    /// Application data (a token, say).
    pub user_data: U,
    /// Whether the client asks for shared-memory transport.
    pub use_shm: bool,
    /// The client's name, NUL-padded (validate with [`Name::from_wire`]).
    pub client_name: [u8; NAME_SIZE],
    /// The server name the client last logged in to, empty if none.
    pub last_server_name: [u8; NAME_SIZE],
}

impl<U: UserData> Login<U> {
    const OFF_USER: usize = align_up(8, U::ALIGN);
    const OFF_USE_SHM: usize = Self::OFF_USER + U::SIZE;
    const OFF_CLIENT: usize = Self::OFF_USE_SHM + 1;
    const OFF_LAST: usize = Self::OFF_CLIENT + NAME_SIZE;
    const BODY: usize = align_up(Self::OFF_LAST + NAME_SIZE, max(4, U::ALIGN));
    /// Offset in the frame of the client name field.
    pub const CLIENT_NAME_OFFSET: usize = HEADER_SIZE + Self::OFF_CLIENT;
    /// Header `size` of the frame (52 with the default `u8` user data).
    pub const SIZE: usize = HEADER_SIZE + Self::BODY;
    /// Bytes the frame occupies on the wire (56 by default).
    pub const FRAME: usize = padded(Self::SIZE);

    /// The whole frame, header (with `ack_seq`) and padding included.
    pub fn encode(&self, ack_seq: u32) -> Vec<u8> {
        let mut f = vec![0u8; Self::FRAME];
        MsgHeader {
            size: Self::SIZE as u16,
            msg_type: MSG_TYPE_LOGIN,
            ack_seq,
        }
        .encode_into(&mut f);
        let b = &mut f[HEADER_SIZE..];
        b[0..4].copy_from_slice(&self.client_seq_start.to_le_bytes());
        b[4..8].copy_from_slice(&self.client_seq_end.to_le_bytes());
        self.user_data
            .write_to(&mut b[Self::OFF_USER..Self::OFF_USER + U::SIZE]);
        b[Self::OFF_USE_SHM] = self.use_shm as u8;
        b[Self::OFF_CLIENT..Self::OFF_CLIENT + NAME_SIZE].copy_from_slice(&self.client_name);
        b[Self::OFF_LAST..Self::OFF_LAST + NAME_SIZE].copy_from_slice(&self.last_server_name);
        f
    }

    /// Decodes a login frame (`b` may be longer than the frame).
    ///
    /// # Errors
    /// A [`DecodeError`] if the header is not a login header of the right
    /// size or `b` is too short. Names are not validated here.
    pub fn decode(b: &[u8]) -> Result<(MsgHeader, Self), DecodeError> {
        let (h, body) = frame_body(b, MSG_TYPE_LOGIN, Self::SIZE)?;
        Ok((
            h,
            Login {
                client_seq_start: u32_at(body, 0),
                client_seq_end: u32_at(body, 4),
                user_data: U::read_from(&body[Self::OFF_USER..Self::OFF_USER + U::SIZE]),
                use_shm: body[Self::OFF_USE_SHM] != 0,
                client_name: field16(body, Self::OFF_CLIENT),
                last_server_name: field16(body, Self::OFF_LAST),
            },
        ))
    }
}

/// Result of a login, in the response's `status` byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum LoginStatus {
    /// Logged in.
    #[default]
    Ok = 0,
    /// The two sides' sequence ranges do not fit together.
    SeqMismatch = 1,
    /// Rejected; the response's error text says why.
    Rejected = 2,
}

/// The login response a server answers with (`PROTOCOL.md` §4), msg_type 2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoginResponse<U: UserData = u8> {
    /// Sequence number of the oldest unacknowledged message the server holds.
    pub server_seq_start: u32,
    /// One past the newest message the server holds.
    pub server_seq_end: u32,
    /// Application data.
    pub user_data: U,
    /// Outcome.
    pub status: LoginStatus,
    /// The server's current name, NUL-padded.
    pub server_name: [u8; NAME_SIZE],
    /// Why the login failed, NUL-padded; empty on success.
    pub error_msg: [u8; ERROR_MSG_SIZE],
}

impl<U: UserData> LoginResponse<U> {
    const OFF_USER: usize = align_up(8, U::ALIGN);
    const OFF_STATUS: usize = Self::OFF_USER + U::SIZE;
    const OFF_NAME: usize = Self::OFF_STATUS + 1;
    const OFF_ERR: usize = Self::OFF_NAME + NAME_SIZE;
    const BODY: usize = align_up(Self::OFF_ERR + ERROR_MSG_SIZE, max(4, U::ALIGN));
    /// Offset in the frame of the server name field.
    pub const SERVER_NAME_OFFSET: usize = HEADER_SIZE + Self::OFF_NAME;
    /// Header `size` of the frame (68 with the default `u8` user data).
    pub const SIZE: usize = HEADER_SIZE + Self::BODY;
    /// Bytes the frame occupies on the wire (72 by default).
    pub const FRAME: usize = padded(Self::SIZE);

    /// The whole frame, header (with `ack_seq`) and padding included.
    pub fn encode(&self, ack_seq: u32) -> Vec<u8> {
        let mut f = vec![0u8; Self::FRAME];
        MsgHeader {
            size: Self::SIZE as u16,
            msg_type: MSG_TYPE_LOGIN_RESPONSE,
            ack_seq,
        }
        .encode_into(&mut f);
        let b = &mut f[HEADER_SIZE..];
        b[0..4].copy_from_slice(&self.server_seq_start.to_le_bytes());
        b[4..8].copy_from_slice(&self.server_seq_end.to_le_bytes());
        self.user_data
            .write_to(&mut b[Self::OFF_USER..Self::OFF_USER + U::SIZE]);
        b[Self::OFF_STATUS] = self.status as u8;
        b[Self::OFF_NAME..Self::OFF_NAME + NAME_SIZE].copy_from_slice(&self.server_name);
        b[Self::OFF_ERR..Self::OFF_ERR + ERROR_MSG_SIZE].copy_from_slice(&self.error_msg);
        f
    }

    /// Decodes a login-response frame (`b` may be longer than the frame).
    ///
    /// # Errors
    /// A [`DecodeError`] if the header is wrong, `b` is too short or the
    /// status is unknown.
    pub fn decode(b: &[u8]) -> Result<(MsgHeader, Self), DecodeError> {
        let (h, body) = frame_body(b, MSG_TYPE_LOGIN_RESPONSE, Self::SIZE)?;
        let status = match body[Self::OFF_STATUS] {
            0 => LoginStatus::Ok,
            1 => LoginStatus::SeqMismatch,
            2 => LoginStatus::Rejected,
            s => return Err(DecodeError::BadStatus(s)),
        };
        let mut error_msg = [0u8; ERROR_MSG_SIZE];
        error_msg.copy_from_slice(&body[Self::OFF_ERR..Self::OFF_ERR + ERROR_MSG_SIZE]);
        Ok((
            h,
            LoginResponse {
                server_seq_start: u32_at(body, 0),
                server_seq_end: u32_at(body, 4),
                user_data: U::read_from(&body[Self::OFF_USER..Self::OFF_USER + U::SIZE]),
                status,
                server_name: field16(body, Self::OFF_NAME),
                error_msg,
            },
        ))
    }

    /// The error text up to its first NUL (lossy for non-UTF-8 bytes).
    pub fn error_text(&self) -> String {
        let end = self
            .error_msg
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(ERROR_MSG_SIZE);
        String::from_utf8_lossy(&self.error_msg[..end]).into_owned()
    }
}

/// An error text as a NUL-padded 32-byte field, cut to 31 bytes.
pub fn error_msg_field(text: &str) -> [u8; ERROR_MSG_SIZE] {
    let mut f = [0u8; ERROR_MSG_SIZE];
    let b = text.as_bytes();
    let n = b.len().min(ERROR_MSG_SIZE - 1);
    f[..n].copy_from_slice(&b[..n]);
    f
}

/// `a` is newer than `b` in wrapping u32 sequence space.
#[inline]
pub fn seq_newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// `x` lies in `[start, end]` in wrapping u32 sequence space.
#[inline]
pub fn seq_within(x: u32, start: u32, end: u32) -> bool {
    !seq_newer(start, x) && !seq_newer(x, end)
}

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

    /// PROTOCOL.md §4, written out byte by byte.
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
