//! Differential checks of MMIO through the EPT-violation #VE (`diff.mmio.*`) and host faults of
//! MapGPA and RequestMMIO (`fault.mapgpa.*`, `fault.request_mmio`), under softtdx.
//!
//! Each MMIO form is one MOV, MOVZX or MOVSX with a memory operand on a real device register:
//! the IOAPIC's IOREGSEL (0xFEC00000, 8 bits of storage, any access size) for 1-, 2- and
//! 4-byte forms, and the HPET's main counter (0xFED000F0, 64 bits, writable while the HPET is
//! halted) for 4- and 8-byte ones. The same virtual page maps the device on both sides: with
//! the shared bit clear, natively (the instruction executes on the device, single-stepped); with
//! it set, through the model (reserved-bit #PF, EPT-violation #VE, the production handler's
//! decode and RequestMMIO). Both sides start from the same registers and device value; all
//! GPRs but RSP, RFLAGS, the RIP execution resumed at and the device's value afterwards must
//! match, the native side must take no MMIO #VE and the model side exactly one.

use super::diff::{diff_run, DiffState};
use super::{natively, Context, Outcome, Tally};
use crate::mm::mmio::{read_mov, write_mov};
use crate::mm::pagetable;
use crate::softtdx::mmio::{HostMmioFault, SHARED_BIT};
use crate::tdx::mapgpa::{self, ConvertError};
use crate::{fail, pass};
use tdx_ve::abi::TdVmCallStatus;
use tdx_ve::mapgpa::MapGpaError;
use tdx_ve::mmio::AccessSize;
use tdx_ve::regs::Gpr;

use crate::drivers::ioapic::BASE as IOAPIC;
const HPET: u64 = 0xFED0_0000;
const HPET_CONFIG: u64 = 0x10;
const HPET_COUNTER: u64 = 0xF0;

/// The device register a form accesses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Register {
    /// IOAPIC IOREGSEL: stores the low 8 bits of any write.
    IoApicSelect,
    /// HPET main counter, halted.
    HpetCounter,
}

/// Where the memory operand's registers point: the base (and index) are set so that the
/// operand's address is the register.
#[derive(Clone, Copy)]
enum Address {
    /// [rdi]
    Rdi,
    /// [rdi + 0x10]
    RdiDisp8,
    /// [r8]
    R8,
    /// [rsi + rcx*4], RCX = 3
    RsiRcx4,
    /// [rdi + rcx*8 + 0x100], RCX = 2
    RdiRcx8Disp32,
}

#[derive(Clone, Copy)]
struct Form {
    name: &'static str,
    snippet: unsafe extern "C" fn(),
    register: Register,
    address: Address,
}

