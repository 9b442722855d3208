//! Everything before ExitBootServices: the kernel loaded and relocated, its address space
//! built, the boot info filled in. Any failure here is an error on the UEFI console.

use crate::frames::{self, ChunkFrames};
use crate::handoff::{self, Handoff};
use crate::kernel_file;
use crate::uefi_map;
use bootloader_api::config::Mapping;
use bootloader_api::info::{FrameBuffer, FrameBufferInfo, MemoryRegion, PixelFormat, TlsTemplate};
use bootloader_api::BootInfo;
use core::fmt;
use loader_core::config::{self, ConfigError};
use loader_core::elf::{ElfError, Kernel};
use loader_core::layout::{Layout, LayoutError};
use loader_core::memory_map;
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
    /// The firmware runs 5-level paging and the switch out of it cannot be made.
    FiveLevel(&'static str),
    /// A test build that cannot do what it is for on this machine.
    TestBuild(&'static str),
    /// The kernel could not be measured where it must be (see `measure`).
    Measure(crate::measure::Refusal),
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
            LoadError::TestBuild(why) => write!(f, "test build: {why}"),
            LoadError::Measure(refusal) => write!(f, "{refusal}"),
            LoadError::FiveLevel(why) => write!(
                f,
                "the firmware runs 5-level paging (CR4.LA57) and {why}; OVMF's fw_cfg \
                 switch to 4-level paging is -fw_cfg name=opt/org.tianocore/PagingLevel,string=4"
            ),
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
    let five_level = paging_levels()? == 5;
    let file = kernel_file::read()?;
    crate::measure::kernel(file, in_td()).map_err(LoadError::Measure)?;
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
        let highest = memory_map::highest_address(map.entries().map(uefi_map::descriptor));
        (map.entries().len(), highest)
    };
    let physical_len = highest.max(4 << 30).next_multiple_of(PAGE_2M);
    let region_capacity = memory_map::max_regions(descriptors + MAP_SLACK);
    let boot_info_len =
        pages(REGIONS_OFFSET + (region_capacity * core::mem::size_of::<MemoryRegion>()) as u64)
            * PAGE_4K;
    let stack_len = pages(config.kernel_stack_size) * PAGE_4K;
    // In a TD the frame buffer is MMIO the host reads: not offered (see `in_td`).
    let framebuffer = if in_td() { None } else { graphics_output() };

    // Virtual layout: identity pages first, then fixed mappings, then dynamic ones.
    let mut layout = Layout::new(mappings.dynamic_range_start, mappings.dynamic_range_end);
    let gdt = frames::allocate_zeroed_below_4g(1).map_err(uefi_error("cannot allocate the GDT"))?;
    let trampoline = handoff::trampoline_pages();
    if five_level && trampoline.end > 1 << 32 {
        return Err(LoadError::FiveLevel(
            "the loader's trampoline lies above 4 GiB, out of reach of the 32-bit switch",
        ));
    }
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
    // The recursive entry needs a slot of its own: claimed after every other fixed mapping.
    if let Some(Mapping::FixedAddress(addr)) = mappings.page_table_recursive {
        layout.claim_slot(((addr >> 39) & 0x1FF) as usize)?;
    }
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
    // The trampoline that switches CR3 and the GDT stay where they are.
    tables.map_range_4k(
        trampoline.start,
        trampoline.start,
        trampoline.end - trampoline.start,
        leaf_flags(false, true),
    )?;
    tables.map_4k(gdt, gdt, leaf_flags(true, false))?;
    handoff::write_gdt(gdt);
    // Last: nothing may be mapped through the recursive slot after it points at the PML4.
    if let Some(index) = recursive_index {
        tables.map_recursive(index as usize)?;
    }

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
    if tables.root >= 1 << 32 {
        return Err(LoadError::FiveLevel("the kernel's PML4 lies above 4 GiB"));
    }
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
        #[cfg(feature = "test-enable-la57")]
        test_pml5: test_pml5()?,
    })
}

