//! Differential checks (`diff.*`) and host-fault checks (`fault.*`) under softtdx.
//!
//! Each check runs one instruction form twice from the same register and memory state, with
//! the device reset before each side: once natively (single-stepped, but the model lets every
//! instruction execute on the CPU) and once under the model (it raises #VE and the production
//! handler emulates it through TDG.VP.VMCALL). It then compares every GPR but RSP, RFLAGS (less
//! TF and RF), the RIP at which execution resumed after the instruction (reported by the
//! single-step trap natively, and by the #VE handler's return under the model), the memory
//! buffer the string forms touch, and the device's state. Any difference fails the check and
//! prints both states on `#` lines. The native side must raise no #VE, the model side at least
//! one.
//!
//! The devices are chosen because their behaviour is deterministic: the PIC master mask (0x21),
//! CMOS NVRAM through 0x70/0x71 (index 0x60, an NVRAM byte nothing uses after boot), the DMA
//! page registers 0x81-0x83 behind the POST port 0x80, the COM1 scratch register (0x3FF), the
//! fw_cfg selector (0x510) and byte stream (0x511), and PCI CONFIG_ADDRESS (0xCF8). Port 0xCF9
//! (reset control) is never touched.

use super::{natively, Outcome, Tally};
use crate::fmtbuf::FixedString;
use crate::port::{inb, inl, outb, outl, outw};
use crate::{fail, pass, println, skip};
use core::fmt::Write;
use tdx_ve::regs::Gpr;

/// The register state a form starts from and ends in. The layout is fixed by `diff_run`.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub(super) struct DiffState {
    /// Indexed by GPR number; slot 4 (RSP) is unused.
    pub(super) gprs: [u64; 16],
    pub(super) rflags: u64,
    pub(super) snippet: u64,
}

const _: () = assert!(core::mem::size_of::<DiffState>() == 18 * 8);

// Runs the snippet at `state.snippet` with every GPR but RSP and with RFLAGS loaded from
// `state`, and stores them back afterwards. The caller's callee-saved registers and RFLAGS are
// restored. Between the `popfq` that installs the snippet's RFLAGS and the snippet's instruction
// there is one more instruction (`call`): the instruction after a POPF that sets TF runs before
// the first single-step trap, so the model sees the snippet's instruction before it runs.
core::arch::global_asm!(
    ".global diff_run",
    "diff_run:",
    "    push rbp",
    "    push rbx",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    pushfq",
    "    push rdi",
    "    push qword ptr [rdi + 136]",
    "    push qword ptr [rdi + 128]",
    "    mov rax, [rdi + 0]",
    "    mov rcx, [rdi + 8]",
    "    mov rdx, [rdi + 16]",
    "    mov rbx, [rdi + 24]",
    "    mov rbp, [rdi + 40]",
    "    mov rsi, [rdi + 48]",
    "    mov r8,  [rdi + 64]",
    "    mov r9,  [rdi + 72]",
    "    mov r10, [rdi + 80]",
    "    mov r11, [rdi + 88]",
    "    mov r12, [rdi + 96]",
    "    mov r13, [rdi + 104]",
    "    mov r14, [rdi + 112]",
    "    mov r15, [rdi + 120]",
    "    mov rdi, [rdi + 56]",
    "    popfq",
    "    call qword ptr [rsp]",
    "    pushfq",
    "    push rax",
    "    mov rax, [rsp + 24]",
    "    mov [rax + 8], rcx",
    "    mov [rax + 16], rdx",
    "    mov [rax + 24], rbx",
    "    mov [rax + 40], rbp",
    "    mov [rax + 48], rsi",
    "    mov [rax + 56], rdi",
    "    mov [rax + 64], r8",
    "    mov [rax + 72], r9",
    "    mov [rax + 80], r10",
    "    mov [rax + 88], r11",
    "    mov [rax + 96], r12",
    "    mov [rax + 104], r13",
    "    mov [rax + 112], r14",
    "    mov [rax + 120], r15",
    "    pop rcx",
    "    mov [rax + 0], rcx",
    "    pop rcx",
    "    mov [rax + 128], rcx",
    "    add rsp, 16",
    "    popfq",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    ret",
);

extern "sysv64" {
    pub(super) fn diff_run(state: *mut DiffState);
}

