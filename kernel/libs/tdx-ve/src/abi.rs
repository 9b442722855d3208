//! TDX vocabulary: TDCALL leaves, TDG.VP.VMCALL sub-functions and status codes, the #VE
//! information returned by TDG.VP.VEINFO.GET, and the TD description from TDG.VP.INFO.
//!
//! Sources, checked against the Intel TDX module sources (`intel/tdx-module`,
//! `include/tdx_api_defs.h`, `src/td_dispatcher/vm_exits/tdg_vp_*.c`) where the ABI document
//! was not at hand:
//! - TDX module ABI specification, "TDCALL Leaves": RAX\[15:0\] = leaf number, RAX\[23:16\] =
//!   leaf version, RAX\[63:24\] reserved (0).
//! - TDX module ABI, TDG.VP.VMCALL: RCX\[15:0\] = GPR-select bitmap, RCX\[31:16\] = XMM-select
//!   bitmap, RCX\[63:32\] reserved (0). The module rejects a bitmap that selects RAX, RCX or RSP
//!   (bits 0, 1, 4), and RBP (bit 5) too when the TD's NO_RBP_MOD configuration flag is set.
//!   GPRs that are not selected reach the host VMM as 0.
//! - Intel GHCI ("Guest-Host-Communication Interface"), TDG.VP.VMCALL sub-functions: R10 = 0 for
//!   a standard GHCI call, R11 = sub-function; on return R10 = status, R11 = output.
//! - TDX module ABI, TDG.VP.VEINFO.GET and TDG.VP.INFO: see [`VeInfo`] and [`TdInfo`].
//! - Exit reasons are the VMX basic exit reasons (Intel SDM Vol. 3D, Appendix C "VMX Basic Exit
//!   Reasons").

use core::fmt;

use crate::regs::Gpr;

/// The #VE exception vector (Intel SDM Vol. 3A, "Exception and Interrupt Vectors").
pub const VE_VECTOR: u8 = 20;

/// A TDCALL leaf number, passed in RAX\[15:0\].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u64)]
pub enum TdcallLeaf {
    /// TDG.VP.VMCALL: call the host VMM.
    VpVmcall = 0,
    /// TDG.VP.INFO: get the TD execution environment.
    VpInfo = 1,
    /// TDG.MR.RTMR.EXTEND: extend a runtime measurement register.
    MrRtmrExtend = 2,
    /// TDG.VP.VEINFO.GET: get the information of the pending #VE.
    VpVeinfoGet = 3,
    /// TDG.MR.REPORT: create a TDREPORT.
    MrReport = 4,
    /// TDG.VP.CPUIDVE.SET: choose which CPUIDs raise #VE.
    VpCpuidveSet = 5,
    /// TDG.MEM.PAGE.ACCEPT: accept a pending private page.
    MemPageAccept = 6,
    /// TDG.VM.RD: read a TD-scope metadata field.
    VmRd = 7,
    /// TDG.VM.WR: write a TD-scope metadata field.
    VmWr = 8,
    /// TDG.VP.RD: read a VCPU-scope metadata field.
    VpRd = 9,
    /// TDG.VP.WR: write a VCPU-scope metadata field.
    VpWr = 10,
}

/// A RAX value that does not name a [`TdcallLeaf`] this crate knows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UnknownTdcallLeaf(pub u64);

impl TdcallLeaf {
    /// The leaf number, as loaded into RAX for version 0 of the leaf.
    pub const fn code(self) -> u64 {
        self as u64
    }

    /// Splits a TDCALL RAX into leaf and version (RAX\[23:16\]). Fails on an unknown leaf number
    /// or when a reserved bit (RAX\[63:24\]) is set, as the TDX module would.
    pub const fn from_rax(rax: u64) -> Result<(TdcallLeaf, u8), UnknownTdcallLeaf> {
        if rax >> 24 != 0 {
            return Err(UnknownTdcallLeaf(rax));
        }
        let version = (rax >> 16) as u8;
        match TdcallLeaf::from_code(rax & 0xffff) {
            Some(leaf) => Ok((leaf, version)),
            None => Err(UnknownTdcallLeaf(rax)),
        }
    }

    const fn from_code(code: u64) -> Option<TdcallLeaf> {
        Some(match code {
            0 => TdcallLeaf::VpVmcall,
            1 => TdcallLeaf::VpInfo,
            2 => TdcallLeaf::MrRtmrExtend,
            3 => TdcallLeaf::VpVeinfoGet,
            4 => TdcallLeaf::MrReport,
            5 => TdcallLeaf::VpCpuidveSet,
            6 => TdcallLeaf::MemPageAccept,
            7 => TdcallLeaf::VmRd,
            8 => TdcallLeaf::VmWr,
            9 => TdcallLeaf::VpRd,
            10 => TdcallLeaf::VpWr,
            _ => return None,
        })
    }
}

impl TryFrom<u64> for TdcallLeaf {
    type Error = UnknownTdcallLeaf;

    /// Accepts exactly the version-0 leaf numbers; use [`TdcallLeaf::from_rax`] for a RAX that
    /// may carry a leaf version.
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        TdcallLeaf::from_code(value).ok_or(UnknownTdcallLeaf(value))
    }
}