macro_rules! mmio_snippets {
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

mmio_snippets! {
    mmio_st_al => "mov byte ptr [rdi], al",
    mmio_st_ah => "mov byte ptr [rdi], ah",
    mmio_st_bh => "mov byte ptr [rdi], bh",
    mmio_st_sil => "mov byte ptr [rdi], sil",
    mmio_st_r9b => "mov byte ptr [rdi], r9b",
    mmio_st_ax => "mov word ptr [rdi], ax",
    mmio_st_r10w => "mov word ptr [rdi], r10w",
    mmio_st_eax => "mov dword ptr [rdi], eax",
    mmio_st_r11d_disp8 => "mov dword ptr [rdi + 0x10], r11d",
    mmio_st_edx_sib => "mov dword ptr [rsi + rcx*4], edx",
    mmio_st_ebx_hpet => "mov dword ptr [rdi], ebx",
    mmio_st_rax => "mov qword ptr [rdi], rax",
    mmio_st_r12_r8 => "mov qword ptr [r8], r12",
    mmio_st_rbp_sib => "mov qword ptr [rdi + rcx*8 + 0x100], rbp",
    mmio_st_imm8 => "mov byte ptr [rdi], 0x9c",
    mmio_st_imm16 => "mov word ptr [rdi], 0x8d7e",
    mmio_st_imm32 => "mov dword ptr [rdi], 0x89abcdef",
    mmio_st_imm32_hpet => "mov dword ptr [r8], 0xfedcba98",
    mmio_st_imm64 => "mov qword ptr [rdi], -0x76543211",
    mmio_ld_al => "mov al, byte ptr [rdi]",
    mmio_ld_ah => "mov ah, byte ptr [rdi]",
    mmio_ld_ch => "mov ch, byte ptr [rdi]",
    mmio_ld_dil => "mov dil, byte ptr [rsi + rcx*4]",
    mmio_ld_r13b => "mov r13b, byte ptr [rdi]",
    mmio_ld_ax => "mov ax, word ptr [rdi]",
    mmio_ld_r14w => "mov r14w, word ptr [r8]",
    mmio_ld_eax => "mov eax, dword ptr [rdi]",
    mmio_ld_r15d_disp8 => "mov r15d, dword ptr [rdi + 0x10]",
    mmio_ld_esi_hpet => "mov esi, dword ptr [rdi]",
    mmio_ld_rax => "mov rax, qword ptr [rdi]",
    mmio_ld_r9_sib => "mov r9, qword ptr [rdi + rcx*8 + 0x100]",
    mmio_movzx_eax_b => "movzx eax, byte ptr [rdi]",
    mmio_movzx_ax_b => "movzx ax, byte ptr [rdi]",
    mmio_movzx_rax_b => "movzx rax, byte ptr [rdi]",
    mmio_movzx_r10d_b => "movzx r10d, byte ptr [r8]",
    mmio_movzx_eax_w => "movzx eax, word ptr [rdi]",
    // movzx cx, word ptr [rdi] / movsx r12w, word ptr [rdi]: encodings the assembler refuses.
    mmio_movzx_cx_w => ".byte 0x66, 0x0f, 0xb7, 0x0f",
    mmio_movzx_r11_w => "movzx r11, word ptr [rdi + 0x10]",
    mmio_movsx_eax_b => "movsx eax, byte ptr [rdi]",
    mmio_movsx_ax_b => "movsx ax, byte ptr [rdi]",
    mmio_movsx_rax_b => "movsx rax, byte ptr [rdi]",
    mmio_movsx_r12d_b => "movsx r12d, byte ptr [rsi + rcx*4]",
    mmio_movsx_edx_w => "movsx edx, word ptr [rdi]",
    mmio_movsx_r12w_w => ".byte 0x66, 0x44, 0x0f, 0xbf, 0x27",
    mmio_movsx_rbx_w => "movsx rbx, word ptr [r8]",
}

fn forms() -> [Form; 45] {
    use Address::*;
    use Register::*;
    let f = |name, snippet, register, address| Form { name, snippet, register, address };
    [
        f("diff.mmio.mov.store.al", mmio_st_al as unsafe extern "C" fn(), IoApicSelect, Rdi),
        f("diff.mmio.mov.store.ah", mmio_st_ah, IoApicSelect, Rdi),
        f("diff.mmio.mov.store.bh", mmio_st_bh, IoApicSelect, Rdi),
        f("diff.mmio.mov.store.sil", mmio_st_sil, IoApicSelect, Rdi),
        f("diff.mmio.mov.store.r9b", mmio_st_r9b, IoApicSelect, Rdi),
        f("diff.mmio.mov.store.ax", mmio_st_ax, IoApicSelect, Rdi),
        f("diff.mmio.mov.store.r10w", mmio_st_r10w, IoApicSelect, Rdi),
        f("diff.mmio.mov.store.eax", mmio_st_eax, IoApicSelect, Rdi),
        f("diff.mmio.mov.store.r11d.disp8", mmio_st_r11d_disp8, IoApicSelect, RdiDisp8),
        f("diff.mmio.mov.store.edx.sib", mmio_st_edx_sib, IoApicSelect, RsiRcx4),
        f("diff.mmio.mov.store.ebx.hpet", mmio_st_ebx_hpet, HpetCounter, Rdi),
        f("diff.mmio.mov.store.rax", mmio_st_rax, HpetCounter, Rdi),
        f("diff.mmio.mov.store.r12.r8", mmio_st_r12_r8, HpetCounter, R8),
        f("diff.mmio.mov.store.rbp.sib", mmio_st_rbp_sib, HpetCounter, RdiRcx8Disp32),
        f("diff.mmio.mov.imm8", mmio_st_imm8, IoApicSelect, Rdi),
        f("diff.mmio.mov.imm16", mmio_st_imm16, IoApicSelect, Rdi),
        f("diff.mmio.mov.imm32", mmio_st_imm32, IoApicSelect, Rdi),
        f("diff.mmio.mov.imm32.hpet", mmio_st_imm32_hpet, HpetCounter, R8),
        f("diff.mmio.mov.imm32to64", mmio_st_imm64, HpetCounter, Rdi),
        f("diff.mmio.mov.load.al", mmio_ld_al, IoApicSelect, Rdi),
        f("diff.mmio.mov.load.ah", mmio_ld_ah, IoApicSelect, Rdi),
        f("diff.mmio.mov.load.ch", mmio_ld_ch, IoApicSelect, Rdi),
        f("diff.mmio.mov.load.dil.sib", mmio_ld_dil, IoApicSelect, RsiRcx4),
        f("diff.mmio.mov.load.r13b", mmio_ld_r13b, IoApicSelect, Rdi),
        f("diff.mmio.mov.load.ax", mmio_ld_ax, IoApicSelect, Rdi),
        f("diff.mmio.mov.load.r14w.r8", mmio_ld_r14w, IoApicSelect, R8),
        f("diff.mmio.mov.load.eax", mmio_ld_eax, IoApicSelect, Rdi),
        f("diff.mmio.mov.load.r15d.disp8", mmio_ld_r15d_disp8, IoApicSelect, RdiDisp8),
        f("diff.mmio.mov.load.esi.hpet", mmio_ld_esi_hpet, HpetCounter, Rdi),
        f("diff.mmio.mov.load.rax", mmio_ld_rax, HpetCounter, Rdi),
        f("diff.mmio.mov.load.r9.sib", mmio_ld_r9_sib, HpetCounter, RdiRcx8Disp32),
        f("diff.mmio.movzx.r32.b", mmio_movzx_eax_b, IoApicSelect, Rdi),
        f("diff.mmio.movzx.r16.b", mmio_movzx_ax_b, IoApicSelect, Rdi),
        f("diff.mmio.movzx.r64.b", mmio_movzx_rax_b, IoApicSelect, Rdi),
        f("diff.mmio.movzx.r10d.b.r8", mmio_movzx_r10d_b, IoApicSelect, R8),
        f("diff.mmio.movzx.r32.w", mmio_movzx_eax_w, IoApicSelect, Rdi),
        f("diff.mmio.movzx.r16.w", mmio_movzx_cx_w, IoApicSelect, Rdi),
        f("diff.mmio.movzx.r11.w.disp8", mmio_movzx_r11_w, IoApicSelect, RdiDisp8),
        f("diff.mmio.movsx.r32.b", mmio_movsx_eax_b, IoApicSelect, Rdi),
        f("diff.mmio.movsx.r16.b", mmio_movsx_ax_b, IoApicSelect, Rdi),
        f("diff.mmio.movsx.r64.b", mmio_movsx_rax_b, IoApicSelect, Rdi),
        f("diff.mmio.movsx.r12d.b.sib", mmio_movsx_r12d_b, IoApicSelect, RsiRcx4),
        f("diff.mmio.movsx.r32.w", mmio_movsx_edx_w, IoApicSelect, Rdi),
        f("diff.mmio.movsx.r12w.w", mmio_movsx_r12w_w, IoApicSelect, Rdi),
        f("diff.mmio.movsx.r64.w.r8", mmio_movsx_rbx_w, IoApicSelect, R8),
    ]
}

/// The device pages, mapped once: the same virtual page for both sides.
struct Devices {
    ioapic: u64,
    hpet: u64,
}

impl Register {
    fn page(self, devices: &Devices) -> u64 {
        match self {
            Register::IoApicSelect => devices.ioapic,
            Register::HpetCounter => devices.hpet,
        }
    }

    fn address(self, devices: &Devices) -> u64 {
        match self {
            Register::IoApicSelect => devices.ioapic,
            Register::HpetCounter => devices.hpet + HPET_COUNTER,
        }
    }

    /// Puts `value` into the register, natively through the private mapping.
    fn reset(self, devices: &Devices, value: u64) {
        // SAFETY: the device pages are mapped uncached; IOREGSEL only selects a register and the
        // HPET counter is written while the HPET is halted.
        unsafe {
            match self {
                Register::IoApicSelect => write_mov(devices.ioapic, AccessSize::Dword, value),
                Register::HpetCounter => {
                    write_mov(devices.hpet + HPET_CONFIG, AccessSize::Dword, 0);
                    write_mov(devices.hpet + HPET_COUNTER, AccessSize::Qword, value);
                }
            }
        }
    }

    fn observe(self, devices: &Devices) -> u64 {
        // SAFETY: reads of IOREGSEL and of the halted counter have no side effects.
        unsafe {
            match self {
                Register::IoApicSelect => read_mov(devices.ioapic, AccessSize::Dword),
                Register::HpetCounter => read_mov(devices.hpet + HPET_COUNTER, AccessSize::Qword),
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Observation {
    state: DiffState,
    rip_after: Option<u64>,
    ves: u64,
    device: u64,
}

fn initial_state(form: &Form, devices: &Devices, seed: Option<u64>) -> DiffState {
    let mut gprs = [0u64; 16];
    let mut random = seed.map(Xorshift);
    for (n, value) in gprs.iter_mut().enumerate() {
        *value = match random.as_mut() {
            Some(random) => random.next(),
            None => 0x1111_1111_1111_1111u64.wrapping_mul(n as u64 + 1) ^ 0x8F8F_0F80,
        };
    }
    let target = form.register.address(devices);
    let (base, base_value, index) = match form.address {
        Address::Rdi => (Gpr::Rdi, target, None),
        Address::RdiDisp8 => (Gpr::Rdi, target - 0x10, None),
        Address::R8 => (Gpr::R8, target, None),
        Address::RsiRcx4 => (Gpr::Rsi, target - 12, Some(3)),
        Address::RdiRcx8Disp32 => (Gpr::Rdi, target - 16 - 0x100, Some(2)),
    };
    gprs[base as usize] = base_value;
    if let Some(rcx) = index {
        gprs[Gpr::Rcx as usize] = rcx;
    }
    gprs[Gpr::Rsp as usize] = 0;
    let flags = random.as_mut().map_or(0x8C5, |r| r.next() & 0x8D5);
    DiffState { gprs, rflags: 0x2 | flags, snippet: form.snippet as usize as u64 }
}

fn run_side(
    form: &Form,
    devices: &Devices,
    start: &DiffState,
    device_value: u64,
    through_model: bool,
) -> Observation {
    let page = form.register.page(devices);
    natively(|| {
        form.register.reset(devices, device_value);
        if through_model {
            let _ = pagetable::set_shared(page, 1, SHARED_BIT, true);
        }
    });
    let mut state = *start;
    state.rflags |= crate::arch::rflags::TF;
    let instruction = form.snippet as usize as u64;
    let ves_before = crate::counters::VE_MMIO.get();
    // SAFETY: the snippet runs one MOV on a device register whose effects are reset around it.
    let mut run = || unsafe { diff_run(&mut state) };
    let rip_after = if through_model {
        crate::softtdx::arm_watch(instruction);
        run();
        crate::softtdx::take_resumed_at()
    } else {
        crate::softtdx::run_passthrough(instruction, run).1
    };
    let ves = crate::counters::VE_MMIO.get() - ves_before;
    state.rflags &= !(crate::arch::rflags::TF | crate::arch::rflags::RF);
    let device = natively(|| {
        if through_model {
            let _ = pagetable::set_shared(page, 1, SHARED_BIT, false);
        }
        form.register.observe(devices)
    });
    Observation { state, rip_after, ves, device }
}

fn compare(form: &Form, devices: &Devices, seeds: &[Option<u64>]) -> Outcome {
    let mut device_after = 0;
    for &seed in seeds {
        let start = initial_state(form, devices, seed);
        let device_value = match seed {
            Some(seed) => Xorshift(seed ^ 0xD1CE).next(),
            None => 0x8123_4567_89AB_CDA5,
        };
        let native = run_side(form, devices, &start, device_value, false);
        let model = run_side(form, devices, &start, device_value, true);
        if native.ves != 0 || model.ves != 1 {
            return fail!(
                "{} MMIO #VEs natively, {} through the model (want 0 and 1)",
                native.ves,
                model.ves
            );
        }
        let same = |a: &Observation, b: &Observation| {
            a.state == b.state && a.rip_after == b.rip_after && a.device == b.device
        };
        if !same(&native, &model) {
            let mut detail = crate::fixed_format!(160, "seed {seed:x?}: ");
            use core::fmt::Write;
            for r in Gpr::ALL {
                let (a, b) = (native.state.gprs[r as usize], model.state.gprs[r as usize]);
                if a != b {
                    let _ = write!(detail, "{r:?} native={a:#x} model={b:#x}; ");
                }
            }
            if native.state.rflags != model.state.rflags {
                let _ =
                    write!(detail, "RFLAGS {:#x}/{:#x}; ", native.state.rflags, model.state.rflags);
            }
            if native.rip_after != model.rip_after {
                let _ = write!(detail, "resumed {:x?}/{:x?}; ", native.rip_after, model.rip_after);
            }
            if native.device != model.device {
                let _ = write!(detail, "device {:#x}/{:#x}", native.device, model.device);
            }
            return Outcome::Fail(detail);
        }
        device_after = native.device;
    }
    pass!(
        "{} state(s) agree, 1 MMIO #VE each; device register after: {device_after:#x}",
        seeds.len()
    )
}

/// A fixed-seed xorshift64 for the pseudo-random states.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        let mut x = self.0 | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Random states per form.
const RANDOM_STATES: u64 = 2;

pub fn run(ctx: &Context, tally: &mut Tally) {
    let map = |gpa| pagetable::map_device(gpa, 1, 0);
    let devices = match (map(IOAPIC), map(HPET)) {
        (Ok(ioapic), Ok(hpet)) => Devices { ioapic, hpet },
        (Err(e), _) | (_, Err(e)) => {
            tally.record("diff.mmio.*", fail!("cannot map the IOAPIC/HPET: {e}"));
            return;
        }
    };
    for form in forms() {
        tally.run(form.name, || compare(&form, &devices, &[None]));
    }
    for (n, form) in forms().iter().enumerate() {
        let name = crate::fixed_format!(64, "diff.random.{}", &form.name[5..]);
        let seeds: [Option<u64>; RANDOM_STATES as usize] =
            core::array::from_fn(|i| Some(0x9E37_79B9_7F4A_7C15 ^ (n as u64) << 8 ^ i as u64));
        tally.run(name.as_str(), || compare(form, &devices, &seeds));
    }
    faults(ctx, tally);
}

/// MapGPA's fault checks convert 4 pages of the accept checks' scratch memory (usable memory
/// nothing else uses, alone in its 2 MiB): to shared, and back to private, which leaves them
/// pending until the kernel accepts them again, as in a TD.
fn faults(ctx: &Context, tally: &mut Tally) {
    let Some(gpa) = super::accept::scratch_chunk(ctx) else {
        tally.record("fault.mapgpa.*", fail!("no scratch memory to convert"));
        return;
    };
    let size = 4 * 4096;
    let calls = || crate::counters::TDVMCALL_MAPGPA.get();
    let convert = |fault, shared| {
        crate::softtdx::mmio::arm(fault);
        let before = calls();
        let result = mapgpa::map_gpa(gpa, size, shared, SHARED_BIT);
        crate::softtdx::mmio::arm(None);
        (result, calls() - before)
    };
    tally.run("fault.mapgpa.retry_with_progress", || {
        let (result, calls) = convert(Some(HostMmioFault::MapGpaRetryWithProgress), true);
        let all_shared = (0..4).all(|p| crate::softtdx::mmio::is_shared(gpa + p * 4096));
        let back = convert(None, false).0;
        let pending = (0..4).all(|p| {
            crate::softtdx::pages::state(gpa + p * 4096) == crate::softtdx::pages::PageState::Pending
        });
        // SAFETY: scratch memory nothing else uses (see `faults`).
        let accepted = unsafe { crate::tdx::accept::accept_range(gpa, size) };
        match result {
            Ok(()) if calls == 2 && all_shared && back.is_ok() && pending && accepted.is_ok() => {
                pass!("RETRY with R11 one page on: resumed there, 2 calls, all 4 pages shared; back to private: pending, accepted again")
            }
            _ => {
                fail!("result {result:?}, {calls} calls, all shared: {all_shared}, back: {back:?}, pending: {pending}, accept: {accepted:?}")
            }
        }
    });
    tally.run("fault.mapgpa.retry_without_progress", || {
        let (result, calls) = convert(Some(HostMmioFault::MapGpaRetryNoProgress), true);
        match result {
            Err(ConvertError::MapGpa(MapGpaError::NoProgress { .. })) if calls == 3 => {
                pass!("gave up after 3 RETRY answers without progress")
            }
            _ => fail!("result {result:?} after {calls} calls"),
        }
    });
    tally.run("fault.mapgpa.retry_out_of_range", || {
        let (result, calls) = convert(Some(HostMmioFault::MapGpaRetryOutOfRange), true);
        match result {
            Err(ConvertError::MapGpa(MapGpaError::RetryOutOfRange { r11, .. }))
                if calls == 1 && r11 & SHARED_BIT == 0 =>
            {
                pass!("RETRY with R11={r11:#x} (no shared bit) refused at once")
            }
            _ => fail!("result {result:?} after {calls} calls"),
        }
    });
    tally.run("fault.mapgpa.gpa_in_use", || {
        let (result, calls) = convert(Some(HostMmioFault::MapGpaInUse), true);
        match result {
            Err(ConvertError::MapGpa(MapGpaError::Status {
                status: TdVmCallStatus::GpaInUse,
                ..
            })) if calls == 1 => {
                pass!("GPA_INUSE is an error")
            }
            _ => fail!("result {result:?} after {calls} calls"),
        }
    });
    tally.run("fault.request_mmio", || {
        crate::softtdx::mmio::arm(Some(HostMmioFault::RequestMmioFailure));
        let result = crate::tdx::mmio::read(IOAPIC | SHARED_BIT, AccessSize::Dword);
        crate::softtdx::mmio::arm(None);
        // RAM has a memslot: the host refuses to emulate MMIO there (scratch memory, private).
        let ram = crate::tdx::mmio::read((gpa + size) | SHARED_BIT, AccessSize::Dword);
        let refused = |r: &Result<u64, crate::tdx::vmcall::VmcallError>| {
            matches!(
                r,
                Err(crate::tdx::vmcall::VmcallError::Status {
                    status: TdVmCallStatus::InvalidOperand,
                    ..
                })
            )
        };
        // Nor does it emulate an access that crosses a page.
        let crossing = crate::tdx::mmio::read((IOAPIC + 0xFFE) | SHARED_BIT, AccessSize::Dword);
        if refused(&result) && refused(&ram) && refused(&crossing) {
            pass!("a failing RequestMMIO is INVALID_OPERAND; so are one on RAM and one crossing a page")
        } else {
            fail!("crossing a page: {crossing:?}; on RAM: {ram:?}; armed failure: {result:?}")
        }
    });
    tally.run("shared.implicit_conversion", || implicit_conversion(gpa + size));
}

/// A shared access to a private page of RAM: no #VE in a TD; the host converts the page to
/// shared, discarding its contents (`softtdx::mmio::shared_ram` has the sources). The
/// page (scratch memory after the four MapGPA pages) then goes back to private and is
/// accepted again; it is never touched through its private mapping while shared, which would
/// end the run.
fn implicit_conversion(page: u64) -> Outcome {
    use crate::softtdx::pages::{state, PageState};
    const MARKER: u64 = 0x1122_3344_5566_7788;
    let Some(offset) = crate::memory::physical_memory_offset() else {
        return fail!("no physical-memory mapping");
    };
    // SAFETY: scratch memory nothing else uses (see `faults`), private and accepted here.
    unsafe { core::ptr::write_volatile((offset + page) as *mut u64, MARKER) };
    let alias = match pagetable::map_device(page, 1, SHARED_BIT) {
        Ok(alias) => alias,
        Err(e) => return fail!("mapping GPA {page:#x} shared: {e}"),
    };
    let ves = || crate::counters::VE_MMIO.get();
    let conversions =
        || crate::softtdx::mmio::IMPLICIT_CONVERSIONS.load(core::sync::atomic::Ordering::Relaxed);
    let (before, conversions_before) = (ves(), conversions());
    // SAFETY: a mapping of the scratch page with the shared bit: the access converts the page
    // to shared (in a TD, the host does) and reads whatever the host left there.
    let value = unsafe { read_mov(alias, AccessSize::Qword) };
    let ves = ves() - before;
    let conversions = conversions() - conversions_before;
    let converted = state(page);
    let back = mapgpa::map_gpa(page, 4096, false, SHARED_BIT);
    // SAFETY: as above; the page is pending after MapGPA to private.
    let accepted = unsafe { crate::tdx::accept::accept_range(page, 4096) };
    let scribbled = u64::from_ne_bytes([crate::softtdx::mmio::SCRIBBLE; 8]);
    let shared = converted == PageState::Shared && conversions == 1;
    if ves == 0 && value == scribbled && shared && back.is_ok() && accepted.is_ok() {
        pass!("a shared read of private GPA {page:#x}: no #VE, the page became shared and read {value:#x}, not {MARKER:#x}; back to private, accepted")
    } else {
        fail!("{ves} MMIO #VEs, read {value:#x} (wrote {MARKER:#x}), state {converted:?} after {conversions} conversion(s), back {back:?}, accept {accepted:?}")
    }
}
