//! cargo fuzz target `manifest`: the body is `cutter_core::fuzzing::manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cutter_core::fuzzing::manifest(data));
