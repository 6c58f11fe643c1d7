#![no_main]
//! Fuzz target: see `tcpshm::fuzzing::client_login`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpshm::fuzzing::client_login(data));
