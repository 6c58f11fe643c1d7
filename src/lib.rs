//! tcpshm: recoverable, low-latency messaging between two named peers on
//! Linux, over TCP or shared memory, with one API for both; wire- and
//! shared-memory-compatible with the C++ library of the same name
//! (`docs/protocol.md`).
//!
//! Each side keeps the messages it sends in a memory-mapped queue until
//! the peer has consumed them. After a disconnect or a crash (kill -9
//! included) the two sides log in again, compare sequence numbers and
//! resend what was not consumed: every message is delivered in order,
//! and is delivered again until the receiver pops it. What the
//! application does between receiving a message and popping it is its
//! own to make exactly-once: see "Delivery" below.
//!
//! The library creates no threads, reads no clock (every poll takes
//! `now` in ticks of your clock, `Config::ticks_per_second`), takes no
//! locks, prints nothing and does not allocate per message. Only
//! [`Client::connect`] blocks, and the waits you ask for: every poll
//! says whether it did work, for an [`Idle`] strategy, and every part
//! can sleep until it has work ([`Wait`]; an epoll descriptor per part,
//! and `tcpshm::tokio` with the `tokio` feature).
//!
//! # Example: an echo server and a client
//!
//! ```
//! use std::time::{Duration, Instant};
//! use tcpshm::*;
//!
//! struct Echo;
//! impl ControlHandler for Echo {
//!     fn on_new_connection(&mut self, _: &LoginRequest) -> Accept {
//!         Accept::group(0) // every client to group 0 of its transport
//!     }
//! }
//! impl GroupHandler for Echo {
//!     fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, tx: &mut ConnTx) {
//!         // No room yet: leave the message, it comes back at the next poll.
//!         let Ok(mut reply) = tx.alloc(msg.msg_type(), msg.payload().len()) else { return };
//!         reply.payload_mut().copy_from_slice(msg.payload());
//!         reply.push();
//!         msg.pop();
//!     }
//! }
//!
//! struct Count(u32);
//! impl ClientHandler for Count {
//!     fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
//!         assert_eq!(msg.payload(), b"hello");
//!         msg.pop();
//!         self.0 += 1;
//!     }
//! }
//!
//! let t0 = Instant::now();
//! let now = || t0.elapsed().as_nanos() as i64; // the default tick: 1 ns
//! # let tmp = std::env::temp_dir().join(format!("tcpshm-doc-{}", std::process::id()));
//! # let mut cfg = Config::default();
//! # cfg.shm_dir = tmp.join("shm");
//! # std::fs::create_dir_all(&cfg.shm_dir)?;
//! let mut server: Server = Server::new("server", tmp.join("server"), cfg.clone())?;
//! server.listen("127.0.0.1:0")?;
//! let addr = server.local_addr().unwrap();
//! let done = std::sync::atomic::AtomicBool::new(false);
//! std::thread::scope(|s| {
//!     s.spawn(|| while !done.load(std::sync::atomic::Ordering::Relaxed) {
//!         server.poll(now(), &mut Echo);
//!         std::thread::yield_now();
//!     });
//!     for transport in [Transport::Tcp, Transport::Shm] {
//!         let mut client: Client = Client::new("client1", tmp.join("client1"), cfg.clone())?;
//!         client.connect(transport, addr, 0)?;
//!         let mut hello = client.connection().alloc(1, 5)?;
//!         hello.payload_mut().copy_from_slice(b"hello");
//!         hello.push();
//!         let (mut got, deadline) = (Count(0), Instant::now() + Duration::from_secs(10));
//!         while got.0 == 0 && Instant::now() < deadline {
//!             client.poll(now(), &mut got);
//!         }
//!         assert_eq!(got.0, 1, "the echo over {transport:?}");
//!     }
//!     done.store(true, std::sync::atomic::Ordering::Relaxed);
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })?;
//! # drop(server);
//! # std::fs::remove_dir_all(&tmp).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Delivery
//!
//! - A pushed message is persisted before `push` returns and reaches the
//!   peer, in order, across disconnects and crashes of either side.
//! - A received message stays in the queue until the receiver pops it:
//!   after a crash before the pop, it is delivered again; once popped,
//!   never again.
//! - So a handler that replies and then pops can, if the process dies
//!   between the two, reply twice; one that pops first can lose the
//!   reply. Exactly once takes the pair's own counters:
//!   `examples/exactly_once.rs` shows how.
//!
//! # Parts
//!
//! - [`Client`] with its [`ClientHandler`];
//! - [`Server`] with its [`Control`] part ([`ControlHandler`]: logins) and
//!   its [`Group`]s ([`GroupHandler`]: connections and their messages);
//! - [`Connection`], split into [`ConnRx`] and [`ConnTx`]: messages are
//!   read in place ([`Received`]) and written in place ([`Alloc`]);
//! - [`Config`], [`ConnStats`], the errors, and [`admin`] for the
//!   operator's tools.
#![warn(unreachable_pub)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod admin;
mod client;
mod close;
mod config;
mod conn;
mod cpp_ptcp;
mod doorbell;
mod error;
mod failpoint;
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing;
mod idle;
mod login;
mod pair_files;
mod ptcp_queue;
mod server;
mod session;
mod shm_queue;
mod stats;
mod sys;
mod timer_wheel;
#[cfg(feature = "tokio")]
pub mod tokio;
mod wait;
mod wake;
mod wire;

pub use client::{Client, ClientHandler, ClientShm, ClientTcp};
pub use close::{Close, CloseReason};
pub use config::Config;
pub use conn::{
    Alloc, AllocError, Batch, CommitError, ConnRx, ConnTx, Connection, Received, Transport,
};
pub use error::{ConfigError, ConnectError, FileError, FileErrorKind, SetupError};
pub use idle::Idle;
pub use login::{Rejection, SeqMismatch};
pub use server::{
    Accept, ConnId, Control, ControlHandler, Group, GroupHandler, LoginRequest, Server, ServerParts,
};
pub use stats::ConnStats;
pub use wait::Wait;
pub use wire::{Name, NameError, UserData};

#[cfg(not(target_endian = "little"))]
compile_error!("tcpshm supports little-endian hosts (the wire and shm layouts are little-endian)");

/// The code of README and `docs/`, compiled and run as doctests (with
/// their compile_fail error codes checked on nightly).
#[cfg(doctest)]
mod doc_pages {
    #[doc = include_str!("../README.md")]
    struct Readme;
    #[doc = include_str!("../docs/protocol.md")]
    struct Protocol;
    #[doc = include_str!("../docs/shm-fast-path.md")]
    struct ShmFastPath;
    #[doc = include_str!("../docs/operations.md")]
    struct Operations;
    #[doc = include_str!("../docs/benchmarks.md")]
    struct Benchmarks;
    #[doc = include_str!("../docs/soundness.md")]
    struct Soundness;
    #[doc = include_str!("../docs/testing.md")]
    struct Testing;
    #[doc = include_str!("../docs/cpp-interop.md")]
    struct CppInterop;
}
