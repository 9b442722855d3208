//! What the TDX module does with each instruction a TD guest executes: native, #VE (with the exit
//! reason VE info would report), #GP or #UD, per module version. One table for every user: the
//! boot-path audit (`cargo xtask td-audit`) and, later, the softtdx model.
//!
//! Every rule cites the TDX module source it comes from (intel/tdx-module and its mirror
//! niooss-ledger/tdx-module), as collected in `../shared/tdx-module/README.md` (sections named
//! "README 1.2" etc. below) and `msr-table.json`; [`msr_table`] is generated from that JSON.
//!
//! "Native" means the instruction completes without a #VE or #GP from the module: executed by
//! the CPU, or emulated by the module (CPUID leaves it answers). Architectural faults that the CPU
//! raises before any VM exit (CPL checks, reserved bits, read-only MSRs) are not modelled: the
//! same instruction faults the same way outside a TD. Only L1 (non-partitioned) TDs are covered.
//!
//! Where the outcome depends on something the caller may not know (an operand, a value, the TD's
//! configuration such as TD_CTLS.REDUCE_VE or ATTRIBUTES.PERFMON), the rule says
//! [`Outcome::DependsOn`] with every outcome that can happen. A caller that wants to be
//! conservative treats anything other than [`Outcome::Native`] in every [`ModuleVersion`] as
//! unsafe ([`is_native_in_every_version`]).

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(any(feature = "iced", test))]
pub mod iced;
pub mod msr_table;

/// Module versions whose behaviour differs for some instruction (README 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModuleVersion {
    /// TDX module 1.0 (niooss-ledger/tdx-module@9359de5, TDX_1.0_V1.00).
    V1_0,
    /// TDX module 1.5.01 (intel/tdx-module@72d8cff).
    V1_5_01,
    /// TDX module 1.5.05 up to 1.5.11 (niooss-ledger/tdx-module@f99767b): MWAIT/MONITOR are #UD.
    /// Its MSR table is read as 1.5.01's (README 1.5 lists the one difference, x2APIC 0x802).
    V1_5_05,
    /// TDX module 1.5.12 and later, and 2.0.x (intel/tdx-module@1666adc4 2.0.08 and later).
    Newest,
}

/// Every version, oldest first.
pub const ALL_VERSIONS: [ModuleVersion; 4] =
    [ModuleVersion::V1_0, ModuleVersion::V1_5_01, ModuleVersion::V1_5_05, ModuleVersion::Newest];

impl ModuleVersion {
    /// A short name for reports ("1.0", "1.5.01", "1.5.05", "1.5.12+/2.0").
    pub const fn name(self) -> &'static str {
        match self {
            ModuleVersion::V1_0 => "1.0",
            ModuleVersion::V1_5_01 => "1.5.01",
            ModuleVersion::V1_5_05 => "1.5.05",
            ModuleVersion::Newest => "1.5.12+/2.0",
        }
    }
}

/// A set of possible results, as bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Outcomes(u8);

/// Completes without #VE or #GP.
pub const N: Outcomes = Outcomes(1);
/// #VE.
pub const V: Outcomes = Outcomes(2);
/// #GP(0).
pub const G: Outcomes = Outcomes(4);
/// #UD.
pub const U: Outcomes = Outcomes(8);
/// Native or #VE.
pub const NV: Outcomes = Outcomes(3);
/// Native or #GP.
pub const NG: Outcomes = Outcomes(5);
/// #VE or #GP.
pub const VG: Outcomes = Outcomes(6);
/// Native, #VE or #GP.
pub const NVG: Outcomes = Outcomes(7);

impl core::ops::BitOr for Outcomes {
    type Output = Outcomes;
    fn bitor(self, other: Outcomes) -> Outcomes {
        Outcomes(self.0 | other.0)
    }
}

impl Outcomes {
    /// Whether every result in `other` is possible in `self`.
    pub const fn contains(self, other: Outcomes) -> bool {
        self.0 & other.0 == other.0
    }
}

/// What the possible results depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Condition {
    /// The operand (MSR in ECX, CPUID leaf in EAX, subleaf in ECX) is not known.
    UnknownOperand,
    /// The value written (or its relation to the current value) is not known well enough.
    Value,
    /// The TD's configuration: TD_CTLS.REDUCE_VE, ATTRIBUTES, XFAM, virtual CPUID bits.
    TdConfiguration,
}

