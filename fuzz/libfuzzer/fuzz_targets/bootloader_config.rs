#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "bootloader_config".
// max_len: 256
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("bootloader_config").expect("listed").run)(data));
