#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "get_quote".
// max_len: 4096
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("get_quote").expect("listed").run)(data));
