//! tcpshm: recoverable, low-latency messaging between two named peers,
//! over TCP or shared memory, with one API for both, wire- and
//! shared-memory-compatible with the C++ library of the same name
//! (`PROTOCOL.md`).
//!
//! Each side keeps the messages it sends in a memory-mapped queue until the
//! peer acknowledges them; after a disconnect or a crash (kill -9
//! included) the two sides log in again, compare sequence numbers and
//! resend what was not consumed. Nothing is lost or duplicated, with no
//! work from the application.
//!
//! The library creates no threads, reads no clock (every poll takes `now`
//! in your unit), takes no locks, prints nothing and does not allocate per
//! message. Only [`Client::connect`] blocks.
//!
//! # Example: an echo server and a client
//!
//! ```
//! use std::time::Instant;
//! use tcpshm::wire::{Login, LoginResponse};
//! use tcpshm::{Accept, Client, ClientHandler, ConnId, ConnTx, Received, Server, ServerHandler, Transport};
//!
//! struct Echo;
//! impl ServerHandler for Echo {
//!     fn on_new_connection(&mut self, _: std::net::SocketAddr, _: &Login, _: &mut LoginResponse) -> Accept {
//!         Accept::Group(0) // serve every client in group 0
//!     }
//!     fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, tx: &mut ConnTx) {
//!         // No room to reply yet: leave the message, it comes back next poll.
//!         let Ok(mut rsp) = tx.alloc(msg.msg_type(), msg.payload().len()) else { return };
//!         rsp.payload_mut().copy_from_slice(msg.payload());
//!         msg.pop(); // pop, then push: a crash in between cannot duplicate the reply
//!         rsp.push();
//!     }
//! }
//!
//! struct Count(u32);
//! impl ClientHandler for Count {
//!     fn on_login_success(&mut self, _: &LoginResponse) -> i64 { now() }
//!     fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
//!         assert_eq!(msg.payload(), b"hello");
//!         msg.pop();
//!         self.0 += 1;
//!     }
//! }
//!
//! fn now() -> i64 { // nanoseconds, the unit of the default timeouts
//!     static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
//!     T0.get_or_init(Instant::now).elapsed().as_nanos() as i64
//! }
//!
//! # let tmp = std::env::temp_dir().join(format!("tcpshm-doc-{}", std::process::id()));
//! let cfg = tcpshm::Config::default();
//! let mut server = Server::new("server", tmp.join("server"), cfg.clone(), Echo)?;
//! server.start("127.0.0.1:0")?;
//! let addr = server.local_addr().unwrap();
//! let stop = std::sync::atomic::AtomicBool::new(false);
//! std::thread::scope(|s| {
//!     // One thread polls the whole server here; see Server::split for more.
//!     s.spawn(|| while !stop.load(std::sync::atomic::Ordering::Relaxed) {
//!         server.poll_ctl(now());
//!         server.poll_tcp(now(), 0);
//!         std::thread::yield_now();
//!     });
//!     let mut client = Client::new("client1", tmp.join("client1"), cfg, Count(0))?;
//!     client.connect(Transport::Tcp, addr, 0)?; // or Transport::Shm
//!     let mut msg = client.connection().alloc(1, 5)?;
//!     msg.payload_mut().copy_from_slice(b"hello");
//!     msg.push();
//!     while client.handler().0 == 0 {
//!         client.poll_tcp(now());
//!     }
//!     stop.store(true, std::sync::atomic::Ordering::Relaxed);
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })?;
//! # drop(server);
//! # std::fs::remove_dir_all(&tmp).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Modules
//! - [`wire`]: headers and login frames, encode and decode;
//! - [`ptcp_queue`]: the persistent TCP send queue;
//! - [`shm_queue`]: the shared-memory SPSC variable-length queue;
//! - [`conn`]: [`Connection`], one API over TCP and shared memory;
//! - [`login`]: the login rules both sides apply;
//! - [`client`], [`server`]: logins, sessions, recovery, groups;
//! - [`config`]: settings and their validation;
//! - [`sys`]: the operating system: mappings, the memory queues may own,
//!   sockets.
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod client;
pub mod config;
pub mod conn;
pub mod cpp_ptcp;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod inspect;
pub mod login;
pub mod pair_files;
pub mod ptcp_queue;
pub mod server;
mod session;
pub mod shm_queue;
pub mod stats;
pub mod sys;
pub mod wire;

pub use client::{Client, ClientHandler, ConnectError};
pub use config::{Config, ConfigError};
pub use conn::{Alloc, AllocError, ConnRx, ConnTx, Connection, Received, Transport};
pub use error::{FileError, FileErrorKind, SetupError};
pub use login::SeqMismatch;
pub use server::{Accept, ConnId, Server, ServerHandler};
pub use session::CloseReason;
pub use stats::ConnStats;

#[cfg(not(target_endian = "little"))]
compile_error!("tcpshm supports little-endian hosts (the wire and shm layouts are little-endian)");

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
