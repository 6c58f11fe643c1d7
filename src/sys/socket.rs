//! Socket reads and writes for the session core: "not ready" is 0 bytes,
//! not an error; every call is bounded.

use std::io::{self, Read, Write};

use crate::close::{Close, CloseReason};

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// One read into `buf`. `Ok(0)`: nothing available now.
///
/// # Errors
/// "Remote close" at end of stream, "Read error" with the errno otherwise.
pub(crate) fn read_some<S: Read>(sock: &mut S, buf: &mut [u8]) -> Result<usize, Close> {
    if buf.is_empty() {
        return Ok(0);
    }
    match sock.read(buf) {
        Ok(0) => Err(Close::new(CloseReason::RemoteClose)),
        Ok(n) => Ok(n),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(0)
        }
        Err(e) => Err(Close::os(CloseReason::ReadError, errno(&e))),
    }
}

/// Writes as much of `bytes` as the socket takes now (a few calls at most:
/// each either takes bytes or stops the loop).
///
/// # Errors
/// "Send error" with the errno.
pub(crate) fn write_some<S: Write>(sock: &mut S, bytes: &[u8]) -> Result<usize, Close> {
    let mut sent = 0;
    let mut interrupted = 0;
    while sent < bytes.len() {
        match sock.write(&bytes[sent..]) {
            Ok(0) => return Err(Close::new(CloseReason::SendError)),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted && interrupted < 4 => {
                interrupted += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => break,
            Err(e) => return Err(Close::os(CloseReason::SendError, errno(&e))),
        }
    }
    Ok(sent)
}

/// Bytes [`discard`] reads per call: one read, however fast the peer sends.
pub(crate) const DISCARD_MAX: usize = 256;

/// Reads and drops at most [`DISCARD_MAX`] bytes (the heartbeats of a
/// shared-memory session's socket). Returns the bytes read.
///
/// # Errors
/// As [`read_some`].
pub(crate) fn discard<S: Read>(sock: &mut S) -> Result<usize, Close> {
    let mut b = [0u8; DISCARD_MAX];
    read_some(sock, &mut b)
}

#[cfg(any(test, fuzzing))]
/// Shrinks the kernel's send and receive buffers of `sock` to about
/// `bytes` (the kernel doubles and clamps the value), so a peer that
/// stops reading makes sends partial after a few kilobytes: for tests and
/// fuzzing of partial-send resumption.
///
/// # Errors
/// The OS error of `setsockopt`.
pub(crate) fn shrink_buffers(sock: &std::net::TcpStream, bytes: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: a valid open socket fd (borrowed from `sock`), and a
        // pointer to a c_int with its exact length, as setsockopt wants.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
