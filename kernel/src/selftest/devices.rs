//! Real devices driven through the kernel's port-I/O API: the 16550 UART and the 8259 PICs.
//! In a TD (and under softtdx) every access below is an IN/OUT that raises #VE; each check
//! verifies that it did, from the I/O #VE counter.
//!
//! A TD's machine has no 8259 PIC: QEMU's `tdx_kvm_init` (target/i386/kvm/tdx.c, QEMU 10.1)
//! turns `pic=auto` off and refuses `pic=on` ("TDX VM doesn't support PIC"). So the PIC is
//! probed first, through the same port path, and its checks skip with that reason when it does
//! not answer. Its ports are then checked to behave as unassigned ports do, which is what the
//! kernel gets from them in a real TD.

use super::{ve_path_ok, Context, Detail, Outcome, Tally};
use crate::console::COM1;
use crate::counters::VE_IO;
use crate::port::IoPort;
use crate::{fail, pass, skip};

const SCRATCH_OFFSET: u16 = 7;
const PIC1_COMMAND: u16 = 0x20;
const PIC1_DATA: u16 = 0x21;
const PIC2_COMMAND: u16 = 0xA0;
const PIC2_DATA: u16 = 0xA1;

/// The reason the PIC checks give when no PIC answers; the harness's manifest expects it.
const NO_PIC: &str = "no 8259 PIC: QEMU gives TDs none (tdx_kvm_init forces pic=off)";

pub fn run(_ctx: &Context, tally: &mut Tally) {
    tally.run("serial.scratch", serial_scratch);
    tally.run("serial.loopback", serial_loopback);
    match probe_pic() {
        Presence::Present => {
            tally.run("pic.mask_readback", pic_mask_readback);
            tally.run("pic.reinit", pic_reinit);
            tally.run("pic.irr_isr", pic_irr_isr);
            tally.record(
                "pic.absent",
                skip!("8259 PIC present: the absent-PIC check needs the TD machine"),
            );
        }
        Presence::Absent => {
            for name in ["pic.mask_readback", "pic.reinit", "pic.irr_isr"] {
                tally.record(name, skip!("{NO_PIC}"));
            }
            tally.run("pic.absent", pic_absent);
        }
        Presence::Inconsistent(detail) => {
            for name in ["pic.mask_readback", "pic.reinit", "pic.irr_isr", "pic.absent"] {
                tally.record(name, Outcome::Fail(detail));
            }
        }
    }
    tally.run("port.insb_fw_cfg", port_insb_fw_cfg);
    tally.run("port.string_forms", port_string_forms);
}

fn serial_scratch() -> Outcome {
    // SAFETY: the 16550 scratch register stores a byte and does nothing else.
    let scratch = unsafe { IoPort::<u8>::new(COM1 + SCRATCH_OFFSET) };
    let before = VE_IO.get();
    let saved = scratch.read();
    const PATTERNS: [u8; 8] = [0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80, 0x5A, 0xA5];
    for pattern in PATTERNS {
        scratch.write(pattern);
        let read = scratch.read();
        if read != pattern {
            scratch.write(saved);
            return fail!("wrote {pattern:#04x}, read back {read:#04x}");
        }
    }
    scratch.write(saved);
    match ve_path_ok(before, 2 + 2 * PATTERNS.len() as u64) {
        Ok(ves) => pass!("{} patterns, {ves} I/O #VEs", PATTERNS.len()),
        Err(detail) => Outcome::Fail(detail),
    }
}

fn serial_loopback() -> Outcome {
    let before = VE_IO.get();
    let result = crate::console::with_pio_uart(|uart| uart.test_loopback());
    match result {
        None => fail!("console UART was not initialised"),
        Some(Err(e)) => fail!("uart_16550 loopback test failed: {e:?}"),
        Some(Ok(())) => match ve_path_ok(before, 4) {
            Ok(ves) => pass!("uart_16550 loopback ok, {ves} I/O #VEs"),
            Err(detail) => Outcome::Fail(detail),
        },
    }
}

struct Pics {
    master_command: IoPort<u8>,
    master_data: IoPort<u8>,
    slave_command: IoPort<u8>,
    slave_data: IoPort<u8>,
}

fn pics() -> Pics {
    // SAFETY: the 8259 registers only configure interrupt delivery, and the kernel runs with
    // interrupts disabled, so no setting can cause an interrupt to be taken.
    unsafe {
        Pics {
            master_command: IoPort::new(PIC1_COMMAND),
            master_data: IoPort::new(PIC1_DATA),
            slave_command: IoPort::new(PIC2_COMMAND),
            slave_data: IoPort::new(PIC2_DATA),
        }
    }
}

/// Whether a device answers on its ports.
enum Presence {
    Present,
    /// Every probe read returned all ones and no write stuck: nothing decodes the ports.
    Absent,
    /// Some reads echoed and some did not: neither a working device nor an empty bus.
    Inconsistent(Detail),
}

/// Mask patterns an absent PIC cannot echo: a port with no device reads all ones, so each
/// pattern has a clear bit on both chips (the slave gets the complement).
const PROBE_PATTERNS: [u8; 2] = [0x00, 0xA5];

