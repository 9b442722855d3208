//! Folded boots (test image only, cargo feature `test-modes`): several boot modes in one boot.
//!
//! Most of the harness's fatal runs stop the kernel within a dozen lines of its start, and a
//! boot costs the firmware's 2.5 s under TCG before the kernel runs. So the harness may give
//! `opt/tdx-unikernel/mode` several modes separated by `;` ([`crate::bootflags`] picks the
//! current one). The kernel runs the first. Where it would leave the machine (the exit device
//! write of [`crate::exit`], the softtdx host's stop), it ends the *segment* instead: it prints
//! [`SEGMENT_END`] with the exit value it was about to write, and starts over with the next mode
//! as the loader started it:
//! - the writable data segment as the loader left it, `.bss` zeroed (every lock, allocator,
//!   counter and the softtdx model start afresh), except this module's own record;
//! - every page table the loader built, and the boot memory map, as they were at entry (the
//!   kernel splits, shares and maps pages, and softtdx marks RAM above 4 GiB unaccepted);
//! - the stack from where the first entry found it, RFLAGS with IF and TF clear, entered through
//!   IRETQ (which also ends any NMI blocking).
//!
//! Only the last mode leaves the machine. What a segment does not have is a fresh machine: it
//! finds the devices and MSRs as the previous segment left them (the UART, fw_cfg's and PCI's
//! selectors, the virtio device its driver resets), not as the firmware did; and its own exit
//! through the device (QEMU's exit status) is shown only by the last segment, so the harness
//! judges each segment's exit from the value on its end line. That is why the harness folds
//! only runs that stop within their first lines (xtask/src/test/fold.rs), and why each of them
//! still boots alone with `cargo xtask test --run ID`.
//!
//! The record is taken at the first entry, before anything runs. If it cannot be taken (page
//! tables larger than the room kept for them, 5-level paging), nothing is folded: the first
//! segment's end is the machine's, and the harness reports the modes that never ran.

use bootloader_api::info::MemoryRegion;
use bootloader_api::BootInfo;
use core::fmt::Write;

/// The line that ends every segment but the last: `{SEGMENT_END}{n} of {count}: exit {value:#x}`.
pub const SEGMENT_END: &str = "tdx-unikernel: fold: end of segment ";

/// Room for the loader's page tables, 4 KiB each, other than the linear page directories below.
/// With Debian 12's OVMF the td machine has 26 tables in all (the legacy machine 22).
const MAX_TABLES: usize = 64;
/// Room for *linear* page directories: 512 present 2 MiB leaves mapping one contiguous,
/// 2 MiB-aligned run with the same flags, kept as their first entry (16 bytes each). The
/// loader's physical-memory map reaches the highest address in the memory map: with Debian
/// 13's OVMF 2025.02, whose 64-bit PCI window lies near 1 TiB, that is 1,029 directories, all
/// but a few of them linear.
const MAX_LINEAR: usize = 16 * 1024;
/// A 2 MiB page, the step between a linear directory's entries.
const PAGE_2M: u64 = 2 * 1024 * 1024;
/// Room for the initialised part of the writable data segment (`.data`, about 8 KiB).
const MAX_DATA: usize = 16 * 1024;
/// Room for the boot memory map's regions.
const MAX_REGIONS: usize = 128;
/// A page table's 512 entries.
type Table = [u64; 512];

/// What a restart needs, kept across restarts: [`restart`] zeroes `.bss` around it.
struct Record {
    /// Why the record could not be taken at the first entry; `None` when it was.
    refused: Option<&'static str>,
    /// The current segment, from 0.
    segment: u32,
    /// How many modes the boot flags hold (set each time they are read; 0 before).
    segments: u32,
    boot_info: u64,
    entry: u64,
    stack_top: u64,
    cr3: u64,
    physical_memory_offset: u64,
    data: (u64, usize, usize),
    data_copy: [u8; MAX_DATA],
    tables: usize,
    table_addresses: [u64; MAX_TABLES],
    table_copies: [Table; MAX_TABLES],
    linear: usize,
    /// Linear page directories: their address and first entry.
    linear_directories: [(u64, u64); MAX_LINEAR],
    /// The regions' bytes (`MemoryRegion` is `repr(C)`): bytes keep the record all zeros, so
    /// that it lies in `.bss`, not in the kernel file.
    region_bytes: usize,
    region_copies: [u8; MAX_REGIONS * core::mem::size_of::<MemoryRegion>()],
}

