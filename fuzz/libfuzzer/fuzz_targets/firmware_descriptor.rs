#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "firmware_descriptor".
// max_len: 4096
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("firmware_descriptor").expect("listed").run)(data));