/// What a TD does with one instruction under one module version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Completes with no #VE or #GP from the module.
    Native,
    /// #VE, with this basic exit reason in TDG.VP.VEINFO.GET's RCX.
    Ve {
        /// The VMX basic exit reason.
        exit_reason: u16,
    },
    /// #GP(0).
    Gp,
    /// #UD.
    Ud,
    /// One of `possible`, depending on `on`; a #VE would report `exit_reason`.
    DependsOn {
        /// What decides it.
        on: Condition,
        /// Every result that can happen.
        possible: Outcomes,
        /// The exit reason of the #VE among `possible` (0 if none).
        exit_reason: u16,
    },
}

impl Outcome {
    /// Every result this outcome allows.
    pub const fn possible(self) -> Outcomes {
        match self {
            Outcome::Native => N,
            Outcome::Ve { .. } => V,
            Outcome::Gp => G,
            Outcome::Ud => U,
            Outcome::DependsOn { possible, .. } => possible,
        }
    }

    /// Builds the outcome for a set of possible results.
    pub const fn from_set(possible: Outcomes, on: Condition, exit_reason: u16) -> Outcome {
        match possible.0 {
            1 => Outcome::Native,
            2 => Outcome::Ve { exit_reason },
            4 => Outcome::Gp,
            8 => Outcome::Ud,
            _ => Outcome::DependsOn { on, possible, exit_reason },
        }
    }
}

/// A rule: the outcome and the source it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// What happens.
    pub outcome: Outcome,
    /// Where in the TDX module sources this comes from.
    pub source: &'static str,
}

/// What is known about a value written to an MSR or a control register, bit by bit.
///
/// `kept` bits are known to equal what reading the same register (RDMSR of the same MSR, MOV
/// from the same CR) returned, as in read-modify-write code; `ones`/`zeros` are known constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WrittenValue {
    /// Bits known to be 1.
    pub ones: u64,
    /// Bits known to be 0.
    pub zeros: u64,
    /// Bits known to be unchanged from the value read.
    pub kept: u64,
}

impl WrittenValue {
    /// Nothing is known.
    pub const UNKNOWN: WrittenValue = WrittenValue { ones: 0, zeros: 0, kept: 0 };

    /// A known constant.
    pub const fn constant(value: u64) -> WrittenValue {
        WrittenValue { ones: value, zeros: !value, kept: 0 }
    }

    /// The value read, with `set` bits ORed in and `clear` bits cleared.
    pub const fn read_modify(set: u64, clear: u64) -> WrittenValue {
        WrittenValue { ones: set, zeros: clear & !set, kept: !(set | clear) }
    }

    /// Bits that may differ from the value read.
    pub const fn may_change(self) -> u64 {
        !self.kept
    }
}

/// An instruction a TD may treat differently from bare metal, with what is known of its operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instruction {
    /// IN, OUT, INS, OUTS (any port, any width, with or without REP).
    PortIo,
    /// HLT.
    Hlt,
    /// INVD.
    Invd,
    /// WBINVD or WBNOINVD.
    Wbinvd,
    /// VMCALL.
    Vmcall,
    /// MWAIT.
    Mwait,
    /// MONITOR.
    Monitor,
    /// PCONFIG.
    Pconfig,
    /// RDPMC.
    Rdpmc,
    /// VMX root instructions: VMCLEAR, VMLAUNCH, VMPTRLD, VMPTRST, VMREAD, VMRESUME, VMWRITE,
    /// VMXOFF, VMXON, INVEPT, INVVPID, VMFUNC.
    Vmx,
    /// GETSEC.
    Getsec,
    /// RSM.
    Rsm,
    /// ENCLS.
    Encls,
    /// ENCLV.
    Enclv,
    /// SEAMCALL.
    Seamcall,
    /// TDCALL.
    Tdcall,
    /// XSETBV.
    Xsetbv,
    /// CPUID with the leaf (EAX) and subleaf (ECX) when known.
    Cpuid {
        /// EAX.
        leaf: Option<u32>,
        /// ECX.
        subleaf: Option<u32>,
    },
    /// RDMSR of the MSR in ECX, when known.
    Rdmsr {
        /// ECX.
        msr: Option<u32>,
    },
    /// WRMSR of the MSR in ECX, when known, with what is known of EDX:EAX.
    Wrmsr {
        /// ECX.
        msr: Option<u32>,
        /// EDX:EAX.
        value: WrittenValue,
    },
    /// MOV to CR0 (or LMSW).
    MovToCr0(WrittenValue),
    /// MOV to CR4.
    MovToCr4(WrittenValue),
}

