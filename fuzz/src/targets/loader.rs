//! loader-core: the kernel ELF on a host-owned disk, its `.bootloader-config`, the firmware's
//! memory map, and the page-table plan built from them.

use crate::input::Input;
use bootloader_api::info::{MemoryRegion, MemoryRegionKind};
use bootloader_api::BootloaderConfig;
use loader_core::elf::{Kernel, PAGE_SIZE};
use loader_core::layout::{Layout, SLOT_SIZE};
use loader_core::memory_map::{self, UefiDescriptor};
use loader_core::paging::{
    self, slot_address, Frames, MapError, PageTables, ADDRESS_MASK, PAGE_2M, PAGE_4K,
};
use loader_core::{checks, config};
use std::collections::BTreeMap;

/// The largest image the target loads and relocates (the loader allocates `image_len` bytes;
/// beyond this the fuzzer would only measure the allocator).
const MAX_IMAGE: u64 = 1 << 20;
/// The most pages whose permissions the target asks for.
const MAX_PAGES: u64 = 1024;

/// An ELF file as the loader reads it: parse, span, permissions, the config section, load and
/// relocation. An accepted kernel's facts hold together.
pub fn elf(data: &[u8]) {
    let Ok(kernel) = Kernel::parse(data) else { return };
    let (start, end) = kernel.span();
    assert!(start <= end && start % PAGE_SIZE == 0 && end % PAGE_SIZE == 0);
    assert_eq!(kernel.image_len(), end - start);
    assert!(kernel.program_headers().len() <= 32);
    assert!(start <= kernel.entry() && kernel.entry() < end, "entry outside the span");
    let _ = kernel.tls();
    if let Ok(section) = kernel.section(b".bootloader-config") {
        let _ = config::parse(section);
    }
    let mut page = start;
    while page < end && (page - start) / PAGE_SIZE < MAX_PAGES {
        let _ = kernel.page_permissions(page);
        page += PAGE_SIZE;
    }
    if kernel.image_len() <= MAX_IMAGE {
        let mut image = vec![0u8; kernel.image_len() as usize];
        kernel.load_into(&mut image);
        for bias in [0, 0xffff_8000_0000_0000u64.wrapping_sub(start), u64::MAX - 0xfff] {
            let mut relocated = image.clone();
            if let Ok(count) = kernel.relocate(&mut relocated, bias) {
                assert!(count as u64 * 24 <= kernel.image_len());
                assert_eq!(relocated.len(), image.len());
            }
        }
    }
}

/// `.bootloader-config` contents. With the first byte odd the rest is written over the default
/// configuration past its UUID, so that most inputs reach the field decoding.
pub fn config(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let rest = input.rest();
    let section = if mode & 1 == 1 {
        let mut bytes = BootloaderConfig::new_default().serialize();
        let at = 16 + usize::from(mode >> 1) % 16;
        for (byte, fuzz) in bytes.iter_mut().skip(at).zip(rest) {
            *byte ^= fuzz;
        }
        bytes.to_vec()
    } else {
        rest.to_vec()
    };
    if let Ok(parsed) = config::parse(&section) {
        assert_eq!(config::parse(&parsed.serialize()).ok(), Some(parsed));
    }
}

fn descriptor(input: &mut Input) -> UefiDescriptor {
    let kind = input.u8();
    // Mostly the types the conversion distinguishes; sometimes any.
    let memory_type = match kind % 8 {
        0 => 7,
        1 => 4,
        2 => memory_map::LOADER_ALLOCATION_TYPE,
        3 => 15,
        4 => 0,
        5 => u32::from(kind),
        _ => input.u32(),
    };
    let start = if kind & 0x80 != 0 { input.u64() } else { u64::from(input.u16()) * PAGE_SIZE };
    let pages = if kind & 0x40 != 0 { input.u64() } else { u64::from(input.u8()) };
    UefiDescriptor { memory_type, physical_start: start, page_count: pages }
}

