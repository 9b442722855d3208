//! Checks of the kernel's own plumbing: boot info, heap, exception round trips.

use super::{Context, Outcome, Tally};
use crate::arch::idt::vector;
use crate::arch::trap::expected;
use crate::{fail, pass};
use alloc::boxed::Box;
use alloc::vec::Vec;

pub fn run(ctx: &Context, tally: &mut Tally) {
    tally.run("boot.memory_map", || memory_map(ctx));
    tally.run("boot.physical_memory_offset", || physical_memory_offset(ctx));
    tally.run("heap.alloc", heap_alloc);
    tally.run("exception.breakpoint", breakpoint);
    tally.run("exception.invalid_opcode", invalid_opcode);
}

fn memory_map(ctx: &Context) -> Outcome {
    let regions = &ctx.boot_info.memory_regions;
    if regions.is_empty() {
        return fail!("memory map is empty");
    }
    for pair in regions.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.start > a.end {
            return fail!("region {:#x}-{:#x} ends before it starts", a.start, a.end);
        }
        if b.start < a.end {
            return fail!(
                "regions {:#x}-{:#x} and {:#x}-{:#x} overlap or are unsorted",
                a.start,
                a.end,
                b.start,
                b.end
            );
        }
    }
    let usable: u64 = regions
        .iter()
        .filter(|r| r.kind == bootloader_api::info::MemoryRegionKind::Usable)
        .map(|r| r.end - r.start)
        .sum();
    pass!("{} regions, {} MiB usable", regions.len(), usable >> 20)
}

fn physical_memory_offset(ctx: &Context) -> Outcome {
    match ctx.boot_info.physical_memory_offset.into_option() {
        Some(offset) if offset % 4096 == 0 => pass!("offset {offset:#x}"),
        Some(offset) => fail!("offset {offset:#x} is not page aligned"),
        None => fail!("bootloader did not map physical memory"),
    }
}

fn heap_alloc() -> Outcome {
    let free_before = crate::heap::free_bytes();
    {
        let boxed = Box::new(0x1234_5678_u64);
        let mut numbers: Vec<u64> = (0..1000).collect();
        numbers.reverse();
        let sum: u64 = numbers.iter().sum();
        if *boxed != 0x1234_5678 || sum != 499_500 || numbers[0] != 999 {
            return fail!("heap data corrupted");
        }
        if crate::heap::free_bytes() >= free_before {
            return fail!("allocations did not use the heap");
        }
    }
    let free_after = crate::heap::free_bytes();
    if free_after != free_before {
        return fail!("{} bytes leaked", free_before - free_after);
    }
    pass!("{free_before} bytes free before and after")
}

fn breakpoint() -> Outcome {
    expected::arm(vector::BREAKPOINT, 0);
    // SAFETY: int3 raises #BP, a trap: the handler resumes at the next instruction.
    unsafe { core::arch::asm!("int3") };
    match expected::disarm() {
        1 => pass!("#BP taken and resumed"),
        n => fail!("#BP taken {n} times"),
    }
}

fn invalid_opcode() -> Outcome {
    expected::arm(vector::INVALID_OPCODE, 2);
    // SAFETY: ud2 raises #UD, a fault; the armed handler skips its two bytes.
    unsafe { core::arch::asm!("ud2") };
    match expected::disarm() {
        1 => pass!("#UD taken and resumed after ud2"),
        n => fail!("#UD taken {n} times"),
    }
}