/// TDCALL completion status (RAX after TDCALL), as far as this kernel distinguishes it.
///
/// Values from the Intel TDX module source, `include/auto_gen_1_5/tdx_error_codes_defs.h`
/// (also Linux `arch/x86/include/asm/shared/tdx_errno.h`). Bits 63:32 identify the status;
/// bits 31:0 carry details such as the operand ID, so [`TdxStatus::from`] compares the class only.
/// Note that 0xC000_0700_0000_0000 is TDX_VCPU_STATE_INCORRECT, not "no VE info".
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum TdxStatus {
    /// TDX_SUCCESS.
    Success,
    /// TDX_OPERAND_INVALID: a bad leaf, operand or TDG.VP.VMCALL register bitmap.
    OperandInvalid,
    /// TDX_NO_VALID_VE_INFO: TDG.VP.VEINFO.GET with no #VE pending (e.g. a second call).
    NoValidVeInfo,
    /// Any other status, kept whole.
    Other(u64),
}

impl TdxStatus {
    /// TDX_SUCCESS.
    pub const SUCCESS: u64 = 0;
    /// TDX_OPERAND_INVALID, with operand details 0.
    pub const OPERAND_INVALID: u64 = 0xC000_0100_0000_0000;
    /// TDX_NO_VALID_VE_INFO.
    pub const NO_VALID_VE_INFO: u64 = 0xC000_0704_0000_0000;
    /// The bits that identify a status; the rest are details.
    pub const CLASS_MASK: u64 = 0xFFFF_FFFF_0000_0000;

    /// The status value in RAX.
    pub const fn code(self) -> u64 {
        match self {
            TdxStatus::Success => Self::SUCCESS,
            TdxStatus::OperandInvalid => Self::OPERAND_INVALID,
            TdxStatus::NoValidVeInfo => Self::NO_VALID_VE_INFO,
            TdxStatus::Other(code) => code,
        }
    }
}

impl From<u64> for TdxStatus {
    fn from(rax: u64) -> Self {
        if rax == Self::SUCCESS {
            return TdxStatus::Success;
        }
        match rax & Self::CLASS_MASK {
            Self::OPERAND_INVALID => TdxStatus::OperandInvalid,
            Self::NO_VALID_VE_INFO => TdxStatus::NoValidVeInfo,
            _ => TdxStatus::Other(rax),
        }
    }
}

/// The status of a TDG.VP.VMCALL sub-function, returned by the host in R10 (GHCI, "TDCALL
/// [TDG.VP.VMCALL] Status Codes"). It comes from the untrusted host: a caller treats anything
/// but [`TdVmCallStatus::Success`] as a failure.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum TdVmCallStatus {
    /// TDG.VP.VMCALL_SUCCESS (0).
    Success,
    /// TDG.VP.VMCALL_RETRY (1).
    Retry,
    /// TDG.VP.VMCALL_INVALID_OPERAND (0x8000_0000_0000_0000).
    InvalidOperand,
    /// TDG.VP.VMCALL_GPA_INUSE (0x8000_0000_0000_0001).
    GpaInUse,
    /// TDG.VP.VMCALL_ALIGN_ERROR (0x8000_0000_0000_0002).
    AlignError,
    /// Any other value. `Unknown` of a value listed above is never produced by `From<u64>`.
    Unknown(u64),
}

impl TdVmCallStatus {
    /// The raw R10 value.
    pub const fn code(self) -> u64 {
        match self {
            TdVmCallStatus::Success => 0,
            TdVmCallStatus::Retry => 1,
            TdVmCallStatus::InvalidOperand => 0x8000_0000_0000_0000,
            TdVmCallStatus::GpaInUse => 0x8000_0000_0000_0001,
            TdVmCallStatus::AlignError => 0x8000_0000_0000_0002,
            TdVmCallStatus::Unknown(code) => code,
        }
    }
}

impl From<u64> for TdVmCallStatus {
    fn from(code: u64) -> Self {
        match code {
            0 => TdVmCallStatus::Success,
            1 => TdVmCallStatus::Retry,
            0x8000_0000_0000_0000 => TdVmCallStatus::InvalidOperand,
            0x8000_0000_0000_0001 => TdVmCallStatus::GpaInUse,
            0x8000_0000_0000_0002 => TdVmCallStatus::AlignError,
            other => TdVmCallStatus::Unknown(other),
        }
    }
}

/// A VMX basic exit reason as reported in the #VE information (Intel SDM Vol. 3D, Appendix C).
/// Only the reasons a TD can see in a #VE are named.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u32)]
pub enum ExitReason {
    /// CPUID (10).
    Cpuid = 10,
    /// HLT (12).
    Hlt = 12,
    /// INVD (13).
    Invd = 13,
    /// VMCALL (18).
    Vmcall = 18,
    /// I/O instruction: IN, OUT, INS, OUTS (30).
    Io = 30,
    /// RDMSR (31).
    Rdmsr = 31,
    /// WRMSR (32).
    Wrmsr = 32,
    /// MWAIT (36).
    Mwait = 36,
    /// MONITOR (39).
    Monitor = 39,
    /// EPT violation: an access to a shared (MMIO) or pending page (48).
    EptViolation = 48,
    /// WBINVD or WBNOINVD (54).
    Wbinvd = 54,
}

/// An exit reason that [`ExitReason`] does not name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UnknownExitReason(pub u32);

impl ExitReason {
    /// The raw 32-bit exit reason.
    pub const fn code(self) -> u32 {
        self as u32
    }
}

impl TryFrom<u32> for ExitReason {
    type Error = UnknownExitReason;

