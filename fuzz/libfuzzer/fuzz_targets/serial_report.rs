#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "serial_report".
// max_len: 16384
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("serial_report").expect("listed").run)(data));
