//! Benchmarks of the #VE path, for `cargo xtask bench`.
//!
//! QEMU runs with `-icount shift=0`, where RDTSC advances once per guest instruction, so every
//! figure is an instruction count: deterministic, and independent of the host's load. Each
//! workload runs N times natively (single-stepping off, the CPU executes the port access) and N
//! times under softtdx (every port access is a #VE emulated by the production handler through
//! TDG.VP.VMCALL to the model). The softtdx figure includes the model's own work (single-step
//! traps for every instruction, decoding, the TDX-module and VMM answers), which a real TD does
//! not pay; the `nop` workload measures that per-instruction stepping cost.
//!
//! `handler` and the `instructions.*` metrics are exact counts of what a TD executes, taken by
//! single-stepping ([`crate::softtdx::count_instructions`]): for a #VE, every instruction from
//! the first of the vector-20 stub to its `iretq`, each TDCALL counted as one, nothing of the
//! model's #UD path or its resume hook; for `direct_io`, one call of the console's direct
//! backend, from its first instruction to its `ret`. `instructions.calibration_nop` counts the
//! `nop` workload (`nop; ret`), which must be 2.
//!
//! Output lines: `BENCH <name> iterations=N native=X softtdx=Y ves=Z handler=H` (per operation
//! or per #VE, rounded down), `METRIC <key> <count> windows=<n>` and
//! `METRIC <key> exits=<n> bytes=<n>`, then `BENCH END`.

use crate::arch::without_single_step as natively;
use crate::drivers::ioapic::{BASE as IOAPIC_GPA, IOWIN};
use crate::exit::ExitCode;
use crate::port::{inb, inl, insb, outb};
use crate::{counters, println};
use tdx_ve::mmio::AccessSize;

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

/// One access through the console's direct backend (wrapper included): the LSR read.
#[inline(never)]
fn direct_lsr_read() -> u8 {
    use uart_16550::backend::Backend;
    // SAFETY: COM1 is the console's UART; offset 5 (LSR) is one of its registers, and reading
    // it only clears error bits nothing here looks at.
    unsafe { crate::console::DirectBackend::new(crate::console::COM1).read(5) }
}

/// The text the exits-per-byte figures send: 16 lines of 64 bytes (1 KiB, 1040 bytes on the
/// wire with the CRs). Lines start with `#`, which the report parser ignores.
fn console_text() -> alloc::string::String {
    let mut text = alloc::string::String::new();
    for line in 0..16 {
        let _ = core::fmt::Write::write_fmt(
            &mut text,
            format_args!("# bench console line {line:02} {:.<39}\n", ""),
        );
    }
    text
}

/// Bytes the UART sends for `text`: each newline goes out as CR LF.
fn wire_bytes(text: &str) -> u64 {
    (text.len() + text.bytes().filter(|&b| b == b'\n').count()) as u64
}

/// Host exits (TDVMCALLs) while `f` sends `text`.
fn exits(text: &str, f: impl FnOnce(&str)) -> u64 {
    let before = counters::TDCALL_VMCALL.get();
    f(text);
    counters::TDCALL_VMCALL.get() - before
}

/// The IOAPIC's register window, mapped shared (in a TD) by [`mmio_figures`].
static IOAPIC: spin::Once<crate::mm::mmio::DeviceMemory> = spin::Once::new();

// `mov eax, [rdi]` at the start of a 16-byte aligned block, so that it and the 6 bytes after
// it lie in one page wherever the linker puts the bench: the handler's short path reads 7 bytes
// at RIP when they are in RIP's page, and the general decoder (or a walk of the next page)
// otherwise, so the figure would move with code layout.
core::arch::global_asm!(
    ".pushsection .text.bench_mmio_ve_mov, \"ax\"",
    ".balign 16",
    "bench_mmio_ve_mov:",
    "mov eax, dword ptr [rdi]",
    "ret",
    ".popsection",
);

extern "sysv64" {
    /// Reads the 4 bytes at `address` with one `mov eax, [rdi]`.
    fn bench_mmio_ve_mov(address: u64) -> u32;
}

/// One `mov eax, [IOWIN]` through the shared mapping: an EPT-violation #VE in a TD.
#[inline(never)]
fn mmio_ve_read() {
    if let Some(ioapic) = IOAPIC.get() {
        // SAFETY: the IOAPIC window is mapped; reading IOWIN has no side effects.
        let _ = unsafe { bench_mmio_ve_mov(ioapic.virt + IOWIN) };
    }
}

