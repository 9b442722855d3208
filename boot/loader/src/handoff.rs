//! ExitBootServices and the jump into the kernel: the only code that runs without firmware.
//!
//! See the crate doc for the privileged instructions executed here and why each is safe in a
//! TD. Nothing here allocates, prints, or can fail.

use crate::uefi_map;
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
    /// The kernel's PML4, below 4 GiB (loaded in 32-bit mode when leaving 5-level paging).
    pub page_table: u64,
    pub stack_top: u64,
    pub entry: u64,
    /// The identity-mapped page below 4 GiB holding the loader's GDT; its upper part is the
    /// stack of the switch out of 5-level paging.
    pub gdt: u64,
    /// Test-only (`test-enable-la57`): a PML5 below 4 GiB whose entry 0 is the firmware's PML4.
    #[cfg(feature = "test-enable-la57")]
    pub test_pml5: u64,
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
    /// The top of the GDT page: a stack below 4 GiB that both tables map.
    switch_stack: u64,
}
const _: () = {
    assert!(core::mem::offset_of!(EntryState, idt) == 16);
    assert!(core::mem::offset_of!(EntryState, page_table) == 32);
    assert!(core::mem::offset_of!(EntryState, boot_info) == 56);
    assert!(core::mem::offset_of!(EntryState, switch_stack) == 64);
};

/// Null, 64-bit ring-0 code (selector 0x08), ring-0 data (0x10), and 32-bit ring-0 code (0x18,
/// D=1, L=0: compatibility mode, used only to leave 5-level paging). The accessed bits are
/// preset so that loading a selector never makes the CPU write to the GDT.
const GDT: [u64; 4] = [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF, 0x00CF_9B00_0000_FFFF];

pub fn write_gdt(page: u64) {
    // SAFETY: `page` is a fresh page allocated for the GDT, identity-mapped.
    unsafe { core::ptr::write(page as *mut [u64; 4], GDT) };
}

// CR4.LA57 (bit 12) set means the CPU walks CR3 as a PML5, and our tables are 4-level. LA57 can
// change only outside IA-32e mode (SDM Vol. 3A 4.1.2, "MOV to CR4 ... LA57 ... #GP if
// IA32_EFER.LMA = 1"), so the trampoline leaves it as Linux's and TDVF's AP code do (Linux
// arch/x86/boot/compressed/head_64.S trampoline_32bit_src; EDK2 OvmfPkg/TdxDxe/X64/
// ApRunLoop.nasm): far return into the 32-bit code segment (compatibility mode), clear CR0.PG
// (IA32_EFER.LMA drops, EFER itself is not written), clear CR4.LA57, load the 4-level CR3 (a
// 32-bit write: the PML4 lies below 4 GiB), set CR0.PG (LMA is back, still compatibility mode)
// and far return into the 64-bit segment. In a TD CR0.PG and CR4.LA57 are guest-owned bits, so
// neither write exits (`kernel/libs/td-rules`, MOV to CR0/CR4); the CR4 read and the CR3 write
// never do. The code and the stack of the switch (the top of the GDT page) lie below 4 GiB,
// identity-mapped in the firmware's tables and in ours; while paging is off both are reached
// physically. Upper halves of general registers are undefined after a switch to a 32-bit mode
// (SDM Vol. 1 3.4.1.1): what is needed after it is pushed first and popped in 64-bit mode.
// Interrupts are off, and the IDT is empty: an NMI in the window shuts the machine down, as it
// would anywhere between here and the kernel's own LIDT.
#[cfg(not(feature = "test-broken-la57-trampoline"))]
macro_rules! broken_la57 {
    () => {
        "jc 3f"
    };
}
/// The broken trampoline ignores LA57: the CPU then walks the kernel's PML4 as a PML5.
#[cfg(feature = "test-broken-la57-trampoline")]
macro_rules! broken_la57 {
    () => {
        "nop"
    };
}

