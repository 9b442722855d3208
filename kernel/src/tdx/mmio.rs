//! MMIO in a TD: TDG.VP.VMCALL<#VE.RequestMMIO> for the kernel's own drivers, and the
//! EPT-violation #VE (exit reason 48) for every other MMIO access.
//!
//! MMIO is a shared GPA with no memory behind it: the first touch makes the CPU raise an
//! EPT-violation #VE with the GPA and GLA but no valid instruction length (MMIO-FACTS §1). The
//! handler here checks that the GPA carries the shared bit (a private GPA is a guest bug or a
//! host attack: fatal, as in Linux `virt_exception_kernel`), that it is what the live page
//! tables make of the GLA, decodes the instruction itself (`tdx_ve::mmio`), checks that the
//! access direction agrees with the exit qualification and that the access does not cross a
//! page, asks the host with RequestMMIO, writes the destination register as the CPU would, and
//! advances RIP by the decoded length. Everything else stops with the instruction bytes named.
//!
//! Drivers call [`read`] and [`write`] directly ("paravirtual MMIO", as td-shim and Oak do):
//! one hypercall per register access and no #VE.

use super::vmcall::VmcallError;
use crate::arch::frame::TrapFrame;
use crate::arch::rflags;
use crate::counters;
use crate::memory;
use tdx_ve::abi::{TdVmCallStatus, TdVmCallSubFunction, TdcallLeaf, TdxStatus, VeInfo};
use tdx_ve::decode::MAX_INSTRUCTION_LENGTH;
use tdx_ve::mmio::{self, AccessSize, MmioDecodeError, MmioDecodeErrorKind, SegmentBases};
use tdx_ve::regs::{Gpr, GuestRegisters};

/// Exit qualification of an EPT violation (Intel SDM Vol. 3C, "Exit Qualification for EPT
/// Violations"): bit 0 data read, bit 1 data write, bit 2 instruction fetch, bit 7 GLA valid.
const QUALIFICATION_READ: u64 = 1 << 0;
const QUALIFICATION_WRITE: u64 = 1 << 1;
const QUALIFICATION_FETCH: u64 = 1 << 2;
const QUALIFICATION_GLA_VALID: u64 = 1 << 7;

const IA32_FS_BASE: u32 = 0xC000_0100;
const IA32_GS_BASE: u32 = 0xC000_0101;

/// Why an MMIO #VE could not be emulated.
#[derive(Clone, Copy, Debug)]
pub enum MmioError {
    /// Not a TD, or TDG.VP.INFO reported no valid GPAW: there is no shared bit.
    NoSharedBit,
    /// The EPT violation names a private GPA.
    PrivateGpa(u64),
    /// The exit qualification says the GLA is not valid, or an instruction fetch.
    Qualification(u64),
    /// The page walk of the GLA does not lead to the reported GPA.
    GpaMismatch { gla: u64, walked: Option<u64>, gpa: u64 },
    /// The instruction is not one this handler emulates.
    Decode(MmioDecodeError),
    /// The decoded operand's address is not the GLA, or the access direction is not the one
    /// the qualification reports.
    InstructionMismatch { decoded_address: u64, write: bool },
    /// The access crosses a page boundary.
    CrossesPage { gla: u64, size: AccessSize },
    /// RequestMMIO failed.
    Hypercall(VmcallError),
}

impl core::fmt::Display for MmioError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoSharedBit => write!(f, "MMIO #VE but no shared bit is known"),
            Self::PrivateGpa(gpa) => write!(f, "EPT violation on private GPA {gpa:#x}"),
            Self::Qualification(q) => write!(f, "EPT violation qualification {q:#x}"),
            Self::GpaMismatch { gla, walked: Some(walked), gpa } => {
                write!(f, "GLA {gla:#x} walks to {walked:#x}, not the reported GPA {gpa:#x}")
            }
            Self::GpaMismatch { gla, walked: None, gpa } => {
                write!(f, "GLA {gla:#x} is not mapped (reported GPA {gpa:#x})")
            }
            Self::Decode(e) => write!(f, "MMIO {e}"),
            Self::InstructionMismatch { decoded_address, write } => write!(
                f,
                "decoded MMIO {} at {decoded_address:#x} disagrees with the VE info",
                if *write { "write" } else { "read" }
            ),
            Self::CrossesPage { gla, size } => {
                write!(f, "{}-byte MMIO at {gla:#x} crosses a page", size.bytes())
            }
            Self::Hypercall(e) => write!(f, "{e}"),
        }
    }
}