static mut RECORD: Record = Record {
    refused: None,
    segment: 0,
    segments: 0,
    boot_info: 0,
    entry: 0,
    stack_top: 0,
    cr3: 0,
    physical_memory_offset: 0,
    data: (0, 0, 0),
    data_copy: [0; MAX_DATA],
    tables: 0,
    table_addresses: [0; MAX_TABLES],
    table_copies: [[0; 512]; MAX_TABLES],
    linear: 0,
    linear_directories: [(0, 0); MAX_LINEAR],
    region_bytes: 0,
    region_copies: [0; MAX_REGIONS * core::mem::size_of::<MemoryRegion>()],
};

/// The record. One CPU, and the record is written only at the first entry, when the boot flags
/// are read, and by [`restart`]: nothing else runs then.
fn record() -> &'static mut Record {
    // SAFETY: see above; no reference to the record outlives one of these calls' callers.
    unsafe { &mut *core::ptr::addr_of_mut!(RECORD) }
}

/// The current segment, from 0.
pub fn segment() -> u32 {
    record().segment
}

/// How many modes the boot flags hold.
pub fn set_segments(count: u32) {
    record().segments = count;
}

/// At kernel entry, first thing: at the first entry records what a restart restores; at later
/// ones does nothing. `entry` is the kernel's entry function, which a restart calls again.
pub fn enter(boot_info: &mut BootInfo, entry: fn(&'static mut BootInfo) -> !) {
    let record = record();
    if record.boot_info != 0 {
        return;
    }
    record.boot_info = boot_info as *mut BootInfo as u64;
    record.entry = entry as *const () as u64;
    let rsp: u64;
    // SAFETY: reads RSP.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack)) };
    // Below the caller's frame is ours; the restarted kernel's frames start here.
    record.stack_top = rsp & !0xF;
    record.refused = capture(record, boot_info).err();
}

fn capture(record: &mut Record, boot_info: &BootInfo) -> Result<(), &'static str> {
    record.physical_memory_offset =
        boot_info.physical_memory_offset.into_option().ok_or("no physical-memory mapping")?;
    let regions: &[MemoryRegion] = &boot_info.memory_regions;
    let bytes = core::mem::size_of_val(regions);
    if bytes > record.region_copies.len() {
        return Err("more memory regions than the record holds");
    }
    // SAFETY: `bytes` bytes of the regions (plain `repr(C)` data) into the record's room.
    unsafe {
        let from = regions.as_ptr() as *const u8;
        core::ptr::copy_nonoverlapping(from, record.region_copies.as_mut_ptr(), bytes);
    }
    record.region_bytes = bytes;
    // The record itself must lie in the zeroed part, which a restart zeroes around it.
    let keep = core::ptr::addr_of!(RECORD) as u64;
    let (address, filesz, memsz) =
        data_segment(keep).ok_or("no loaded segment holds the record")?;
    let zeroed = address + filesz as u64..address + memsz as u64;
    let record_size = core::mem::size_of::<Record>() as u64;
    if filesz > MAX_DATA {
        return Err(".data is larger than the record holds");
    }
    if !zeroed.contains(&keep) || keep + record_size > zeroed.end {
        return Err("the record is not in .bss");
    }
    // SAFETY: the segment's initialised part is `filesz` mapped bytes at `address`.
    let data = unsafe { core::slice::from_raw_parts(address as *const u8, filesz) };
    record.data_copy[..filesz].copy_from_slice(data);
    record.data = (address, filesz, memsz);
    // SAFETY: reading CR3 and CR4 has no side effects.
    let (cr3, cr4) = unsafe {
        let (cr3, cr4): (u64, u64);
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack));
        core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack));
        (cr3, cr4)
    };
    const CR4_LA57: u64 = 1 << 12;
    if cr4 & CR4_LA57 != 0 {
        return Err("5-level paging");
    }
    record.cr3 = cr3;
    record.tables = 0;
    record.linear = 0;
    save_table(record, cr3 & crate::arch::paging::FRAME_MASK, 4)
        .ok_or("more page tables than the record holds")
}

