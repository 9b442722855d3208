//! Checks of what the loader handed over (bootloader_api 0.11.17): they run under both loaders,
//! ours (`boot/loader`) and the `bootloader` crate's, and hold each to the contract.
//!
//! The facts come from the live page tables (`memory::translate`), the kernel's own ELF headers
//! (mapped at `kernel_image_offset`, in its first PT_LOAD segment) and QEMU's `etc/e820`; the
//! judgement is `loader_core::checks`, whose host tests show each check failing on a synthetic
//! map. `harness:broken-loader-and-pic-probe` boots a loader built to break the handoff and expects these
//! checks to fail.

use super::{Context, Outcome, Tally};
use crate::memory::{self, AccessError};
use crate::{fail, pass, skip};
use bootloader_api::BootInfo;
use loader_core::checks;

const PAGE: u64 = 4096;

pub fn run(ctx: &Context, tally: &mut Tally) {
    tally.run("boot.usable_in_ram", || usable_in_ram(ctx.boot_info));
    tally.run("boot.usable_avoids_loaded", || usable_avoids_loaded(ctx.boot_info));
    tally.run("boot.physical_map_readback", || physical_map_readback(ctx.boot_info));
    tally.run("boot.stack_guard", || stack_guard(ctx.boot_info));
    tally.run("boot.kernel_permissions", || kernel_permissions(ctx.boot_info));
}

/// QEMU's RAM ranges (`etc/e820`, entries of address u64, length u64, type u32; type 1 = RAM).
fn e820_ram(ranges: &mut [(u64, u64); 32]) -> Option<usize> {
    let mut raw = [0u8; 32 * 20];
    let size = crate::fw_cfg::file(b"etc/e820", &mut raw)?;
    let mut count = 0;
    for entry in raw[..size.min(raw.len())].as_chunks::<20>().0 {
        let field = |at: usize| u64::from_le_bytes(entry[at..at + 8].try_into().unwrap_or([0; 8]));
        if u32::from_le_bytes([entry[16], entry[17], entry[18], entry[19]]) == 1 {
            ranges[count] = (field(0), field(0).saturating_add(field(8)));
            count += 1;
        }
    }
    Some(count)
}

fn usable_in_ram(boot_info: &BootInfo) -> Outcome {
    let mut ram = [(0, 0); 32];
    let Some(count) = e820_ram(&mut ram) else {
        return skip!("no fw_cfg etc/e820 to say where RAM is (not QEMU)");
    };
    match checks::usable_outside_ram(&boot_info.memory_regions, &ram[..count]) {
        Some((start, end)) => fail!("usable {start:#x}-{end:#x} is not RAM in etc/e820"),
        None => pass!("every usable region lies in the {count} RAM ranges of etc/e820"),
    }
}

/// A PT_LOAD segment: link address, memory size, p_flags.
type Segment = (u64, u64, u32);

/// The kernel's PT_LOAD segments, from its own ELF header in memory, up to 16, and how many.
fn own_segments(boot_info: &BootInfo) -> Result<([Segment; 16], usize), &'static str> {
    let base = boot_info.kernel_image_offset;
    let readable = |address: u64, len: u64| memory::check_access(address, len, false).is_ok();
    if !readable(base, 64) {
        return Err("the ELF header is not mapped at kernel_image_offset");
    }
    // SAFETY: the 64 bytes at `base` are mapped (checked above) and belong to the kernel's
    // first segment, which the loader maps read-only and nobody writes.
    let header = unsafe { core::slice::from_raw_parts(base as *const u8, 64) };
    if header[..4] != *b"\x7fELF" {
        return Err("no ELF header at kernel_image_offset");
    }
    let phoff = u64::from_le_bytes(header[32..40].try_into().unwrap_or([0; 8]));
    let phnum = u16::from_le_bytes([header[56], header[57]]) as u64;
    if phnum > 32 || !readable(base + phoff, phnum * 56) {
        return Err("the program headers are not mapped");
    }
    let mut segments = [(0, 0, 0); 16];
    let mut count = 0;
    for i in 0..phnum {
        // SAFETY: inside the program header table checked readable above.
        let ph = unsafe { core::slice::from_raw_parts((base + phoff + i * 56) as *const u8, 56) };
        let word = |at: usize| u64::from_le_bytes(ph[at..at + 8].try_into().unwrap_or([0; 8]));
        let kind = u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]);
        if kind == 1 && word(40) > 0 && count < segments.len() {
            segments[count] =
                (word(16), word(40), u32::from_le_bytes([ph[4], ph[5], ph[6], ph[7]]));
            count += 1;
        }
    }
    Ok((segments, count))
}

/// Calls `f` with every page of `[start, start + len)`.
// The error is the check's outcome, a fixed buffer by design (no heap on report paths).
#[allow(clippy::result_large_err)]
fn pages(
    start: u64,
    len: u64,
    mut f: impl FnMut(u64) -> Result<(), Outcome>,
) -> Result<(), Outcome> {
    let mut page = start & !(PAGE - 1);
    while page < start.saturating_add(len) {
        f(page)?;
        page += PAGE;
    }
    Ok(())
}

