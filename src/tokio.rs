//! tokio: a part ([`Client`](crate::Client), [`Server`](crate::Server),
//! [`Control`](crate::Control) or a [`Group`](crate::Group)) polled from
//! an async task, asleep in the runtime's reactor between messages
//! (`features = ["tokio"]`).
//!
//! [`Async`] registers the part's descriptor ([`Wait`]) with the reactor
//! ([`AsyncFd`]). A task polls the part until a poll reports no work,
//! then awaits [`Async::ready`], which returns when the part may have
//! work again: a socket readable, a shared-memory writer's wake-up, mail
//! from another part, or the part's next timer.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use tcpshm::tokio::Async;
//! use tcpshm::*;
//!
//! struct Echo;
//! impl ControlHandler for Echo {
//!     fn on_new_connection(&mut self, _: &LoginRequest) -> Accept {
//!         Accept::group(0)
//!     }
//! }
//! impl GroupHandler for Echo {
//!     fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, tx: &mut ConnTx) {
//!         if let Ok(mut r) = tx.alloc(msg.msg_type(), msg.payload().len()) {
//!             r.payload_mut().copy_from_slice(msg.payload());
//!             r.push();
//!             msg.pop();
//!         }
//!     }
//! }
//!
//! let t0 = std::time::Instant::now();
//! let now = || t0.elapsed().as_nanos() as i64;
//! let mut server: Server = Server::new("server", "/tmp/echo", Config::default()).unwrap();
//! server.listen("127.0.0.1:12345")?;
//! let mut server = Async::new(server)?;
//! loop {
//!     while server.get_mut().poll(now(), &mut Echo) {}
//!     server.ready(now()).await?;
//! }
//! # }
//! ```

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::Interest;

use crate::wait::{readable_now, Wait};

/// A part registered with the tokio reactor of the current runtime.
///
/// The reactor watches a duplicate of the part's descriptor that this
/// value owns, so nothing done to the part (even replacing it) can close
/// or change the descriptor the reactor knows.
#[derive(Debug)]
pub struct Async<P: Wait + AsFd> {
    part: P,
    fd: AsyncFd<OwnedFd>,
}

impl<P: Wait + AsFd> Async<P> {
    /// Registers (a duplicate of) `part`'s descriptor with the current
    /// runtime's reactor.
    ///
    /// # Errors
    /// The duplicate's (out of descriptors), or the reactor's.
    ///
    /// # Panics
    /// Outside a tokio runtime with its I/O driver enabled (tokio's
    /// `AsyncFd` does).
    pub fn new(part: P) -> io::Result<Async<P>> {
        let dup = part.as_fd().try_clone_to_owned()?;
        // SAFETY: `dup` is an open descriptor that the `AsyncFd` owns from
        // here: nothing else can close it or make it refer to another file,
        // and its `as_raw_fd` returns the same number for its lifetime
        // (tokio's requirements for registering it).
        let fd = unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Async { part, fd })
    }

    /// The part, to poll and push to. (Replacing it with another leaves
    /// the reactor watching the first one's descriptor: make a new
    /// `Async` instead.)
    pub fn get_mut(&mut self) -> &mut P {
        &mut self.part
    }

    /// The part.
    pub fn get_ref(&self) -> &P {
        &self.part
    }

    /// The part, out of the reactor.
    pub fn into_inner(self) -> P {
        self.part
    }

    /// Waits until the part may have work: at once if a poll has work
    /// already, else until its descriptor is readable or its next timer
    /// ([`Wait::wait_timeout`] at `now`). Poll it after, until a poll
    /// reports no work, then call this again.
    ///
    /// # Errors
    /// The reactor's.
    pub async fn ready(&mut self, now: i64) -> io::Result<()> {
        let timeout = self.part.wait_timeout(now);
        // The part's epoll set is level-triggered inside; the reactor hears
        // only of new events, so what is pending now is looked at first.
        if timeout == Some(Duration::ZERO) || readable_now(self.part.as_fd()) {
            return Ok(());
        }
        let readable = self.fd.readable();
        let guard = match timeout {
            None => Some(readable.await?),
            Some(d) => match ::tokio::time::timeout(d, readable).await {
                Ok(guard) => Some(guard?),
                Err(_elapsed) => None,
            },
        };
        if let Some(mut guard) = guard {
            // The reactor reports the next event anew; what is pending now
            // the poll that follows takes, and `wait_timeout` sees what it
            // leaves.
            guard.clear_ready();
        }
        Ok(())
    }
}