/// One snippet per instruction form: the instruction at the snippet's address, then `ret`.
macro_rules! snippets {
    ($($name:ident => $instruction:literal,)*) => {
        core::arch::global_asm!(
            $(
                concat!(".global ", stringify!($name)),
                concat!(stringify!($name), ":"),
                concat!("    ", $instruction),
                "    ret",
            )*
        );
        extern "C" {
            $(fn $name();)*
        }
    };
}

snippets! {
    diff_in_imm_b => "in al, 0x21",
    diff_in_imm_w => "in ax, 0x70",
    diff_in_imm_l => "in eax, 0x80",
    diff_out_imm_b => "out 0x21, al",
    diff_out_imm_w => "out 0x70, ax",
    diff_out_imm_l => "out 0x80, eax",
    diff_in_dx_b => "in al, dx",
    diff_in_dx_w => "in ax, dx",
    diff_in_dx_l => "in eax, dx",
    diff_out_dx_b => "out dx, al",
    diff_out_dx_w => "out dx, ax",
    diff_out_dx_l => "out dx, eax",
    diff_ins_b => "insb",
    diff_ins_w => "insw",
    diff_ins_l => "insd",
    diff_rep_ins_b => "rep insb",
    diff_rep_ins_w => "rep insw",
    diff_rep_ins_l => "rep insd",
    diff_outs_b => "outsb",
    diff_outs_w => "outsw",
    diff_outs_l => "outsd",
    diff_rep_outs_b => "rep outsb",
    diff_rep_outs_w => "rep outsw",
    diff_rep_outs_l => "rep outsd",
    // REP with the 0x67 address-size prefix: ECX/ESI/EDI instead of RCX/RSI/RDI.
    diff_rep_ins_b_addr32 => ".byte 0xf3, 0x67, 0x6c",
    diff_rep_outs_b_addr32 => ".byte 0xf3, 0x67, 0x6e",
    // REPNE (F2) on INS/OUTS: reserved in the SDM, repeated as REP by processors and QEMU TCG.
    diff_repne_ins_b => ".byte 0xf2, 0x6c",
    diff_repne_outs_b => ".byte 0xf2, 0x6e",
    // OUTS with a segment override (base 0 in 64-bit mode): the handler takes the segment from
    // the instruction information and checks it against the prefix.
    diff_outs_b_es => ".byte 0x26, 0x6e",
    diff_rep_outs_b_ss => ".byte 0xf3, 0x36, 0x6e",
}

/// A device with deterministic behaviour, reset before and observed after each side.
#[derive(Clone, Copy)]
enum Device {
    /// 8259 master mask, port 0x21.
    PicMask,
    /// CMOS index 0x70 / data 0x71, NVRAM bytes 0x60 and 0x61.
    Cmos,
    /// COM1 scratch register, 0x3FF.
    Scratch,
    /// fw_cfg selector 0x510; observed through the first byte of the selected item.
    FwCfgSelector,
    /// fw_cfg data 0x511 with the signature item selected: a byte stream.
    FwCfgData,
    /// PCI CONFIG_ADDRESS, 0xCF8.
    PciAddress,
    /// The POST port 0x80 and the DMA page registers 0x81-0x83 behind it: a dword access at
    /// 0x80 reaches three bytes of plain storage.
    DmaPage,
}

const CMOS_INDEX: u16 = 0x70;
const CMOS_DATA: u16 = 0x71;
const NVRAM_A: u8 = 0x60;
const NVRAM_B: u8 = 0x61;

impl Device {
    fn port(self) -> u16 {
        match self {
            Device::PicMask => 0x21,
            Device::Cmos => CMOS_INDEX,
            Device::Scratch => 0x3FF,
            Device::FwCfgSelector => 0x510,
            Device::FwCfgData => 0x511,
            Device::PciAddress => 0xCF8,
            Device::DmaPage => 0x80,
        }
    }

