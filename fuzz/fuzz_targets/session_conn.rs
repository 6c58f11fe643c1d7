#![no_main]
//! Fuzz target: see `tcpshm::fuzzing::session_conn`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpshm::fuzzing::session_conn(data));
