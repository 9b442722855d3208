#![no_main]
// Body and documentation: fuzz/src/lib.rs, target "event_log".
// max_len: 4096
libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_targets::target("event_log").expect("listed").run)(data));
