#![no_main]
//! Fuzz target: see `tcpshm::fuzzing::frames`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpshm::fuzzing::frames(data));
