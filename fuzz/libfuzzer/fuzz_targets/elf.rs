#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "elf".
// max_len: 8192
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("elf").expect("listed").run)(data));
