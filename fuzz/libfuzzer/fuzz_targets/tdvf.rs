#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "tdvf".
// max_len: 65536
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("tdvf").expect("listed").run)(data));
