//! ExitBootServices and the jump into the kernel: the only code that runs without firmware.
//!
//! See the crate doc for the privileged instructions executed here and why each is safe in a
//! TD. Nothing here allocates, prints, or can fail.

use crate::plan;
use bootloader_api::info::{MemoryRegion, MemoryRegions};
use bootloader_api::BootInfo;
use core::sync::atomic::Ordering;
use loader_core::memory_map;
use loader_core::paging::PAGE_4K;
use uefi::mem::memory_map::MemoryMap;

/// What the handoff needs, all prepared before ExitBootServices.
pub struct Handoff {
    /// Physical (= loader-visible) address of the BootInfo, and where the kernel sees it.
    pub boot_info: u64,
    pub boot_info_virtual: u64,
    /// The region array inside the boot-info allocation.
    pub regions: u64,
    pub regions_virtual: u64,
    pub region_capacity: usize,
    pub page_table: u64,
    pub stack_top: u64,
    pub entry: u64,
    /// The identity-mapped page holding the loader's GDT.
    pub gdt: u64,
}

impl Handoff {
    pub fn entry_virtual(&self) -> u64 {
        self.entry
    }
}

/// The operand of LGDT and LIDT: a 16-bit limit, then a 64-bit base (SDM Vol. 3A, 3.5.1).
#[repr(C, packed)]
struct DescriptorTablePointer {
    limit: u16,
    base: u64,
}

/// What `enter_kernel` loads, at the offsets its assembly reads.
#[repr(C)]
struct EntryState {
    gdt: DescriptorTablePointer,
    _pad1: [u8; 6],
    idt: DescriptorTablePointer,
    _pad2: [u8; 6],
    page_table: u64,
    stack_top: u64,
    entry: u64,
    boot_info: u64,
}
const _: () = {
    assert!(core::mem::offset_of!(EntryState, idt) == 16);
    assert!(core::mem::offset_of!(EntryState, page_table) == 32);
    assert!(core::mem::offset_of!(EntryState, boot_info) == 56);
};

/// Null, 64-bit ring-0 code (selector 0x08), ring-0 data (0x10). The accessed bits are preset
/// so that loading a selector never makes the CPU write to the GDT.
const GDT: [u64; 3] = [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];

pub fn write_gdt(page: u64) {
    // SAFETY: `page` is a fresh page allocated for the GDT, identity-mapped.
    unsafe { core::ptr::write(page as *mut [u64; 3], GDT) };
}

core::arch::global_asm!(
    ".section .text.enter_kernel,\"xr\"",
    ".p2align 12",
    ".globl enter_kernel",
    // rdi = &EntryState (sysv64). Everything is read into registers before CR3 changes: the
    // state lives on the loader's stack, which the kernel's tables do not map.
    "enter_kernel:",
    "cli",
    "lgdt [rdi]",
    "lidt [rdi + 16]",
    "mov rax, [rdi + 32]",
    "mov rsi, [rdi + 40]",
    "mov rdx, [rdi + 48]",
    "mov rdi, [rdi + 56]",
    // Reload CS through a far return, then the data segments.
    "push 0x08",
    "lea rcx, [rip + 2f]",
    "push rcx",
    "retfq",
    "2:",
    "mov ecx, 0x10",
    "mov ds, ecx",
    "mov es, ecx",
    "mov ss, ecx",
    // From here on only this page (identity-mapped in both tables) and the kernel's stack.
    "mov cr3, rax",
    "mov rsp, rsi",
    "xor ebp, ebp",
    // RSP = 8 (mod 16) at the entry, as after a call.
    "push 0",
    "jmp rdx",
    ".globl enter_kernel_end",
    "enter_kernel_end:",
    ".text",
);

extern "sysv64" {
    fn enter_kernel(state: &EntryState) -> !;
    static enter_kernel_end: u8;
}

/// The pages holding `enter_kernel`, which must be mapped at the same address in the kernel's
/// tables because execution continues there after `mov cr3`.
pub fn trampoline_pages() -> core::ops::Range<u64> {
    let start = enter_kernel as *const () as u64;
    let end = core::ptr::addr_of!(enter_kernel_end) as u64;
    (start & !(PAGE_4K - 1))..(end.next_multiple_of(PAGE_4K))
}

