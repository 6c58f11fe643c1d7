#![no_main]
//! Fuzz target: see `tcpshm::fuzzing::fragments`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpshm::fuzzing::fragments(data));
