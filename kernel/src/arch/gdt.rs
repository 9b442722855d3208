//! The kernel's GDT and TSS.
//!
//! Kernel and user code/data segments, and a TSS whose interrupt stack table gives #DF, NMI and
//! #MC their own stacks, so that those three still run when the kernel stack is unusable. #VE
//! deliberately has no IST stack: a #VE taken inside the #VE handler (once VEINFO.GET has run)
//! must nest on the current stack instead of overwriting the outer frame.

use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// IST slots (1-based in the IDT gate, 0-based in the TSS array).
pub const IST_DOUBLE_FAULT: u8 = 1;
pub const IST_NMI: u8 = 2;
pub const IST_MACHINE_CHECK: u8 = 3;

const IST_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_SIZE]);

static mut IST_STACKS: [IstStack; 3] = [const { IstStack([0; IST_STACK_SIZE]) }; 3];

pub struct Selectors {
    pub kernel_code: SegmentSelector,
    pub kernel_data: SegmentSelector,
    pub user_code: SegmentSelector,
    pub user_data: SegmentSelector,
    pub tss: SegmentSelector,
}

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<(GlobalDescriptorTable, Selectors)> = Once::new();

fn ist_top(index: usize) -> VirtAddr {
    // SAFETY: only the address of the static is taken; the stacks are never accessed from
    // Rust, only by the CPU when it delivers an IST exception.
    let base = unsafe { core::ptr::addr_of!(IST_STACKS[index]) } as u64;
    VirtAddr::new(base + IST_STACK_SIZE as u64)
}

pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        tss.interrupt_stack_table[(IST_DOUBLE_FAULT - 1) as usize] = ist_top(0);
        tss.interrupt_stack_table[(IST_NMI - 1) as usize] = ist_top(1);
        tss.interrupt_stack_table[(IST_MACHINE_CHECK - 1) as usize] = ist_top(2);
        tss
    });
    let (gdt, selectors) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let kernel_code = gdt.append(Descriptor::kernel_code_segment());
        let kernel_data = gdt.append(Descriptor::kernel_data_segment());
        let user_data = gdt.append(Descriptor::user_data_segment());
        let user_code = gdt.append(Descriptor::user_code_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        (gdt, Selectors { kernel_code, kernel_data, user_code, user_data, tss })
    });
    let _ = (selectors.user_code, selectors.user_data);
    gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded, which lives in a static
    // for the rest of the run; the code and data descriptors are the flat 64-bit ones the
    // running code already assumes.
    unsafe {
        CS::set_reg(selectors.kernel_code);
        SS::set_reg(selectors.kernel_data);
        DS::set_reg(selectors.kernel_data);
        ES::set_reg(selectors.kernel_data);
        load_tss(selectors.tss);
    }
}

/// The kernel code selector, for building exception frames by hand (softtdx).
pub fn kernel_code_selector() -> u16 {
    GDT.get().expect("GDT initialised").1.kernel_code.0
}
