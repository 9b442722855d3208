#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "ve_abi".
// max_len: 128
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("ve_abi").expect("listed").run)(data));
