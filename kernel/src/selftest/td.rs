//! TD-only checks: TD info, and the non-I/O #VE paths (CPUID, MSR, HLT). Outside a TD each
//! reports `skip` with the reason.

use super::{natively, Context, Outcome, Tally};
use crate::counters;
use crate::{fail, pass, skip};

const NOT_A_TD: &str = "not a TD: CPUID leaf 0x21 has no IntelTDX vendor";

// Kept out of line: td-audit attributes native instructions to this module by symbol.
#[inline(never)]
pub fn run(_ctx: &Context, tally: &mut Tally) {
    tally.run("tdx.vp_info", vp_info);
    tally.run("tdx.attributes", td_attributes);
    tally.run("tdx.cc_attributes", cc_attributes);
    tally.run("tdx.cpuid_ve", cpuid_ve);
    tally.run("tdx.rdmsr_ve", rdmsr_ve);
    tally.run("tdx.wrmsr_ve", wrmsr_ve);
    tally.run("tdx.hlt_ve", hlt_ve);
    veinfo_get_without_ve(tally);
}

fn vp_info() -> Outcome {
    let Some(info) = crate::tdx::td_info() else {
        return skip!("{NOT_A_TD}");
    };
    if !matches!(info.gpaw, 48 | 52) {
        return fail!("GPAW {} is neither 48 nor 52", info.gpaw);
    }
    if info.num_vcpus == 0 || info.num_vcpus > info.max_vcpus || info.vcpu_index >= info.num_vcpus {
        return fail!(
            "inconsistent vCPUs: index {} of {} (max {})",
            info.vcpu_index,
            info.num_vcpus,
            info.max_vcpus
        );
    }
    pass!(
        "GPAW {} attributes {:#x} vcpus {}/{}",
        info.gpaw,
        info.attributes.0,
        info.num_vcpus,
        info.max_vcpus
    )
}

/// The attributes policy as applied at boot (`crate::tdx::init`): a kernel that got this far
/// must be in a TD whose attributes allow it to run, and a debug TD is named as one here too.
fn td_attributes() -> Outcome {
    use tdx_ve::abi::AttributesVerdict;
    let Some(info) = crate::tdx::td_info() else {
        return skip!("{NOT_A_TD}");
    };
    let bits = info.attributes.0;
    match info.attributes.verdict() {
        AttributesVerdict::Run => {
            pass!("attributes {bits:#x}: SEPT_VE_DISABLE set, not a debug TD")
        }
        AttributesVerdict::RunDebug { sept_ve_disable } => pass!(
            "DEBUG TD: attributes {bits:#x}, the host can read and write its state; \
             SEPT_VE_DISABLE {}",
            if sept_ve_disable { "set" } else { "clear (allowed only in a debug TD)" }
        ),
        AttributesVerdict::Refuse => {
            fail!("attributes {bits:#x} lack SEPT_VE_DISABLE, yet the kernel kept running")
        }
    }
}

fn cc_attributes() -> Outcome {
    use crate::cc::{cc_platform_has, CcAttr};
    let td = crate::tdx::is_td();
    let unroll = cc_platform_has(CcAttr::GuestUnrollStringIo);
    if td != unroll {
        return fail!("GuestTdx={td} but GuestUnrollStringIo={unroll}");
    }
    pass!("GuestTdx={td} GuestUnrollStringIo={unroll}")
}

