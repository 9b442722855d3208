#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "tdreport".
// max_len: 4096
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("tdreport").expect("listed").run)(data));