/// Saves the table at `physical` and, below the PT level, every table its entries point to.
fn save_table(record: &mut Record, physical: u64, level: u32) -> Option<()> {
    use crate::arch::paging::{FRAME_MASK, HUGE_PAGE, PRESENT};
    // SAFETY: a page table the loader built, mapped with all physical memory at the offset.
    let table = unsafe { &*((record.physical_memory_offset + physical) as *const Table) };
    if level == 2 && is_linear(table) {
        if record.linear == MAX_LINEAR {
            return None;
        }
        record.linear_directories[record.linear] = (physical, table[0]);
        record.linear += 1;
        return Some(());
    }
    if record.tables == MAX_TABLES {
        return None;
    }
    let index = record.tables;
    record.tables += 1;
    record.table_addresses[index] = physical;
    record.table_copies[index] = *table;
    if level == 1 {
        return Some(());
    }
    for &entry in table {
        // A PS bit at the PML4 level is reserved; at the PDPT and PD levels it maps a page.
        if entry & PRESENT != 0 && (level == 4 || entry & HUGE_PAGE == 0) {
            save_table(record, entry & FRAME_MASK, level - 1)?;
        }
    }
    Some(())
}

/// Whether a page directory is 512 present 2 MiB leaves, each mapping the 2 MiB after the one
/// before with the same flags: then its first entry gives back all of it.
fn is_linear(directory: &Table) -> bool {
    use crate::arch::paging::{HUGE_PAGE, PRESENT};
    let first = directory[0];
    first & (PRESENT | HUGE_PAGE) == PRESENT | HUGE_PAGE
        && directory.iter().zip(0..).all(|(&entry, i)| entry == first + i * PAGE_2M)
}

/// The writable segment that holds `.data` and `.bss`, from the kernel's own ELF program
/// headers: the loaded segment that contains `inside` (an address in `.bss`), as its address,
/// file size and memory size.
fn data_segment(inside: u64) -> Option<(u64, usize, usize)> {
    extern "C" {
        /// The ELF header, in the kernel's first loaded segment (defined by the linker).
        static __ehdr_start: u8;
    }
    const PT_LOAD: u32 = 1;
    let base = core::ptr::addr_of!(__ehdr_start) as u64;
    let read = |at: u64, len: usize| -> u64 {
        let mut bytes = [0u8; 8];
        // SAFETY: the ELF header and the program headers lie in the kernel's first loaded
        // segment (readelf: the PHDR entry is inside it); field offsets from the ELF-64
        // specification.
        unsafe { core::ptr::copy_nonoverlapping(at as *const u8, bytes.as_mut_ptr(), len) };
        u64::from_le_bytes(bytes)
    };
    let (phoff, phentsize, phnum) =
        (read(base + 0x20, 8), read(base + 0x36, 2), read(base + 0x38, 2));
    (0..phnum).map(|index| base + phoff + index * phentsize).find_map(|header| {
        let kind = read(header, 4) as u32;
        let (vaddr, filesz, memsz) =
            (read(header + 16, 8), read(header + 32, 8), read(header + 40, 8));
        let start = base + vaddr;
        (kind == PT_LOAD && (start..start + memsz).contains(&inside)).then_some((
            start,
            filesz as usize,
            memsz as usize,
        ))
    })
}

/// Where the kernel would leave the machine with `value` (the exit device's value): if another
/// segment follows, ends this one and restarts the kernel for it (never returns); otherwise
/// returns, and the caller leaves the machine.
pub fn end_segment(value: u32) {
    let record = record();
    if record.segment + 1 >= record.segments.max(1) {
        // The machine's own end: the caller goes on as in an unfolded boot, stepped as before.
        return;
    }
    // The end line is written natively, and a restart zeroes the model: nothing from here on
    // may be single-stepped. (TF comes back only if the restart is refused.)
    crate::arch::without_single_step(|| {
        let _ = write!(
            crate::console::NativeConsole,
            "\n{SEGMENT_END}{} of {}: exit {value:#x}",
            record.segment + 1,
            record.segments
        );
        if let Some(why) = record.refused {
            let _ = writeln!(
                crate::console::NativeConsole,
                "; cannot restart: the entry record was not taken: {why}"
            );
            return;
        }
        let _ = writeln!(crate::console::NativeConsole, "; restarting the kernel for the next");
        restart(record)
    })
}