    /// Matches the whole 32-bit value: a value with any of the VMX flag bits (31:16) set is
    /// not a plain basic exit reason and is reported as unknown rather than silently masked.
    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Ok(match value {
            10 => ExitReason::Cpuid,
            12 => ExitReason::Hlt,
            13 => ExitReason::Invd,
            18 => ExitReason::Vmcall,
            30 => ExitReason::Io,
            31 => ExitReason::Rdmsr,
            32 => ExitReason::Wrmsr,
            36 => ExitReason::Mwait,
            39 => ExitReason::Monitor,
            48 => ExitReason::EptViolation,
            54 => ExitReason::Wbinvd,
            _ => return Err(UnknownExitReason(value)),
        })
    }
}

/// A GHCI TDG.VP.VMCALL sub-function, passed in R11 with R10 = 0. The instruction-emulation
/// sub-functions reuse the VMX exit-reason numbers; the others start at 0x10000.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u64)]
pub enum TdVmCallSubFunction {
    /// Instruction.CPUID: R12 = EAX, R13 = ECX; out R12..R15 = EAX, EBX, ECX, EDX.
    Cpuid = 10,
    /// Instruction.HLT: R12 = "interrupts blocked" flag.
    Hlt = 12,
    /// Instruction.IO: R12 = size, R13 = direction (0 = IN, 1 = OUT), R14 = port,
    /// R15 = value to write; out R11 = value read.
    Io = 30,
    /// Instruction.RDMSR: R12 = MSR index; out R11 = value.
    Rdmsr = 31,
    /// Instruction.WRMSR: R12 = MSR index, R13 = value.
    Wrmsr = 32,
    /// #VE.RequestMMIO: R12 = size, R13 = direction, R14 = GPA, R15 = value; out R11 = value.
    RequestMmio = 48,
    /// GetTdVmCallInfo: R12 = leaf; out R11..R14.
    GetTdVmCallInfo = 0x10000,
    /// MapGPA: R12 = GPA (with the shared bit chosen), R13 = size; out R11 = GPA to retry from.
    MapGpa = 0x10001,
    /// GetQuote: R12 = shared GPA of the buffer, R13 = size.
    GetQuote = 0x10002,
    /// ReportFatalError: R12 = error code, R13 = GPA (valid if R12 bit 63), message bytes in
    /// R14, R15, RBX, RDI, RSI, R8, R9, RDX.
    ReportFatalError = 0x10003,
    /// SetupEventNotifyInterrupt: R12 = vector.
    SetupEventNotifyInterrupt = 0x10004,
}

/// An R11 value that [`TdVmCallSubFunction`] does not name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UnknownSubFunction(pub u64);

impl TdVmCallSubFunction {
    /// The raw R11 value.
    pub const fn code(self) -> u64 {
        self as u64
    }

    /// The smallest GPR bitmap (RCX of TDG.VP.VMCALL) with which this sub-function can be
    /// called: the registers the GHCI defines as its inputs and outputs, R10 and R11 included.
    pub const fn register_bitmap(self) -> u64 {
        match self {
            TdVmCallSubFunction::Cpuid => VMCALL_BITMAP_CPUID,
            TdVmCallSubFunction::Hlt => VMCALL_BITMAP_HLT,
            TdVmCallSubFunction::Io => VMCALL_BITMAP_IO,
            TdVmCallSubFunction::Rdmsr => VMCALL_BITMAP_RDMSR,
            TdVmCallSubFunction::Wrmsr => VMCALL_BITMAP_WRMSR,
            TdVmCallSubFunction::RequestMmio => VMCALL_BITMAP_REQUEST_MMIO,
            TdVmCallSubFunction::GetTdVmCallInfo => VMCALL_BITMAP_GET_TD_VM_CALL_INFO,
            TdVmCallSubFunction::MapGpa => VMCALL_BITMAP_MAP_GPA,
            TdVmCallSubFunction::GetQuote => VMCALL_BITMAP_GET_QUOTE,
            TdVmCallSubFunction::ReportFatalError => VMCALL_BITMAP_REPORT_FATAL_ERROR,
            TdVmCallSubFunction::SetupEventNotifyInterrupt => {
                VMCALL_BITMAP_SETUP_EVENT_NOTIFY_INTERRUPT
            }
        }
    }
}

impl TryFrom<u64> for TdVmCallSubFunction {
    type Error = UnknownSubFunction;

    fn try_from(value: u64) -> Result<Self, Self::Error> {
        Ok(match value {
            10 => TdVmCallSubFunction::Cpuid,
            12 => TdVmCallSubFunction::Hlt,
            30 => TdVmCallSubFunction::Io,
            31 => TdVmCallSubFunction::Rdmsr,
            32 => TdVmCallSubFunction::Wrmsr,
            48 => TdVmCallSubFunction::RequestMmio,
            0x10000 => TdVmCallSubFunction::GetTdVmCallInfo,
            0x10001 => TdVmCallSubFunction::MapGpa,
            0x10002 => TdVmCallSubFunction::GetQuote,
            0x10003 => TdVmCallSubFunction::ReportFatalError,
            0x10004 => TdVmCallSubFunction::SetupEventNotifyInterrupt,
            _ => return Err(UnknownSubFunction(value)),
        })
    }
}

