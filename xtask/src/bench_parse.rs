//! The bench's parsers of the kernel's serial output (`BENCH` and `METRIC` lines) and of the
//! kernel ELF's size. A file of its own, without xtask's build and QEMU code, so that the fuzz
//! targets (fuzz/) can include it.

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BenchLine {
    pub name: String,
    pub iterations: u64,
    /// Instructions per operation, executed natively.
    pub native: u64,
    /// Instructions per operation under softtdx (including the model's own work).
    pub softtdx: u64,
    /// #VEs per operation under softtdx.
    pub ves: u64,
    /// Instructions a TD executes per #VE, from the vector-20 stub's first instruction to its
    /// `iretq`, each TDCALL counted as one (exact: single-stepped).
    pub handler: u64,
}

/// Parses `BENCH <name> iterations=N native=X softtdx=Y ves=Z handler=H` lines.
pub fn parse(serial: &str) -> Vec<BenchLine> {
    let clean = crate::ansi::strip_ansi(serial);
    clean
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("BENCH ")?;
            let mut words = rest.split_whitespace();
            let name = words.next()?.to_owned();
            let mut field = |key: &str| -> Option<u64> {
                words.next()?.strip_prefix(key)?.strip_prefix('=')?.parse().ok()
            };
            Some(BenchLine {
                name,
                iterations: field("iterations")?,
                native: field("native")?,
                softtdx: field("softtdx")?,
                ves: field("ves")?,
                handler: field("handler")?,
            })
        })
        .collect()
}

/// The model's cost of single-stepping one instruction, from the `nop` workload: extra
/// instructions per native instruction.
pub fn step_cost(lines: &[BenchLine]) -> Option<f64> {
    let nop = lines.iter().find(|l| l.name == "nop")?;
    (nop.native > 0).then(|| (nop.softtdx as f64 - nop.native as f64) / nop.native as f64)
}

/// One `METRIC` line: an exact count, or host exits over console bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Metric {
    Count(u64),
    Ratio { exits: u64, bytes: u64 },
}

impl Metric {
    pub fn value(self) -> f64 {
        match self {
            Metric::Count(n) => n as f64,
            Metric::Ratio { exits, bytes } => exits as f64 / bytes as f64,
        }
    }
}

/// Parses `METRIC <key> <count> [windows=N]` and `METRIC <key> exits=E bytes=B` lines (also
/// behind `# `, which the self-test's report parser ignores). A counted window figure is kept
/// only when exactly one window closed, i.e. the count covers one whole #VE or call.
pub fn parse_metrics(serial: &str) -> BTreeMap<String, Metric> {
    let clean = crate::ansi::strip_ansi(serial);
    let mut metrics = BTreeMap::new();
    for line in clean.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("# METRIC ").or_else(|| line.strip_prefix("METRIC "))
        else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(key), Some(first)) = (words.next(), words.next()) else { continue };
        let field = |word: Option<&str>, name: &str| -> Option<u64> {
            word?.strip_prefix(name)?.strip_prefix('=')?.parse().ok()
        };
        let metric = if let Some(exits) = field(Some(first), "exits") {
            match field(words.next(), "bytes") {
                Some(bytes) if bytes > 0 => Metric::Ratio { exits, bytes },
                _ => continue,
            }
        } else {
            let Ok(count) = first.parse() else { continue };
            match words.next() {
                None => Metric::Count(count),
                Some(windows) if field(Some(windows), "windows") == Some(1) => Metric::Count(count),
                Some(_) => continue,
            }
        };
        metrics.insert(key.to_owned(), metric);
    }
    metrics
}

/// Loadable bytes of an ELF64 file: the sum of `p_filesz` over its PT_LOAD segments (text and
/// data; BSS takes no bytes). None if the header is not a little-endian ELF64 one.
pub fn loadable_bytes(elf: &[u8]) -> Option<u64> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return None;
    }
    // `at` comes from the file (e_phoff): the end of a field may lie past usize::MAX.
    let field = |at: usize, len: usize| elf.get(at..at.checked_add(len)?);
    let u16_at = |at: usize| Some(u16::from_le_bytes(field(at, 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(field(at, 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(field(at, 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = u16_at(0x36)? as usize;
    let phnum = u16_at(0x38)? as usize;
    let mut total = 0u64;
    for i in 0..phnum {
        let header = phoff.checked_add(i.checked_mul(phentsize)?)?;
        const PT_LOAD: u32 = 1;
        if u32_at(header)? == PT_LOAD {
            total = total.checked_add(u64_at(header.checked_add(0x20)?)?)?;
        }
    }
    Some(total)
}
