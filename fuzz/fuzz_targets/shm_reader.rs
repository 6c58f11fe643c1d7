#![no_main]
//! Fuzz target: see `tcpshm::fuzzing::shm_reader`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpshm::fuzzing::shm_reader(data));
