//! A QEMU TCG plugin that records, for the guest images it is told about, every executed
//! instruction a TD may not execute natively, in order.
//!
//! One source for every QEMU plugin API version from 1 (QEMU 6.0 to 8.2) to 5 (QEMU 10.1): the
//! feature `qemu-plugin-api-vN` picks the version, and xtask picks the feature from the QEMU it
//! runs (xtask/src/audit/plugin_api.rs). The plugin uses only what every one of them has
//! (translation callbacks, instruction bytes and addresses, execution callbacks, atexit); the
//! `qemu-plugin` crate hides the one signature that changed among those (`qemu_plugin_insn_data`
//! copies into a buffer from API 3 on).
//!
//! It knows no TDX rules: it finds candidate instructions by opcode (a superset of everything
//! the TDX module intercepts, plus LIDT and the indirect call through
//! `EFI_BOOT_SERVICES.ExitBootServices`), and `cargo xtask td-audit` decodes and classifies them
//! with `td-rules`. API 1 cannot read registers (API 2 can), and the log is the same for every
//! API, so the plugin logs the bytes of the translation block up to each candidate: the audit
//! finds constant operands (the MSR in ECX, the CPUID leaf in EAX) there.
//!
//! Options (`-plugin libtd_audit.so,out=FILE,image=...,mark=...`):
//! - `out=FILE`: where the log goes (written at exit).
//! - `image=NAME:ENTRY:SIZE:SIG`: an image whose entry point is at offset ENTRY (hex) of an image
//!   SIZE (hex) bytes long, and whose first instruction bytes at the entry are SIG (hex). The
//!   image's load address is found when a block starting with SIG is translated at an address
//!   that makes the base page-aligned; from then on the plugin instruments [base, base + SIZE).
//! - `mark=NAME:OFFSET`: also record executions of the instruction at image offset OFFSET (hex).
//! - `snap=NAME:OFFSET`: a mark whose first execution also snapshots every record's count.
//!
//! Log lines (all numbers hex): `IMAGE name base`; `T id vaddr block_start bytes kind` at
//! translation (bytes from the block start through the instruction); `X id count first last
//! at_snap` at exit, where first/last are the global sequence numbers of the first and last
//! execution (every recorded execution takes the next number), so the audit can order events,
//! and at_snap the count when the snap mark first ran (0 without one).

use qemu_plugin::install::{Args, Info};
use qemu_plugin::plugin::{HasCallbacks, Register};
use qemu_plugin::{PluginId, TranslationBlock};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

mod opcode;

#[cfg(not(any(
    feature = "qemu-plugin-api-v1",
    feature = "qemu-plugin-api-v2",
    feature = "qemu-plugin-api-v3",
    feature = "qemu-plugin-api-v4",
    feature = "qemu-plugin-api-v5"
)))]
compile_error!("td-audit: enable one feature qemu-plugin-api-vN (xtask picks it from the QEMU)");

/// One instrumented instruction (per translation; a retranslated block gets new records).
#[derive(Default)]
struct Record {
    count: AtomicU64,
    first: AtomicU64,
    last: AtomicU64,
    at_snap: AtomicU64,
}

struct Image {
    name: String,
    entry: u64,
    size: u64,
    signature: Vec<u8>,
    base: Option<u64>,
    marks: Vec<u64>,
    snaps: Vec<u64>,
}

#[derive(Default)]
struct Shared {
    records: Mutex<Vec<Arc<Record>>>,
    sequence: AtomicU64,
    snapped: std::sync::atomic::AtomicBool,
    log: Mutex<String>,
}

#[derive(Default)]
struct TdAudit {
    out: Option<String>,
    images: Vec<Image>,
    shared: Arc<Shared>,
}

fn hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16).ok()
}

fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

impl TdAudit {
    fn parse(&mut self, raw: &[String]) -> Result<(), String> {
        for argument in raw {
            let (key, value) = argument.split_once('=').ok_or(format!("bad option {argument}"))?;
            match key {
                "out" => self.out = Some(value.to_owned()),
                "image" => {
                    let parts: Vec<&str> = value.split(':').collect();
                    let [name, entry, size, signature] = parts[..] else {
                        return Err(format!("bad image option {value}"));
                    };
                    self.images.push(Image {
                        name: name.to_owned(),
                        entry: hex(entry).ok_or("bad image entry")?,
                        size: hex(size).ok_or("bad image size")?,
                        signature: hex_bytes(signature)
                            .filter(|s| !s.is_empty())
                            .ok_or("bad image signature")?,
                        base: None,
                        marks: Vec::new(),
                        snaps: Vec::new(),
                    });
                }
                "mark" | "snap" => {
                    let (name, offset) = value.split_once(':').ok_or("bad mark option")?;
                    let offset = hex(offset).ok_or("bad mark offset")?;
                    let image =
                        self.images.iter_mut().find(|i| i.name == name).ok_or(format!(
                            "mark names unknown image {name} (give image= first)"
                        ))?;
                    if key == "mark" {
                        image.marks.push(offset);
                    } else {
                        image.snaps.push(offset);
                    }
                }
                _ => return Err(format!("unknown option {key}")),
            }
        }
        if self.out.is_none() {
            return Err("out=FILE is required".into());
        }
        Ok(())
    }
}