/// The TDG.VP.VMCALL GPR bitmap (RCX\[15:0\]) that exposes exactly `regs` to the host VMM.
///
/// This does not police its input; check the result with [`vmcall_bitmap_is_allowed`] (the
/// constants below are checked at compile time).
#[must_use]
pub const fn vmcall_register_bitmap(regs: &[Gpr]) -> u64 {
    let mut bitmap = 0;
    let mut i = 0;
    while i < regs.len() {
        bitmap |= 1 << regs[i].number();
        i += 1;
    }
    bitmap
}

/// Registers never exposed to the host: RAX and RCX carry the TDCALL leaf and the bitmap
/// itself, and the TDX module rejects RSP (and RBP when NO_RBP_MOD is set); a guest gains nothing
/// by showing the host its stack either way, so RBP is refused unconditionally.
pub const VMCALL_FORBIDDEN_GPRS: u64 =
    vmcall_register_bitmap(&[Gpr::Rax, Gpr::Rcx, Gpr::Rsp, Gpr::Rbp]);

/// Whether `bitmap` is acceptable as the RCX of a TDG.VP.VMCALL made by this kernel: no
/// forbidden GPR, no XMM register (RCX\[31:16\]) and no reserved bit (RCX\[63:32\]).
pub const fn vmcall_bitmap_is_allowed(bitmap: u64) -> bool {
    bitmap & VMCALL_FORBIDDEN_GPRS == 0 && bitmap >> 16 == 0
}

/// Instruction.CPUID: R10 status, R11 sub-function, R12..R15 leaf/sub-leaf in, EAX..EDX out.
pub const VMCALL_BITMAP_CPUID: u64 =
    vmcall_register_bitmap(&[Gpr::R10, Gpr::R11, Gpr::R12, Gpr::R13, Gpr::R14, Gpr::R15]);
/// Instruction.HLT: R10 status, R11 sub-function, R12 interrupts-blocked flag.
pub const VMCALL_BITMAP_HLT: u64 = vmcall_register_bitmap(&[Gpr::R10, Gpr::R11, Gpr::R12]);
/// Instruction.IO: R10 status, R11 sub-function in / value read out, R12 size, R13 direction,
/// R14 port, R15 value to write.
pub const VMCALL_BITMAP_IO: u64 =
    vmcall_register_bitmap(&[Gpr::R10, Gpr::R11, Gpr::R12, Gpr::R13, Gpr::R14, Gpr::R15]);
/// Instruction.RDMSR: R10 status, R11 sub-function in / value out, R12 MSR index.
pub const VMCALL_BITMAP_RDMSR: u64 = vmcall_register_bitmap(&[Gpr::R10, Gpr::R11, Gpr::R12]);
/// Instruction.WRMSR: R10 status, R11 sub-function, R12 MSR index, R13 value.
pub const VMCALL_BITMAP_WRMSR: u64 =
    vmcall_register_bitmap(&[Gpr::R10, Gpr::R11, Gpr::R12, Gpr::R13]);
/// #VE.RequestMMIO: R10 status, R11 sub-function in / value out, R12 size, R13 direction,
/// R14 GPA, R15 value.
pub const VMCALL_BITMAP_REQUEST_MMIO: u64 =
    vmcall_register_bitmap(&[Gpr::R10, Gpr::R11, Gpr::R12, Gpr::R13, Gpr::R14, Gpr::R15]);
/// GetTdVmCallInfo: R10 status, R11 sub-function in / output, R12 leaf in / output, R13, R14.
pub const VMCALL_BITMAP_GET_TD_VM_CALL_INFO: u64 =
    vmcall_register_bitmap(&[Gpr::R10, Gpr::R11, Gpr::R12, Gpr::R13, Gpr::R14]);
/// MapGPA: R10 status, R11 sub-function in / failing GPA out, R12 GPA, R13 size.
pub const VMCALL_BITMAP_MAP_GPA: u64 =
    vmcall_register_bitmap(&[Gpr::R10, Gpr::R11, Gpr::R12, Gpr::R13]);
/// GetQuote: R10 status, R11 sub-function, R12 shared GPA, R13 size.
pub const VMCALL_BITMAP_GET_QUOTE: u64 =
    vmcall_register_bitmap(&[Gpr::R10, Gpr::R11, Gpr::R12, Gpr::R13]);
/// ReportFatalError: R10, R11, R12 error code, R13 GPA, and the eight message registers R14,
/// R15, RBX, RDI, RSI, R8, R9, RDX (in that byte order).
pub const VMCALL_BITMAP_REPORT_FATAL_ERROR: u64 = vmcall_register_bitmap(&[
    Gpr::R10,
    Gpr::R11,
    Gpr::R12,
    Gpr::R13,
    Gpr::R14,
    Gpr::R15,
    Gpr::Rbx,
    Gpr::Rdi,
    Gpr::Rsi,
    Gpr::R8,
    Gpr::R9,
    Gpr::Rdx,
]);
/// SetupEventNotifyInterrupt: R10 status, R11 sub-function, R12 vector.
pub const VMCALL_BITMAP_SETUP_EVENT_NOTIFY_INTERRUPT: u64 =
    vmcall_register_bitmap(&[Gpr::R10, Gpr::R11, Gpr::R12]);

