//! Readiness of many sockets at once: an epoll set, level-triggered. A
//! poll waits on it with a zero timeout and hears only of the sockets
//! that have something: one system call, however many are registered; a
//! part with nothing to do waits on it with a timeout. A [`Waker`] (an
//! eventfd) in the set lets another thread wake it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A socket became readable (or hung up, or failed: a read tells which).
pub(crate) const READABLE: u32 = libc::EPOLLIN as u32;
/// A socket can take bytes again.
pub(crate) const WRITABLE: u32 = libc::EPOLLOUT as u32;

/// An epoll set, and room for the events one wait returns.
#[derive(Debug)]
pub(crate) struct Poller {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Poller {
    /// A new empty set whose waits return at most `max_events` events
    /// (the rest are level-triggered: the next wait returns them).
    ///
    /// # Errors
    /// `epoll_create1`'s (out of descriptors, say).
    pub(crate) fn new(max_events: usize) -> io::Result<Poller> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller {
            // SAFETY: a descriptor just returned to us, owned from here.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; max_events.max(1)],
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: interest,
            u64: token,
        };
        // SAFETY: both descriptors are open (the caller's socket, and ours);
        // the event struct is valid for the call.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches `fd` for `interest` ([`READABLE`]), reported with `token`.
    ///
    /// # Errors
    /// `epoll_ctl`'s.
    pub(crate) fn add(&self, fd: &impl AsRawFd, token: u64, interest: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd.as_raw_fd(), token, interest)
    }

    /// Watches `fd`, already in the set, for `interest` instead.
    ///
    /// # Errors
    /// `epoll_ctl`'s.
    pub(crate) fn modify(&self, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    /// Stops watching `fd` (a closed descriptor leaves the set by itself).
    pub(crate) fn delete(&self, fd: &impl AsRawFd) {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd.as_raw_fd(), 0, 0);
    }

    /// The tokens of the registered sockets that are ready now, waiting
    /// at most `timeout_ms` (0: not at all; -1: until one is). An
    /// interrupted wait returns no event.
    ///
    /// # Errors
    /// `epoll_wait`'s, but `EINTR`.
    pub(crate) fn wait(&mut self, timeout_ms: i32) -> io::Result<impl Iterator<Item = u64> + '_> {
        // SAFETY: the buffer holds `len` events and lives through the call;
        // the descriptor is ours.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                timeout_ms,
            )
        };
        let n = if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            0
        } else {
            n as usize
        };
        Ok(self.events[..n].iter().map(|e| e.u64))
    }
}

impl AsRawFd for Poller {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl std::os::fd::AsFd for Poller {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// An eventfd: another thread (or a signal handler) makes it readable, so
/// a part asleep in its readiness set wakes (its mailbox got mail).
#[derive(Debug)]
pub(crate) struct Waker {
    fd: OwnedFd,
}

impl Waker {
    /// A new waker, not readable.
    ///
    /// # Errors
    /// `eventfd`'s (out of descriptors, say).
    pub(crate) fn new() -> io::Result<Waker> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Waker {
            // SAFETY: a descriptor just returned to us, owned from here.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Makes it readable (it stays so until `reset`).
    pub(crate) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our descriptor. A full
        // counter (EAGAIN) is still readable: nothing is lost.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Makes it not readable (until the next `wake`).
    pub(crate) fn reset(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our
        // descriptor (non-blocking: EAGAIN when it was not readable).
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    #[cfg_attr(miri, ignore = "eventfd")]
    fn a_waker_wakes_a_wait_until_reset() {
        let mut p = Poller::new(4).unwrap();
        let w = Waker::new().unwrap();
        p.add(&w, 9, READABLE).unwrap();
        assert_eq!(p.wait(0).unwrap().count(), 0);
        w.wake();
        w.wake();
        assert_eq!(p.wait(1000).unwrap().collect::<Vec<_>>(), [9]);
        assert_eq!(p.wait(0).unwrap().count(), 1, "level-triggered until reset");
        w.reset();
        assert_eq!(p.wait(0).unwrap().count(), 0);
    }

    #[test]
    #[cfg_attr(miri, ignore = "sockets")]
    fn only_ready_sockets_are_reported() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut servers = Vec::new();
        let mut p = Poller::new(4).unwrap();
        for i in 0..10u64 {
            clients.push(std::net::TcpStream::connect(addr).unwrap());
            let (s, _) = l.accept().unwrap();
            p.add(&s, i, READABLE).unwrap();
            servers.push(s);
        }
        assert_eq!(p.wait(0).unwrap().count(), 0, "nothing ready");
        clients[3].write_all(b"x").unwrap();
        clients[7].write_all(b"y").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut got: Vec<u64> = Vec::new();
        while got.len() < 2 && std::time::Instant::now() < deadline {
            got = p.wait(10).unwrap().collect();
        }
        got.sort();
        assert_eq!(got, [3, 7]);
        // Level-triggered: unread, they are reported again; and at most
        // max_events at once.
        for c in &mut clients {
            c.write_all(b"z").unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(p.wait(0).unwrap().count(), 4);
        p.delete(&servers[3]);
        drop(servers.remove(7)); // a closed socket leaves the set by itself
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut p2 = p;
        let all: Vec<u64> = (0..3)
            .flat_map(|_| p2.wait(0).unwrap().collect::<Vec<_>>())
            .collect();
        assert!(!all.contains(&3) && !all.contains(&7), "{all:?}");
    }
}