/// VMX basic exit reasons (Intel SDM Vol. 3D appendix C; tdx-module `vmcs_defs.h` L230-306).
pub mod exit_reason {
    /// CPUID.
    pub const CPUID: u16 = 10;
    /// HLT.
    pub const HLT: u16 = 12;
    /// INVD.
    pub const INVD: u16 = 13;
    /// VMCALL.
    pub const VMCALL: u16 = 18;
    /// MOV to/from CR, LMSW, CLTS.
    pub const CR_ACCESS: u16 = 28;
    /// IN, OUT, INS, OUTS.
    pub const IO: u16 = 30;
    /// RDMSR.
    pub const RDMSR: u16 = 31;
    /// WRMSR.
    pub const WRMSR: u16 = 32;
    /// MWAIT.
    pub const MWAIT: u16 = 36;
    /// MONITOR.
    pub const MONITOR: u16 = 39;
    /// WBINVD / WBNOINVD.
    pub const WBINVD: u16 = 54;
    /// PCONFIG.
    pub const PCONFIG: u16 = 65;
}

use exit_reason as er;
use ModuleVersion::*;

const SRC_EXITS: &str = "tdx-module 1.5.01 src/td_dispatcher/tdx_td_dispatcher.c L745-915, \
     vmcs_defs.h L45-66 (unconditional I/O, HLT, WBINVD exiting) (README 4)";
const SRC_MWAIT: &str = "1.0/1.5.01 tdx_td_dispatcher.c: #VE; 1.5.05 dispatcher L749-751: #UD; \
     td_vmcs_init.c L216-218: no exit when virtual CPUID.MONITOR=1 (README 4)";
const SRC_PCONFIG: &str = "td_vmcs_init.c L220-221 en_pconfig = virtual CPUID PCONFIG: #VE if \
     enabled, else #UD (README 4)";
const SRC_RDPMC: &str = "td_other_exits.c td_rdpmc_exit L44-66: #GP(0) if ATTRIBUTES.PERFMON=0, \
     no exit if 1 (README 4)";
const SRC_UD: &str = "tdx_td_dispatcher.c: VMX instructions, GETSEC, RSM, ENCLS (exiting bitmap \
     all 1s, td_vmcs_init.c L85), ENCLV, SEAMCALL inject #UD for L1 (README 4)";
const SRC_TDCALL: &str = "TDCALL is the guest-to-module interface (tdx_td_dispatcher.c); not an \
     exit that faults (README 4)";
const SRC_XSETBV: &str = "td_xsetbv.c td_xsetbv_instruction_exit L42-76, helpers.c \
     check_guest_xcr0_value L1540-1569: emulated or #GP(0), never #VE (README 3.3)";
const SRC_CPUID: &str = "1.5.01 td_cpuid.c td_cpuid_exit L45-187 with \
     include/auto_gen/cpuid_configurations.c; newest 2.0.08 td_cpuid.c (README 2.1, 2.3)";
const SRC_CPUID_HV: &str = "td_cpuid.c: leaves 0x40000000-0x4FFFFFFF are never in \
     cpuid_lookup[] (1.5.01 L66-84) and checked first in 2.0.08 -> #VE exit reason 10 (README 2)";
const SRC_CPUID_21: &str = "cpuid_configurations.c entry [53]: only 0x21 subleaf 0 is listed \
     (\"IntelTDX    \"); other subleaves #VE (td_cpuid.c L76-84) (README 2.1)";
const SRC_CPUID_0: &str = "cpuid_configurations.c entry [10]: leaf 0 answered by the module \
     (EAX=0x23, GenuineIntel) (README 2.1)";
const SRC_CR0: &str = "1.5.01 td_vmcs_init.c L277-316 (CR0 guest/host mask and read shadow), \
     helpers.c write_guest_cr0 L1248-1305 via td_other_exits.c td_cr_access_exit (README 3.1)";
const SRC_CR4: &str = "1.5.01 td_vmcs_init.c L318-380 (CR4 mask, read shadow FIXED0&~VMXE|MCE), \
     helpers.c write_guest_cr4 L1336-1378; 2.0.18 e69a4391 write_guest_cr4 REDUCE_VE (README 3.2)";
