#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "ve_decode".
// max_len: 32
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("ve_decode").expect("listed").run)(data));
