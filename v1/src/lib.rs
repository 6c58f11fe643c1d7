//! Protocol version 1 (`docs/protocol.md`), written from the document and
//! not from the `tcpshm` library: the frames a C++ peer sends, and a
//! blocking peer over one TCP connection that logs in, sends and reads
//! them.
//!
//! tcpshm's tests and harnesses use it as the stand-in for a C++ peer
//! (or a hostile one): it encodes what the protocol allows and anything
//! else a test wants to send, and checks the library against a second,
//! independent reading of the same bytes.
//!
//! ```
//! use tcpshm_v1::{Header, Login, Response};
//!
//! let login = Login::new("c1");
//! let frame = login.encode();
//! assert_eq!(frame.len(), 56); // header size 52, padded to 8
//! assert_eq!(Header::parse(&frame), Some(Header { size: 52, msg_type: 1, ack: 0 }));
//! assert_eq!(Response::frame_len(Login::U8), 72);
//! ```

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Bytes of the header in front of every message.
pub const HEADER: usize = 8;
/// `msg_type` of a heartbeat.
pub const TYPE_HEARTBEAT: u16 = 0;
/// `msg_type` of a login frame.
pub const TYPE_LOGIN: u16 = 1;
/// `msg_type` of a login-response frame.
pub const TYPE_LOGIN_RESPONSE: u16 = 2;
/// Login-response status: logged in.
pub const STATUS_OK: u8 = 0;
/// Login-response status: the sequence numbers do not fit.
pub const STATUS_SEQ_MISMATCH: u8 = 1;
/// Login-response status: rejected (the error text says why).
pub const STATUS_REJECTED: u8 = 2;

/// `n` rounded up to a multiple of 8.
pub const fn padded(n: usize) -> usize {
    (n + 7) & !7
}

const fn align_up(n: usize, a: usize) -> usize {
    n.div_ceil(a) * a
}

/// The 8-byte message header (`docs/protocol.md` §1), little-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Header plus payload bytes, padding excluded.
    pub size: u16,
    /// The message type.
    pub msg_type: u16,
    /// Messages the sender has consumed from the receiver.
    pub ack: u32,
}

impl Header {
    /// The header's 8 bytes.
    pub fn bytes(&self) -> [u8; HEADER] {
        let mut b = [0u8; HEADER];
        b[0..2].copy_from_slice(&self.size.to_le_bytes());
        b[2..4].copy_from_slice(&self.msg_type.to_le_bytes());
        b[4..8].copy_from_slice(&self.ack.to_le_bytes());
        b
    }

    /// The header in the first 8 bytes of `b`, judged by nothing.
    pub fn parse(b: &[u8]) -> Option<Header> {
        let b = b.get(..HEADER)?;
        Some(Header {
            size: u16::from_le_bytes([b[0], b[1]]),
            msg_type: u16::from_le_bytes([b[2], b[3]]),
            ack: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        })
    }

    /// Bytes the message occupies on the wire.
    pub fn padded(&self) -> usize {
        padded(self.size as usize)
    }
}

/// One message as it goes on the wire: header, payload, padding to 8.
pub fn frame(msg_type: u16, ack: u32, payload: &[u8]) -> Vec<u8> {
    let size = HEADER + payload.len();
    let mut f = vec![0u8; padded(size)];
    let h = Header {
        size: size as u16,
        msg_type,
        ack,
    };
    f[..HEADER].copy_from_slice(&h.bytes());
    f[HEADER..size].copy_from_slice(payload);
    f
}

/// A heartbeat carrying `ack`.
pub fn heartbeat(ack: u32) -> [u8; HEADER] {
    Header {
        size: HEADER as u16,
        msg_type: TYPE_HEARTBEAT,
        ack,
    }
    .bytes()
}

/// A name as its NUL-padded 16-byte field (cut to 16 bytes: a test may
/// want an unterminated one).
pub fn name16(s: &str) -> [u8; 16] {
    let mut f = [0u8; 16];
    let n = s.len().min(16);
    f[..n].copy_from_slice(&s.as_bytes()[..n]);
    f
}

/// The text of a NUL-padded field, up to its first NUL.
pub fn text(field: &[u8]) -> String {
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// The C layout of an application's login user data: its `sizeof` and
/// `alignof`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserLayout {
    /// `sizeof`.
    pub size: usize,
    /// `alignof`.
    pub align: usize,
}

/// A login frame (`docs/protocol.md` §4), with the user data as raw bytes
/// placed by the C layout rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    /// The header's ack: the client's local ack.
    pub ack: u32,
    /// Oldest unacknowledged message the client holds.
    pub seq_start: u32,
    /// One past the client's newest message.
    pub seq_end: u32,
    /// The user data's bytes (`layout.size` of them).
    pub user_data: Vec<u8>,
    /// The user data's C layout.
    pub layout: UserLayout,
    /// Asks for shared memory.
    pub use_shm: bool,
    /// The client's name field.
    pub client: [u8; 16],
    /// The last server name field (all zero: none).
    pub last_server: [u8; 16],
}

impl Login {
    /// The default user data: one byte.
    pub const U8: UserLayout = UserLayout { size: 1, align: 1 };