    fn reset(self) {
        // SAFETY: every port written here is one of the documented deterministic devices; the
        // values configure only masks, NVRAM bytes, selectors and the PCI address latch.
        unsafe {
            match self {
                Device::PicMask => outb(0x21, 0xB8),
                Device::Cmos => {
                    outb(CMOS_INDEX, NVRAM_B);
                    outb(CMOS_DATA, 0x3C);
                    outb(CMOS_INDEX, NVRAM_A);
                    outb(CMOS_DATA, 0xA5);
                }
                Device::Scratch => outb(0x3FF, 0x5A),
                Device::FwCfgSelector => outw(0x510, 0x0001),
                Device::FwCfgData => outw(0x510, 0x0000),
                Device::PciAddress => outl(0xCF8, 0x8000_0000),
                Device::DmaPage => {
                    outb(0x81, 0x11);
                    outb(0x82, 0x22);
                    outb(0x83, 0x33);
                }
            }
        }
    }

    fn observe(self) -> u64 {
        // SAFETY: as for `reset`; reads of these registers have no side effects beyond
        // advancing the fw_cfg stream, which the next reset rewinds.
        unsafe {
            match self {
                Device::PicMask => inb(0x21) as u64,
                Device::Cmos => {
                    outb(CMOS_INDEX, NVRAM_A);
                    let a = inb(CMOS_DATA) as u64;
                    outb(CMOS_INDEX, NVRAM_B);
                    let b = inb(CMOS_DATA) as u64;
                    a | b << 8
                }
                Device::Scratch => inb(0x3FF) as u64,
                Device::FwCfgSelector | Device::FwCfgData => inb(0x511) as u64,
                Device::PciAddress => inl(0xCF8) as u64,
                Device::DmaPage => {
                    inb(0x81) as u64 | (inb(0x82) as u64) << 8 | (inb(0x83) as u64) << 16
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Form {
    name: &'static str,
    snippet: unsafe extern "C" fn(),
    device: Device,
    /// RAX before the instruction: for IN the value the merge must preserve, for OUT the
    /// value whose low bytes are written (with garbage above them).
    rax: u64,
}

const PRIOR_RAX: u64 = 0x0123_4567_89AB_CDEF;

fn port_forms() -> [Form; 12] {
    let f = |name, snippet, device, rax| Form { name, snippet, device, rax };
    [
        f("diff.in.imm8.b", diff_in_imm_b as unsafe extern "C" fn(), Device::PicMask, PRIOR_RAX),
        f("diff.in.imm8.w", diff_in_imm_w, Device::Cmos, PRIOR_RAX),
        f("diff.in.imm8.l", diff_in_imm_l, Device::DmaPage, PRIOR_RAX),
        f("diff.out.imm8.b", diff_out_imm_b, Device::PicMask, 0xFEDC_BA98_7654_32A3),
        // AL = CMOS index 0x61, AH = the byte to store there.
        f("diff.out.imm8.w", diff_out_imm_w, Device::Cmos, 0xFEDC_BA98_7654_7761),
        // Byte 0 goes to the POST port 0x80 (write-only); bytes 1-3 to the DMA page registers.
        f("diff.out.imm8.l", diff_out_imm_l, Device::DmaPage, 0xFEDC_BA98_C3B2_A1F0),
        f("diff.in.dx.b", diff_in_dx_b, Device::Scratch, PRIOR_RAX),
        f("diff.in.dx.w", diff_in_dx_w, Device::FwCfgSelector, PRIOR_RAX),
        f("diff.in.dx.l", diff_in_dx_l, Device::PciAddress, PRIOR_RAX),
        f("diff.out.dx.b", diff_out_dx_b, Device::Scratch, 0xFEDC_BA98_7654_32C3),
        f("diff.out.dx.w", diff_out_dx_w, Device::FwCfgSelector, 0xFEDC_BA98_7654_0000),
        f("diff.out.dx.l", diff_out_dx_l, Device::PciAddress, 0xFEDC_BA98_8000_0008),
    ]
}

/// INS reads the fw_cfg byte stream (bytes) and the POST/DMA page ports 0x80-0x83 (words and
/// dwords: a wider read at 0x511 would run past fw_cfg, which the allowlist refuses); OUTS
/// writes the scratch register (bytes), the fw_cfg selector (words) and CONFIG_ADDRESS
/// (dwords), where the last element written decides what the observation sees.
fn string_forms() -> [(Form, bool); 12] {
    let f = |name, snippet, device| Form { name, snippet, device, rax: PRIOR_RAX };
    let (ins, wide_ins) = (Device::FwCfgData, Device::DmaPage);
    [
        (f("ins.b", diff_ins_b as unsafe extern "C" fn(), ins), false),
        (f("ins.w", diff_ins_w, wide_ins), false),
        (f("ins.l", diff_ins_l, wide_ins), false),
        (f("ins.b", diff_rep_ins_b, ins), true),
        (f("ins.w", diff_rep_ins_w, wide_ins), true),
        (f("ins.l", diff_rep_ins_l, wide_ins), true),
        (f("outs.b", diff_outs_b, Device::Scratch), false),
        (f("outs.w", diff_outs_w, Device::FwCfgSelector), false),
        (f("outs.l", diff_outs_l, Device::PciAddress), false),
        (f("outs.b", diff_rep_outs_b, Device::Scratch), true),
        (f("outs.w", diff_rep_outs_w, Device::FwCfgSelector), true),
        (f("outs.l", diff_rep_outs_l, Device::PciAddress), true),
    ]
}

const BUFFER_LEN: usize = 128;
const BUFFER_START: usize = 64;

#[repr(C, align(16))]
struct Buffer([u8; BUFFER_LEN]);

static mut BUFFER: Buffer = Buffer([0; BUFFER_LEN]);

fn buffer() -> &'static mut [u8; BUFFER_LEN] {
    // SAFETY: one CPU, and only the differential checks use the buffer, one at a time.
    unsafe { &mut (*core::ptr::addr_of_mut!(BUFFER)).0 }
}

/// The buffer before a string form: 0xCC for INS to land on; for OUTS, elements that differ
/// from their neighbours in how the device shows them (alternating fw_cfg selectors 0 and 1,
/// distinct bytes and PCI addresses).
fn pattern_buffer(outs_width: Option<usize>) -> [u8; BUFFER_LEN] {
    let mut pattern = [0u8; BUFFER_LEN];
    let buf = &mut pattern;
    match outs_width {
        None => buf.fill(0xCC),
        Some(1) => buf.iter_mut().enumerate().for_each(|(i, b)| *b = 0x40 + i as u8),
        // fw_cfg items 0 (signature, "Q"), 1 (ID, 0x03) and 5 (CPU count, 0x01): neighbours
        // differ in what the observation reads.
        Some(2) => buf
            .chunks_mut(2)
            .enumerate()
            .for_each(|(i, w)| w.copy_from_slice(&[0u16, 1, 5][i % 3].to_le_bytes())),
        Some(_) => buf.chunks_mut(4).enumerate().for_each(|(i, d)| {
            d.copy_from_slice(&(0x8000_0000u32 | (i as u32) << 2).to_le_bytes())
        }),
    }
    pattern
}

const RFLAGS_FIXED: u64 = 1 << 1;
const RFLAGS_CF: u64 = 1 << 0;
const RFLAGS_ZF: u64 = 1 << 6;

fn initial_state(form: &Form, df: bool, rcx: u64) -> DiffState {
    let mut gprs = [0u64; 16];
    for (n, value) in gprs.iter_mut().enumerate() {
        *value = 0x1111_1111_1111_1111u64.wrapping_mul(n as u64 + 1) ^ 0x0F0F;
    }
    let middle = buffer().as_ptr() as u64 + BUFFER_START as u64;
    gprs[Gpr::Rax as usize] = form.rax;
    gprs[Gpr::Rcx as usize] = rcx;
    // Garbage above DX: IN/OUT must use DX only.
    gprs[Gpr::Rdx as usize] = 0xABCD_EF01_0000_0000 | form.device.port() as u64;
    gprs[Gpr::Rsi as usize] = middle;
    gprs[Gpr::Rdi as usize] = middle;
    gprs[Gpr::Rsp as usize] = 0;
    let df_bit = if df { crate::arch::rflags::DF } else { 0 };
    DiffState {
        gprs,
        rflags: RFLAGS_FIXED | RFLAGS_CF | RFLAGS_ZF | df_bit,
        snippet: form.snippet as usize as u64,
    }
}

/// Everything one side of a differential check ends with.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Observation {
    state: DiffState,
    /// Where execution resumed after the instruction; None if it never completed.
    rip_after: Option<u64>,
    /// I/O #VEs taken while the snippet ran.
    ves: u64,
    device: u64,
    buffer: [u8; BUFFER_LEN],
}

fn run_side(
    form: &Form,
    start: &DiffState,
    initial_buffer: &[u8; BUFFER_LEN],
    through_model: bool,
) -> Observation {
    natively(|| {
        form.device.reset();
        *buffer() = *initial_buffer;
    });
    let mut state = *start;
    // Both sides single-step; natively the model only watches.
    state.rflags |= crate::arch::rflags::TF;
    let instruction = form.snippet as usize as u64;
    let ves_before = crate::counters::VE_IO.get();
    // SAFETY: the snippet runs one I/O instruction on a deterministic device; RSI/RDI point
    // into the static buffer with room for 5 elements of 4 bytes either way.
    let mut run = || unsafe { diff_run(&mut state) };
    let rip_after = if through_model {
        crate::softtdx::arm_watch(instruction);
        run();
        crate::softtdx::take_resumed_at()
    } else {
        crate::softtdx::run_passthrough(instruction, run).1
    };
    let ves = crate::counters::VE_IO.get() - ves_before;
    state.rflags &= !(crate::arch::rflags::TF | crate::arch::rflags::RF);
    // Observing the device, and copying the buffer and comparing the sides below, are plain
    // port reads of the native side and memory copies: with single-stepping off, as the reset.
    let (device, buffer) = natively(|| (form.device.observe(), *buffer()));
    Observation { state, rip_after, ves, device, buffer }
}

fn describe_difference(native: &Observation, model: &Observation) -> FixedString<160> {
    let mut out = FixedString::<160>::new();
    for r in Gpr::ALL {
        let (a, b) = (native.state.gprs[r as usize], model.state.gprs[r as usize]);
        if a != b {
            let _ = write!(out, "{r:?} native={a:#x} model={b:#x}; ");
        }
    }
    if native.state.rflags != model.state.rflags {
        let _ = write!(out, "RFLAGS {:#x}/{:#x}; ", native.state.rflags, model.state.rflags);
    }
    if native.rip_after != model.rip_after {
        let _ = write!(out, "resumed at {:x?}/{:x?}; ", native.rip_after, model.rip_after);
    }
    if native.device != model.device {
        let _ = write!(out, "device {:#x}/{:#x}; ", native.device, model.device);
    }
    if native.buffer != model.buffer {
        let first = (0..BUFFER_LEN).find(|&i| native.buffer[i] != model.buffer[i]).unwrap_or(0);
        let _ = write!(out, "memory differs from byte {first}");
    }
    out
}

fn print_state(side: &str, o: &Observation) {
    println!(
        "# {side}: RFLAGS={:#x} resumed-at={:x?} device={:#x} I/O #VEs={}",
        o.state.rflags, o.rip_after, o.device, o.ves
    );
    for r in Gpr::ALL {
        if r != Gpr::Rsp {
            crate::print!("# {side}:   {r:?}={:#018x}", o.state.gprs[r as usize]);
            println!();
        }
    }
    crate::print!("# {side}: memory");
    for byte in &o.buffer[BUFFER_START - 24..BUFFER_START + 24] {
        crate::print!(" {byte:02x}");
    }
    println!();
}

/// Runs one form on both sides; `fault` is armed just before the model side.
fn compare(
    form: &Form,
    df: bool,
    rcx: u64,
    outs_width: Option<usize>,
    fault: Option<crate::softtdx::HostFault>,
) -> Outcome {
    compare_from(form, &initial_state(form, df, rcx), &pattern_buffer(outs_width), fault)
}

/// Runs `form` natively and through the model from `start` and `initial_buffer`, and compares.
fn compare_from(
    form: &Form,
    start: &DiffState,
    initial_buffer: &[u8; BUFFER_LEN],
    fault: Option<crate::softtdx::HostFault>,
) -> Outcome {
    let native = run_side(form, start, initial_buffer, false);
    if let Some(fault) = fault {
        crate::softtdx::inject(fault);
    }
    let model = run_side(form, start, initial_buffer, true);
    let ves = model.ves;
    if fault.is_some() && !crate::softtdx::clear_injection() {
        return fail!("the injected host fault never fired ({ves} I/O #VEs)");
    }
    if native.ves != 0 {
        return fail!("the native side raised {} I/O #VEs: it did not run natively", native.ves);
    }
    if ves == 0 {
        return fail!("the model side raised no I/O #VE");
    }
    if native.rip_after.is_none() || model.rip_after.is_none() {
        return fail!(
            "the instruction never completed: resumed at {:x?}/{:x?}",
            native.rip_after,
            model.rip_after
        );
    }
    // The #VE counts differ by design; everything architectural must not.
    let comparable = |o: &Observation| Observation { ves: 0, ..*o };
    if natively(|| comparable(&native) != comparable(&model)) {
        print_state("native", &native);
        print_state("model", &model);
        return Outcome::Fail(describe_difference(&native, &model));
    }
    pass!("identical, {ves} I/O #VEs")
}

/// The port-I/O differential checks; false, after recording the skips, when softtdx is not
/// active (the MMIO forms and the host faults then do not run either).
// Kept out of line: td-audit attributes native instructions to this module by symbol.
#[inline(never)]
pub fn run(tally: &mut Tally) -> bool {
    if !crate::softtdx::is_active() {
        tally.record("diff.*", skip!("softtdx is not active: differential checks need the model"));
        tally.record(
            "fault.*",
            skip!("softtdx is not active: host faults are injected by the model"),
        );
        return false;
    }
    for form in port_forms() {
        tally.run(form.name, || compare(&form, false, 0, None, None));
    }
    for (form, rep) in string_forms() {
        let width = match form.name.as_bytes()[form.name.len() - 1] {
            b'b' => 1,
            b'w' => 2,
            _ => 4,
        };
        let outs_width = form.name.starts_with("outs").then_some(width);
        for df in [false, true] {
            for rcx in [0u64, 1, 5] {
                let name = crate::fixed_format!(
                    64,
                    "diff.{}.{}.df{}.rcx{}",
                    form.name,
                    if rep { "rep" } else { "norep" },
                    df as u8,
                    rcx
                );
                tally.run(name.as_str(), || compare(&form, df, rcx, outs_width, None));
            }
        }
    }
    // With 32-bit addressing the count is ECX: RCX = 2^32 means zero elements, where a 64-bit
    // count would run four billion. (Non-zero ECX would need a buffer below 4 GiB, which the
    // loader does not map.)
    for (name, snippet, device) in [
        ("ins.b", diff_rep_ins_b_addr32 as unsafe extern "C" fn(), Device::FwCfgData),
        ("outs.b", diff_rep_outs_b_addr32, Device::Scratch),
    ] {
        let form = Form { name, snippet, device, rax: PRIOR_RAX };
        let outs_width = name.starts_with("outs").then_some(1);
        for df in [false, true] {
            let check = crate::fixed_format!(64, "diff.{name}.rep.addr32.df{}.ecx0", df as u8);
            tally.run(check.as_str(), || compare(&form, df, 1 << 32, outs_width, None));
        }
    }
    for (name, snippet, device) in [
        ("ins.b.repne", diff_repne_ins_b as unsafe extern "C" fn(), Device::FwCfgData),
        ("outs.b.repne", diff_repne_outs_b, Device::Scratch),
        ("outs.b.es", diff_outs_b_es, Device::Scratch),
        ("outs.b.rep.ss", diff_rep_outs_b_ss, Device::Scratch),
    ] {
        let form = Form { name, snippet, device, rax: PRIOR_RAX };
        let outs_width = name.starts_with("outs").then_some(1);
        for df in [false, true] {
            let check = crate::fixed_format!(64, "diff.{name}.df{}.rcx5", df as u8);
            tally.run(check.as_str(), || compare(&form, df, 5, outs_width, None));
        }
    }
    random_states(tally);
    true
}

/// A small deterministic PRNG (xorshift64*), so that every run checks the same states.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

const RANDOM_STATES_PER_FORM: usize = 16;
/// fw_cfg items whose first byte differs: signature "Q", ID 0x03, CPU count 0x01.
const FW_CFG_SELECTORS: [u64; 3] = [0, 1, 5];

/// `diff.random.*`: every form again from pseudo-random states: random GPRs (RAX's upper bits,
/// all bits of registers the instruction does not use), random arithmetic flags and DF, RCX
/// from 0 to 8, RSI/RDI anywhere within 24 bytes of the buffer's middle, random buffer
/// contents. Values written to devices stay within what each device tolerates (the CMOS index
/// stays 0x61, fw_cfg selectors stay in a known set).
fn random_states(tally: &mut Tally) {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let port = port_forms().map(|form| (form, None));
    let strings = string_forms().map(|(form, rep)| (form, Some(rep)));
    for (form, rep) in port.into_iter().chain(strings) {
        let name = match rep {
            None => crate::fixed_format!(64, "diff.random.{}", &form.name["diff.".len()..]),
            Some(rep) => crate::fixed_format!(
                64,
                "diff.random.{}.{}",
                form.name,
                if rep { "rep" } else { "norep" }
            ),
        };
        tally.run(name.as_str(), || {
            let mut identical = 0;
            for case in 0..RANDOM_STATES_PER_FORM {
                // Drawing a state is arithmetic on registers and the stack: nothing the model
                // decides about, so it runs with single-stepping off (a few thousand traps a
                // state otherwise). The instruction under test is stepped as before.
                let (start, initial_buffer) = natively(|| random_case(&form, rep, &mut rng));
                match compare_from(&form, &start, &initial_buffer, None) {
                    Outcome::Pass(_) => identical += 1,
                    Outcome::Fail(detail) => {
                        return fail!("random state {case}: {}", detail.as_str());
                    }
                    skip => return skip,
                }
            }
            pass!("{identical} random states identical")
        });
    }
}

fn random_case(
    form: &Form,
    rep: Option<bool>,
    rng: &mut XorShift,
) -> (DiffState, [u8; BUFFER_LEN]) {
    let mut start = initial_state(form, rng.next() & 1 == 1, 0);
    for (n, value) in start.gprs.iter_mut().enumerate() {
        if n != Gpr::Rsp as usize {
            *value = rng.next();
        }
    }
    let middle = buffer().as_ptr() as u64 + BUFFER_START as u64;
    let near_middle = |rng: &mut XorShift| middle - 24 + rng.below(49);
    start.gprs[Gpr::Rsi as usize] = near_middle(rng);
    start.gprs[Gpr::Rdi as usize] = near_middle(rng);
    start.gprs[Gpr::Rdx as usize] = rng.next() << 16 | form.device.port() as u64;
    if rep == Some(true) {
        start.gprs[Gpr::Rcx as usize] = rng.below(9);
    }
    let out = form.name.contains(".out.");
    let rax = &mut start.gprs[Gpr::Rax as usize];
    match form.device {
        // AL is the CMOS index: keep it on the NVRAM byte the checks own.
        Device::Cmos if out => *rax = *rax & !0xFF | NVRAM_B as u64,
        Device::FwCfgSelector if out => {
            *rax = *rax & !0xFFFF | FW_CFG_SELECTORS[rng.below(3) as usize]
        }
        _ => {}
    }
    const ARITHMETIC_FLAGS: u64 = 0x8D5; // CF PF AF ZF SF OF
    start.rflags =
        RFLAGS_FIXED | (rng.next() & ARITHMETIC_FLAGS) | (start.rflags & crate::arch::rflags::DF);
    let mut initial_buffer = [0u8; BUFFER_LEN];
    initial_buffer.iter_mut().for_each(|b| *b = rng.next() as u8);
    if form.name.starts_with("outs.w") {
        for word in initial_buffer.chunks_mut(2) {
            word.copy_from_slice(&(FW_CFG_SELECTORS[rng.below(3) as usize] as u16).to_le_bytes());
        }
    }
    (start, initial_buffer)
}

pub fn faults(tally: &mut Tally) {
    use crate::softtdx::HostFault::*;
    let forms = port_forms();
    let by_name = |name: &str| *forms.iter().find(|f| f.name == name).expect("form exists");
    for (check, form) in [
        ("fault.in-data-upper-garbage.b", "diff.in.dx.b"),
        ("fault.in-data-upper-garbage.w", "diff.in.imm8.w"),
        ("fault.in-data-upper-garbage.l", "diff.in.dx.l"),
    ] {
        let form = by_name(form);
        tally.run(check, || compare(&form, false, 0, None, Some(InDataUpperGarbage)));
    }
    for (check, form) in [
        ("fault.host-clobbers-exposed.in", "diff.in.dx.l"),
        ("fault.host-clobbers-exposed.out", "diff.out.dx.l"),
    ] {
        let form = by_name(form);
        tally.run(check, || compare(&form, false, 0, None, Some(ClobberExposedInputs)));
    }
}
