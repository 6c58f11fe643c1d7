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

pub mod error;
pub mod ptcp_queue;
pub mod shm_queue;
pub mod sys;
pub mod wire;

pub use error::{FileError, FileErrorKind};