fn restart(record: &mut Record) -> ! {
    // SAFETY: every copy goes back to where `capture` took it from, into memory the loader
    // mapped and the kernel owns; the loader's tables map the kernel, its stack and all physical
    // memory as the kernel's own edits did, and nothing else runs.
    unsafe {
        for index in 0..record.tables {
            let table =
                (record.physical_memory_offset + record.table_addresses[index]) as *mut Table;
            table.write(record.table_copies[index]);
        }
        for &(physical, first) in &record.linear_directories[..record.linear] {
            let directory = (record.physical_memory_offset + physical) as *mut u64;
            for i in 0..512 {
                directory.add(i).write(first + i as u64 * PAGE_2M);
            }
        }
        core::arch::asm!("mov cr3, {}", in(reg) record.cr3, options(nostack));
        let cr4: u64;
        core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack));
        const CR4_PGE: u64 = 1 << 7;
        if cr4 & CR4_PGE != 0 {
            // Global translations survive a CR3 load: toggling PGE drops them too.
            core::arch::asm!("mov cr4, {}", "mov cr4, {}", in(reg) cr4 & !CR4_PGE, in(reg) cr4,
                             options(nostack));
        }
        let boot_info = &mut *(record.boot_info as *mut BootInfo);
        let regions = boot_info.memory_regions.as_mut_ptr() as *mut u8;
        core::ptr::copy_nonoverlapping(record.region_copies.as_ptr(), regions, record.region_bytes);
    }
    record.segment += 1;
    let stack_top = record.stack_top;
    let (cs, ss) = {
        use x86_64::instructions::segmentation::{Segment, CS, SS};
        (u64::from(CS::get_reg().0), u64::from(SS::get_reg().0))
    };
    // SAFETY: a frame for IRETQ to `restarted` on the kernel's stack, as if called: RSP 8 below
    // a 16-byte boundary, RFLAGS with only the reserved bit 1 set (IF and TF clear), the
    // current CS and SS, whose descriptors the still-loaded GDT holds.
    unsafe {
        core::arch::asm!(
            "push {ss}",
            "push {rsp}",
            "push 2",
            "push {cs}",
            "push {rip}",
            "iretq",
            ss = in(reg) ss,
            rsp = in(reg) stack_top - 8,
            cs = in(reg) cs,
            rip = in(reg) restarted as *const () as u64,
            options(noreturn),
        )
    }
}

/// The restarted kernel's first frame, on the fresh stack: resets the writable data segment,
/// then calls the entry function again. (After IRETQ, not before: IRETQ reads the GDT, which
/// lies in `.bss`. From the reset on, the loaded GDT and IDT are zeros until the entry function
/// installs its own; nothing here can fault.)
extern "sysv64" fn restarted() -> ! {
    let record = record();
    let (address, filesz, memsz) = record.data;
    let keep = core::ptr::addr_of!(RECORD) as u64;
    let keep_end = keep + core::mem::size_of::<Record>() as u64;
    // SAFETY: the segment is the kernel's writable data; `capture` checked that the record
    // lies inside its zeroed part [bss, end), which is zeroed around it. Only the record,
    // registers and the stack are used from here to the call.
    unsafe {
        core::ptr::copy_nonoverlapping(record.data_copy.as_ptr(), address as *mut u8, filesz);
        let bss = address + filesz as u64;
        let end = address + memsz as u64;
        core::ptr::write_bytes(bss as *mut u8, 0, (keep - bss) as usize);
        core::ptr::write_bytes(keep_end as *mut u8, 0, (end - keep_end) as usize);
    }
    // SAFETY: `entry` is the `fn(&'static mut BootInfo) -> !` that `enter` recorded, and
    // `boot_info` the loader's boot information it was called with; the previous segment's
    // reference to it is gone with its stack.
    let entry: fn(&'static mut BootInfo) -> ! =
        unsafe { core::mem::transmute(record.entry as usize) };
    entry(unsafe { &mut *(record.boot_info as *mut BootInfo) })
}
