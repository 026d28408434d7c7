//! cargo fuzz target `run_id`: the body is `cutter_core::fuzzing::run_id`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cutter_core::fuzzing::run_id(data));
