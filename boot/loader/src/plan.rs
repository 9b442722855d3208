//! Everything before ExitBootServices: the kernel loaded and relocated, its address space
//! built, the boot info filled in. Any failure here is an error on the UEFI console.

use crate::frames::{self, ChunkFrames};
use crate::handoff::{self, Handoff};
use crate::kernel_file;
use bootloader_api::config::Mapping;
use bootloader_api::info::{FrameBuffer, FrameBufferInfo, MemoryRegion, PixelFormat, TlsTemplate};
use bootloader_api::BootInfo;
use core::fmt;
use loader_core::config::{self, ConfigError};
use loader_core::elf::{ElfError, Kernel};
use loader_core::layout::{Layout, LayoutError};
use loader_core::memory_map::{self, UefiDescriptor};
use loader_core::paging::{leaf_flags, MapError, PageTables, PAGE_2M, PAGE_4K};
use uefi::boot::{self, MemoryType};
use uefi::mem::memory_map::MemoryMap;
use uefi::proto::console::gop::{GraphicsOutput, PixelFormat as GopPixelFormat};
use uefi::table::cfg::ConfigTableEntry;

pub enum LoadError {
    File(kernel_file::FileError),
    Elf(ElfError),
    Config(ConfigError),
    Unsupported(&'static str),
    Layout(LayoutError),
    Map(MapError),
    Uefi(&'static str, uefi::Status),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::File(e) => write!(f, "{e}"),
            LoadError::Elf(e) => write!(f, "kernel ELF: {e}"),
            LoadError::Config(e) => write!(f, "kernel config: {e}"),
            LoadError::Unsupported(what) => {
                write!(f, "kernel config asks for {what}, which this loader does not support")
            }
            LoadError::Layout(e) => write!(f, "address space: {e}"),
            LoadError::Map(e) => write!(f, "page tables: {e}"),
            LoadError::Uefi(what, status) => write!(f, "{what}: {status:?}"),
        }
    }
}

impl From<kernel_file::FileError> for LoadError {
    fn from(e: kernel_file::FileError) -> Self {
        LoadError::File(e)
    }
}
impl From<ElfError> for LoadError {
    fn from(e: ElfError) -> Self {
        LoadError::Elf(e)
    }
}
impl From<ConfigError> for LoadError {
    fn from(e: ConfigError) -> Self {
        LoadError::Config(e)
    }
}
impl From<LayoutError> for LoadError {
    fn from(e: LayoutError) -> Self {
        LoadError::Layout(e)
    }
}
impl From<MapError> for LoadError {
    fn from(e: MapError) -> Self {
        LoadError::Map(e)
    }
}

fn uefi_error(what: &'static str) -> impl Fn(uefi::Error) -> LoadError {
    move |e| LoadError::Uefi(what, e.status())
}

/// Regions the final memory map may have beyond the one read while planning: every allocation
/// after it can split a free descriptor, and ExitBootServices' own map buffer adds one.
const MAP_SLACK: usize = 64;

/// Where BootInfo's region array starts inside the boot-info allocation.
const REGIONS_OFFSET: u64 = 256;
const _: () = assert!(core::mem::size_of::<BootInfo>() <= REGIONS_OFFSET as usize);

struct GopFrameBuffer {
    physical: u64,
    info: FrameBufferInfo,
}

fn virtual_for(layout: &mut Layout, mapping: Mapping, len: u64) -> Result<u64, LayoutError> {
    match mapping {
        Mapping::FixedAddress(addr) => Ok(addr),
        Mapping::Dynamic => layout.allocate(len),
    }
}

fn claim_fixed(layout: &mut Layout, mapping: Option<Mapping>, len: u64) -> Result<(), LayoutError> {
    match mapping {
        Some(Mapping::FixedAddress(addr)) => layout.claim(addr, len),
        _ => Ok(()),
    }
}

fn pages(len: u64) -> u64 {
    len.div_ceil(PAGE_4K).max(1)
}

