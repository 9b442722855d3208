//! The model's CPU delivers exceptions (#VE, NMIs, and the faults the module raises instead of a
//! #VE) the way the CPU does. It reads the IDT gate from the IDT and GDT that IDTR and GDTR
//! point at, and the IST stack from the TSS that TR names; the checks are `tdx_ve::delivery`
//! (host-tested). Then one trampoline pushes the frame and jumps through the gate.

use crate::arch::frame::TrapFrame;
use crate::arch::rflags;
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

/// What the delivery trampoline pushes, from the top: SS, RSP, RFLAGS, CS, RIP, and the error
/// code when [`SOFTTDX_DELIVERY_HAS_ERROR`] is set.
#[no_mangle]
static mut SOFTTDX_DELIVERY_FRAME: [u64; 6] = [0; 6];
/// Non-zero if the exception being delivered pushes an error code.
#[no_mangle]
static mut SOFTTDX_DELIVERY_HAS_ERROR: u64 = 0;
/// The handler address of the gate being delivered through.
#[no_mangle]
static mut SOFTTDX_DELIVERY_ENTRY: u64 = 0;
/// The stack pointer the CPU pushes the frame on, aligned down to 16.
#[no_mangle]
static mut SOFTTDX_DELIVERY_STACK: u64 = 0;

// Entered by `iretq` from a handler that decided to deliver an exception (#VE, an NMI, or a
// fault the module raises instead of a #VE), with every GPR and RSP as they were in the
// interrupted context. It does what the CPU does when it delivers an exception in 64-bit mode:
// switch to the stack [`deliver`] chose, push SS, RSP, RFLAGS, CS, RIP and the error code if
// there is one, and jump through the gate. GPRs stay untouched; arithmetic flags of the current
// RFLAGS are scratch, as they are during a real delivery (the interrupted RFLAGS are in the
// frame).
core::arch::global_asm!(
    ".global softtdx_deliver",
    "softtdx_deliver:",
    "    mov rsp, qword ptr [rip + {stack}]",
    "    push qword ptr [rip + {frame} + 40]",
    "    push qword ptr [rip + {frame} + 32]",
    "    push qword ptr [rip + {frame} + 24]",
    "    push qword ptr [rip + {frame} + 16]",
    "    push qword ptr [rip + {frame} + 8]",
    "    cmp qword ptr [rip + {has_error}], 0",
    "    je 2f",
    "    push qword ptr [rip + {frame} + 0]",
    "2:",
    "    jmp qword ptr [rip + {entry}]",
    frame = sym SOFTTDX_DELIVERY_FRAME,
    has_error = sym SOFTTDX_DELIVERY_HAS_ERROR,
    entry = sym SOFTTDX_DELIVERY_ENTRY,
    stack = sym SOFTTDX_DELIVERY_STACK,
);

extern "C" {
    fn softtdx_deliver();
}

/// Redirects `frame` so that its `iretq` enters `handler` on `stack` (aligned down to 16 here)
/// with the frame the CPU pushes: the interrupted RIP, CS, `pushed_rflags`, RSP, SS, and
/// `error_code` if the exception has one. Clearing flags for the handler is the caller's.
fn deliver(
    frame: &mut TrapFrame,
    handler: u64,
    stack: u64,
    pushed_rflags: u64,
    error_code: Option<u64>,
) {
    // SAFETY: single CPU, inside an exception handler: nothing else reads these slots until the
    // trampoline, which runs right after this handler's iretq.
    unsafe {
        SOFTTDX_DELIVERY_FRAME =
            [error_code.unwrap_or(0), frame.rip, frame.cs, pushed_rflags, frame.rsp, frame.ss];
        SOFTTDX_DELIVERY_HAS_ERROR = u64::from(error_code.is_some());
        SOFTTDX_DELIVERY_ENTRY = handler;
        SOFTTDX_DELIVERY_STACK = stack & !15;
    }
    frame.rip = softtdx_deliver as *const () as u64;
}

/// Delivers exception `vector` (without an error code) through its IDT gate as the CPU does:
/// the gate checked ([`check`]), its handler entered on its IST stack or the interrupted RSP,
/// with `pushed_rflags` in the frame. Returns whether the gate clears IF; or `None` when the gate
/// cannot be used and the CPU's #GP or #NP was delivered instead.
pub fn deliver_through_gate(frame: &mut TrapFrame, vector: u8, pushed_rflags: u64) -> Option<bool> {
    match check(vector) {
        Ok(delivery) => {
            let stack = match delivery.ist {
                Some(ist) => ist_stack(ist).unwrap_or(0),
                None => frame.rsp,
            };
            deliver(frame, delivery.handler, stack, pushed_rflags, None);
            Some(delivery.clears_if)
        }
        Err(DeliveryFault::Gp(code)) => {
            deliver_fault(frame, GP_VECTOR, Some(code.into()));
            None
        }
        Err(DeliveryFault::Np(code)) => {
            deliver_fault(frame, NP_VECTOR, Some(code.into()));
            None
        }
    }
}

pub const GP_VECTOR: u64 = 13;
const NP_VECTOR: u64 = 11;
pub const UD_VECTOR: u64 = 6;

/// Redirects `frame` so that its `iretq` delivers exception `vector` through its IDT gate, as
/// the CPU does: the instruction at RIP does not run, IF and TF are clear in the handler.
pub fn deliver_fault(frame: &mut TrapFrame, vector: u64, error_code: Option<u64>) {
    let handler = crate::arch::idt::gate_handler(vector);
    deliver(frame, handler, frame.rsp, frame.rflags, error_code);
    frame.rflags &= !(rflags::IF | rflags::TF | rflags::RF);
}
