//! The only place that calls the operating system: mapping queue files
//! and shared-memory objects ([`Mapping`]), the memory queues may own
//! ([`Region`], [`HeapRegion`]), and socket reads and writes with "not
//! ready" kept apart from errors (`socket`). Every `unsafe` of the crate
//! outside the two queue modules lives here.
//!
//! # What safe code cannot do
//!
//! A mapping hands out atomic words, never a `&mut [u8]` that could alias
//! a queue's or another thread's view of the same bytes:
//!
//! ```compile_fail,E0599
//! fn f(m: &mut tcpshm::sys::Mapping) {
//!     let bytes: &mut [u8] = m.as_mut(); // error: no AsMut
//! }
//! ```
//!
//! Only the crate's own types are memory a queue may own ([`Region`] is
//! sealed), so no type of yours can hand a queue memory it keeps using:
//!
//! ```compile_fail,E0277
//! struct Mine(Vec<u8>);
//! impl tcpshm::sys::Region for Mine { // error: the trait is sealed
//!     fn base(&self) -> *mut u8 { self.0.as_ptr() as *mut u8 }
//!     fn size(&self) -> usize { self.0.len() }
//! }
//! ```
//!
//! ```compile_fail,E0277
//! let q = tcpshm::ptcp_queue::PtcpQueue::open(vec![0u8; 72]); // error: Vec is no Region
//! ```
//!
//! and a queue gives no reference to its region back:
//!
//! ```compile_fail,E0599
//! let (q, _ack) = tcpshm::ptcp_queue::PtcpQueue::heap(64);
//! let r = q.region(); // error: no such method
//! ```

pub mod files;
mod mapping;
mod region;
pub(crate) mod socket;

pub use mapping::{MapOptions, Mapping, POPULATE_MAX};
pub use region::{HeapRegion, Region, HEAP_ALIGN};
