#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "io_qualification".
// max_len: 64
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("io_qualification").expect("listed").run)(data));
