//! cargo fuzz target `copy_rows`: the body is `cutter_core::fuzzing::copy_rows`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cutter_core::fuzzing::copy_rows(data));
