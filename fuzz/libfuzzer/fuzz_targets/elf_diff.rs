#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "elf_diff".
// max_len: 8192
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("elf_diff").expect("listed").run)(data));