/// The layout of BootInfo::memory_regions: a pointer and a length (`#[repr(C)]` in
/// bootloader_api 0.11.17). Its fields are private to that crate, and the pointer must be the
/// kernel's virtual address, which this loader cannot dereference, so the value is built here.
#[repr(C)]
struct RawMemoryRegions {
    ptr: *mut MemoryRegion,
    len: usize,
}
const _: () =
    assert!(core::mem::size_of::<RawMemoryRegions>() == core::mem::size_of::<MemoryRegions>());

pub fn exit_and_enter(handoff: Handoff) -> ! {
    // SAFETY: every protocol this loader opened is closed (they were scoped in `plan`), and
    // nothing uses boot services after this.
    let map = unsafe { uefi::boot::exit_boot_services(Some(crate::frames::memory_type())) };
    crate::BOOT_SERVICES_EXITED.store(true, Ordering::SeqCst);

    // SAFETY: `regions` is the region array inside the boot-info allocation (sized for
    // `region_capacity` regions, identity-mapped by the firmware's tables, still live).
    let regions = unsafe {
        core::slice::from_raw_parts_mut(
            handoff.regions as *mut MemoryRegion,
            handoff.region_capacity,
        )
    };
    #[allow(unused_mut)]
    let mut count = memory_map::convert(map.entries().map(plan::descriptor), regions);
    #[cfg(feature = "broken-handoff")]
    if let Some(last) = regions[..count].last().copied() {
        // Usable memory past the end of everything the firmware reported: not RAM.
        if count < regions.len() {
            let start = last.end.next_multiple_of(PAGE_4K);
            regions[count] = MemoryRegion {
                start,
                end: start + 0x20_0000,
                kind: bootloader_api::info::MemoryRegionKind::Usable,
            };
            count += 1;
        }
    }
    let raw = RawMemoryRegions { ptr: handoff.regions_virtual as *mut MemoryRegion, len: count };
    // SAFETY: same layout (asserted above and by bootloader_api's #[repr(C)]); the pointer is
    // valid in the kernel's address space, where the kernel dereferences it.
    let kernel_regions = unsafe { core::mem::transmute::<RawMemoryRegions, MemoryRegions>(raw) };
    // SAFETY: `boot_info` holds the BootInfo written in `plan`; the old (empty) regions value
    // owns nothing, so overwriting it leaks nothing.
    unsafe {
        core::ptr::addr_of_mut!((*(handoff.boot_info as *mut BootInfo)).memory_regions)
            .write(kernel_regions)
    };
    core::mem::forget(map);

    set_write_protect_if_clear();
    let state = EntryState {
        gdt: DescriptorTablePointer {
            limit: (core::mem::size_of_val(&GDT) - 1) as u16,
            base: handoff.gdt,
        },
        _pad1: [0; 6],
        // An empty IDT: an exception before the kernel's own `lidt` shuts the machine down
        // instead of running firmware handlers from memory the kernel now owns.
        idt: DescriptorTablePointer { limit: 0, base: 0 },
        _pad2: [0; 6],
        page_table: handoff.page_table,
        stack_top: handoff.stack_top,
        entry: handoff.entry,
        boot_info: handoff.boot_info_virtual,
    };
    // SAFETY: the kernel's tables map this trampoline at its own address, the stack, the boot
    // info at `boot_info_virtual` and the kernel at `entry`; the GDT page is identity-mapped.
    unsafe { enter_kernel(&state) }
}

/// CR0.WP makes ring 0 honour read-only pages (the kernel's text and RELRO). Written only when
/// clear, with the other bits as read: in a TD, WP is a guest-owned bit and the write does not
/// exit (`kernel/libs/td-rules`, MOV to CR0).
fn set_write_protect_if_clear() {
    const WP: u64 = 1 << 16;
    let cr0: u64;
    // SAFETY: reading CR0 has no side effect.
    unsafe {
        core::arch::asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack, preserves_flags))
    };
    if cr0 & WP == 0 {
        // SAFETY: only WP changes; the loader itself writes nothing read-only from here on.
        unsafe {
            core::arch::asm!("mov cr0, {}", in(reg) cr0 | WP, options(nostack, preserves_flags))
        };
    }
}
