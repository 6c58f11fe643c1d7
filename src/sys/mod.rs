//! The only place that calls the operating system: mapping queue files
//! and shared-memory objects ([`Mapping`]), the memory queues may own
//! ([`Region`], [`HeapRegion`]), and socket reads and writes with "not
//! ready" kept apart from errors (`socket`). Every `unsafe` of the crate
//! outside the two queue modules lives here.
//!
//! # What the crate's own code cannot do
//!
//! None of this is public: code outside the crate cannot name a mapping,
//! a region or a queue at all (`docs/soundness.md` shows it with
//! compile_fail tests). Inside the crate the types keep the rules too:
//! - a mapping hands out atomic words, never a `&mut [u8]` that could
//!   alias a queue's or another thread's view of the same bytes;
//! - only this module's types are memory a queue may own ([`Region`] is
//!   sealed), so no type can hand a queue memory it keeps using;
//! - a queue gives no reference to its region back.

pub(crate) mod files;
mod mapping;
mod poller;
mod region;
pub(crate) mod socket;

pub(crate) use mapping::{Lock, MapOptions, Mapping};
pub(crate) use poller::{Poller, Waker, READABLE, WRITABLE};
pub(crate) use region::{HeapRegion, Region};
