#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "page_tables".
// max_len: 1024
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("page_tables").expect("listed").run)(data));
