//! The fuzz targets' bodies: one function per parser of untrusted input, taking the fuzzer's
//! bytes, and the differential checks of our decoders against independent ones (iced-x86 for
//! the #VE decoder, `object` for the loader's ELF reader).
//!
//! A body panics exactly when it finds a bug: a panic, overflow or out-of-bounds access inside
//! the parser, a broken invariant of its output, or a disagreement with the reference decoder
//! that is not a documented, deliberate refusal. libFuzzer drives the bodies from
//! `fuzz/libfuzzer` (`cargo xtask fuzz`); `fuzz/tests/replay.rs` runs every saved crash
//! (`fuzz/regressions/<target>/`) and seed (`fuzz/seeds/<target>/`) through the same bodies in
//! the host tests, so a fixed crash stays fixed.
//!
//! The xtask parsers live in the xtask binary; this crate includes their files by path (they
//! depend only on each other), so the fuzzed code is the code xtask runs.

#![forbid(unsafe_code)]

pub mod diff_elf;
pub mod diff_mmio_decode;
pub mod diff_ve_decode;
pub mod input;
pub mod targets;

// xtask's parsers of the kernel's serial output, the check manifest, the bench lines, the
// td-audit plugin log and the printed TDREPORT, with the modules they name through `crate::`.
#[path = "../../xtask/src/ansi.rs"]
pub mod ansi;
#[path = "../../xtask/src/attest.rs"]
pub mod attest;
#[path = "../../xtask/src/audit/log.rs"]
pub mod audit_log;
#[path = "../../xtask/src/bench_parse.rs"]
pub mod bench;
#[path = "../../xtask/src/machine.rs"]
pub mod machine;
#[path = "../../xtask/src/manifest.rs"]
pub mod manifest;
#[path = "../../xtask/src/report.rs"]
pub mod report;
#[path = "../../xtask/src/secure_boot.rs"]
pub mod secure_boot;
/// td-audit's plugin log, as xtask reads it.
pub mod audit {
    pub use super::audit_log as log;
}

/// One fuzz target: its name (also its libFuzzer binary, `fuzz/libfuzzer/fuzz_targets/<name>.rs`),
/// its body, and the longest input worth trying.
#[derive(Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    pub max_len: usize,
    /// What it fuzzes, for `cargo xtask fuzz --list` and the README.
    pub about: &'static str,
}

/// Every target, in the order `cargo xtask fuzz` runs them: the differential targets and the
/// ones that parse the most hostile input first.
pub const TARGETS: &[Target] = &[
    Target {
        name: "ve_decode_diff",
        run: diff_ve_decode::run,
        max_len: 32,
        about:
            "tdx-ve decode against iced-x86: length, operand and address size, port, segment, REP",
    },
    Target {
        name: "mmio_decode_diff",
        run: diff_mmio_decode::run,
        max_len: 64,
        about: "tdx-ve MMIO decoder against iced-x86: length, size, address, store data, register result",
    },
    Target {
        name: "ve_decode",
        run: targets::tdx_ve::decode,
        max_len: 32,
        about: "tdx-ve decode: lengths, qualifications and instruction information it builds",
    },
    Target {
        name: "elf_diff",
        run: diff_elf::run,
        max_len: 8192,
        about: "loader-core's ELF reader against object: entry, segments, dynamic tags, sections",
    },
    Target {
        name: "elf",
        run: targets::loader::elf,
        max_len: 8192,
        about:
            "loader-core ELF parse, span, permissions, .bootloader-config lookup, load, relocation",
    },
    Target {
        name: "tdvf",
        run: targets::ovmf::tdvf,
        max_len: 65536,
        about: "ovmf TDVF metadata: GUIDed table walk, descriptor, sections, QEMU's rules, table",
    },
    Target {
        name: "io_qualification",
        run: targets::tdx_ve::io_qualification,
        max_len: 64,
        about: "tdx-ve I/O exit qualification and INS/OUTS instruction-information decode",
    },
    Target {
        name: "string_io",
        run: targets::tdx_ve::string_io,
        max_len: 512,
        about: "tdx-ve string-I/O walk (INS/OUTS, REP, budgets) against a hostile host",
    },
    Target {
        name: "ve_abi",
        run: targets::tdx_ve::abi,
        max_len: 128,
        about: "tdx-ve VE info, TD info, TDCALL leaves, exit reasons, IDT gate 20 delivery",
    },
    Target {
        name: "allowlist",
        run: targets::tdx_ve::allowlist,
        max_len: 16,
        about: "tdx-ve port allowlist: allowed, bitmap and device agree",
    },
    Target {
        name: "firmware_descriptor",
        run: targets::ovmf::descriptor,
        max_len: 4096,
        about: "ovmf QEMU firmware descriptor JSON and its ranking for TCG and TD",
    },
    Target {
        name: "varstore",
        run: targets::ovmf::varstore,
        max_len: 16384,
        about: "ovmf variable store reader (is a Platform Key enrolled)",
    },
    Target {
        name: "bootloader_config",
        run: targets::loader::config,
        max_len: 256,
        about: "loader-core .bootloader-config parse (version and fields)",
    },
    Target {
        name: "memory_map",
        run: targets::loader::memory_map,
        max_len: 1024,
        about: "loader-core UEFI memory map conversion and the kernel's handoff checks",
    },
    Target {
        name: "page_tables",
        run: targets::loader::page_tables,
        max_len: 1024,
        about: "loader-core page-table plan: slot layout, 4K/2M/recursive maps, translation",
    },
    Target {
        name: "serial_report",
        run: targets::xtask::serial_report,
        max_len: 16384,
        about: "xtask serial report parser (CHECK, SUMMARY, FATAL, counters, loader errors)",
    },
    Target {
        name: "manifest",
        run: targets::xtask::manifest,
        max_len: 16384,
        about: "xtask check manifest parser and judge",
    },
    Target {
        name: "bench",
        run: targets::xtask::bench,
        max_len: 4096,
        about: "xtask BENCH and METRIC line parsers, step cost, loadable ELF bytes",
    },
    Target {
        name: "plugin_log",
        run: targets::xtask::plugin_log,
        max_len: 4096,
        about: "xtask td-audit plugin log parser",
    },
    Target {
        name: "event_log",
        run: targets::tdx_attest::event_log,
        max_len: 4096,
        about: "tdx-attest TCG crypto-agile event log (CCEL): parse, entries, digests, replay, writers",
    },
    Target {
        name: "tdreport",
        run: targets::tdx_attest::tdreport,
        max_len: 4096,
        about: "tdx-attest TDREPORT decode, and xtask's reading of the printed report",
    },
    Target {
        name: "get_quote",
        run: targets::tdx_attest::get_quote,
        max_len: 4096,
        about: "tdx-attest GetQuote answer (header judged, quote length bounded, polling bounded)",
    },
    Target {
        name: "td_rules",
        run: targets::td_rules::lookups,
        max_len: 64,
        about: "td-rules classification, MSR table, CR0/CR4 write rules, every module version",
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