fn cpuid(leaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// CPUID of the hypervisor range raises #VE in a TD; the result comes from the host.
fn cpuid_ve() -> Outcome {
    if !crate::tdx::is_td() {
        return skip!("{NOT_A_TD}");
    }
    const HYPERVISOR_LEAF: u32 = 0x4000_0000;
    let before = counters::VE_CPUID.get();
    let through_ve = cpuid(HYPERVISOR_LEAF);
    let ves = counters::VE_CPUID.get() - before;
    if ves != 1 {
        return fail!("CPUID {HYPERVISOR_LEAF:#x} took {ves} #VEs, want 1");
    }
    #[cfg(feature = "test-modes")]
    if crate::softtdx::is_active() {
        let reference = natively(|| cpuid(HYPERVISOR_LEAF));
        if reference != through_ve {
            return fail!("via #VE {through_ve:08x?}, native {reference:08x?}");
        }
        return pass!("leaf {HYPERVISOR_LEAF:#x} via #VE matches native: {through_ve:08x?}");
    }
    pass!("leaf {HYPERVISOR_LEAF:#x} via #VE: {through_ve:08x?}")
}

const IA32_APIC_BASE: u32 = 0x1B;
const IA32_EFER: u32 = 0xC000_0080;

fn rdmsr(msr: u32) -> u64 {
    // SAFETY: reading IA32_APIC_BASE / IA32_EFER has no side effects.
    unsafe { x86_64::registers::model_specific::Msr::new(msr).read() }
}

fn rdmsr_ve() -> Outcome {
    if !softtdx_active() {
        return skip!("needs softtdx: which MSR reads raise #VE on real TDX depends on the module");
    }
    let before = counters::VE_MSR.get();
    let through_ve = rdmsr(IA32_APIC_BASE);
    let ves = counters::VE_MSR.get() - before;
    let reference = natively(|| rdmsr(IA32_APIC_BASE));
    if ves != 1 || through_ve != reference {
        return fail!("IA32_APIC_BASE {through_ve:#x} with {ves} #VEs, native {reference:#x}");
    }
    pass!("IA32_APIC_BASE {through_ve:#x} via #VE matches native")
}

/// Any WRMSR to IA32_EFER raises #VE in a TD, even with an unchanged value.
fn wrmsr_ve() -> Outcome {
    if !crate::tdx::is_td() {
        return skip!("{NOT_A_TD}");
    }
    if !softtdx_active() {
        return skip!(
            "a real VMM refuses EFER writes (KVM treats EFER as read-only); softtdx only"
        );
    }
    let efer = natively(|| rdmsr(IA32_EFER));
    let before = counters::VE_MSR.get();
    // SAFETY: writes back the value just read, so nothing changes.
    unsafe { x86_64::registers::model_specific::Msr::new(IA32_EFER).write(efer) };
    let ves = counters::VE_MSR.get() - before;
    let after = natively(|| rdmsr(IA32_EFER));
    if ves != 1 || after != efer {
        return fail!("EFER {efer:#x} -> {after:#x} with {ves} #VEs");
    }
    pass!("EFER write of {efer:#x} went through #VE")
}

fn hlt_ve() -> Outcome {
    if !crate::tdx::is_td() {
        return skip!("{NOT_A_TD}");
    }
    if !softtdx_active() {
        return skip!("HLT with interrupts off would stop a real TD for good; softtdx only");
    }
    let before = counters::VE_HLT.get();
    // SAFETY: under softtdx HLT raises #VE and the model's VMM returns at once.
    unsafe { core::arch::asm!("hlt") };
    match counters::VE_HLT.get() - before {
        1 => pass!("HLT went through #VE and Instruction.HLT"),
        n => fail!("HLT took {n} #VEs, want 1"),
    }
}

fn softtdx_active() -> bool {
    #[cfg(feature = "test-modes")]
    return crate::softtdx::is_active();
    #[cfg(not(feature = "test-modes"))]
    return false;
}

/// TDG.VP.VEINFO.GET with no #VE pending (for instance a second call for the same #VE) must
/// fail with TDX_NO_VE_INFO, cleanly, as a `Result`.
fn veinfo_get_without_ve(tally: &mut Tally) {
    tally.run("fault.veinfo-get-twice", || {
        if !crate::tdx::is_td() {
            return skip!("not a TD");
        }
        use crate::tdx::tdcall;
        use tdx_ve::abi::TdxStatus;
        match tdcall::vp_veinfo_get() {
            Err(e) if TdxStatus::from(e.status) == TdxStatus::NoValidVeInfo => {
                pass!("second VEINFO.GET refused: {e}")
            }
            Err(e) => fail!("unexpected failure: {e}"),
            Ok(ve) => fail!("returned VE info with no #VE pending: exit reason {}", ve.exit_reason),
        }
    });
}