/// Probes both 8259s with interrupt-mask (OCW1) round trips through the port API, restoring
/// the masks afterwards. In a TD (and under softtdx) these are #VEs like any other access.
fn probe_pic() -> Presence {
    let pics = pics();
    let saved = (pics.master_data.read(), pics.slave_data.read());
    let mut echoed = 0;
    let mut all_ones = 0;
    for pattern in PROBE_PATTERNS {
        pics.master_data.write(pattern);
        pics.slave_data.write(!pattern);
        let read = (pics.master_data.read(), pics.slave_data.read());
        if read == (pattern, !pattern) {
            echoed += 1;
        } else if read == (0xFF, 0xFF) {
            all_ones += 1;
        }
    }
    pics.master_data.write(saved.0);
    pics.slave_data.write(saved.1);
    let presence = if echoed == PROBE_PATTERNS.len() {
        Presence::Present
    } else if all_ones == PROBE_PATTERNS.len() && saved == (0xFF, 0xFF) {
        Presence::Absent
    } else {
        Presence::Inconsistent(crate::fixed_format!(
            160,
            "PIC probe: {echoed} of {} mask patterns echoed, {all_ones} read all ones, masks were \
             {:#04x}/{:#04x}",
            PROBE_PATTERNS.len(),
            saved.0,
            saved.1
        ))
    };
    // Test-only: the harness proves with this that a wrong probe cannot go unnoticed.
    #[cfg(feature = "broken-pic-probe")]
    let presence = match presence {
        Presence::Present => Presence::Absent,
        Presence::Absent => Presence::Present,
        other => other,
    };
    presence
}

/// With no PIC, its four ports must read all ones and drop writes: a mask write, an OCW3 that
/// would select the ISR, and an ICW1 leave nothing behind. That is what the kernel gets from
/// those ports in a TD, where each access is a #VE and a TDG.VP.VMCALL<Instruction.IO>.
fn pic_absent() -> Outcome {
    let pics = pics();
    let before = VE_IO.get();
    pics.master_data.write(0x00);
    pics.slave_data.write(0x00);
    pics.master_command.write(0x0B);
    pics.slave_command.write(0x0B);
    let after_ocw = [
        pics.master_command.read(),
        pics.slave_command.read(),
        pics.master_data.read(),
        pics.slave_data.read(),
    ];
    pics.master_command.write(0x11);
    pics.slave_command.write(0x11);
    let after_icw1 = [pics.master_data.read(), pics.slave_data.read()];
    if after_ocw != [0xFF; 4] || after_icw1 != [0xFF; 2] {
        return fail!(
            "ports 0x20/0xa0/0x21/0xa1 read {after_ocw:02x?}, masks after ICW1 {after_icw1:02x?}: \
             want all ones"
        );
    }
    match ve_path_ok(before, 12) {
        Ok(ves) => pass!("6 writes dropped, 6 reads all ones, {ves} I/O #VEs"),
        Err(detail) => Outcome::Fail(detail),
    }
}

fn pic_mask_readback() -> Outcome {
    let pics = pics();
    let before = VE_IO.get();
    let saved = (pics.master_data.read(), pics.slave_data.read());
    for pattern in [0xFFu8, 0x00, 0xA5, 0x5A, 0xFB] {
        pics.master_data.write(pattern);
        pics.slave_data.write(!pattern);
        let read = (pics.master_data.read(), pics.slave_data.read());
        if read != (pattern, !pattern) {
            pics.master_data.write(saved.0);
            pics.slave_data.write(saved.1);
            return fail!(
                "wrote {pattern:#04x}/{:#04x}, read {:#04x}/{:#04x}",
                !pattern,
                read.0,
                read.1
            );
        }
    }
    pics.master_data.write(saved.0);
    pics.slave_data.write(saved.1);
    match ve_path_ok(before, 4 + 4 * 5) {
        Ok(ves) => pass!("masks {:#04x}/{:#04x} restored, {ves} I/O #VEs", saved.0, saved.1),
        Err(detail) => Outcome::Fail(detail),
    }
}

/// ICW1-ICW4 (8259A datasheet): edge triggered, cascade, ICW4 needed; vector bases 0x20 and
/// 0x28; slave on IRQ2; 8086 mode. ICW1 clears the interrupt mask register, so right after the
/// sequence both masks read 0x00, which a port with no device behind it (all ones) cannot
/// return. Then every line is masked.
fn pic_reinit() -> Outcome {
    let pics = pics();
    let before = VE_IO.get();
    let saved = (pics.master_data.read(), pics.slave_data.read());
    pics.master_command.write(0x11);
    pics.slave_command.write(0x11);
    pics.master_data.write(0x20);
    pics.slave_data.write(0x28);
    pics.master_data.write(0x04);
    pics.slave_data.write(0x02);
    pics.master_data.write(0x01);
    pics.slave_data.write(0x01);
    let cleared = (pics.master_data.read(), pics.slave_data.read());
    pics.master_data.write(0xFF);
    pics.slave_data.write(0xFF);
    let masks = (pics.master_data.read(), pics.slave_data.read());
    pics.master_data.write(saved.0);
    pics.slave_data.write(saved.1);
    if cleared != (0x00, 0x00) || masks != (0xFF, 0xFF) {
        return fail!(
            "after ICW1-ICW4 masks read {:#04x}/{:#04x} (want 0/0, ICW1 clears them), after \
             masking {:#04x}/{:#04x} (want 0xff/0xff)",
            cleared.0,
            cleared.1,
            masks.0,
            masks.1
        );
    }
    match ve_path_ok(before, 18) {
        Ok(ves) => pass!("remapped to 0x20/0x28, masks cleared then all set, {ves} I/O #VEs"),
        Err(detail) => Outcome::Fail(detail),
    }
}