/// The RequestMMIO hypercall with only the registers it uses (GHCI "TDG.VP.VMCALL<#VE.
/// RequestMMIO>"): R11 = 48, R12 size, R13 0 read / 1 write, R14 GPA (shared bit set), R15
/// data; out R10 status, R11 data. Returns (TDCALL status, GHCI status, R11). R12-R15 come
/// back as the host left them and are declared clobbered (see `vmcall::io_vmcall`).
#[inline(always)]
fn mmio_vmcall(size: AccessSize, write: bool, gpa: u64, value: u64) -> (u64, u64, u64) {
    let (status, vmcall_status, r11): (u64, u64, u64);
    // SAFETY: TDG.VP.VMCALL passes only the exposed registers (RCX bitmap) to the host and
    // back; the host cannot touch private guest memory, and the stack is not used.
    unsafe {
        core::arch::asm!(
            ".byte 0x66, 0x0f, 0x01, 0xcc",
            inlateout("rax") TdcallLeaf::VpVmcall as u64 => status,
            inlateout("rcx") TdVmCallSubFunction::RequestMmio.register_bitmap() => _,
            inlateout("r10") 0u64 => vmcall_status,
            inlateout("r11") TdVmCallSubFunction::RequestMmio.code() => r11,
            inlateout("r12") size.bytes() => _,
            inlateout("r13") write as u64 => _,
            inlateout("r14") gpa => _,
            inlateout("r15") value => _,
            options(nostack),
        )
    };
    (status, vmcall_status, r11)
}

#[inline(always)]
fn check(tdcall_status: u64, vmcall_status: u64) -> Result<(), VmcallError> {
    counters::TDCALL_VMCALL.increment();
    counters::TDVMCALL_MMIO.increment();
    if tdcall_status == TdxStatus::SUCCESS && vmcall_status == 0 {
        return Ok(());
    }
    counters::TDVMCALL_FAILED.increment();
    if tdcall_status != TdxStatus::SUCCESS {
        let leaf = TdcallLeaf::VpVmcall;
        return Err(VmcallError::Tdcall(super::tdcall::TdcallError {
            leaf,
            status: tdcall_status,
        }));
    }
    Err(VmcallError::Status {
        sub_function: TdVmCallSubFunction::RequestMmio,
        status: TdVmCallStatus::from(vmcall_status),
    })
}

/// Reads `size` bytes of MMIO at `gpa` (which must carry the shared bit) through RequestMMIO.
/// The host's data is masked to the width (R11 is untrusted; KVM's in-kernel path leaves the
/// bytes above `size` uninitialised, MMIO-FACTS §2).
#[inline(always)]
pub fn read(gpa: u64, size: AccessSize) -> Result<u64, VmcallError> {
    let (status, vmcall_status, data) = mmio_vmcall(size, false, gpa, 0);
    check(status, vmcall_status)?;
    Ok(data & size.mask())
}

/// Writes the low `size` bytes of `value` to MMIO at `gpa` (shared bit set) through
/// RequestMMIO.
#[inline(always)]
pub fn write(gpa: u64, size: AccessSize, value: u64) -> Result<(), VmcallError> {
    let (status, vmcall_status, _) = mmio_vmcall(size, true, gpa, value & size.mask());
    check(status, vmcall_status)
}

/// Emulates the MMIO access that raised an EPT-violation #VE, and advances RIP past it.
pub fn emulate_ept_violation(frame: &mut TrapFrame, ve: &VeInfo) -> Result<(), MmioError> {
    emulate(frame, ve)
}