    /// A TCP login of client `name` with one zero byte of user data and no
    /// last server.
    pub fn new(name: &str) -> Login {
        Login {
            ack: 0,
            seq_start: 0,
            seq_end: 0,
            user_data: vec![0],
            layout: Self::U8,
            use_shm: false,
            client: name16(name),
            last_server: [0; 16],
        }
    }

    fn off_user(l: UserLayout) -> usize {
        align_up(8, l.align)
    }

    /// Offset of the client name field in the frame.
    pub fn client_offset(l: UserLayout) -> usize {
        HEADER + Self::off_user(l) + l.size + 1
    }

    /// The header's `size`: 52 with one byte of user data.
    pub fn size(l: UserLayout) -> usize {
        let end = Self::off_user(l) + l.size + 1 + 32;
        HEADER + align_up(end, l.align.max(4))
    }

    /// The whole frame, padded.
    pub fn encode(&self) -> Vec<u8> {
        let l = self.layout;
        let size = Self::size(l);
        let mut f = vec![0u8; padded(size)];
        f[..HEADER].copy_from_slice(
            &Header {
                size: size as u16,
                msg_type: TYPE_LOGIN,
                ack: self.ack,
            }
            .bytes(),
        );
        let b = &mut f[HEADER..];
        b[0..4].copy_from_slice(&self.seq_start.to_le_bytes());
        b[4..8].copy_from_slice(&self.seq_end.to_le_bytes());
        let u = Self::off_user(l);
        b[u..u + l.size].copy_from_slice(&self.user_data[..l.size]);
        b[u + l.size] = self.use_shm as u8;
        b[u + l.size + 1..u + l.size + 17].copy_from_slice(&self.client);
        b[u + l.size + 17..u + l.size + 33].copy_from_slice(&self.last_server);
        f
    }
}

/// A login-response frame (`docs/protocol.md` §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The header's ack: the server's local ack.
    pub ack: u32,
    /// Oldest unacknowledged message the server holds.
    pub seq_start: u32,
    /// One past the server's newest message.
    pub seq_end: u32,
    /// The user data's bytes.
    pub user_data: Vec<u8>,
    /// 0 OK, 1 sequence mismatch, 2 rejected.
    pub status: u8,
    /// The server name field.
    pub server: [u8; 16],
    /// The error text field.
    pub error: [u8; 32],
}

impl Response {
    fn off_user(l: UserLayout) -> usize {
        align_up(8, l.align)
    }

    /// The header's `size`: 68 with one byte of user data.
    pub fn size(l: UserLayout) -> usize {
        let end = Self::off_user(l) + l.size + 1 + 16 + 32;
        HEADER + align_up(end, l.align.max(4))
    }

    /// Bytes of the frame on the wire: 72 with one byte of user data.
    pub fn frame_len(l: UserLayout) -> usize {
        padded(Self::size(l))
    }

    /// Decodes a frame whose user data has layout `l`.
    ///
    /// # Errors
    /// What is wrong with the frame.
    pub fn decode(b: &[u8], l: UserLayout) -> Result<Response, String> {
        let h = Header::parse(b).ok_or("shorter than a header")?;
        if h.msg_type != TYPE_LOGIN_RESPONSE || h.size as usize != Self::size(l) {
            return Err(format!("not a login response: {h:?}"));
        }
        if b.len() < Self::size(l) {
            return Err(format!("truncated: {} bytes", b.len()));
        }
        let body = &b[HEADER..];
        let u = Self::off_user(l);
        let u32_at = |o: usize| u32::from_le_bytes(body[o..o + 4].try_into().expect("4 bytes"));
        let status = body[u + l.size];
        if status > STATUS_REJECTED {
            return Err(format!("status {status}"));
        }
        let n = u + l.size + 1;
        Ok(Response {
            ack: h.ack,
            seq_start: u32_at(0),
            seq_end: u32_at(4),
            user_data: body[u..u + l.size].to_vec(),
            status,
            server: body[n..n + 16].try_into().expect("16 bytes"),
            error: body[n + 16..n + 48].try_into().expect("32 bytes"),
        })
    }

    /// The whole frame, padded (a stand-in server's answer).
    pub fn encode(&self, l: UserLayout) -> Vec<u8> {
        let size = Self::size(l);
        let mut f = vec![0u8; padded(size)];
        f[..HEADER].copy_from_slice(
            &Header {
                size: size as u16,
                msg_type: TYPE_LOGIN_RESPONSE,
                ack: self.ack,
            }
            .bytes(),
        );
        let b = &mut f[HEADER..];
        b[0..4].copy_from_slice(&self.seq_start.to_le_bytes());
        b[4..8].copy_from_slice(&self.seq_end.to_le_bytes());
        let u = Self::off_user(l);
        b[u..u + l.size].copy_from_slice(&self.user_data[..l.size]);
        b[u + l.size] = self.status;
        let n = u + l.size + 1;
        b[n..n + 16].copy_from_slice(&self.server);
        b[n + 16..n + 48].copy_from_slice(&self.error);
        f
    }

