#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "td_rules".
// max_len: 64
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("td_rules").expect("listed").run)(data));
