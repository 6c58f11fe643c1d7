//! Sleeping until there is work: the [`Wait`] trait of the parts that can
//! (a client, the control part, a group, a whole server), and how a
//! timeout becomes an `epoll_wait`'s.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// A part that can sleep until it has work: [`Client`](crate::Client),
/// [`Control`](crate::Control), [`Group`](crate::Group) and
/// [`Server`](crate::Server).
///
/// Its descriptor ([`AsRawFd`], an epoll set) turns readable when the
/// part may have work: a socket with bytes, a message in a shared-memory
/// ring (its writer sends a heartbeat to wake it), mail from another part
/// (a login to finish). Its timers (heartbeats to send, timeouts to
/// check) are not in the descriptor: [`wait_timeout`](Wait::wait_timeout)
/// says how long the part may sleep.
///
/// The contract, for a loop of your own (epoll, mio, tokio): call
/// `wait_timeout(now)`; if it says zero, poll again at once; else sleep
/// until the descriptor is readable or the timeout passes, then poll
/// until a poll reports no work, then ask again. [`wait`](Wait::wait)
/// does the sleeping for a thread of its own. A message the handler
/// leaves unconsumed (not popped) keeps the part awake: it is delivered
/// again at every poll.
///
/// ```no_run
/// # use tcpshm::*;
/// # struct Echo; impl GroupHandler for Echo { fn on_client_msg(&mut self, _: ConnId, m: Received<'_>, _: &mut ConnTx) { m.pop() } }
/// # impl ControlHandler for Echo { fn on_new_connection(&mut self, _: &LoginRequest) -> Accept { Accept::group(0) } }
/// # fn now() -> i64 { 0 }
/// # let mut server: Server = Server::new("s", "/tmp/s", Config::default()).unwrap();
/// loop {
///     while server.poll(now(), &mut Echo) {}
///     // Nothing to do: sleep until something comes (at most a second).
///     server.wait(now(), std::time::Duration::from_secs(1)).unwrap();
/// }
/// ```
pub trait Wait: AsRawFd {
    /// Gets ready to sleep at `now` and says for how long it may:
    /// `Some(Duration::ZERO)` when a poll has work already (do not
    /// sleep), `Some(d)` to sleep until the descriptor is readable or `d`
    /// passes (the next timer), `None` until the descriptor is readable.
    ///
    /// A shared-memory part tells its writers here that it sleeps (a word
    /// in each ring); its next poll takes that back.
    fn wait_timeout(&mut self, now: i64) -> Option<Duration>;

    /// Sleeps until the part may have work, its next timer, or `timeout`,
    /// whichever comes first (no sleep at all when a poll has work
    /// already). Poll it after.
    ///
    /// # Errors
    /// The system's, from the wait (an interrupted wait is not one).
    fn wait(&mut self, now: i64, timeout: Duration) -> io::Result<()> {
        wait_then(self, now, timeout, |_| {})
    }
}

/// [`Wait::wait`] for a part whose `wait_timeout` raised something to
/// take back after the sleep (a shared-memory reader's flags): `after`
/// runs on every path, an error's included.
pub(crate) fn wait_then<W: Wait + ?Sized>(
    part: &mut W,
    now: i64,
    timeout: Duration,
    after: impl FnOnce(&mut W),
) -> io::Result<()> {
    let t = part.wait_timeout(now).map_or(timeout, |t| t.min(timeout));
    let slept = if t.is_zero() {
        Ok(())
    } else {
        sleep_on(part.as_raw_fd(), Some(t))
    };
    after(part);
    slept
}

/// Milliseconds for `epoll_wait` and `poll`: `timeout` rounded up (never
/// early), -1 for none.
pub(crate) fn timeout_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            i32::try_from(ms).unwrap_or(i32::MAX)
        }
    }
}

/// Sleeps until `fd` is readable or `timeout` passes.
pub(crate) fn sleep_on(fd: std::os::fd::RawFd, timeout: Option<Duration>) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call; the descriptor is the
    // caller's, open.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms(timeout)) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Whether `fd` is readable now (an epoll set with events), without
/// waiting.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) fn readable_now(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call; the descriptor is borrowed,
    // so open.
    unsafe { libc::poll(&mut p, 1, 0) > 0 }
}

/// The shorter of two optional timeouts (`None`: no limit).
pub(crate) fn min_timeout(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_and_never_wrap() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_nanos(1))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_micros(1500))), 2);
        assert_eq!(timeout_ms(Some(Duration::from_secs(u64::MAX))), i32::MAX);
        let s = Some(Duration::from_secs(1));
        assert_eq!(min_timeout(s, None), s);
        assert_eq!(min_timeout(None, None), None);
        assert_eq!(min_timeout(s, Some(Duration::ZERO)), Some(Duration::ZERO));
    }
}
