#![no_main]
//! Fuzz target: see `tcpshm::fuzzing::shm_group`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpshm::fuzzing::shm_group(data));
