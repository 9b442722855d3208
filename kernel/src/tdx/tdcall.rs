//! TDCALL: the guest's call into the TDX module, behind one function ([`tdcall`]).
//!
//! Every leaf the kernel uses is a function here, named after the leaf in the Intel TDX Module
//! ABI specification (rev. 348551, chapter "TD Guest Interface Functions"). RAX carries the leaf
//! on entry and the TDCALL completion status on return; a non-zero status means the call itself
//! failed (a guest bug or a TDX-module problem) and is returned as [`TdcallError`] for the
//! caller to treat as fatal.
//!
//! The opcode is emitted as bytes (66 0F 01 CC) because assemblers do not all know TDCALL.
//! Under softtdx the same bytes raise #UD and the model answers: nothing here knows about it.

use crate::counters;
use tdx_ve::abi::{TdInfo, TdcallLeaf, TdxStatus, VeInfo};

/// Every GPR that TDCALL leaves may read or write, except RSP and RBP, which no leaf uses.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct TdcallRegs {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

// The assembly below hard-codes these offsets.
const _: () = assert!(core::mem::size_of::<TdcallRegs>() == 14 * 8);
const _: () = assert!(core::mem::offset_of!(TdcallRegs, rdi) == 40);
const _: () = assert!(core::mem::offset_of!(TdcallRegs, r15) == 104);

// Loads every register from the struct, executes TDCALL, stores every register back, and then
// zeroes the caller-saved registers it used, so that no value chosen by the host (for
// TDG.VP.VMCALL the exposed registers come back as the VMM left them) stays live in a register
// after the call. Callee-saved registers are restored from the stack.
core::arch::global_asm!(
    ".global tdx_tdcall",
    "tdx_tdcall:",
    "    push rbp",
    "    push rbx",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    push rdi",
    "    mov rax, [rdi + 0]",
    "    mov rcx, [rdi + 8]",
    "    mov rdx, [rdi + 16]",
    "    mov rbx, [rdi + 24]",
    "    mov rsi, [rdi + 32]",
    "    mov r8,  [rdi + 48]",
    "    mov r9,  [rdi + 56]",
    "    mov r10, [rdi + 64]",
    "    mov r11, [rdi + 72]",
    "    mov r12, [rdi + 80]",
    "    mov r13, [rdi + 88]",
    "    mov r14, [rdi + 96]",
    "    mov r15, [rdi + 104]",
    "    mov rdi, [rdi + 40]",
    "    .byte 0x66, 0x0f, 0x01, 0xcc",
    "    xchg rdi, [rsp]",
    "    mov [rdi + 0], rax",
    "    mov [rdi + 8], rcx",
    "    mov [rdi + 16], rdx",
    "    mov [rdi + 24], rbx",
    "    mov [rdi + 32], rsi",
    "    mov [rdi + 48], r8",
    "    mov [rdi + 56], r9",
    "    mov [rdi + 64], r10",
    "    mov [rdi + 72], r11",
    "    mov [rdi + 80], r12",
    "    mov [rdi + 88], r13",
    "    mov [rdi + 96], r14",
    "    mov [rdi + 104], r15",
    "    pop rcx",
    "    mov [rdi + 40], rcx",
    "    xor ecx, ecx",
    "    xor edx, edx",
    "    xor esi, esi",
    "    xor edi, edi",
    "    xor r8d, r8d",
    "    xor r9d, r9d",
    "    xor r10d, r10d",
    "    xor r11d, r11d",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    ret",
);

extern "sysv64" {
    fn tdx_tdcall(regs: *mut TdcallRegs) -> u64;
}

/// Executes TDCALL with `regs` as input and output; returns the completion status (RAX).
///
/// # Safety
/// Must only run in a TD (or under softtdx). The leaf and arguments must be valid for the
/// current state: some leaves (e.g. TDG.MEM.PAGE.ACCEPT) change memory.
pub unsafe fn tdcall(regs: &mut TdcallRegs) -> u64 {
    // SAFETY: the stub reads and writes exactly one TdcallRegs through the pointer and
    // preserves every callee-saved register; the caller vouches for the leaf.
    unsafe { tdx_tdcall(regs) }
}

/// A TDCALL whose completion status was not success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdcallError {
    pub leaf: TdcallLeaf,
    pub status: u64,
}

impl core::fmt::Display for TdcallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "TDCALL {:?} failed with completion status {:#x}", self.leaf, self.status)
    }
}

/// Runs `leaf` with `regs`, checking the completion status.
///
/// # Safety
/// `leaf` with `regs` must change no guest memory and no guest state other than the output
/// registers: true of TDG.VP.INFO, TDG.VP.VEINFO.GET and TDG.VP.VMCALL, the leaves used here
/// and in `vmcall.rs`.
pub(super) unsafe fn call(leaf: TdcallLeaf, regs: &mut TdcallRegs) -> Result<(), TdcallError> {
    regs.rax = leaf as u64;
    // SAFETY: the caller vouches for the leaf (see `# Safety`).
    let status = unsafe { tdcall(regs) };
    if TdxStatus::from(status) != TdxStatus::Success {
        return Err(TdcallError { leaf, status });
    }
    Ok(())
}

/// TDG.VP.INFO (leaf 1): the TD's execution environment (TDX Module ABI, "TDG.VP.INFO Leaf").
pub fn vp_info() -> Result<TdInfo, TdcallError> {
    counters::TDCALL_VP_INFO.increment();
    let mut regs = TdcallRegs::default();
    // SAFETY: TDG.VP.INFO only returns values in registers.
    unsafe { call(TdcallLeaf::VpInfo, &mut regs)? };
    Ok(TdInfo::from_vp_info_outputs(regs.rcx, regs.rdx, regs.r8, regs.r9))
}

/// TDG.VP.VEINFO.GET (leaf 3): the information of the pending #VE, which it also clears
/// (TDX Module ABI, "TDG.VP.VEINFO.GET Leaf"). Until it runs, a second #VE is a #DF and all
/// interrupts, NMI included, stay blocked.
///
/// The first call of every #VE, so it loads and stores only what the leaf uses: RAX in (leaf)
/// and out (status); RCX, RDX, R8, R9, R10 out. The TDX module preserves every other GPR
/// (as Linux's `__tdcall_ret` relies on too).
#[inline(always)]
pub fn vp_veinfo_get() -> Result<VeInfo, TdcallError> {
    counters::TDCALL_VEINFO_GET.increment();
    let (status, rcx, rdx, r8, r9, r10): (u64, u64, u64, u64, u64, u64);
    // SAFETY: TDG.VP.VEINFO.GET only returns values in the registers named here (and clears
    // the VE info); it touches no guest memory and the stack is not used.
    unsafe {
        core::arch::asm!(
            ".byte 0x66, 0x0f, 0x01, 0xcc",
            inlateout("rax") TdcallLeaf::VpVeinfoGet as u64 => status,
            lateout("rcx") rcx,
            lateout("rdx") rdx,
            lateout("r8") r8,
            lateout("r9") r9,
            lateout("r10") r10,
            lateout("r11") _,
            options(nostack),
        )
    };
    if status != TdxStatus::SUCCESS {
        return Err(TdcallError { leaf: TdcallLeaf::VpVeinfoGet, status });
    }
    Ok(VeInfo::from_veinfo_get_outputs(rcx, rdx, r8, r9, r10))
}
