//! How the CPU delivers a hardware exception through an IDT gate in 64-bit mode, for the softtdx
//! model's #VE delivery (the #VE handler does not use this).
//!
//! Intel SDM Vol. 2A "INT n/INTO/INT3/INT1—Call to Interrupt Procedure" (the IA-32e-mode
//! pseudo-code, event not a software interrupt, CPL 0) and Vol. 3A 6.14 "Exception and
//! Interrupt Handling in 64-bit Mode", in the order the pseudo-code checks:
//!
//! 1. the gate lies outside the IDT limit -> #GP(vector*8 + 2 + EXT);
//! 2. the gate type is neither a 64-bit interrupt gate (0xE) nor a trap gate (0xF)
//!    -> #GP(vector*8 + 2 + EXT);
//! 3. (the gate's DPL is checked only for software interrupts, never for an exception);
//! 4. the gate is not present -> #NP(vector*8 + 2 + EXT);
//! 5. the code-segment selector is null -> #GP(EXT);
//! 6. it lies outside the descriptor table -> #GP(selector + EXT);
//! 7. it is not a code segment, or its DPL > CPL (0) -> #GP(selector + EXT);
//! 8. the code segment is not present -> #NP(selector + EXT);
//! 9. it is not a 64-bit code segment (L=1, D=0) -> #GP(selector + EXT);
//! 10. a non-zero IST field switches to that TSS stack; RSP is aligned down to 16; the frame is
//!     pushed; TF, NT and RF are cleared, and IF too through an interrupt gate.
//!
//! EXT (error-code bit 0) is set because the event being delivered is a hardware exception;
//! bit 1 (IDT) says the error code names an IDT entry. Selectors with TI=1 (LDT) are reported
//! as outside the table: the kernel has no LDT.

/// What the CPU does when it delivers through a gate that passed every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The handler address (the gate's offset).
    pub handler: u64,
    /// The new CS.
    pub selector: u16,
    /// The IST slot (1-7) whose stack the CPU switches to, if any.
    pub ist: Option<u8>,
    /// Interrupt gate: IF is cleared. Trap gate: IF is kept.
    pub clears_if: bool,
}

/// The exception the CPU raises instead, when it cannot use the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryFault {
    /// #GP with this error code.
    Gp(u16),
    /// #NP with this error code.
    Np(u16),
}

const EXT: u16 = 1;
const IDT_BIT: u16 = 2;
const INTERRUPT_GATE: u8 = 0xE;
const TRAP_GATE: u8 = 0xF;

