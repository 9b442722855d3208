#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "string_io".
// max_len: 512
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("string_io").expect("listed").run)(data));