const CR4_LA57: u64 = 1 << 12;
const CR4_PCIDE: u64 = 1 << 17;

/// How many paging levels the handoff starts from, read before ExitBootServices: 5 when the
/// firmware runs with CR4.LA57 set (a TDVF built with `PcdUse5LevelPageTable`, from
/// edk2-stable202405, on a CPU with LA57), or when this is the test build that turns it on
/// itself. `enter_kernel` reads CR4 again and leaves 5-level paging when it finds LA57 set.
pub fn paging_levels() -> Result<u8, LoadError> {
    let cr4: u64;
    // SAFETY: reading CR4 has no side effect; in a TD it is native (only writes can exit).
    unsafe {
        core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags))
    };
    let test = cfg!(feature = "test-enable-la57");
    if test && !cpu_has_la57() {
        return Err(LoadError::TestBuild(
            "test-enable-la57 needs a CPU with LA57 (QEMU: -cpu max,la57=on)",
        ));
    }
    if cr4 & CR4_LA57 == 0 && !test {
        return Ok(4);
    }
    // MOV to CR0 that clears PG with CR4.PCIDE set is #GP (SDM Vol. 3A 4.10.1); TDVF never
    // sets PCIDE, and this loader does not clear it for the firmware.
    if cr4 & CR4_PCIDE != 0 {
        return Err(LoadError::FiveLevel("CR4.PCIDE is set, so paging cannot be turned off"));
    }
    if test {
        uefi::println!("tdx-loader: test build: turning 5-level paging on after ExitBootServices");
    } else {
        uefi::println!(
            "tdx-loader: the firmware runs 5-level paging (CR4.LA57); the handoff leaves it for \
             the kernel's 4-level tables"
        );
    }
    Ok(5)
}

/// CPUID.(EAX=7,ECX=0):ECX bit 16, LA57 (SDM Vol. 2A, CPUID). Before ExitBootServices only.
fn cpu_has_la57() -> bool {
    let max = core::arch::x86_64::__cpuid_count(0, 0).eax;
    max >= 7 && core::arch::x86_64::__cpuid_count(7, 0).ecx & (1 << 16) != 0
}

/// A PML5 below 4 GiB whose entry 0 is the firmware's PML4: with it, every address below
/// 2^47 translates under 5-level paging as it did under 4-level paging.
#[cfg(feature = "test-enable-la57")]
fn test_pml5() -> Result<u64, LoadError> {
    let pml5 =
        frames::allocate_zeroed_below_4g(1).map_err(uefi_error("cannot allocate the PML5"))?;
    let cr3: u64;
    // SAFETY: reading CR3 has no side effect.
    unsafe {
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags))
    };
    let pml4 = cr3 & loader_core::paging::ADDRESS_MASK;
    // SAFETY: `pml5` is a fresh zeroed page of ours, identity-mapped.
    unsafe {
        (pml5 as *mut u64)
            .write(pml4 | loader_core::paging::PRESENT | loader_core::paging::WRITABLE)
    };
    Ok(pml5)
}

/// Whether this loader runs in a TD: CPUID leaf 0x21 subleaf 0 answers "IntelTDX    " (TDX
/// module ABI; Linux `tdx_early_init`). The TDX module answers that leaf natively, so this is a
/// fact of the hardware, not the host's word.
///
/// In a TD the GOP frame buffer is not offered to the kernel: its pages are MMIO that the host
/// emulates, so they would have to be mapped shared (the shared bit from TDG.VP.INFO's GPAW),
/// and whatever the kernel drew there the host would read. The kernel writes nothing to a
/// screen, and TDs are launched with `-nodefaults` (no VGA, no GOP) anyway; not offering it
/// leaves no private mapping of host memory behind and no TDCALL in the loader.
fn in_td() -> bool {
    // Leaves 0 and 0x21/0 are answered by the TDX module natively; outside a TD, CPUID is
    // ordinary.
    loader_core::td::is_td(|leaf, subleaf| {
        let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
        [r.eax, r.ebx, r.ecx, r.edx]
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