const SRC_MSR_OUTSIDE: &str = "td_msr_access.c rd_wr_msr_generic_checks / \
     is_msr_covered_by_bitmap (1.5.01 L63-99, 2.0.08): outside 0x0-0x1FFF and \
     0xC0000000-0xC0001FFF always #VE (README 1.1)";
const SRC_MSR_DEFAULT: &str = "td_msr_access.c rd_wr_msr_generic_case, msr_lookup_ptr == NULL: \
     1.0/1.5.01/1.5.05 #VE; 1.5.12+/2.0 #GP if TD_CTLS.REDUCE_VE else #VE (README 1.1)";
const SRC_MSR_TABLE: &str = "msr_config_lookup.c msr_lookup[] (2.0.08 intel/tdx-module@1666adc4 \
     include/auto_gen_2_0; 1.5.01 and 1.0 columns from msr-table.json), semantics \
     td_msr_access.c td_rdmsr_exit/td_wrmsr_exit (README 1.4); see msr_table::MsrRow";
const SRC_EFER: &str = "1.5.01 td_msr_access.c wrmsr_ia32_efer L232-266 (2.0.08 same): write \
     emulated, succeeds iff only SCE changes (LMA ignored), else #VE; 1.0 niooss@9359de5 \
     msr_config_lookup.c entry 121 FIXED_01: every write #VE (README 1.2)";

/// One row of the generated MSR table: RDMSR/WRMSR results for MSRs `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrRow {
    /// First MSR of the entry.
    pub first: u32,
    /// Last MSR of the entry.
    pub last: u32,
    /// The module's name for it.
    pub name: &'static str,
    /// Index in `msr_lookup[]` of intel/tdx-module@1666adc4 include/auto_gen_2_0/msr_config_lookup.c.
    pub lookup_2_0_08: u16,
    /// [RDMSR, WRMSR] in 1.5.12+/2.0.x, every result the TD configuration allows.
    pub newest: [Outcomes; 2],
    /// [RDMSR, WRMSR] in 1.5.01 (the capable-TD value; 1.5.05 reads the same table).
    pub v1_5_01: [Outcomes; 2],
    /// [RDMSR, WRMSR] in 1.0.
    pub v1_0: [Outcomes; 2],
}

/// The IA32_EFER MSR.
pub const IA32_EFER: u32 = 0xC000_0080;
const EFER_SCE: u64 = 1 << 0;
const EFER_LMA: u64 = 1 << 10;

/// The generated row for `msr`, if the module's table names it.
pub fn msr_row(msr: u32) -> Option<&'static MsrRow> {
    let rows = &msr_table::MSR_ROWS;
    let index = rows.partition_point(|row| row.last < msr);
    rows.get(index).filter(|row| row.first <= msr)
}

/// Whether `msr` lies in one of the two MSR-bitmap ranges (vmcs_defs.h L666-674).
pub const fn msr_in_bitmap(msr: u32) -> bool {
    msr <= 0x1FFF || (msr >= 0xC000_0000 && msr <= 0xC000_1FFF)
}

fn msr_rule(msr: Option<u32>, write: Option<WrittenValue>, version: ModuleVersion) -> Rule {
    let reason = if write.is_some() { er::WRMSR } else { er::RDMSR };
    let Some(msr) = msr else {
        return Rule {
            outcome: Outcome::DependsOn {
                on: Condition::UnknownOperand,
                possible: N | V | G,
                exit_reason: reason,
            },
            source: SRC_MSR_TABLE,
        };
    };
    if !msr_in_bitmap(msr) {
        return Rule { outcome: Outcome::Ve { exit_reason: reason }, source: SRC_MSR_OUTSIDE };
    }
    if msr == IA32_EFER {
        if let Some(value) = write {
            let outcome = match version {
                V1_0 => Outcome::Ve { exit_reason: er::WRMSR },
                _ if value.may_change() & !(EFER_SCE | EFER_LMA) == 0 => Outcome::Native,
                _ => Outcome::DependsOn {
                    on: Condition::Value,
                    possible: N | V,
                    exit_reason: er::WRMSR,
                },
            };
            return Rule { outcome, source: SRC_EFER };
        }
    }
    let column = usize::from(write.is_some());
    let Some(row) = msr_row(msr) else {
        let possible = if version == Newest { V | G } else { V };
        return Rule {
            outcome: Outcome::from_set(possible, Condition::TdConfiguration, reason),
            source: SRC_MSR_DEFAULT,
        };
    };
    let possible = match version {
        V1_0 => row.v1_0[column],
        V1_5_01 | V1_5_05 => row.v1_5_01[column],
        Newest => row.newest[column],
    };
    Rule {
        outcome: Outcome::from_set(possible, Condition::TdConfiguration, reason),
        source: SRC_MSR_TABLE,
    }
}

