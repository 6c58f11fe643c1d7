#![no_main]
//! Fuzz target: see `tcpshm::fuzzing::server_login`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpshm::fuzzing::server_login(data));