// A forbidden register in any of the bitmaps above is a build error, not a runtime surprise.
const _: () = {
    let all = [
        VMCALL_BITMAP_CPUID,
        VMCALL_BITMAP_HLT,
        VMCALL_BITMAP_IO,
        VMCALL_BITMAP_RDMSR,
        VMCALL_BITMAP_WRMSR,
        VMCALL_BITMAP_REQUEST_MMIO,
        VMCALL_BITMAP_GET_TD_VM_CALL_INFO,
        VMCALL_BITMAP_MAP_GPA,
        VMCALL_BITMAP_GET_QUOTE,
        VMCALL_BITMAP_REPORT_FATAL_ERROR,
        VMCALL_BITMAP_SETUP_EVENT_NOTIFY_INTERRUPT,
    ];
    let mut i = 0;
    while i < all.len() {
        assert!(vmcall_bitmap_is_allowed(all[i]));
        i += 1;
    }
};

/// The information of a #VE, as returned by TDG.VP.VEINFO.GET.
///
/// Output registers (TDX module ABI, TDG.VP.VEINFO.GET; module source
/// `tdg_vp_veinfo_get.c`): RCX\[31:0\] = exit reason; RDX = exit qualification; R8 = guest linear
/// address; R9 = guest physical address; R10\[31:0\] = instruction length; R10\[63:32\] =
/// instruction information. RCX\[63:32\] is 0 for leaf version 0 (RAX\[23:16\] = 0, what this
/// kernel calls); newer modules fill it with a "#VE category" when version 1 is requested, so
/// [`VeInfo::from_veinfo_get_outputs`] ignores those bits rather than reading them as part of
/// the exit reason.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct VeInfo {
    /// The VMX exit reason (see [`ExitReason`]).
    pub exit_reason: u32,
    /// The VMX exit qualification (for I/O see [`crate::io::IoExitQualification`]).
    pub exit_qualification: u64,
    /// The guest linear address, where the exit reason defines one.
    pub guest_linear_address: u64,
    /// The guest physical address (EPT violations).
    pub guest_physical_address: u64,
    /// The length of the instruction that caused the #VE. Undefined for EPT violations.
    pub instruction_length: u32,
    /// The VMX instruction-information field, where the exit reason defines one.
    pub instruction_info: u32,
}

/// The output registers of TDG.VP.VEINFO.GET, as the softtdx model loads them.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct VeInfoGetOutputs {
    /// RCX: exit reason in bits 31:0.
    pub rcx: u64,
    /// RDX: exit qualification.
    pub rdx: u64,
    /// R8: guest linear address.
    pub r8: u64,
    /// R9: guest physical address.
    pub r9: u64,
    /// R10: instruction length in bits 31:0, instruction information in bits 63:32.
    pub r10: u64,
}

impl VeInfo {
    /// Decodes the output registers of a successful TDG.VP.VEINFO.GET (version 0).
    pub const fn from_veinfo_get_outputs(rcx: u64, rdx: u64, r8: u64, r9: u64, r10: u64) -> VeInfo {
        VeInfo {
            exit_reason: rcx as u32,
            exit_qualification: rdx,
            guest_linear_address: r8,
            guest_physical_address: r9,
            instruction_length: r10 as u32,
            instruction_info: (r10 >> 32) as u32,
        }
    }

    /// The output registers a version-0 TDG.VP.VEINFO.GET returns for this information
    /// (RCX\[63:32\] = 0). Inverse of [`VeInfo::from_veinfo_get_outputs`].
    #[must_use]
    pub const fn to_outputs(&self) -> VeInfoGetOutputs {
        VeInfoGetOutputs {
            rcx: self.exit_reason as u64,
            rdx: self.exit_qualification,
            r8: self.guest_linear_address,
            r9: self.guest_physical_address,
            r10: self.instruction_length as u64 | (self.instruction_info as u64) << 32,
        }
    }

    /// The exit reason, if it is one [`ExitReason`] names.
    pub fn reason(&self) -> Result<ExitReason, UnknownExitReason> {
        ExitReason::try_from(self.exit_reason)
    }
}

/// TD attributes (TDG.VP.INFO RDX; TDX module ABI "ATTRIBUTES"). Bit positions as in the
/// module's `td_param_attributes_t`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct TdAttributes(pub u64);

impl TdAttributes {
    /// Bit 0: the TD is debuggable (its state can be read by the host). Never trust secrets
    /// to a TD with this set.
    pub const DEBUG: u64 = 1 << 0;
    /// Bit 16: ICSSD.
    pub const ICSSD: u64 = 1 << 16;
    /// Bit 27: LASS (linear-address space separation) may be enabled by the guest.
    pub const LASS: u64 = 1 << 27;
    /// Bit 28: SEPT_VE_DISABLE. An access to a pending (unaccepted) private page is a TD exit
    /// instead of a #VE.
    pub const SEPT_VE_DISABLE: u64 = 1 << 28;
    /// Bit 29: the TD may be migrated.
    pub const MIGRATABLE: u64 = 1 << 29;
    /// Bit 30: the TD may use supervisor protection keys.
    pub const PKS: u64 = 1 << 30;
    /// Bit 31: the TD may use Key Locker.
    pub const KEY_LOCKER: u64 = 1 << 31;
    /// Bit 62: TPA.
    pub const TPA: u64 = 1 << 62;
    /// Bit 63: the TD may use the performance-monitoring counters.
    pub const PERFMON: u64 = 1 << 63;

    /// Whether every bit of `mask` is set.
    pub const fn contains(self, mask: u64) -> bool {
        self.0 & mask == mask
    }

    /// [`TdAttributes::DEBUG`].
    pub const fn debug(self) -> bool {
        self.contains(Self::DEBUG)
    }

