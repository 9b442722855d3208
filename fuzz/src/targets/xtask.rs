//! xtask: the serial output of the kernel under test (written by the guest, so untrusted), the
//! check manifest, the bench's lines, and td-audit's plugin log.

use crate::audit::log as plugin;
use crate::bench as bench_lines;
use crate::machine::Machine;
use crate::manifest::Manifest;
use crate::report;
use std::sync::OnceLock;

/// The kernel's serial output, as the harness judges it.
pub fn serial_report(data: &[u8]) {
    let serial = String::from_utf8_lossy(data);
    let clean = crate::ansi::strip_ansi(&serial);
    assert!(!clean.contains('\r'));
    let parsed = report::parse(&serial);
    for check in &parsed.checks {
        assert!(!check.name.is_empty());
        assert!(!check.name.contains(|c: char| c.is_whitespace() || c.is_control()));
    }
    if parsed.loader_error.is_some() {
        assert!(!parsed.fatal.is_empty());
    }
    if parsed.first_kernel_line.is_some() || !parsed.kernel_lines.is_empty() {
        assert!(parsed.kernel_started);
    }
    let _ = crate::secure_boot::is_refusal(&clean);
    // The manifest judges whatever checks the guest reported, for every column.
    static MANIFEST: OnceLock<Manifest> = OnceLock::new();
    let manifest = MANIFEST.get_or_init(Manifest::builtin);
    for mode in ["native", "softtdx", "td"] {
        for machine in [Machine::Legacy, Machine::Td] {
            if let Err(message) = manifest.judge(mode, machine, &parsed.checks) {
                assert!(!message.is_empty());
            }
        }
    }
}

/// The check manifest's text: parsing never panics, and a parsed manifest judges any report.
pub fn manifest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(manifest) = Manifest::parse(&text) else { return };
    let checks = report::parse(&text).checks;
    for mode in ["native", "softtdx", "td"] {
        for machine in [Machine::Legacy, Machine::Td] {
            if let Some(expected) = manifest.expected(mode, machine) {
                let _ = expected.len();
            }
            let _ = manifest.judge(mode, machine, &checks);
        }
    }
}

/// `BENCH` and `METRIC` lines, and the loadable bytes of an ELF.
pub fn bench(data: &[u8]) {
    let serial = String::from_utf8_lossy(data);
    let lines = bench_lines::parse(&serial);
    if let Some(cost) = bench_lines::step_cost(&lines) {
        assert!(!cost.is_nan());
    }
    for (key, metric) in bench_lines::parse_metrics(&serial) {
        assert!(!key.is_empty());
        let _ = metric.value();
    }
    let _ = bench_lines::loadable_bytes(data);
}

/// td-audit's plugin log (written by the QEMU plugin from guest-controlled instructions).
pub fn plugin_log(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(log) = plugin::parse(&text) {
        for translation in &log.translations {
            assert!(!translation.kind.is_empty());
        }
    }
}
