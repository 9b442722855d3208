#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "varstore".
// max_len: 16384
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("varstore").expect("listed").run)(data));