/// One read of IOWIN through the drivers' accessor: TDG.VP.VMCALL<#VE.RequestMMIO> in a TD.
#[inline(never)]
fn mmio_direct_read() -> u64 {
    match IOAPIC.get() {
        Some(ioapic) => ioapic.read(IOWIN, AccessSize::Dword),
        None => 0,
    }
}

/// `instructions.mmio_ve`, `instructions.mmio_direct` and `exits_per_byte.virtio_console`.
fn mmio_figures(ve_stub: u64, regions: &bootloader_api::info::MemoryRegions) {
    match crate::mm::mmio::DeviceMemory::map(IOAPIC_GPA, 4096) {
        Ok(ioapic) => {
            IOAPIC.call_once(|| ioapic);
            let (_, ve, windows) = crate::softtdx::count_instructions(ve_stub, mmio_ve_read);
            println!("METRIC instructions.mmio_ve {ve} windows={windows}");
            let (_, direct, windows) = crate::softtdx::count_instructions(
                mmio_direct_read as *const () as u64,
                mmio_direct_read,
            );
            println!("METRIC instructions.mmio_direct {direct} windows={windows}");
        }
        Err(e) => println!("bench: cannot map the IOAPIC: {e}"),
    }
    use crate::drivers::virtio_console::{self, Probe, BATCH};
    match virtio_console::init(regions) {
        Probe::Up(_) => {
            // Four 4 KiB batches of `#` lines, straight to the virtio console.
            let mut batch = [b'.'; BATCH];
            for line in batch.chunks_mut(64) {
                line[..15].copy_from_slice(b"# bench virtio ");
                line[63] = b'\n';
            }
            let before = counters::TDCALL_VMCALL.get();
            for _ in 0..4 {
                virtio_console::write(&batch);
            }
            let exits = counters::TDCALL_VMCALL.get() - before;
            println!("METRIC exits_per_byte.virtio_console exits={exits} bytes={}", 4 * BATCH);
        }
        other => println!("bench: no virtio console ({other:?})"),
    }
}

pub fn run(regions: &bootloader_api::info::MemoryRegions) -> ExitCode {
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
    let ve_stub =
        crate::arch::trap::stub_address(crate::arch::idt::vector::VIRTUALIZATION as usize);
    println!("BENCH BEGIN iterations={ITERATIONS}");
    for (name, workload) in workloads {
        let native = natively(|| measure(workload));
        let ves_before = counters::VE_IO.get() + counters::VE_CPUID.get();
        let through_model = measure(workload);
        let ves = (counters::VE_IO.get() + counters::VE_CPUID.get() - ves_before) / ITERATIONS;
        // Exactly what a TD executes per #VE, from one more run of the workload.
        let ((), instructions, windows) = crate::softtdx::count_instructions(ve_stub, workload);
        let handler = instructions.checked_div(windows).unwrap_or(0);
        println!(
            "BENCH {name} iterations={ITERATIONS} native={native} softtdx={through_model} \
             ves={ves} handler={handler}"
        );
    }

    // The counter's own check: `nop` is `nop; ret`, two instructions.
    let (_, calibration, calibration_windows) =
        crate::softtdx::count_instructions(nop as *const () as u64, nop);
    println!("METRIC instructions.calibration_nop {calibration} windows={calibration_windows}");

    let count_ve = |workload: fn()| {
        let ((), instructions, windows) = crate::softtdx::count_instructions(ve_stub, workload);
        (instructions, windows)
    };
    let (ve_in, in_windows) = count_ve(inb_scratch);
    let (ve_out, out_windows) = count_ve(outb_scratch);
    println!("METRIC instructions.ve_in {ve_in} windows={in_windows}");
    println!("METRIC instructions.ve_out {ve_out} windows={out_windows}");
    let (_, direct, direct_windows) =
        crate::softtdx::count_instructions(direct_lsr_read as *const () as u64, direct_lsr_read);
    println!("METRIC instructions.direct_io {direct} windows={direct_windows}");

    let text = console_text();
    let bytes = wire_bytes(&text);
    let bytewise = exits(&text, crate::console::print_bytewise_pio);
    let ve_buffered = exits(&text, crate::console::print_buffered_pio);
    let direct_buffered = exits(&text, |text| crate::print!("{text}"));
    println!("METRIC exits_per_byte.ve_bytewise exits={bytewise} bytes={bytes}");
    println!("METRIC exits_per_byte.ve_buffered exits={ve_buffered} bytes={bytes}");
    println!("METRIC exits_per_byte.direct_buffered exits={direct_buffered} bytes={bytes}");
    mmio_figures(ve_stub, regions);
    println!("BENCH END");
    ExitCode::Success
}

