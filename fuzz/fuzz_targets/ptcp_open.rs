#![no_main]
//! Fuzz target: see `tcpshm::fuzzing::ptcp_open`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpshm::fuzzing::ptcp_open(data));