/// CPUID leaves with a subleaf-specific entry in cpuid_configurations.c (1.5.01), with the
/// highest listed subleaf (README 2.1).
const CPUID_SUBLEAVES: [(u32, u32); 8] =
    [(4, 4), (7, 2), (0xD, 0x12), (0x14, 1), (0x1D, 1), (0x1F, 5), (0x21, 0), (0x23, 3)];
/// Leaves that #VE in 1.5.01 (README 2.1); 0x1F is listed but faulting.
const CPUID_VE_1_5_01: [u32; 17] = [
    2,
    6,
    9,
    0xB,
    0xC,
    0xF,
    0x10,
    0x16,
    0x17,
    0x18,
    0x1A,
    0x1B,
    0x1F,
    0x8000_0002,
    0x8000_0003,
    0x8000_0004,
    0x8000_0005,
];
/// Of those, the ones 1.5.12+/2.0 may answer depending on TD_CTLS (REDUCE_VE, VIRT_CPUID2,
/// ENUM_TOPOLOGY) (README 2.3).
const CPUID_VE_CONFIGURABLE_NEWEST: [u32; 16] = [
    2,
    6,
    9,
    0xB,
    0xC,
    0xF,
    0x10,
    0x16,
    0x17,
    0x1B,
    0x1F,
    0x8000_0002,
    0x8000_0003,
    0x8000_0004,
    0x8000_0005,
    0x8000_0006,
];
/// The last base leaf the module reports (CPUID_LAST_BASE_LEAF, x86_defs.h L864).
const CPUID_LAST_BASE_LEAF: u32 = 0x23;
/// The last extended leaf the module answers (cpuid_configurations.c lists up to 0x80000008).
const CPUID_LAST_EXTENDED_LEAF: u32 = 0x8000_0008;

fn cpuid_rule(leaf: Option<u32>, subleaf: Option<u32>, version: ModuleVersion) -> Rule {
    let depends = |on, possible| Outcome::from_set(possible, on, er::CPUID);
    let ve = Outcome::Ve { exit_reason: er::CPUID };
    let Some(mut leaf) = leaf else {
        return Rule { outcome: depends(Condition::UnknownOperand, N | V), source: SRC_CPUID };
    };
    if (0x4000_0000..=0x4FFF_FFFF).contains(&leaf) {
        return Rule { outcome: ve, source: SRC_CPUID_HV };
    }
    // Leaves above the last base or extended leaf are remapped to the last base leaf.
    if (CPUID_LAST_BASE_LEAF < leaf && leaf < 0x8000_0000) || leaf > CPUID_LAST_EXTENDED_LEAF {
        leaf = CPUID_LAST_BASE_LEAF;
    }
    let source = match leaf {
        0 => SRC_CPUID_0,
        0x21 => SRC_CPUID_21,
        _ => SRC_CPUID,
    };
    if CPUID_VE_1_5_01.contains(&leaf) || leaf == 0x8000_0006 {
        let outcome = if version == Newest && CPUID_VE_CONFIGURABLE_NEWEST.contains(&leaf) {
            depends(Condition::TdConfiguration, N | V)
        } else {
            ve
        };
        return Rule { outcome, source };
    }
    if let Some(&(_, last)) = CPUID_SUBLEAVES.iter().find(|(l, _)| *l == leaf) {
        return match subleaf {
            None => Rule { outcome: depends(Condition::UnknownOperand, N | V), source },
            Some(s) if s <= last => Rule { outcome: Outcome::Native, source },
            Some(_) if version == Newest => {
                // Unlisted subleaves read as zero with REDUCE_VE=1 or a CPUID_FIXED0 bit.
                Rule { outcome: depends(Condition::TdConfiguration, N | V), source }
            }
            Some(_) => Rule { outcome: ve, source },
        };
    }
    // Every other base leaf 0..=0x23 and extended 0x80000000/1/7/8 is in the table.
    Rule { outcome: Outcome::Native, source }
}