    /// [`TdAttributes::SEPT_VE_DISABLE`].
    pub const fn sept_ve_disable(self) -> bool {
        self.contains(Self::SEPT_VE_DISABLE)
    }

    /// Whether the kernel runs in a TD with these attributes, as Linux decides it
    /// (arch/x86/coco/tdx/tdx.c, `tdx_early_init`/`disable_sept_ve`, for a TDX module without
    /// the flexible pending-#VE control): without SEPT_VE_DISABLE the host can make any private
    /// page pending and raise an EPT-violation #VE wherever it likes (a #DF if it lands before
    /// TDG.VP.VEINFO.GET), so a non-debug TD refuses to run; a debug TD runs (the host can read
    /// and write its state anyway) and says so.
    pub const fn verdict(self) -> AttributesVerdict {
        match (self.debug(), self.sept_ve_disable()) {
            (true, sept_ve_disable) => AttributesVerdict::RunDebug { sept_ve_disable },
            (false, true) => AttributesVerdict::Run,
            (false, false) => AttributesVerdict::Refuse,
        }
    }
}

/// What [`TdAttributes::verdict`] decides.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AttributesVerdict {
    /// SEPT_VE_DISABLE set, not a debug TD.
    Run,
    /// A debug TD: run, and say loudly that the host can read and write its state.
    RunDebug {
        /// Whether SEPT_VE_DISABLE is set (a debug TD runs either way, with a warning if not).
        sept_ve_disable: bool,
    },
    /// SEPT_VE_DISABLE clear in a non-debug TD: stop with ReportFatalError.
    Refuse,
}

/// A GPAW that cannot give a shared bit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InvalidGpaw(pub u8);

/// The TD execution environment, from TDG.VP.INFO.
///
/// Output registers (TDX module ABI, TDG.VP.INFO; module source `tdg_vp_info.c`):
/// RCX\[5:0\] = GPAW (the module writes exactly 48 or 52 and zero above), RDX = TD attributes,
/// R8\[31:0\] = number of usable VCPUs, R8\[63:32\] = maximum VCPUs, R9\[31:0\] = this VCPU's
/// index.
/// R10 bit 0 (TDG.SYS.RD available) and R11 (reserved) are not decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct TdInfo {
    /// Guest physical address width: 48 or 52.
    pub gpaw: u8,
    /// The TD attributes.
    pub attributes: TdAttributes,
    /// Number of VCPUs that are usable (initialized).
    pub num_vcpus: u32,
    /// The TD's maximum number of VCPUs.
    pub max_vcpus: u32,
    /// This VCPU's index, from 0.
    pub vcpu_index: u32,
}

/// The output registers of TDG.VP.INFO that [`TdInfo`] describes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct VpInfoOutputs {
    /// RCX: GPAW in bits 5:0.
    pub rcx: u64,
    /// RDX: attributes.
    pub rdx: u64,
    /// R8: number of VCPUs (31:0) and maximum (63:32).
    pub r8: u64,
    /// R9: VCPU index in bits 31:0.
    pub r9: u64,
}

impl TdInfo {
    /// Decodes the output registers of a successful TDG.VP.INFO.
    pub const fn from_vp_info_outputs(rcx: u64, rdx: u64, r8: u64, r9: u64) -> TdInfo {
        TdInfo {
            gpaw: (rcx & 0x3f) as u8,
            attributes: TdAttributes(rdx),
            num_vcpus: r8 as u32,
            max_vcpus: (r8 >> 32) as u32,
            vcpu_index: r9 as u32,
        }
    }

    /// The registers TDG.VP.INFO returns for this information (for the softtdx model).
    #[must_use]
    pub const fn to_outputs(&self) -> VpInfoOutputs {
        VpInfoOutputs {
            rcx: self.gpaw as u64 & 0x3f,
            rdx: self.attributes.0,
            r8: self.num_vcpus as u64 | (self.max_vcpus as u64) << 32,
            r9: self.vcpu_index as u64,
        }
    }

    /// The shared bit of a guest physical address: `1 << (GPAW - 1)`, i.e. bit 47 or bit 51.
    ///
    /// Only the two widths the TDX module defines are accepted. Any other value means a broken
    /// or unexpected module, and a wrong shared bit would silently hand private memory to the
    /// host, so the caller must stop rather than guess.
    pub const fn shared_bit(&self) -> Result<u64, InvalidGpaw> {
        match self.gpaw {
            48 | 52 => Ok(1 << (self.gpaw - 1)),
            other => Err(InvalidGpaw(other)),
        }
    }
}

impl fmt::Display for UnknownTdcallLeaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown TDCALL leaf in RAX {:#x}", self.0)
    }
}

impl fmt::Display for UnknownExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown #VE exit reason {:#x}", self.0)
    }
}

impl fmt::Display for UnknownSubFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown TDG.VP.VMCALL sub-function {:#x}", self.0)
    }
}