core::arch::global_asm!(
    ".section .text.enter_kernel,\"xr\"",
    ".p2align 12",
    ".globl enter_kernel",
    // A COFF function symbol (storage class 2 = external, type 0x20 = function), so that the
    // PDB names it and td-audit's report says `enter_kernel`.
    ".def enter_kernel",
    ".scl 2",
    ".type 32",
    ".endef",
    // rdi = &EntryState (sysv64). Everything is read into registers before CR3 changes: the
    // state lives on the loader's stack, which the kernel's tables do not map.
    "enter_kernel:",
    "cli",
    "lgdt [rdi]",
    "lidt [rdi + 16]",
    "mov rax, [rdi + 32]",
    "mov rsi, [rdi + 40]",
    "mov rdx, [rdi + 48]",
    "mov r8, [rdi + 64]",
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
    "mov rcx, cr4",
    "bt ecx, 12",
    broken_la57!(),
    // 4-level paging: from here on only this page (identity-mapped in both tables) and the
    // kernel's stack.
    "mov cr3, rax",
    "jmp 5f",
    // 5-level paging: leave it (see above).
    "3:",
    "mov rsp, r8",
    "push rdi",
    "push rdx",
    "push rsi",
    "lea rdx, [rip + 4f]",
    "push 0x18",
    "lea rcx, [rip + 6f]",
    "push rcx",
    "retfq",
    ".code32",
    "6:",
    "mov ecx, cr0",
    "btr ecx, 31",
    "mov cr0, ecx",
    "mov ecx, cr4",
    "btr ecx, 12",
    "mov cr4, ecx",
    "mov cr3, eax",
    "mov ecx, cr0",
    "bts ecx, 31",
    "mov cr0, ecx",
    "push 0x08",
    "push edx",
    "retf",
    ".code64",
    "4:",
    "mov esp, esp",
    "pop rsi",
    "pop rdx",
    "pop rdi",
    "5:",
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

/// Test-only (`test-enable-la57`): turns 5-level paging on after ExitBootServices, so that a
/// TCG boot (`-cpu max,la57=on`, Debian's OVMF runs 4-level) reaches `enter_kernel` with
/// CR4.LA57 set, as a 5-level TDVF hands over. The same switch as the trampoline's, the other
/// way: compatibility mode, CR0.PG off, CR4.LA57 on, CR3 = a PML5 whose entry 0 is the
/// firmware's PML4 (so every address the loader uses translates as before), CR0.PG on, back to
/// 64-bit mode, and back to the caller on its own stack.
#[cfg(feature = "test-enable-la57")]
mod test_la57 {
    core::arch::global_asm!(
        ".section .text.test_la57,\"xr\"",
        ".p2align 12",
        ".globl test_enable_la57",
        ".def test_enable_la57",
        ".scl 2",
        ".type 32",
        ".endef",
        // rdi = the PML5 (below 4 GiB), rsi = top of the switch stack (below 4 GiB, mapped by
        // the firmware), rdx = &GDTR of the loader's GDT (with its 32-bit code segment).
        "test_enable_la57:",
        "cli",
        "mov rax, rsp",
        "mov rsp, rsi",
        "push rax",
        "push rbx",
        "push rbp",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "lgdt [rdx]",
        "mov ecx, 0x10",
        "mov ds, ecx",
        "mov es, ecx",
        "mov ss, ecx",
        "lea rdx, [rip + 3f]",
        "push 0x18",
        "lea rcx, [rip + 2f]",
        "push rcx",
        "retfq",
        ".code32",
        "2:",
        "mov ecx, cr0",
        "btr ecx, 31",
        "mov cr0, ecx",
        "mov ecx, cr4",
        "bts ecx, 12",
        "mov cr4, ecx",
        "mov cr3, edi",
        "mov ecx, cr0",
        "bts ecx, 31",
        "mov cr0, ecx",
        "push 0x08",
        "push edx",
        "retf",
        ".code64",
        "3:",
        "mov esp, esp",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbp",
        "pop rbx",
        "pop rsp",
        "ret",
        ".text",
    );

    extern "sysv64" {
        pub fn test_enable_la57(pml5: u64, stack_top: u64, gdtr: &super::DescriptorTablePointer);
    }
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
    // The trampoline's pages stay mapped and executable in the kernel's tables: not usable.
    #[allow(unused_mut)]
    let mut count = memory_map::convert_keeping(
        map.entries().map(uefi_map::descriptor),
        trampoline_pages(),
        regions,
    );
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
    let gdt = DescriptorTablePointer {
        limit: (core::mem::size_of_val(&GDT) - 1) as u16,
        base: handoff.gdt,
    };
    let switch_stack = handoff.gdt + PAGE_4K;
    #[cfg(feature = "test-enable-la57")]
    // SAFETY: the PML5 maps what the firmware's PML4 maps; the stack and the GDT page lie
    // below 4 GiB (checked in `plan`), and this code is identity-mapped there.
    unsafe {
        test_la57::test_enable_la57(handoff.test_pml5, switch_stack, &gdt)
    };
    let state = EntryState {
        gdt,
        _pad1: [0; 6],
        // An empty IDT: an exception before the kernel's own `lidt` shuts the machine down
        // instead of running firmware handlers from memory the kernel now owns.
        idt: DescriptorTablePointer { limit: 0, base: 0 },
        _pad2: [0; 6],
        page_table: handoff.page_table,
        stack_top: handoff.stack_top,
        entry: handoff.entry,
        boot_info: handoff.boot_info_virtual,
        switch_stack,
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