#[allow(clippy::result_large_err)] // closures returning the outcome, as `pages`
fn usable_avoids_loaded(boot_info: &BootInfo) -> Outcome {
    let regions = &boot_info.memory_regions;
    let (segments, count) = match own_segments(boot_info) {
        Ok(found) => found,
        Err(why) => return fail!("{why}"),
    };
    let mut checked = 0u64;
    let mut not_usable = |what: &str, virt: u64| -> Result<(), Outcome> {
        let physical = match memory::translate(virt) {
            Ok(t) => t.physical,
            Err(e) => return Err(fail!("{what} page {virt:#x}: {e}")),
        };
        checked += 1;
        match checks::usable_region_at(regions, physical) {
            Some(r) => Err(fail!(
                "{what} at {virt:#x} (physical {physical:#x}) lies in usable region {:#x}-{:#x}",
                r.start,
                r.end
            )),
            None => Ok(()),
        }
    };
    let result = (|| {
        for &(vaddr, size, _) in &segments[..count] {
            pages(boot_info.kernel_image_offset + vaddr, size, |p| not_usable("kernel", p))?;
        }
        pages(boot_info.kernel_stack_bottom, boot_info.kernel_stack_len, |p| {
            not_usable("stack", p)
        })?;
        let info = boot_info as *const BootInfo as u64;
        pages(info, core::mem::size_of::<BootInfo>() as u64, |p| not_usable("boot info", p))?;
        let array = regions.as_ptr() as u64;
        pages(array, core::mem::size_of_val::<[_]>(regions) as u64, |p| {
            not_usable("region array", p)
        })?;
        let (level4, _) = x86_64::registers::control::Cr3::read_raw();
        let root = level4.start_address().as_u64();
        match checks::usable_region_at(regions, root) {
            Some(_) => Err(fail!("the PML4 at {root:#x} lies in a usable region")),
            None => Ok(()),
        }
    })();
    match result {
        Err(outcome) => outcome,
        Ok(()) => pass!(
            "{checked} pages of kernel, stack, boot info and regions, and the PML4: none usable"
        ),
    }
}

fn physical_map_readback(boot_info: &BootInfo) -> Outcome {
    let Some(offset) = memory::physical_memory_offset() else {
        return fail!("no physical-memory mapping");
    };
    let virt = boot_info as *const BootInfo as u64;
    let physical = match memory::translate(virt) {
        Ok(t) => t.physical,
        Err(e) => return fail!("boot info at {virt:#x}: {e}"),
    };
    let len = core::mem::size_of::<BootInfo>();
    if memory::check_access(offset + physical, len as u64, false).is_err() {
        return fail!("physical {physical:#x} is not mapped at offset {offset:#x}");
    }
    // SAFETY: both ranges are mapped (checked above) and only read; the boot info is not
    // written while the self-test runs.
    let (direct, through_map) = unsafe {
        (
            core::slice::from_raw_parts(virt as *const u8, len),
            core::slice::from_raw_parts((offset + physical) as *const u8, len),
        )
    };
    if direct != through_map {
        return fail!(
            "boot info at physical {physical:#x} reads differently through offset {offset:#x}"
        );
    }
    pass!("boot info at {virt:#x} = physical {physical:#x}, same {len} bytes through the offset")
}

fn stack_guard(boot_info: &BootInfo) -> Outcome {
    let bottom = boot_info.kernel_stack_bottom;
    let top = bottom + boot_info.kernel_stack_len;
    let rsp: u64;
    // SAFETY: reads RSP only.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags))
    };
    if !(bottom..top).contains(&rsp) {
        return fail!("RSP {rsp:#x} is outside the stack {bottom:#x}-{top:#x}");
    }
    match memory::translate(bottom - PAGE) {
        Err(AccessError::NotMapped(_)) => {
            pass!("guard page {:#x} unmapped below the stack {bottom:#x}-{top:#x}", bottom - PAGE)
        }
        Ok(t) => fail!("guard page {:#x} is mapped (physical {:#x})", bottom - PAGE, t.physical),
        Err(e) => fail!("guard page {:#x}: {e}", bottom - PAGE),
    }
}

#[allow(clippy::result_large_err)] // closures returning the outcome, as `pages`
fn kernel_permissions(boot_info: &BootInfo) -> Outcome {
    let (segments, count) = match own_segments(boot_info) {
        Ok(found) => found,
        Err(why) => return fail!("{why}"),
    };
    let segments = &segments[..count];
    let mut checked = 0u64;
    let result = (|| {
        for &(vaddr, size, _) in segments {
            pages(vaddr, size, |page| {
                // Segments sharing a page share its mapping: judge the page by all of them.
                let flags = segments
                    .iter()
                    .filter(|(v, s, _)| (v & !(PAGE - 1)) <= page && page < v + s)
                    .fold(0, |acc, (_, _, f)| acc | f);
                let virt = boot_info.kernel_image_offset + page;
                let t = memory::translate(virt).map_err(|e| fail!("kernel page {virt:#x}: {e}"))?;
                checked += 1;
                match checks::permission_error(flags, t.writable, t.executable) {
                    Some(why) => Err(fail!("page {virt:#x} (p_flags {flags:#x}): {why}")),
                    None => Ok(()),
                }
            })?;
        }
        Ok(())
    })();
    match result {
        Err(outcome) => outcome,
        Ok(()) => {
            pass!("{checked} pages of {count} segments: text not writable, data not executable")
        }
    }
}