/// RDTSC when the frame allocator was ready, and what the model spent playing TDVF before it
/// (leaving RAM above 4 GiB pending), which is firmware's work, not the kernel's boot.
pub static FRAMES_READY_TSC: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
pub static TDVF_PLAY_TSC: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// `instructions.boot_to_frames_ready`: kernel entry to a ready frame allocator, without the
/// model's TDVF part. The bench's `bench boot` boots (td machine, softtdx) at 2 GiB and 8 GiB
/// compare it: lazy acceptance keeps boot independent of the TD's memory size.
pub fn boot_metric() {
    use core::sync::atomic::Ordering::Relaxed;
    let entry = crate::KERNEL_ENTRY_TSC.load(Relaxed);
    let ready = FRAMES_READY_TSC.load(Relaxed);
    let tdvf = TDVF_PLAY_TSC.load(Relaxed);
    println!("METRIC instructions.boot_to_frames_ready {}", ready - entry - tdvf);
}

/// The 4 KiB page the `accept_4k` window accepts.
static ACCEPT_4K_GPA: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// One TDG.MEM.PAGE.ACCEPT of 4 KiB through the kernel's wrapper, for the counting window.
#[inline(never)]
fn accept_one_4k() {
    let gpa = ACCEPT_4K_GPA.load(core::sync::atomic::Ordering::Relaxed);
    // SAFETY: the page was allocated for this benchmark and made pending by the model.
    let _ = unsafe { crate::tdx::accept::accept_page(gpa, tdx_ve::accept::PageLevel::Size4K) };
}

/// Accept calls per GiB of unaccepted memory, through the frame allocator, at 2 MiB and where
/// the VMM maps at 4 KiB (after the one SIZE_MISMATCH that teaches the policy); and what a TD
/// executes for one 4 KiB accept. Needs 2 GiB of RAM above 4 GiB: the bench's 8 GiB `bench
/// boot` (td machine, softtdx) runs it after the self-test.
pub fn accept_metrics() {
    use crate::mm::frames;
    use crate::softtdx::pages;
    const GIB: u64 = 1 << 30;
    const SIZE_2M: u64 = 2 << 20;
    // One 4 KiB page below 4 GiB, handed back to the model as pending.
    if let Some(page) = frames::allocate(4096, 4096, 16 << 20) {
        if pages::set(page, page + 4096, pages::PageState::Pending).is_ok() {
            ACCEPT_4K_GPA.store(page, core::sync::atomic::Ordering::Relaxed);
            let ((), count, windows) = crate::softtdx::count_instructions(
                accept_one_4k as *const () as u64,
                accept_one_4k,
            );
            println!("METRIC instructions.accept_4k {count} windows={windows}");
        }
    }
    // Stepping off: 262,144 accepts single-stepped would take minutes; the count is of calls.
    let calls_for = |len: u64| {
        natively(|| {
            let before = counters::TDCALL_ACCEPT.get();
            frames::allocate(len, SIZE_2M, 1 << 32).map(|_| counters::TDCALL_ACCEPT.get() - before)
        })
    };
    let Some(at_2m) = calls_for(GIB) else {
        println!("# no 2 GiB of unaccepted memory above 4 GiB: no accept.calls_per_gib figures");
        return;
    };
    println!("METRIC accept.calls_per_gib_2m {at_2m}");
    pages::set_map_4k_only(true);
    let learn = calls_for(SIZE_2M);
    let at_4k = calls_for(GIB);
    pages::set_map_4k_only(false);
    crate::tdx::accept::try_2m_again();
    println!("# the 2 MiB that met the 4 KiB-only mapping first took {learn:?} calls (one SIZE_MISMATCH)");
    if let Some(at_4k) = at_4k {
        println!("METRIC accept.calls_per_gib_4k {at_4k}");
    }
}
