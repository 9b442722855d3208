#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "memory_map".
// max_len: 1024
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("memory_map").expect("listed").run)(data));
