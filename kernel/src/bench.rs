//! Benchmarks of the #VE path, for `cargo xtask bench`.
//!
//! QEMU runs with `-icount shift=0`, where RDTSC advances once per guest instruction, so every
//! figure is an instruction count: deterministic, and independent of the host's load. Each
//! workload runs N times natively (single-stepping off, the CPU executes the port access) and N
//! times under softtdx (every port access is a #VE emulated by the production handler through
//! TDG.VP.VMCALL to the model). The softtdx figure includes the model's own work (single-step
//! traps for every instruction, decoding, the TDX-module and VMM answers), which a real TD does
//! not pay; the `nop` workload measures that per-instruction stepping cost, so it can be
//! subtracted. `handler` is measured directly: instructions from a #VE's delivery to its
//! handler's return, less the model's answers to the handler's TDCALLs, i.e. what the guest
//! itself executes per #VE (trap entry and exit included, and the #UD entry and exit through
//! which each TDCALL reaches the model, which on real TDX is the single TDCALL instruction).
//! Output lines:
//! `BENCH <name> iterations=N native=X softtdx=Y ves=Z handler=H` (per operation or per #VE,
//! rounded down), then `BENCH END`.

use crate::exit::ExitCode;
use crate::port::{inb, inl, insb, outb};
use crate::selftest::natively;
use crate::{counters, println};

const ITERATIONS: u64 = 200;

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects (and is executed natively by a TD).
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn measure(workload: fn()) -> u64 {
    let start = rdtsc();
    for _ in 0..ITERATIONS {
        workload();
    }
    (rdtsc() - start) / ITERATIONS
}

#[inline(never)]
fn nop() {
    // SAFETY: a no-op.
    unsafe { core::arch::asm!("nop", options(nomem, nostack, preserves_flags)) };
}

#[inline(never)]
fn inb_scratch() {
    // SAFETY: reading the COM1 scratch register has no side effects.
    let _ = unsafe { inb(0x3FF) };
}

#[inline(never)]
fn outb_scratch() {
    // SAFETY: the COM1 scratch register only stores a byte.
    unsafe { outb(0x3FF, 0x5A) };
}

#[inline(never)]
fn inl_pci_address() {
    // SAFETY: reading PCI CONFIG_ADDRESS has no side effects.
    let _ = unsafe { inl(0xCF8) };
}

#[inline(never)]
fn insb_fw_cfg_16() {
    let mut buffer = [0u8; 16];
    // SAFETY: fw_cfg's data port streams the selected item; the selector is reset per call.
    unsafe {
        crate::port::outw(0x510, 0x0000);
        insb(0x511, &mut buffer);
    }
}

#[inline(never)]
fn rep_insb_fw_cfg_16() {
    let mut buffer = [0u8; 16];
    // SAFETY: as above; one `rep insb` of 16 elements into a stack buffer, DF clear.
    unsafe {
        crate::port::outw(0x510, 0x0000);
        core::arch::asm!("rep insb", in("dx") 0x511u16, inout("rdi") buffer.as_mut_ptr() => _,
                         inout("rcx") 16usize => _, options(nostack, preserves_flags));
    }
}

#[inline(never)]
fn cpuid_hypervisor() {
    let _ = core::arch::x86_64::__cpuid_count(0x4000_0000, 0);
}

pub fn run() -> ExitCode {
    let workloads: [(&str, fn()); 7] = [
        ("nop", nop),
        ("inb", inb_scratch),
        ("outb", outb_scratch),
        ("inl", inl_pci_address),
        ("insb.unrolled.16", insb_fw_cfg_16),
        ("rep_insb.16", rep_insb_fw_cfg_16),
        ("cpuid.hypervisor", cpuid_hypervisor),
    ];
    // The figures are about the handler, not the model's ordering check (which single-steps
    // the handler up to its VEINFO.GET).
    crate::softtdx::set_ve_ordering_check(false);
    println!("BENCH BEGIN iterations={ITERATIONS}");
    for (name, workload) in workloads {
        let native = natively(|| measure(workload));
        let ves_before = counters::VE_IO.get() + counters::VE_CPUID.get();
        let (handled_before, guest_before) = crate::softtdx::guest_ve_totals();
        let through_model = measure(workload);
        let ves = (counters::VE_IO.get() + counters::VE_CPUID.get() - ves_before) / ITERATIONS;
        let (handled_after, guest_after) = crate::softtdx::guest_ve_totals();
        let handler =
            (guest_after - guest_before).checked_div(handled_after - handled_before).unwrap_or(0);
        println!(
            "BENCH {name} iterations={ITERATIONS} native={native} softtdx={through_model} \
             ves={ves} handler={handler}"
        );
    }
    println!("BENCH END");
    ExitCode::Success
}