/// CR0 bits the guest owns (written without an exit): MP, EM, TS, ET, WP, AM, PG (README 3.1).
const CR0_GUEST_OWNED: u64 =
    (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 16) | (1 << 18) | (1 << 31);
/// The CR0 read shadow's value for module-owned bits: PE and NE set (FIXED0 | PE | NE).
const CR0_SHADOW: u64 = (1 << 0) | (1 << 5);

/// CR0 bits 31:0 that are module-owned but neither PE, NE, NW nor CD: the reserved bits. A write
/// that changes only these exits, and the module completes it ([`cr0_write`]: "reserved bits
/// keep their values"), so such an exit can end natively.
const CR0_RESERVED_LOW: u64 =
    0xFFFF_FFFF & !CR0_GUEST_OWNED & !((1 << 0) | (1 << 5) | (1 << 29) | (1 << 30));

fn cr0_rule(value: WrittenValue) -> Rule {
    // A module-owned bit causes an exit unless the written value equals the read shadow there:
    // kept from a MOV from CR0 (which returns the shadow), or a known constant equal to it.
    let exiting = module_owned_bits_that_may_differ(value, CR0_GUEST_OWNED, CR0_SHADOW);
    let outcome = if exiting == 0 {
        Outcome::Native
    } else if exiting & CR0_RESERVED_LOW != 0 {
        // The exit may be one that the module completes (found by the td_rules fuzz target:
        // cr0_write(0xc0ed) is native, this rule said #VE or #GP only).
        Outcome::from_set(N | V | G, Condition::Value, er::CR_ACCESS)
    } else {
        Outcome::from_set(V | G, Condition::Value, er::CR_ACCESS)
    };
    Rule { outcome, source: SRC_CR0 }
}

/// CR4 bits the guest owns always: VME, PVI, TSD, DE, PSE, PAE, PGE, PCE, OSFXSR, OSXMMEXCPT,
/// UMIP, LA57, FSGSBASE, PCIDE, OSXSAVE, SMEP, SMAP (README 3.2).
const CR4_GUEST_OWNED: u64 = 0b1111_1011_1111
    | (1 << 11)
    | (1 << 12)
    | (1 << 16)
    | (1 << 17)
    | (1 << 18)
    | (1 << 20)
    | (1 << 21);
/// CR4 bits the guest owns only when the TD's XFAM/ATTRIBUTES enable them: PKE, CET, PKS, UINTR.
const CR4_CONFIG_OWNED: u64 = (1 << 22) | (1 << 23) | (1 << 24) | (1 << 25);
const CR4_MCE: u64 = 1 << 6;
const CR4_KL: u64 = 1 << 19;
/// The CR4 read shadow's value for module-owned bits: MCE set (FIXED0 & ~VMXE | MCE).
const CR4_SHADOW: u64 = CR4_MCE;

fn cr4_rule(value: WrittenValue, version: ModuleVersion) -> Rule {
    let exiting = module_owned_bits_that_may_differ(value, CR4_GUEST_OWNED, CR4_SHADOW);
    let mut possible = Outcomes(0);
    if exiting & CR4_CONFIG_OWNED != 0 {
        possible = possible | N | G;
    }
    if exiting & CR4_KL != 0 {
        possible = possible | G;
    }
    if exiting & CR4_MCE != 0 {
        // Clearing MCE: #VE; with TD_CTLS.REDUCE_VE=1 (2.0.18) only the virtual MCE changes.
        possible = possible | V;
        if version == Newest {
            possible = possible | N;
        }
    }
    if exiting & !(CR4_CONFIG_OWNED | CR4_KL | CR4_MCE) != 0 {
        // VMXE, SMXE, bit 15, 63:26: #VE, or #GP when IA32_VMX_CR4_FIXED1 forbids the bit.
        possible = possible | V | G;
    }
    let on = if exiting & !CR4_MCE == 0 { Condition::TdConfiguration } else { Condition::Value };
    let outcome = if possible.0 == 0 {
        Outcome::Native
    } else {
        Outcome::from_set(possible, on, er::CR_ACCESS)
    };
    Rule { outcome, source: SRC_CR4 }
}

