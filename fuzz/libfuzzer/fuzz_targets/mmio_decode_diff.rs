#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "mmio_decode_diff".
// max_len: 64
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("mmio_decode_diff").expect("listed").run)(data));
