//! cargo fuzz target `config`: the body is `cutter_core::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cutter_core::fuzzing::config(data));