/// Module-owned bits (not in `guest_owned`) whose written value may differ from `shadow`.
fn module_owned_bits_that_may_differ(value: WrittenValue, guest_owned: u64, shadow: u64) -> u64 {
    let equal_to_shadow = value.kept | (value.ones & shadow) | (value.zeros & !shadow);
    !guest_owned & !equal_to_shadow
}

/// What `instruction` does in a TD running module `version`.
pub fn classify(instruction: &Instruction, version: ModuleVersion) -> Rule {
    use Instruction as I;
    let ve = |exit_reason| Outcome::Ve { exit_reason };
    let rule = |outcome, source| Rule { outcome, source };
    match *instruction {
        I::PortIo => rule(ve(er::IO), SRC_EXITS),
        I::Hlt => rule(ve(er::HLT), SRC_EXITS),
        I::Invd => rule(ve(er::INVD), SRC_EXITS),
        I::Wbinvd => rule(ve(er::WBINVD), SRC_EXITS),
        I::Vmcall => rule(ve(er::VMCALL), SRC_EXITS),
        I::Mwait | I::Monitor => {
            let reason = if *instruction == I::Mwait { er::MWAIT } else { er::MONITOR };
            let fallback = match version {
                V1_0 | V1_5_01 => V,
                V1_5_05 | Newest => U,
            };
            rule(Outcome::from_set(N | fallback, Condition::TdConfiguration, reason), SRC_MWAIT)
        }
        I::Pconfig => {
            rule(Outcome::from_set(V | U, Condition::TdConfiguration, er::PCONFIG), SRC_PCONFIG)
        }
        I::Rdpmc => rule(Outcome::from_set(N | G, Condition::TdConfiguration, 0), SRC_RDPMC),
        I::Vmx | I::Getsec | I::Rsm | I::Encls | I::Enclv | I::Seamcall => {
            rule(Outcome::Ud, SRC_UD)
        }
        I::Tdcall => rule(Outcome::Native, SRC_TDCALL),
        I::Xsetbv => rule(Outcome::from_set(N | G, Condition::Value, 0), SRC_XSETBV),
        I::Cpuid { leaf, subleaf } => cpuid_rule(leaf, subleaf, version),
        I::Rdmsr { msr } => msr_rule(msr, None, version),
        I::Wrmsr { msr, value } => msr_rule(msr, Some(value), version),
        I::MovToCr0(value) => cr0_rule(value),
        I::MovToCr4(value) => cr4_rule(value, version),
    }
}

/// The TD configuration with every optional feature off, as a minimal guest gets it and as the
/// softtdx model plays it: ATTRIBUTES 0 (no PERFMON, PKS, KL), XFAM x87|SSE only (no PK, CET,
/// ULI), no optional virtual CPUID feature (MONITOR, PCONFIG, TSC_DEADLINE, WAITPKG),
/// TD_CTLS.REDUCE_VE = 0, VIRT_CPUID2 = 0, ENUM_TOPOLOGY = 0, CPUID #VE controls 0.
///
/// Resolves what [`classify`] leaves to [`Condition::TdConfiguration`] where the table can tell
/// for that configuration:
/// - MWAIT/MONITOR: exiting is on when virtual CPUID.MONITOR=0 (td_vmcs_init.c L216-218), so the
///   version's fallback (#VE in 1.0/1.5.01, #UD from 1.5.05; README 4);
/// - PCONFIG: not enabled without the PCONFIG feature, so #UD (td_vmcs_init.c L220-221);
/// - RDPMC: #GP(0) with ATTRIBUTES.PERFMON=0 (td_other_exits.c td_rdpmc_exit L44-66);
/// - CPUID in 1.5.12+/2.0: #VE for every leaf the newest algorithm answers only with REDUCE_VE,
///   VIRT_CPUID2 or ENUM_TOPOLOGY, and for unlisted subleaves (README 2.3).
///
/// Everything else is returned as [`classify`] gives it: a still-undecided MSR of 1.5.12+/2.0
/// (its generated row cannot tell GP_OR_VE_BY_<feature> from GP_OR_VE_BY_REDUCED_VE), and every
/// [`Condition::Value`] outcome (see [`cr0_write`], [`cr4_write`] for exact values).
pub fn classify_minimal_td(instruction: &Instruction, version: ModuleVersion) -> Rule {
    use Instruction as I;
    let rule = classify(instruction, version);
    let Outcome::DependsOn { on: Condition::TdConfiguration, possible, exit_reason } = rule.outcome
    else {
        return rule;
    };
    let outcome = match instruction {
        I::Mwait | I::Monitor if possible.contains(U) => Outcome::Ud,
        I::Mwait | I::Monitor => Outcome::Ve { exit_reason },
        I::Pconfig => Outcome::Ud,
        I::Rdpmc => Outcome::Gp,
        I::Cpuid { leaf: Some(_), subleaf: Some(_) } => Outcome::Ve { exit_reason },
        _ => rule.outcome,
    };
    Rule { outcome, source: rule.source }
}