/// Checks the 16-byte gate for `vector` (None: outside the IDT limit) and the descriptor its
/// selector names (`code_descriptor(selector)`: the 8-byte GDT entry, None outside the GDT).
pub fn deliver(
    vector: u8,
    gate: Option<[u8; 16]>,
    code_descriptor: impl Fn(u16) -> Option<u64>,
) -> Result<Delivery, DeliveryFault> {
    let gate_error = u16::from(vector) * 8 + IDT_BIT + EXT;
    let Some(gate) = gate else {
        return Err(DeliveryFault::Gp(gate_error));
    };
    let attributes = gate[5];
    let gate_type = attributes & 0xF;
    if gate_type != INTERRUPT_GATE && gate_type != TRAP_GATE {
        return Err(DeliveryFault::Gp(gate_error));
    }
    if attributes & 0x80 == 0 {
        return Err(DeliveryFault::Np(gate_error));
    }
    let selector = u16::from_le_bytes([gate[2], gate[3]]);
    if selector & !3 == 0 {
        return Err(DeliveryFault::Gp(EXT));
    }
    let selector_error = (selector & !3) | EXT;
    let descriptor = if selector & 4 != 0 { None } else { code_descriptor(selector & !7) };
    let Some(descriptor) = descriptor else {
        return Err(DeliveryFault::Gp(selector_error));
    };
    let access = (descriptor >> 40) as u8;
    let is_code = access & 0x18 == 0x18; // S=1 (code/data), type bit 3 = code
    let dpl = (access >> 5) & 3;
    if !is_code || dpl > 0 {
        return Err(DeliveryFault::Gp(selector_error));
    }
    if access & 0x80 == 0 {
        return Err(DeliveryFault::Np(selector_error));
    }
    let long = descriptor & (1 << 53) != 0;
    let default_32 = descriptor & (1 << 54) != 0;
    if !long || default_32 {
        return Err(DeliveryFault::Gp(selector_error));
    }
    let handler = u64::from(u16::from_le_bytes([gate[0], gate[1]]))
        | u64::from(u16::from_le_bytes([gate[6], gate[7]])) << 16
        | u64::from(u32::from_le_bytes([gate[8], gate[9], gate[10], gate[11]])) << 32;
    let ist = gate[4] & 7;
    Ok(Delivery {
        handler,
        selector,
        ist: (ist != 0).then_some(ist),
        clears_if: gate_type == INTERRUPT_GATE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL_CS: u64 = 0x00AF_9A00_0000_FFFF; // 64-bit code, DPL 0, present
    const GDT: [u64; 3] = [0, KERNEL_CS, 0x00CF_9200_0000_FFFF]; // null, code, data

    fn gdt(selector: u16) -> Option<u64> {
        GDT.get(usize::from(selector / 8)).copied()
    }

    fn gate(handler: u64, selector: u16, ist: u8, attributes: u8) -> [u8; 16] {
        let mut g = [0u8; 16];
        g[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
        g[2..4].copy_from_slice(&selector.to_le_bytes());
        g[4] = ist;
        g[5] = attributes;
        g[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
        g[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
        g
    }

    const H: u64 = 0xFFFF_8000_1234_5678;

    #[test]
    fn a_good_interrupt_gate() {
        let d = deliver(20, Some(gate(H, 8, 0, 0x8E)), gdt).unwrap();
        assert_eq!(d, Delivery { handler: H, selector: 8, ist: None, clears_if: true });
        // The gate's DPL does not matter for an exception.
        assert_eq!(deliver(20, Some(gate(H, 8, 0, 0xEE)), gdt), Ok(d));
    }

    #[test]
    fn trap_gate_keeps_if_and_ist_switches() {
        let d = deliver(20, Some(gate(H, 8, 7, 0x8F)), gdt).unwrap();
        assert_eq!(d.ist, Some(7));
        assert!(!d.clears_if);
    }

    #[test]
    fn gate_faults() {
        // 20*8 + 2 + 1 = 0xA3.
        assert_eq!(deliver(20, None, gdt), Err(DeliveryFault::Gp(0xA3)));
        assert_eq!(deliver(20, Some(gate(H, 8, 0, 0x0E)), gdt), Err(DeliveryFault::Np(0xA3)));
        // A 64-bit call gate (0xC) or a reserved type.
        assert_eq!(deliver(20, Some(gate(H, 8, 0, 0x8C)), gdt), Err(DeliveryFault::Gp(0xA3)));
        assert_eq!(deliver(20, Some(gate(H, 8, 0, 0x86)), gdt), Err(DeliveryFault::Gp(0xA3)));
        // Type is checked before present.
        assert_eq!(deliver(20, Some(gate(H, 8, 0, 0x06)), gdt), Err(DeliveryFault::Gp(0xA3)));
    }

    #[test]
    fn selector_faults() {
        assert_eq!(deliver(20, Some(gate(H, 0, 0, 0x8E)), gdt), Err(DeliveryFault::Gp(1)));
        assert_eq!(deliver(20, Some(gate(H, 3, 0, 0x8E)), gdt), Err(DeliveryFault::Gp(1)));
        assert_eq!(deliver(20, Some(gate(H, 0x40, 0, 0x8E)), gdt), Err(DeliveryFault::Gp(0x41)));
        // Data segment, LDT selector.
        assert_eq!(deliver(20, Some(gate(H, 0x10, 0, 0x8E)), gdt), Err(DeliveryFault::Gp(0x11)));
        assert_eq!(deliver(20, Some(gate(H, 0xC, 0, 0x8E)), gdt), Err(DeliveryFault::Gp(0xD)));
        // Not present, DPL 3, 32-bit code.
        let not_present = |_| Some(KERNEL_CS & !(0x80 << 40));
        assert_eq!(deliver(20, Some(gate(H, 8, 0, 0x8E)), not_present), Err(DeliveryFault::Np(9)));
        let dpl3 = |_| Some(KERNEL_CS | (0x60 << 40));
        assert_eq!(deliver(20, Some(gate(H, 8, 0, 0x8E)), dpl3), Err(DeliveryFault::Gp(9)));
        let code32 = |_| Some(0x00CF_9A00_0000_FFFF);
        assert_eq!(deliver(20, Some(gate(H, 8, 0, 0x8E)), code32), Err(DeliveryFault::Gp(9)));
    }
}
