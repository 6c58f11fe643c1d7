//! tcpshm: recoverable, low-latency messaging between two named peers,
//! over TCP or shared memory, wire-compatible with the C++ library of the
//! same name (see `PROTOCOL.md`).
//!
//! Building blocks:
//! - [`wire`]: headers and login frames, encode and decode;
//! - [`ptcp_queue`]: the persistent TCP send queue;
//! - [`shm_queue`]: the shared-memory SPSC variable-length queue;
//! - [`sys`]: mapping files and shared-memory objects.
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod client;
pub mod config;
pub mod conn;
pub mod error;
pub mod ptcp_queue;
pub mod server;
mod session;
pub mod shm_queue;
pub mod sys;
pub mod wire;

pub use client::{Client, ClientHandler, ConnectError, SeqMismatch, SetupError};
pub use config::{Config, ConfigError};
pub use conn::{Alloc, AllocError, ConnRx, ConnTx, Connection, Received};
pub use error::{FileError, FileErrorKind};
pub use server::{Accept, ConnId, Server, ServerHandler};
pub use session::CloseReason;

#[cfg(not(target_endian = "little"))]
compile_error!("tcpshm supports little-endian hosts (the wire and shm layouts are little-endian)");