pub fn prepare() -> Result<Handoff, LoadError> {
    let file = kernel_file::read()?;
    let kernel = Kernel::parse(file)?;
    let config = config::parse(kernel.section(b".bootloader-config")?)?;
    let mappings = config.mappings;
    if mappings.aslr {
        return Err(LoadError::Unsupported("ASLR (mappings.aslr)"));
    }
    if !kernel.is_position_independent() && matches!(mappings.kernel_base, Mapping::FixedAddress(_))
    {
        return Err(LoadError::Unsupported(
            "a fixed base for a kernel that is not position-independent",
        ));
    }

    // The memory map as it is now: how far physical memory reaches, and how long the final map
    // can be.
    let (descriptors, highest) = {
        let map = boot::memory_map(MemoryType::LOADER_DATA)
            .map_err(uefi_error("cannot read the memory map"))?;
        let highest = memory_map::highest_address(map.entries().map(descriptor));
        (map.entries().len(), highest)
    };
    let physical_len = highest.max(4 << 30).next_multiple_of(PAGE_2M);
    let region_capacity = memory_map::max_regions(descriptors + MAP_SLACK);
    let boot_info_len =
        pages(REGIONS_OFFSET + (region_capacity * core::mem::size_of::<MemoryRegion>()) as u64)
            * PAGE_4K;
    let stack_len = pages(config.kernel_stack_size) * PAGE_4K;
    let framebuffer = graphics_output();

    // Virtual layout: identity pages first, then fixed mappings, then dynamic ones.
    let mut layout = Layout::new(mappings.dynamic_range_start, mappings.dynamic_range_end);
    let gdt = frames::allocate_zeroed(1).map_err(uefi_error("cannot allocate the GDT"))?;
    let trampoline = handoff::trampoline_pages();
    layout.claim(trampoline.start, trampoline.end - trampoline.start)?;
    layout.claim(gdt, PAGE_4K)?;
    let (span_start, span_end) = kernel.span();
    let image_len = span_end - span_start;
    if kernel.is_position_independent() {
        claim_fixed(&mut layout, Some(mappings.kernel_base), image_len)?;
    } else {
        layout.claim(span_start, image_len)?;
    }
    claim_fixed(&mut layout, Some(mappings.kernel_stack), stack_len + PAGE_4K)?;
    claim_fixed(&mut layout, Some(mappings.boot_info), boot_info_len)?;
    claim_fixed(&mut layout, mappings.physical_memory, physical_len)?;
    if let Some(fb) = &framebuffer {
        claim_fixed(&mut layout, Some(mappings.framebuffer), fb.info.byte_len as u64)?;
    }
    claim_fixed(&mut layout, mappings.page_table_recursive, 1)?;
    let kernel_base = if kernel.is_position_independent() {
        virtual_for(&mut layout, mappings.kernel_base, image_len)?
    } else {
        span_start
    };
    let stack_guard = virtual_for(&mut layout, mappings.kernel_stack, stack_len + PAGE_4K)?;
    let boot_info_virtual = virtual_for(&mut layout, mappings.boot_info, boot_info_len)?;
    let physical_offset = match mappings.physical_memory {
        Some(m) => Some(virtual_for(&mut layout, m, physical_len)?),
        None => None,
    };
    let framebuffer_virtual = match &framebuffer {
        Some(fb) => Some(virtual_for(&mut layout, mappings.framebuffer, fb.info.byte_len as u64)?),
        None => None,
    };
    let recursive_index = match mappings.page_table_recursive {
        Some(Mapping::FixedAddress(addr)) => Some(((addr >> 39) & 0x1FF) as u16),
        Some(Mapping::Dynamic) => Some(layout.allocate_slot()? as u16),
        None => None,
    };

    let mut tables = PageTables::new(ChunkFrames::new())?;

    // The kernel image: loaded, relocated, mapped page by page with its segments' permissions.
    let image = allocate_image(pages(image_len) as usize)
        .map_err(uefi_error("cannot allocate the kernel image"))?;
    // SAFETY: fresh pages of `image_len` bytes, ours alone.
    let image_bytes = unsafe { frames::bytes_mut(image, image_len as usize) };
    kernel.load_into(image_bytes);
    let bias = kernel_base.wrapping_sub(span_start);
    kernel.relocate(image_bytes, bias)?;
    let mut page = span_start;
    while page < span_end {
        if let Some(p) = kernel.page_permissions(page)? {
            tables.map_4k(
                page.wrapping_add(bias),
                image + (page - span_start),
                if cfg!(feature = "broken-handoff") {
                    leaf_flags(true, true)
                } else {
                    leaf_flags(p.writable, p.executable)
                },
            )?;
        }
        page += PAGE_4K;
    }

    // The stack, above an unmapped guard page.
    let stack = frames::allocate_zeroed(pages(stack_len) as usize)
        .map_err(uefi_error("cannot allocate the kernel stack"))?;
    let stack_bottom = stack_guard + PAGE_4K;
    tables.map_range_4k(stack_bottom, stack, stack_len, leaf_flags(true, false))?;
    #[cfg(feature = "broken-handoff")]
    {
        let guard = frames::allocate_zeroed(1).map_err(uefi_error("cannot allocate"))?;
        tables.map_4k(stack_guard, guard, leaf_flags(true, false))?;
    }

    // Boot info and the region array, one allocation.
    let boot_info = frames::allocate_zeroed(pages(boot_info_len) as usize)
        .map_err(uefi_error("cannot allocate the boot info"))?;
    tables.map_range_4k(boot_info_virtual, boot_info, boot_info_len, leaf_flags(true, false))?;

    if let Some(offset) = physical_offset {
        let mut physical = 0;
        while physical < physical_len {
            #[cfg(feature = "broken-handoff")]
            if physical == boot_info & !(PAGE_2M - 1) {
                // This 2 MiB in 4 KiB pages, the boot info's page pointing at a decoy.
                let decoy = frames::allocate_zeroed(1).map_err(uefi_error("cannot allocate"))?;
                for page in (physical..physical + PAGE_2M).step_by(PAGE_4K as usize) {
                    let target = if page == boot_info { decoy } else { page };
                    tables.map_4k(offset + page, target, leaf_flags(true, false))?;
                }
                physical += PAGE_2M;
                continue;
            }
            tables.map_2m(offset + physical, physical, leaf_flags(true, false))?;
            physical += PAGE_2M;
        }
    }
    if let (Some(fb), Some(virt)) = (&framebuffer, framebuffer_virtual) {
        let start = fb.physical & !(PAGE_4K - 1);
        let len = (fb.physical + fb.info.byte_len as u64).next_multiple_of(PAGE_4K) - start;
        tables.map_range_4k(virt, start, len, leaf_flags(true, false))?;
    }
    if let Some(index) = recursive_index {
        tables.map_recursive(index as usize)?;
    }
    // The trampoline that switches CR3 and the GDT stay where they are.
    tables.map_range_4k(
        trampoline.start,
        trampoline.start,
        trampoline.end - trampoline.start,
        leaf_flags(false, true),
    )?;
    tables.map_4k(gdt, gdt, leaf_flags(true, false))?;
    handoff::write_gdt(gdt);

    // The boot info, all but the regions (they come from the final memory map).
    let empty: &'static mut [MemoryRegion] = &mut [];
    let mut info = BootInfo::new(empty.into());
    info.physical_memory_offset = physical_offset.into();
    info.recursive_index = recursive_index.into();
    info.rsdp_addr = rsdp().into();
    info.tls_template = kernel
        .tls()
        .map(|t| TlsTemplate {
            start_addr: t.vaddr.wrapping_add(bias),
            file_size: t.file_size,
            mem_size: t.mem_size,
        })
        .into();
    info.ramdisk_addr = None.into();
    info.ramdisk_len = 0;
    info.kernel_addr = file.as_ptr() as u64;
    info.kernel_len = file.len() as u64;
    info.kernel_image_offset = bias;
    info.kernel_stack_bottom = stack_bottom;
    info.kernel_stack_len = stack_len;
    info.framebuffer = match (&framebuffer, framebuffer_virtual) {
        // SAFETY: `virt` maps the GOP frame buffer's pages (from its first page on) with the
        // buffer at the same offset within its first page, for `byte_len` bytes.
        (Some(fb), Some(virt)) => {
            Some(unsafe { FrameBuffer::new(virt + (fb.physical & (PAGE_4K - 1)), fb.info) })
        }
        _ => None,
    }
    .into();
    // SAFETY: `boot_info` is a fresh, page-aligned allocation of `boot_info_len` bytes, larger
    // than a BootInfo (asserted above), identity-mapped while boot services run.
    unsafe { core::ptr::write(boot_info as *mut BootInfo, info) };

    cpu_preconditions();
    Ok(Handoff {
        boot_info,
        boot_info_virtual,
        regions: boot_info + REGIONS_OFFSET,
        regions_virtual: boot_info_virtual + REGIONS_OFFSET,
        region_capacity,
        page_table: tables.root,
        stack_top: stack_bottom + stack_len,
        entry: kernel.entry().wrapping_add(bias),
        gdt,
    })
}