impl Register for TdAudit {
    fn register(&mut self, id: PluginId, args: &Args, _info: &Info) -> qemu_plugin::Result<()> {
        if let Err(error) = self.parse(&args.raw) {
            // QEMU refuses to start when plugin installation fails; say why first.
            eprintln!("td-audit plugin: {error}");
            return Err(qemu_plugin::Error::PluginInstanceSetError);
        }
        let shared = self.shared.clone();
        let out = self.out.clone().expect("checked in parse");
        qemu_plugin::qemu_plugin_register_atexit_cb(id, move |_| {
            let mut text = std::mem::take(&mut *shared.log.lock().unwrap());
            for (id, record) in shared.records.lock().unwrap().iter().enumerate() {
                let count = record.count.load(Relaxed);
                if count > 0 {
                    let first = record.first.load(Relaxed);
                    let last = record.last.load(Relaxed);
                    let at_snap = record.at_snap.load(Relaxed);
                    let _ = writeln!(text, "X {id:x} {count:x} {first:x} {last:x} {at_snap:x}");
                }
            }
            text.push_str("END\n");
            if let Err(error) = std::fs::write(&out, text) {
                eprintln!("td-audit plugin: cannot write {out}: {error}");
            }
        })?;
        Ok(())
    }
}

impl HasCallbacks for TdAudit {
    fn on_translation_block_translate(
        &mut self,
        _id: PluginId,
        tb: TranslationBlock,
    ) -> qemu_plugin::Result<()> {
        let Ok(first) = tb.instruction(0) else { return Ok(()) };
        let block_start = first.vaddr();
        let inside = |i: &Image| i.base.is_some_and(|base| block_start.wrapping_sub(base) < i.size);
        // Most blocks (the firmware's) are neither inside a located image nor the start of an
        // unlocated one: leave them after looking at one instruction.
        if !self.images.iter().any(inside) {
            let first_bytes = first.data();
            let could_be_entry = self.images.iter().any(|i| {
                i.base.is_none()
                    && block_start.wrapping_sub(i.entry) % 4096 == 0
                    && i.signature.starts_with(&first_bytes)
            });
            if !could_be_entry {
                return Ok(());
            }
        }
        let instructions: Vec<_> = tb.instructions().collect();
        let mut bytes = Vec::new();
        for insn in &instructions {
            bytes.extend(insn.data());
        }
        // Locate images whose entry signature starts this block at a page-aligned load address
        // (UEFI loads PE images page-aligned; the kernel is mapped in whole pages).
        for image in self.images.iter_mut().filter(|i| i.base.is_none()) {
            let base = block_start.wrapping_sub(image.entry);
            if bytes.starts_with(&image.signature) && base % 4096 == 0 {
                image.base = Some(base);
                let _ = writeln!(self.shared.log.lock().unwrap(), "IMAGE {} {base:x}", image.name);
            }
        }
        let Some(image) = self.images.iter().find(|i| inside(i)) else {
            return Ok(());
        };
        let base = image.base.expect("filtered");
        let mut offset = 0;
        for insn in &instructions {
            let size = insn.size();
            let data = &bytes[offset..offset + size];
            offset += size;
            let vaddr = insn.vaddr();
            let kind = if vaddr == base + image.entry {
                Some("entry")
            } else if image.marks.contains(&(vaddr - base)) {
                Some("mark")
            } else if image.snaps.contains(&(vaddr - base)) {
                Some("snap")
            } else {
                opcode::candidate(data)
            };
            let Some(kind) = kind else { continue };
            let record = Arc::new(Record::default());
            let id = {
                let mut records = self.shared.records.lock().unwrap();
                records.push(record.clone());
                records.len() - 1
            };
            let mut line = format!("T {id:x} {vaddr:x} {block_start:x} ");
            for byte in &bytes[..offset] {
                let _ = write!(line, "{byte:02x}");
            }
            let _ = writeln!(line, " {kind}");
            self.shared.log.lock().unwrap().push_str(&line);
            let shared = self.shared.clone();
            let snap = kind == "snap";
            insn.register_execute_callback(move |_vcpu| {
                let sequence = shared.sequence.fetch_add(1, Relaxed);
                if record.count.fetch_add(1, Relaxed) == 0 {
                    record.first.store(sequence, Relaxed);
                }
                record.last.store(sequence, Relaxed);
                if snap && !shared.snapped.swap(true, Relaxed) {
                    for record in shared.records.lock().unwrap().iter() {
                        record.at_snap.store(record.count.load(Relaxed), Relaxed);
                    }
                }
            });
        }
        Ok(())
    }
}

qemu_plugin::register!(TdAudit::default());
