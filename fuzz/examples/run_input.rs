//! Runs fuzz inputs through a target's body and says what happened, for triage:
//! `cargo run -p fuzz-targets --example run_input -- TARGET FILE...`.

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().expect("usage: run_input TARGET FILE...");
    let target = fuzz_targets::target(&name).expect("no such target");
    for file in args {
        let data = std::fs::read(&file).expect("readable input");
        let result = std::panic::catch_unwind(|| (target.run)(&data));
        println!("{file}: {}", if result.is_ok() { "ok" } else { "FAILS" });
    }
}