impl fmt::Display for InvalidGpaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TDG.VP.INFO reported GPAW {}, expected 48 or 52", self.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn attributes_verdict_follows_linux() {
        let v = |bits| TdAttributes(bits).verdict();
        assert_eq!(v(TdAttributes::SEPT_VE_DISABLE), AttributesVerdict::Run);
        assert_eq!(v(TdAttributes::SEPT_VE_DISABLE | TdAttributes::PKS), AttributesVerdict::Run);
        assert_eq!(v(0), AttributesVerdict::Refuse);
        assert_eq!(v(TdAttributes::MIGRATABLE), AttributesVerdict::Refuse);
        assert_eq!(v(TdAttributes::DEBUG), AttributesVerdict::RunDebug { sept_ve_disable: false });
        assert_eq!(
            v(TdAttributes::DEBUG | TdAttributes::SEPT_VE_DISABLE),
            AttributesVerdict::RunDebug { sept_ve_disable: true }
        );
    }

    use super::*;
    use proptest::prelude::*;

    const ALL_SUB_FUNCTIONS: [TdVmCallSubFunction; 11] = [
        TdVmCallSubFunction::Cpuid,
        TdVmCallSubFunction::Hlt,
        TdVmCallSubFunction::Io,
        TdVmCallSubFunction::Rdmsr,
        TdVmCallSubFunction::Wrmsr,
        TdVmCallSubFunction::RequestMmio,
        TdVmCallSubFunction::GetTdVmCallInfo,
        TdVmCallSubFunction::MapGpa,
        TdVmCallSubFunction::GetQuote,
        TdVmCallSubFunction::ReportFatalError,
        TdVmCallSubFunction::SetupEventNotifyInterrupt,
    ];

    #[test]
    fn no_hypercall_bitmap_exposes_rsp_rbp_rax_or_rcx() {
        let rsp = 1 << 4;
        let rbp = 1 << 5;
        for sub_function in ALL_SUB_FUNCTIONS {
            let bitmap = sub_function.register_bitmap();
            assert_eq!(bitmap & rsp, 0, "{sub_function:?} exposes RSP");
            assert_eq!(bitmap & rbp, 0, "{sub_function:?} exposes RBP");
            assert_eq!(bitmap & 0b11, 0, "{sub_function:?} exposes RAX or RCX");
            assert_eq!(bitmap >> 16, 0, "{sub_function:?} sets XMM or reserved bits");
            // R10 (status) and R11 (sub-function) are part of every GHCI call.
            assert_eq!(bitmap & (3 << 10), 3 << 10, "{sub_function:?} misses R10/R11");
            assert!(vmcall_bitmap_is_allowed(bitmap));
        }
    }

    #[test]
    fn bitmaps_have_the_hand_computed_values() {
        assert_eq!(VMCALL_BITMAP_IO, 0xfc00);
        assert_eq!(VMCALL_BITMAP_CPUID, 0xfc00);
        assert_eq!(VMCALL_BITMAP_HLT, 0x1c00);
        assert_eq!(VMCALL_BITMAP_RDMSR, 0x1c00);
        assert_eq!(VMCALL_BITMAP_WRMSR, 0x3c00);
        assert_eq!(VMCALL_BITMAP_MAP_GPA, 0x3c00);
        // R8..R15 = 0xff00, RDX = 0x4, RBX = 0x8, RSI = 0x40, RDI = 0x80.
        assert_eq!(VMCALL_BITMAP_REPORT_FATAL_ERROR, 0xffcc);
        assert_eq!(VMCALL_FORBIDDEN_GPRS, 0b11_0011);
        assert!(!vmcall_bitmap_is_allowed(vmcall_register_bitmap(&[Gpr::R10, Gpr::Rsp])));
        assert!(!vmcall_bitmap_is_allowed(vmcall_register_bitmap(&[Gpr::Rbp])));
        assert!(!vmcall_bitmap_is_allowed(1 << 16));
    }

    #[test]
    fn sub_function_codes_round_trip() {
        for sub_function in ALL_SUB_FUNCTIONS {
            assert_eq!(TdVmCallSubFunction::try_from(sub_function.code()), Ok(sub_function));
        }
        assert_eq!(TdVmCallSubFunction::Io.code(), 0x1e);
        assert_eq!(TdVmCallSubFunction::ReportFatalError.code(), 0x10003);
        assert_eq!(TdVmCallSubFunction::try_from(0x10005), Err(UnknownSubFunction(0x10005)));
    }

    #[test]
    fn tdcall_leaves_round_trip() {
        for code in 0..=10u64 {
            let leaf = TdcallLeaf::try_from(code).unwrap();
            assert_eq!(leaf.code(), code);
            assert_eq!(TdcallLeaf::from_rax(code), Ok((leaf, 0)));
        }
        assert_eq!(TdcallLeaf::try_from(11), Err(UnknownTdcallLeaf(11)));
        assert_eq!(TdcallLeaf::VpVeinfoGet.code(), 3);
        assert_eq!(TdcallLeaf::from_rax(0x1_0003), Ok((TdcallLeaf::VpVeinfoGet, 1)));
        // A version in RAX[23:16] is not a different leaf for TryFrom, which wants version 0.
        assert!(TdcallLeaf::try_from(0x1_0003).is_err());
        assert!(TdcallLeaf::from_rax(1 << 24 | 3).is_err());
    }

    #[test]
    fn status_codes_round_trip() {
        let known = [
            (0, TdVmCallStatus::Success),
            (1, TdVmCallStatus::Retry),
            (0x8000_0000_0000_0000, TdVmCallStatus::InvalidOperand),
            (0x8000_0000_0000_0001, TdVmCallStatus::GpaInUse),
            (0x8000_0000_0000_0002, TdVmCallStatus::AlignError),
        ];
        for (code, status) in known {
            assert_eq!(TdVmCallStatus::from(code), status);
            assert_eq!(status.code(), code);
        }
        assert_eq!(TdVmCallStatus::from(2), TdVmCallStatus::Unknown(2));
        assert_eq!(TdVmCallStatus::from(u64::MAX).code(), u64::MAX);
    }

    #[test]
    fn exit_reasons_round_trip() {
        for (code, reason) in [
            (10, ExitReason::Cpuid),
            (12, ExitReason::Hlt),
            (30, ExitReason::Io),
            (31, ExitReason::Rdmsr),
            (32, ExitReason::Wrmsr),
            (48, ExitReason::EptViolation),
        ] {
            assert_eq!(ExitReason::try_from(code), Ok(reason));
            assert_eq!(reason.code(), code);
        }
        // Flag bits above the basic exit reason are not masked away.
        assert_eq!(ExitReason::try_from(30 | 1 << 31), Err(UnknownExitReason(30 | 1 << 31)));
        // The GHCI sub-function numbers for instructions are the exit reasons.
        assert_eq!(TdVmCallSubFunction::Io.code(), ExitReason::Io.code() as u64);
        assert_eq!(TdVmCallSubFunction::RequestMmio.code(), ExitReason::EptViolation.code() as u64);
    }

    #[test]
    fn ve_info_decodes_hand_made_outputs() {
        let info = VeInfo::from_veinfo_get_outputs(
            0xffff_ffff_0000_001e, // VE category in the upper half must not leak in.
            0x03f8_0003,
            0x1111,
            0x2222,
            0x0000_0123_0000_0001,
        );
        assert_eq!(info.exit_reason, 30);
        assert_eq!(info.reason(), Ok(ExitReason::Io));
        assert_eq!(info.exit_qualification, 0x03f8_0003);
        assert_eq!(info.guest_linear_address, 0x1111);
        assert_eq!(info.guest_physical_address, 0x2222);
        assert_eq!(info.instruction_length, 1);
        assert_eq!(info.instruction_info, 0x123);
    }

    #[test]
    fn td_info_decodes_hand_made_outputs() {
        let info = TdInfo::from_vp_info_outputs(52, 1 << 28 | 1, 0x0000_0008_0000_0002, 1);
        assert_eq!(info.gpaw, 52);
        assert_eq!(info.shared_bit(), Ok(1 << 51));
        assert!(info.attributes.debug());
        assert!(info.attributes.sept_ve_disable());
        assert!(!info.attributes.contains(TdAttributes::PERFMON));
        assert_eq!(info.num_vcpus, 2);
        assert_eq!(info.max_vcpus, 8);
        assert_eq!(info.vcpu_index, 1);
        let info48 = TdInfo::from_vp_info_outputs(48, 0, 0, 0);
        assert_eq!(info48.shared_bit(), Ok(0x8000_0000_0000));
        assert!(!info48.attributes.debug());
        for bad in [0u8, 1, 47, 49, 51, 53, 63] {
            let info = TdInfo::from_vp_info_outputs(bad as u64, 0, 0, 0);
            assert_eq!(info.shared_bit(), Err(InvalidGpaw(bad)));
        }
    }

    proptest! {
        #[test]
        fn ve_info_round_trips_through_outputs(
            exit_reason: u32,
            exit_qualification: u64,
            guest_linear_address: u64,
            guest_physical_address: u64,
            instruction_length: u32,
            instruction_info: u32,
        ) {
            let info = VeInfo {
                exit_reason,
                exit_qualification,
                guest_linear_address,
                guest_physical_address,
                instruction_length,
                instruction_info,
            };
            let out = info.to_outputs();
            prop_assert_eq!(out.rcx >> 32, 0);
            prop_assert_eq!(
                VeInfo::from_veinfo_get_outputs(out.rcx, out.rdx, out.r8, out.r9, out.r10),
                info
            );
        }

        #[test]
        fn td_info_round_trips_through_outputs(
            gpaw in 0u8..64,
            attributes: u64,
            num_vcpus: u32,
            max_vcpus: u32,
            vcpu_index: u32,
        ) {
            let info = TdInfo {
                gpaw,
                attributes: TdAttributes(attributes),
                num_vcpus,
                max_vcpus,
                vcpu_index,
            };
            let out = info.to_outputs();
            prop_assert_eq!(TdInfo::from_vp_info_outputs(out.rcx, out.rdx, out.r8, out.r9), info);
        }
    }

    #[test]
    fn tdx_status_values_match_the_module_headers() {
        // tdx_error_codes_defs.h: TDX_OPERAND_INVALID 0xC000010000000000,
        // TDX_NO_VALID_VE_INFO 0xC000070400000000, TDX_VCPU_STATE_INCORRECT 0xC000070000000000.
        assert_eq!(TdxStatus::from(0), TdxStatus::Success);
        assert_eq!(TdxStatus::from(0xC000_0100_0000_0000), TdxStatus::OperandInvalid);
        assert_eq!(TdxStatus::from(0xC000_0100_0000_0003), TdxStatus::OperandInvalid);
        assert_eq!(TdxStatus::from(0xC000_0704_0000_0000), TdxStatus::NoValidVeInfo);
        assert_eq!(TdxStatus::from(0xC000_0700_0000_0000), TdxStatus::Other(0xC000_0700_0000_0000));
        assert_eq!(TdxStatus::NoValidVeInfo.code(), 0xC000_0704_0000_0000);
    }
}