fn emulate(frame: &mut TrapFrame, ve: &VeInfo) -> Result<(), MmioError> {
    let shared_bit = crate::mm::shared_bit().ok_or(MmioError::NoSharedBit)?;
    let gpa = ve.guest_physical_address;
    let gla = ve.guest_linear_address;
    if gpa & shared_bit == 0 {
        return Err(MmioError::PrivateGpa(gpa));
    }
    let qualification = ve.exit_qualification;
    if qualification & QUALIFICATION_GLA_VALID == 0
        || qualification & QUALIFICATION_FETCH != 0
        || qualification & (QUALIFICATION_READ | QUALIFICATION_WRITE) == 0
    {
        return Err(MmioError::Qualification(qualification));
    }
    // The GPA must be what this TD's own page tables make of the GLA: the host reports it, and
    // the emulation must not act on an address the guest never mapped.
    let walked = walk(gla);
    if walked != Some(gpa) {
        return Err(MmioError::GpaMismatch { gla, walked, gpa });
    }

    // The instruction's bytes, read in place through the kernel's own mapping. The page
    // holding RIP is mapped and executable: the CPU has just fetched the instruction that
    // raised this #VE from it, on this vCPU, through the same page tables (an EPT violation on
    // an instruction fetch is refused above). The bytes from RIP to the end of its page need
    // no walk and no copy; they hold every instruction that does not cross the page.
    let rip = frame.rip;
    if rip % PAGE_SIZE <= PAGE_SIZE - mmio::PLAIN_MOV_MAX_LENGTH as u64 {
        // SAFETY: the 7 bytes from RIP lie in RIP's page (just checked), which is mapped;
        // kernel code is not modified while it runs.
        let bytes = unsafe { &*(rip as *const [u8; mmio::PLAIN_MOV_MAX_LENGTH]) };
        // The forms an accessor emits: decoded in line, and the rest of the emulation
        // specialised for them by the compiler (no SIB, no segment, 64-bit addressing).
        if let Some(instruction) = mmio::decode_plain_mov(bytes) {
            return complete(frame, gpa, gla, qualification, &instruction);
        }
    }
    complete_general(frame, gpa, gla, qualification)
}

/// The general decoder's path: everything but the plain MOV forms, and every refusal.
#[inline(never)]
fn complete_general(
    frame: &mut TrapFrame,
    gpa: u64,
    gla: u64,
    qualification: u64,
) -> Result<(), MmioError> {
    let rip = frame.rip;
    let in_page = (PAGE_SIZE - rip % PAGE_SIZE).min(MAX_INSTRUCTION_LENGTH as u64) as usize;
    // SAFETY: `in_page` bytes from RIP lie in RIP's page, mapped as `emulate` explains; kernel
    // code is not modified while it runs.
    let bytes = unsafe { core::slice::from_raw_parts(rip as *const u8, in_page) };
    let instruction = match mmio::decode_general(bytes) {
        // The decoder ran out of bytes at the end of RIP's page: the instruction crosses into
        // the next page, which is read only if the live page tables map it.
        Err(e) if e.kind == MmioDecodeErrorKind::Truncated && in_page < MAX_INSTRUCTION_LENGTH => {
            if walk(rip + in_page as u64).is_none() {
                return Err(MmioError::Decode(e));
            }
            // SAFETY: RIP's page and the next are mapped (above).
            let bytes =
                unsafe { core::slice::from_raw_parts(rip as *const u8, MAX_INSTRUCTION_LENGTH) };
            mmio::decode_general(bytes)
        }
        result => result,
    }
    .map_err(MmioError::Decode)?;
    complete(frame, gpa, gla, qualification, &instruction)
}

/// Checks the decoded instruction against the VE info, performs it through RequestMMIO and
/// advances RIP.
#[inline(always)]
fn complete(
    frame: &mut TrapFrame,
    gpa: u64,
    gla: u64,
    qualification: u64,
    instruction: &mmio::MmioInstruction,
) -> Result<(), MmioError> {
    let bases = if instruction.memory.segment.is_some() {
        // SAFETY: IA32_FS_BASE and IA32_GS_BASE are readable in ring 0; in a TD they are
        // native (td-rules: msr_lookup FS_BASE/GS_BASE).
        unsafe {
            SegmentBases {
                fs: x86_64::registers::model_specific::Msr::new(IA32_FS_BASE).read(),
                gs: x86_64::registers::model_specific::Msr::new(IA32_GS_BASE).read(),
            }
        }
    } else {
        SegmentBases::default()
    };
    let mut registers = FrameGprs(frame);
    let decoded_address = instruction.linear_address(&registers, bases);
    let is_write = instruction.is_write();
    let direction = if is_write { QUALIFICATION_WRITE } else { QUALIFICATION_READ };
    if decoded_address != gla || qualification & direction == 0 {
        return Err(MmioError::InstructionMismatch { decoded_address, write: is_write });
    }
    if mmio::crosses_page(gla, instruction.access_size) {
        return Err(MmioError::CrossesPage { gla, size: instruction.access_size });
    }
    match instruction.write_data(&registers) {
        Some(data) => write(gpa, instruction.access_size, data).map_err(MmioError::Hypercall)?,
        None => {
            let data = read(gpa, instruction.access_size).map_err(MmioError::Hypercall)?;
            instruction.complete_read(&mut registers, data);
        }
    }
    // Past the instruction; RF as in `ve::advance` (the instruction has completed).
    frame.rip = frame.rip.wrapping_add(instruction.length as u64);
    frame.rflags &= !rflags::RF;
    Ok(())
}

