//! The only place that calls the operating system: mapping queue files
//! and shared-memory objects ([`Mapping`]), the memory queues may own
//! ([`Region`], [`HeapRegion`]), and socket reads and writes with "not
//! ready" kept apart from errors (`socket`). Every `unsafe` of the crate
//! outside the two queue modules lives here.

mod mapping;
mod region;
pub(crate) mod socket;

pub use mapping::{MapOptions, Mapping};
pub use region::{HeapRegion, Region, HEAP_ALIGN};
