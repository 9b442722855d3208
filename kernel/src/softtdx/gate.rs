//! The model's CPU reads IDT gate 20 the way the CPU does when it delivers #VE: from the IDT and
//! GDT that IDTR and GDTR point at, and the IST stack from the TSS that TR names. The checks are
//! `tdx_ve::delivery` (host-tested); this module only reads the tables.

use tdx_ve::delivery::{self, Delivery, DeliveryFault};
use x86_64::instructions::tables::{sgdt, sidt};

/// What the CPU does with an exception on `vector`: deliver it through its gate, or raise the
/// fault the gate or its code segment calls for.
pub fn check(vector: u8) -> Result<Delivery, DeliveryFault> {
    let idt = sidt();
    let offset = u64::from(vector) * 16;
    let gate = (offset + 15 <= u64::from(idt.limit)).then(|| {
        let mut bytes = [0u8; 16];
        // SAFETY: IDTR describes a mapped table of `limit + 1` bytes (the kernel's IDT static),
        // and the 16 bytes lie inside it.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (idt.base.as_u64() + offset) as *const u8,
                bytes.as_mut_ptr(),
                16,
            )
        };
        bytes
    });
    delivery::deliver(vector, gate, gdt_entry)
}

/// The 8-byte GDT entry at `selector` (TI=0, RPL clear), if inside GDTR's limit.
fn gdt_entry(selector: u16) -> Option<u64> {
    let gdt = sgdt();
    if u64::from(selector) + 7 > u64::from(gdt.limit) {
        return None;
    }
    // SAFETY: GDTR describes a mapped table (the kernel's GDT static) and the entry is inside.
    Some(unsafe {
        core::ptr::read_unaligned((gdt.base.as_u64() + u64::from(selector)) as *const u64)
    })
}

/// The stack pointer in IST slot `ist` (1-7) of the TSS that TR names (SDM Vol. 3A 8.7: IST1
/// is at offset 0x24 of the 64-bit TSS, 8 bytes per slot).
pub fn ist_stack(ist: u8) -> Option<u64> {
    let tr: u16;
    // SAFETY: STR only reads the task register.
    unsafe { core::arch::asm!("str {0:x}", out(reg) tr, options(nomem, nostack, preserves_flags)) };
    let low = gdt_entry(tr & !7)?;
    let high = gdt_entry((tr & !7) + 8)?;
    let base = ((low >> 16) & 0xFF_FFFF) | ((low >> 56) << 24) | (high & 0xFFFF_FFFF) << 32;
    let address = base + 0x24 + 8 * u64::from(ist - 1);
    // SAFETY: the TSS descriptor names the kernel's TSS static, which is mapped; the slot lies
    // inside its 104 bytes.
    Some(unsafe { core::ptr::read_unaligned(address as *const u64) })
}