/// The kernel image's pages: the loader's own type, so that the kernel sees them as
/// `Bootloader`; LOADER_DATA (reported usable) in the broken-handoff build.
fn allocate_image(pages: usize) -> uefi::Result<u64> {
    if cfg!(feature = "broken-handoff") {
        let start =
            boot::allocate_pages(boot::AllocateType::AnyPages, MemoryType::LOADER_DATA, pages)?;
        Ok(start.as_ptr() as u64)
    } else {
        frames::allocate_zeroed(pages)
    }
}

pub fn descriptor(d: &uefi::mem::memory_map::MemoryDescriptor) -> UefiDescriptor {
    UefiDescriptor { memory_type: d.ty.0, physical_start: d.phys_start, page_count: d.page_count }
}

/// The RSDP: the ACPI 2.0 table first, then ACPI 1.0 (UEFI 2.10, 4.6 "EFI Configuration Table").
fn rsdp() -> Option<u64> {
    uefi::system::with_config_table(|entries| {
        let find = |guid| entries.iter().find(|e| e.guid == guid).map(|e| e.address as u64);
        find(ConfigTableEntry::ACPI2_GUID).or_else(|| find(ConfigTableEntry::ACPI_GUID))
    })
}

/// The GOP's current mode, when there is a GOP with a linear frame buffer.
fn graphics_output() -> Option<GopFrameBuffer> {
    let handle = boot::get_handle_for_protocol::<GraphicsOutput>().ok()?;
    // SAFETY: GetProtocol does not take the GOP away from the console drivers; the protocol is
    // only read, and dropped before ExitBootServices.
    let mut gop = unsafe {
        boot::open_protocol::<GraphicsOutput>(
            boot::OpenProtocolParams { handle, agent: boot::image_handle(), controller: None },
            boot::OpenProtocolAttributes::GetProtocol,
        )
    }
    .ok()?;
    let mode = gop.current_mode_info();
    let pixel_format = match mode.pixel_format() {
        GopPixelFormat::Rgb => PixelFormat::Rgb,
        GopPixelFormat::Bgr => PixelFormat::Bgr,
        GopPixelFormat::Bitmask => {
            let mask = mode.pixel_bitmask()?;
            PixelFormat::Unknown {
                red_position: mask.red.trailing_zeros() as u8,
                green_position: mask.green.trailing_zeros() as u8,
                blue_position: mask.blue.trailing_zeros() as u8,
            }
        }
        GopPixelFormat::BltOnly => return None,
    };
    let mut buffer = gop.frame_buffer();
    let (width, height) = mode.resolution();
    Some(GopFrameBuffer {
        physical: buffer.as_mut_ptr() as u64,
        info: FrameBufferInfo {
            byte_len: buffer.size(),
            width,
            height,
            pixel_format,
            bytes_per_pixel: 4,
            stride: mode.stride(),
        },
    })
}

/// Sets EFER.NXE if it is clear, before ExitBootServices: the kernel's tables use the NX bit.
/// In a TD NXE is always set, so the WRMSR (a #VE on TDX module 1.0) never runs there.
fn cpu_preconditions() {
    const IA32_EFER: u32 = 0xC000_0080;
    const NXE: u64 = 1 << 11;
    let (low, high): (u32, u32);
    // SAFETY: reading IA32_EFER has no side effect; it exists on every x86_64 CPU, and the TDX
    // module lets a TD read it natively.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") IA32_EFER, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags))
    };
    let efer = (u64::from(high) << 32) | u64::from(low);
    if efer & NXE == 0 {
        let value = efer | NXE;
        // SAFETY: setting NXE only enables the NX bit in page tables; the firmware's tables
        // work unchanged (they did without it).
        unsafe {
            core::arch::asm!("wrmsr", in("ecx") IA32_EFER, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nomem, nostack, preserves_flags))
        };
    }
}