/// IA32_VMX_CR0_FIXED0 on TDX-capable hardware: PE, NE, PG (SDM Vol. 3D A.7; the module
/// excludes PE and PG from its FIXED0 check, README 3.1).
const CR0_FIXED0: u64 = (1 << 0) | (1 << 5) | (1 << 31);
const CR0_PE: u64 = 1 << 0;
const CR0_WP: u64 = 1 << 16;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;
const CR4_PKE: u64 = 1 << 22;
const CR4_CET: u64 = 1 << 23;
const CR4_PKS: u64 = 1 << 24;
const CR4_UINTR: u64 = 1 << 25;
/// CR4 bits that IA32_VMX_CR4_FIXED1 allows on the hardware assumed here: 0-14 and 16-25.
const CR4_FIXED1: u64 = 0x03FF_7FFF;

/// MOV to CR0 of `new` in the minimal TD ([`classify_minimal_td`]), with `cr4` the current CR4:
/// native (no exit, or the module completes the write), #VE (exit reason 28) or #GP(0), in the
/// order of 1.5.01 `write_guest_cr0` (helpers.c L1248-1305, README 3.1): FIXED1/FIXED0 (bits
/// 63:32 set, NE clear) -> #GP; PE=0 with PG=1 -> #GP; WP=0 with CR4.CET -> #GP; PE=0, NW=1 or
/// CD=1 -> #VE; else the write completes (reserved bits keep their values). Every module
/// version reads the same (1.0 and newest have the same steps).
pub fn cr0_write(new: u64, cr4: u64) -> Rule {
    let rule = cr0_rule(WrittenValue::constant(new));
    if rule.outcome == Outcome::Native {
        return rule;
    }
    let outcome = if new >> 32 != 0
        || new & CR0_FIXED0 & !(CR0_PE | CR0_PG) != CR0_FIXED0 & !(CR0_PE | CR0_PG)
        || (new & CR0_PE == 0 && new & CR0_PG != 0)
        || (new & CR0_WP == 0 && cr4 & CR4_CET != 0)
    {
        Outcome::Gp
    } else if new & CR0_PE == 0 || new & (CR0_NW | CR0_CD) != 0 {
        Outcome::Ve { exit_reason: er::CR_ACCESS }
    } else {
        Outcome::Native
    };
    Rule { outcome, source: SRC_CR0 }
}

/// MOV to CR4 of `new` in the minimal TD, with `cr0` the current CR0, in the order of 1.5.01
/// `write_guest_cr4` (helpers.c L1336-1378, README 3.2): a bit FIXED1 forbids -> #GP; PKE, CET,
/// UINTR, KL or PKS set (none enabled in this TD) -> #GP; CET with CR0.WP=0 -> #GP; anything
/// else that exits (clearing MCE, setting VMXE, SMXE) -> #VE (exit reason 28; newest with
/// REDUCE_VE=0 the same).
pub fn cr4_write(new: u64, cr0: u64, version: ModuleVersion) -> Rule {
    let rule = cr4_rule(WrittenValue::constant(new), version);
    if rule.outcome == Outcome::Native {
        return rule;
    }
    let outcome = if new & !CR4_FIXED1 != 0
        || new & (CR4_PKE | CR4_CET | CR4_UINTR | CR4_KL | CR4_PKS) != 0
        || (new & CR4_CET != 0 && cr0 & CR0_WP == 0)
    {
        Outcome::Gp
    } else {
        Outcome::Ve { exit_reason: er::CR_ACCESS }
    };
    Rule { outcome, source: SRC_CR4 }
}

/// Whether `instruction` completes natively in every module version and TD configuration.
pub fn is_native_in_every_version(instruction: &Instruction) -> bool {
    ALL_VERSIONS.iter().all(|&v| classify(instruction, v).outcome == Outcome::Native)
}

#[cfg(test)]
mod tests;
