#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "manifest".
// max_len: 16384
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("manifest").expect("listed").run)(data));
