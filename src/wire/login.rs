//! The login frame and the login-response frame (`docs/protocol.md` §4), with
//! the application's user data.
#![forbid(unsafe_code)]

use super::{
    padded, u32_at, DecodeError, MsgHeader, ERROR_MSG_SIZE, HEADER_SIZE, MSG_TYPE_LOGIN,
    MSG_TYPE_LOGIN_RESPONSE, NAME_SIZE,
};

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

/// Application data carried in the login frame (`U` of
/// [`Client`](crate::Client) and [`Server`](crate::Server)) or in the
/// login response (`R`).
///
/// Implemented for `u8` (the default, one byte, as the C++ library's
/// default) and `[u8; N]`. An application that needs more (a token, a user
/// name) implements it for its own fixed-size `#[repr(C)]` plain-data type:
/// `SIZE` and `ALIGN` must be its C `sizeof` and `alignof`, so the frame
/// follows the C layout a C++ peer built with the same type uses (the
/// field at its natural alignment after the two sequence numbers).
///
/// ```
/// use tcpshm::UserData;
///
/// #[derive(Clone, Copy, Default, Debug, PartialEq)]
/// #[repr(C)]
/// struct Token { user: u32, secret: u32 }
///
/// impl UserData for Token {
///     const SIZE: usize = 8;
///     const ALIGN: usize = 4;
///     fn write_to(&self, out: &mut [u8]) {
///         out[..4].copy_from_slice(&self.user.to_le_bytes());
///         out[4..8].copy_from_slice(&self.secret.to_le_bytes());
///     }
///     fn read_from(b: &[u8]) -> Self {
///         let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
///         Token { user: u32_at(0), secret: u32_at(4) }
///     }
/// }
///
/// // A client that sends a Token and a server that answers with 4 bytes.
/// let cfg = tcpshm::Config::default();
/// # let dir = std::env::temp_dir().join(format!("tcpshm-ud-{}", std::process::id()));
/// let client = tcpshm::Client::<Token, [u8; 4]>::new("c1", dir.join("c1"), cfg)?;
/// # drop(client); std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), tcpshm::SetupError>(())
/// ```
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

/// The login frame a client sends first (`docs/protocol.md` §4), msg_type 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Login<U: UserData = u8> {
    /// Sequence number of the oldest unacknowledged message the client holds.
    pub client_seq_start: u32,
    /// One past the newest message the client holds.
    pub client_seq_end: u32,
    /// Application data (a token, say).
    pub user_data: U,
    /// Whether the client asks for shared-memory transport.
    pub use_shm: bool,
    /// The client's name, NUL-padded (validate with [`Name::from_wire`](super::Name::from_wire)).
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
    pub(crate) const CLIENT_NAME_OFFSET: usize = HEADER_SIZE + Self::OFF_CLIENT;
    /// Header `size` of the frame (52 with the default `u8` user data).
    pub(crate) const SIZE: usize = HEADER_SIZE + Self::BODY;
    /// Bytes the frame occupies on the wire (56 by default).
    pub(crate) const FRAME: usize = padded(Self::SIZE);

    /// The whole frame, header (with `ack_seq`) and padding included.
    pub(crate) fn encode(&self, ack_seq: u32) -> Vec<u8> {
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
    pub(crate) fn decode(b: &[u8]) -> Result<(MsgHeader, Self), DecodeError> {
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
pub(crate) enum LoginStatus {
    /// Logged in.
    #[default]
    Ok = 0,
    /// The two sides' sequence ranges do not fit together.
    SeqMismatch = 1,
    /// Rejected; the response's error text says why.
    Rejected = 2,
}

/// The login response a server answers with (`docs/protocol.md` §4), msg_type 2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LoginResponse<U: UserData = u8> {
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
    pub(crate) const SERVER_NAME_OFFSET: usize = HEADER_SIZE + Self::OFF_NAME;
    /// Header `size` of the frame (68 with the default `u8` user data).
    pub(crate) const SIZE: usize = HEADER_SIZE + Self::BODY;
    /// Bytes the frame occupies on the wire (72 by default).
    pub(crate) const FRAME: usize = padded(Self::SIZE);

    /// The whole frame, header (with `ack_seq`) and padding included.
    pub(crate) fn encode(&self, ack_seq: u32) -> Vec<u8> {
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
    pub(crate) fn decode(b: &[u8]) -> Result<(MsgHeader, Self), DecodeError> {
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
    pub(crate) fn error_text(&self) -> String {
        let end = self
            .error_msg
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(ERROR_MSG_SIZE);
        String::from_utf8_lossy(&self.error_msg[..end]).into_owned()
    }
}

/// An error text as a NUL-padded 32-byte field, cut to at most 31 bytes
/// at a character boundary.
pub(crate) fn error_msg_field(text: &str) -> [u8; ERROR_MSG_SIZE] {
    let mut f = [0u8; ERROR_MSG_SIZE];
    let mut n = text.len().min(ERROR_MSG_SIZE - 1);
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    f[..n].copy_from_slice(&text.as_bytes()[..n]);
    f
}