/// The firmware's memory map as the kernel's memory regions: sorted, disjoint, never more
/// usable than the firmware said, also when the output is too short; and the kernel's handoff
/// checks on the result.
pub fn memory_map(data: &[u8]) {
    let mut input = Input::new(data);
    let out_len = usize::from(input.u8() % 80);
    let mut descriptors = Vec::new();
    while !input.is_empty() && descriptors.len() < 40 {
        descriptors.push(descriptor(&mut input));
    }
    let mut regions =
        vec![MemoryRegion::empty(); out_len.max(memory_map::max_regions(descriptors.len()))];
    let written = memory_map::convert(descriptors.iter().copied(), &mut regions);
    let regions = &regions[..written];
    assert_eq!(checks::unsorted_or_overlapping(regions), None);
    for r in regions {
        assert!(r.start < r.end, "empty region {r:?}");
        // A region's kind is the most restrictive of the descriptors covering its start.
        let covering: Vec<_> = descriptors
            .iter()
            .filter(|d| d.end() > d.physical_start)
            .filter(|d| d.physical_start <= r.start && r.start < d.end())
            .collect();
        assert!(!covering.is_empty(), "region {r:?} covers no descriptor");
        if r.kind == MemoryRegionKind::Usable {
            assert!(covering
                .iter()
                .all(|d| memory_map::region_kind(d.memory_type) == MemoryRegionKind::Usable));
        }
    }
    // A short output keeps a prefix of the full conversion.
    let mut short = vec![MemoryRegion::empty(); out_len];
    let short_written = memory_map::convert(descriptors.iter().copied(), &mut short);
    assert!(short_written <= out_len.min(written));
    for (a, b) in short[..short_written].iter().zip(regions) {
        assert!(a.start == b.start && a.kind == b.kind && a.end <= b.end, "{a:?} vs {b:?}");
    }
    let highest = memory_map::highest_address(descriptors.iter().copied());
    assert!(regions.iter().all(|r| r.end <= highest));
    let ram: Vec<(u64, u64)> = descriptors
        .iter()
        .filter(|d| memory_map::region_kind(d.memory_type) == MemoryRegionKind::Usable)
        .map(|d| (d.physical_start, d.end()))
        .collect();
    assert_eq!(checks::usable_outside_ram(regions, &ram), None, "usable memory outside RAM");
    for r in regions {
        let found = checks::usable_region_at(regions, r.start);
        assert_eq!(found.is_some(), r.kind == MemoryRegionKind::Usable);
    }
}

/// Frames in a vector: frame n at physical address (n + 1) * 4 KiB.
struct VecFrames {
    tables: Vec<Box<[u64; 512]>>,
    limit: usize,
}

impl Frames for VecFrames {
    fn allocate_zeroed(&mut self) -> Option<u64> {
        if self.tables.len() >= self.limit {
            return None;
        }
        self.tables.push(Box::new([0; 512]));
        Some(self.tables.len() as u64 * PAGE_4K)
    }
    fn table(&mut self, frame: u64) -> &mut [u64; 512] {
        &mut self.tables[(frame / PAGE_4K - 1) as usize]
    }
}

fn address(input: &mut Input, page: u64) -> u64 {
    match input.u8() % 4 {
        // Near the kernel's usual places, aligned.
        0 => 0xffff_8000_0000_0000 + u64::from(input.u16()) * page,
        1 => u64::from(input.u16()) * page,
        2 => 0xffff_ffff_8000_0000u64.wrapping_add(u64::from(input.u16()) * page),
        _ => input.u64(),
    }
}