const PAGE_SIZE: u64 = 4096;

/// The interrupted context's GPRs as the emulation reads and writes them: each access one load
/// or store at the register's offset in the frame (`TrapFrame`'s own accessors match on the
/// register, a call and a jump table per access, which the measured path cannot afford).
struct FrameGprs<'a>(&'a mut TrapFrame);

/// The byte offset of each GPR in the frame, by GPR number (SDM Vol. 2 §2.1.5: RAX, RCX, RDX,
/// RBX, RSP, RBP, RSI, RDI, R8..R15).
const GPR_OFFSETS: [usize; 16] = {
    use core::mem::offset_of;
    [
        offset_of!(TrapFrame, rax),
        offset_of!(TrapFrame, rcx),
        offset_of!(TrapFrame, rdx),
        offset_of!(TrapFrame, rbx),
        offset_of!(TrapFrame, rsp),
        offset_of!(TrapFrame, rbp),
        offset_of!(TrapFrame, rsi),
        offset_of!(TrapFrame, rdi),
        offset_of!(TrapFrame, r8),
        offset_of!(TrapFrame, r9),
        offset_of!(TrapFrame, r10),
        offset_of!(TrapFrame, r11),
        offset_of!(TrapFrame, r12),
        offset_of!(TrapFrame, r13),
        offset_of!(TrapFrame, r14),
        offset_of!(TrapFrame, r15),
    ]
};

impl FrameGprs<'_> {
    #[inline(always)]
    fn slot(&self, r: Gpr) -> *mut u64 {
        let offset = GPR_OFFSETS[usize::from(r.number() & 15)];
        // SAFETY: `offset` is that of a u64 field of the frame (offset_of! above), so the
        // pointer stays inside the frame and is aligned.
        unsafe {
            core::ptr::from_ref::<TrapFrame>(self.0).cast_mut().cast::<u8>().add(offset).cast()
        }
    }
}

impl GuestRegisters for FrameGprs<'_> {
    #[inline(always)]
    fn gpr(&self, r: Gpr) -> u64 {
        // SAFETY: a u64 field of the frame (`slot`).
        unsafe { self.slot(r).read() }
    }

    #[inline(always)]
    fn set_gpr(&mut self, r: Gpr, v: u64) {
        // SAFETY: a u64 field of the frame (`slot`), which `self` borrows mutably.
        unsafe { self.slot(r).write(v) }
    }

    fn rip(&self) -> u64 {
        self.0.rip
    }

    fn set_rip(&mut self, v: u64) {
        self.0.rip = v;
    }

    fn rflags(&self) -> u64 {
        self.0.rflags
    }
}

/// The address the live page tables map `address` to (the shared bit included), or None if
/// no present leaf does: the handler's own walk (Intel SDM Vol. 3A §4.5, 4-level paging, 2 MiB
/// and 1 GiB leaves), leaner than `memory::translate`, which also collects access rights.
#[inline(always)]
fn walk(address: u64) -> Option<u64> {
    const PRESENT: u64 = 1;
    const HUGE_PAGE: u64 = 1 << 7;
    const FRAME: u64 = 0x000F_FFFF_FFFF_F000;
    const CR4_LA57: u64 = 1 << 12;
    if x86_64::registers::control::Cr4::read_raw() & CR4_LA57 != 0 {
        return None;
    }
    let offset = memory::physical_memory_offset()?;
    // The present entry for `address` at the level that `shift` translates, in the table at
    // physical address `table`.
    let entry = |table: u64, shift: u32| -> Option<u64> {
        let slot = offset + (table & FRAME) + ((address >> shift) & 0x1FF) * 8;
        // SAFETY: `table` is a live page table (from CR3 or a present entry), mapped with all
        // physical memory at `offset`; entries are aligned u64s.
        let entry = unsafe { core::ptr::read_volatile(slot as *const u64) };
        (entry & PRESENT != 0).then_some(entry)
    };
    let leaf = |entry: u64, shift: u32| {
        let page_mask = (1u64 << shift) - 1;
        (entry & FRAME & !page_mask) | (address & page_mask)
    };
    let pml4e = entry(x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64(), 39)?;
    let pdpte = entry(pml4e, 30)?;
    if pdpte & HUGE_PAGE != 0 {
        return Some(leaf(pdpte, 30));
    }
    let pde = entry(pdpte, 21)?;
    if pde & HUGE_PAGE != 0 {
        return Some(leaf(pde, 21));
    }
    let pte = entry(pde, 12)?;
    Some(leaf(pte, 12))
}