/// OCW3 selects which register a read of the command port returns: 0x0A the IRR, 0x0B the ISR.
fn pic_irr_isr() -> Outcome {
    let pics = pics();
    let before = VE_IO.get();
    pics.master_command.write(0x0A);
    pics.slave_command.write(0x0A);
    let irr = (pics.master_command.read(), pics.slave_command.read());
    pics.master_command.write(0x0B);
    pics.slave_command.write(0x0B);
    let isr = (pics.master_command.read(), pics.slave_command.read());
    // Leave the PICs returning the IRR, their reset default.
    pics.master_command.write(0x0A);
    pics.slave_command.write(0x0A);
    if isr != (0, 0) {
        return fail!("ISR {:#04x}/{:#04x} with interrupts disabled, want 0/0", isr.0, isr.1);
    }
    match ve_path_ok(before, 10) {
        Ok(ves) => pass!("IRR {:#04x}/{:#04x}, ISR 0/0, {ves} I/O #VEs", irr.0, irr.1),
        Err(detail) => Outcome::Fail(detail),
    }
}

/// The string API: `insb` reads QEMU's fw_cfg signature. Natively this is one `rep insb`; in a
/// TD it is unrolled into four single INs, each a #VE.
fn port_insb_fw_cfg() -> Outcome {
    let before = VE_IO.get();
    let mut signature = [0u8; 4];
    // SAFETY: fw_cfg's selector and data ports only select and stream configuration bytes.
    unsafe {
        crate::port::outw(0x510, 0x0000);
        crate::port::insb(0x511, &mut signature);
    }
    if &signature != b"QEMU" {
        return fail!("fw_cfg signature {signature:02x?}, want \"QEMU\"");
    }
    let unrolled = crate::cc::cc_platform_has(crate::cc::CcAttr::GuestUnrollStringIo);
    match ve_path_ok(before, 5) {
        Ok(ves) => pass!("signature \"QEMU\", unrolled={unrolled}, {ves} I/O #VEs"),
        Err(detail) => Outcome::Fail(detail),
    }
}

/// The other string forms of the port API, each against a device whose result it can predict:
/// OUTS leaves the last element in the device; INS of a register that does not change reads
/// the same value into every element.
fn port_string_forms() -> Outcome {
    use crate::port::{inb, inl, insl, insw, outb, outl, outsb, outsl, outsw};
    let before = VE_IO.get();
    // SAFETY: the COM1 scratch register, the fw_cfg selector, PCI CONFIG_ADDRESS and the CMOS
    // index/data pair only store or select values; CONFIG_ADDRESS is reset to 0 afterwards.
    let (scratch, fw_cfg, config_address, dwords, cmos, words) = unsafe {
        outsb(COM1 + SCRATCH_OFFSET, &[0x11, 0x22, 0x33]);
        let scratch = inb(COM1 + SCRATCH_OFFSET);
        outsw(0x510, &[0x0001, 0x0000]);
        let fw_cfg = inb(0x511);
        outsl(0xCF8, &[0x8000_0000, 0x8000_0008]);
        let config_address = inl(0xCF8);
        let mut dwords = [0u32; 3];
        insl(0xCF8, &mut dwords);
        outl(0xCF8, 0);
        outb(0x70, 0x60);
        let cmos = inb(0x71);
        let mut words = [0u16; 2];
        insw(0x70, &mut words);
        (scratch, fw_cfg, config_address, dwords, cmos, words)
    };
    if scratch != 0x33 {
        return fail!("outsb left {scratch:#04x} in the scratch register, want 0x33");
    }
    if fw_cfg != b'Q' {
        return fail!("outsw selected an item starting {fw_cfg:#04x}, want 'Q'");
    }
    if config_address != 0x8000_0008 || dwords != [0x8000_0008; 3] {
        return fail!("outsl/insl CONFIG_ADDRESS {config_address:#x}, insl {dwords:x?}");
    }
    if words.iter().any(|w| (w >> 8) as u8 != cmos) {
        return fail!("insw of 0x70/0x71 gave {words:x?}, CMOS byte {cmos:#04x}");
    }
    match ve_path_ok(before, 18) {
        Ok(ves) => pass!("outsb/outsw/outsl/insl/insw as predicted, {ves} I/O #VEs"),
        Err(detail) => Outcome::Fail(detail),
    }
}