/// The page-table plan: the slot layout of dynamic mappings, and 4 KiB, 2 MiB, range and
/// recursive mappings in any order; every successful mapping translates as asked, every
/// refusal has its reason, and nothing is mapped twice.
pub fn page_tables(data: &[u8]) {
    let mut input = Input::new(data);
    let limit = 1 + usize::from(input.u8() % 48);
    let range_start = input.bool().then(|| input.u64());
    let range_end = input.bool().then(|| input.u64());
    let mut layout = Layout::new(range_start, range_end);
    let mut claimed = [false; 512];
    let Ok(mut tables) = PageTables::new(VecFrames { tables: Vec::new(), limit }) else { return };
    // virt page -> (phys page, flags, size)
    let mut mapped: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    let covered = |mapped: &BTreeMap<u64, (u64, u64, u64)>, virt: u64| {
        mapped.range(..=virt).next_back().is_some_and(|(&v, &(_, _, size))| virt - v < size)
    };
    // PML4 slots pointing at the PML4 itself: mappings through them edit page tables, which
    // the loader never does (its layout hands the recursive slot out like a dynamic one).
    let mut recursive = [false; 512];
    let slot = |virt: u64| ((virt >> 39) & 0x1ff) as usize;
    let mut steps = 0;
    while !input.is_empty() && steps < 64 {
        steps += 1;
        let op = input.u8();
        let flags = paging::leaf_flags(op & 0x10 != 0, op & 0x20 != 0);
        match op % 7 {
            0 | 1 => {
                let size = if op.is_multiple_of(7) { PAGE_4K } else { PAGE_2M };
                let (virt, phys) =
                    (address(&mut input, size), address(&mut input, size) & ADDRESS_MASK);
                if recursive[slot(virt)] {
                    continue;
                }
                let result = if size == PAGE_4K {
                    tables.map_4k(virt, phys, flags)
                } else {
                    tables.map_2m(virt, phys, flags)
                };
                match result {
                    Ok(()) => {
                        assert!(virt % size == 0 && phys % size == 0 && paging::is_canonical(virt));
                        assert!(!covered(&mapped, virt), "{virt:#x} mapped twice");
                        mapped.insert(virt, (phys, flags, size));
                        assert_eq!(
                            tables.translate(virt + (size - 1)),
                            Some((phys + (size - 1), flags))
                        );
                    }
                    Err(MapError::AlreadyMapped(_)) => {}
                    Err(MapError::OutOfFrames) => {}
                    Err(MapError::Misaligned(_)) => assert!(virt % size != 0 || phys % size != 0),
                    Err(MapError::NonCanonical(_)) => assert!(!paging::is_canonical(virt)),
                    Err(MapError::PhysicalTooHigh(_)) => assert!(phys & !ADDRESS_MASK != 0),
                }
            }
            2 => {
                let virt = address(&mut input, PAGE_4K);
                let phys = address(&mut input, PAGE_4K) & ADDRESS_MASK;
                let len = u64::from(input.u8()) * PAGE_4K / 4;
                if recursive[slot(virt)] || recursive[slot(virt.wrapping_add(len))] {
                    continue;
                }
                if tables.map_range_4k(virt, phys, len, flags).is_ok() {
                    let mut offset = 0;
                    while offset < len {
                        assert!(!covered(&mapped, virt + offset));
                        mapped.insert(virt + offset, (phys + offset, flags, PAGE_4K));
                        offset += PAGE_4K;
                    }
                }
            }
            3 => {
                let index = usize::from(input.u16() % 512);
                if tables.map_recursive(index).is_ok() {
                    assert!(!mapped.keys().any(|&v| slot(v) == index), "slot {index} in use");
                    recursive[index] = true;
                }
            }
            4 => {
                let virt = address(&mut input, 1);
                let len = if input.bool() { input.u64() } else { u64::from(input.u32()) };
                if layout.claim(virt, len).is_ok() {
                    let last = virt + (len.max(1) - 1);
                    for slot in (virt >> 39) & 0x1ff..=(last >> 39) & 0x1ff {
                        claimed[slot as usize] = true;
                    }
                }
            }
            5 => {
                let len = if input.bool() { input.u64() } else { u64::from(input.u32()) * PAGE_4K };
                if let Ok(start) = layout.allocate(len) {
                    let slots = len.div_ceil(SLOT_SIZE).max(1);
                    let first = ((start >> 39) & 0x1ff) as usize;
                    assert_eq!(slot_address(first), start);
                    for (slot, taken) in
                        claimed.iter_mut().enumerate().skip(first).take(slots as usize)
                    {
                        assert!(!*taken, "slot {slot} handed out twice");
                        *taken = true;
                    }
                    assert!(range_start.is_none_or(|s| start >= s));
                }
            }
            _ => {
                let virt = address(&mut input, 1);
                let expected = mapped
                    .range(..=virt)
                    .next_back()
                    .and_then(|(&v, &(p, f, size))| (virt - v < size).then(|| (p + (virt - v), f)));
                if let Some(expected) = expected {
                    assert_eq!(tables.translate(virt), Some(expected), "{virt:#x}");
                }
            }
        }
    }
}