    /// The server name.
    pub fn server_name(&self) -> String {
        text(&self.server)
    }

    /// The error text.
    pub fn error_text(&self) -> String {
        text(&self.error)
    }
}

/// The bytes of a C++ library's `.ptcp` send-queue file (its
/// `PTCPQueue<capacity>` object as it sits in memory): `messages` from
/// sequence number `read_seq` on, each stamped with `ack`, none sent yet,
/// then `write_idx`, `read_idx`, `send_idx`, `read_seq` and `ack` as u32.
/// What a C++ process leaves behind, for `tcpshm import-cpp` tests.
///
/// # Panics
/// If the messages do not fit `capacity` (a multiple of 8).
pub fn cpp_queue_file(
    capacity: usize,
    read_seq: u32,
    ack: u32,
    messages: &[(u16, &[u8])],
) -> Vec<u8> {
    assert!(
        capacity % 8 == 0,
        "capacity {capacity} is not a multiple of 8"
    );
    let mut b = vec![0u8; capacity + 20];
    let mut off = 0;
    for &(t, p) in messages {
        let f = frame(t, ack, p);
        assert!(off + f.len() <= capacity, "the messages do not fit");
        b[off..off + f.len()].copy_from_slice(&f);
        off += f.len();
    }
    let w = (off / 8) as u32;
    for (i, v) in [w, 0, 0, read_seq, ack].into_iter().enumerate() {
        b[capacity + 4 * i..capacity + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// A blocking peer on one TCP connection: what a C++ client does, one
/// frame at a time, with a read timeout on every read.
#[derive(Debug)]
pub struct Peer {
    /// The connection.
    pub stream: TcpStream,
    /// Application messages popped from the server (the ack we send).
    pub ack: u32,
    buf: Vec<u8>,
}

impl Peer {
    /// Connects to `addr`, sends `login` and reads the response, each step
    /// within `timeout`.
    ///
    /// # Errors
    /// A socket error, or `InvalidData` for a frame that is not a login
    /// response.
    pub fn login(
        addr: SocketAddr,
        login: &Login,
        timeout: Duration,
    ) -> io::Result<(Peer, Response)> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut p = Peer {
            stream,
            ack: login.ack,
            buf: Vec::new(),
        };
        p.stream.write_all(&login.encode())?;
        let mut b = vec![0u8; Response::frame_len(login.layout)];
        p.stream.read_exact(&mut b)?;
        let r = Response::decode(&b, login.layout)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok((p, r))
    }

    /// Sends one application message carrying this peer's ack.
    ///
    /// # Errors
    /// The socket's.
    pub fn send(&mut self, msg_type: u16, payload: &[u8]) -> io::Result<()> {
        self.stream.write_all(&frame(msg_type, self.ack, payload))
    }

    /// Sends a heartbeat carrying this peer's ack.
    ///
    /// # Errors
    /// The socket's.
    pub fn heartbeat(&mut self) -> io::Result<()> {
        self.stream.write_all(&heartbeat(self.ack))
    }

    /// The next message other than a heartbeat, as header and payload;
    /// counts it consumed (the ack the next send carries).
    ///
    /// # Errors
    /// The socket's (a timeout is `WouldBlock` or `TimedOut`), or
    /// `InvalidData` for a header of size below 8.
    pub fn recv(&mut self) -> io::Result<(Header, Vec<u8>)> {
        loop {
            while self.buf.len() < HEADER
                || self.buf.len() < Header::parse(&self.buf).map_or(HEADER, |h| h.padded())
            {
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                self.buf.extend_from_slice(&chunk[..n]);
                if let Some(h) = Header::parse(&self.buf) {
                    if (h.size as usize) < HEADER {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "size below 8"));
                    }
                }
            }
            let h = Header::parse(&self.buf).expect("a whole header");
            let payload = self.buf[HEADER..h.size as usize].to_vec();
            self.buf.drain(..h.padded());
            if h.msg_type != TYPE_HEARTBEAT {
                self.ack = self.ack.wrapping_add(1);
                return Ok((h, payload));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_of_the_protocol_document() {
        assert_eq!(Login::size(Login::U8), 52);
        assert_eq!(Response::size(Login::U8), 68);
        let l = Login::new("c1");
        let f = l.encode();
        assert_eq!(&f[HEADER + 10..HEADER + 12], b"c1");
        assert_eq!(Login::client_offset(Login::U8), HEADER + 10);
        // A 16-byte, 8-aligned user type: data at 8, use_shm 24, names 25
        // and 41, body 57 rounded up to 64.
        let token = UserLayout { size: 16, align: 8 };
        assert_eq!(Login::size(token), HEADER + 64);
        let r = Response {
            ack: 3,
            seq_start: 1,
            seq_end: 2,
            user_data: vec![9],
            status: STATUS_REJECTED,
            server: name16("srv"),
            error: {
                let mut e = [0u8; 32];
                e[..4].copy_from_slice(b"nope");
                e
            },
        };
        let back = Response::decode(&r.encode(Login::U8), Login::U8).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            (back.server_name(), back.error_text()),
            ("srv".into(), "nope".into())
        );
    }
}
