//! cargo fuzz target `structure`: the body is `cutter_core::fuzzing::structure`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cutter_core::fuzzing::structure(data));
