#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "allowlist".
// max_len: 16
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("allowlist").expect("listed").run)(data));
