//! Port I/O: the VMX exit qualification of an I/O instruction, and the architectural effect of
//! IN and OUT on RAX.
//!
//! The qualification layout is Intel SDM Vol. 3C, "Exit Qualification for I/O Instructions":
//!
//! | bits  | meaning                                                   |
//! |-------|-----------------------------------------------------------|
//! | 2:0   | size of access - 1: 0 = 1 byte, 1 = 2 bytes, 3 = 4 bytes; other values not used |
//! | 3     | direction: 0 = OUT, 1 = IN                                |
//! | 4     | string instruction (INS/OUTS)                              |
//! | 5     | REP prefixed                                              |
//! | 6     | operand encoding: 0 = DX, 1 = immediate                   |
//! | 15:7  | reserved, cleared to 0                                    |
//! | 31:16 | port number                                               |
//! | 63:32 | reserved, cleared to 0                                    |
//!
//! Note the polarity: the qualification says 1 = IN, while the GHCI Instruction.IO hypercall
//! takes R13 = 0 for a read (IN) and 1 for a write (OUT); see [`IoDirection::ghci_code`].
//!
//! The IN merge follows the general-purpose register rules for 64-bit mode (Intel SDM Vol. 1,
//! "General-Purpose Registers in 64-Bit Mode"): an 8- or 16-bit destination leaves the other
//! bits of the 64-bit register unchanged, a 32-bit destination is zero-extended to 64 bits.

use core::fmt;

/// The width of a port access.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u8)]
pub enum PortWidth {
    /// One byte (AL).
    Byte = 1,
    /// Two bytes (AX).
    Word = 2,
    /// Four bytes (EAX).
    Dword = 4,
}

impl PortWidth {
    /// Every width, narrowest first.
    pub const ALL: [PortWidth; 3] = [PortWidth::Byte, PortWidth::Word, PortWidth::Dword];

    /// The access size in bytes.
    pub const fn bytes(self) -> usize {
        self as usize
    }

    /// A mask of the low `bytes() * 8` bits.
    pub const fn mask(self) -> u64 {
        match self {
            PortWidth::Byte => 0xff,
            PortWidth::Word => 0xffff,
            PortWidth::Dword => 0xffff_ffff,
        }
    }

    /// The width of an access of `bytes` bytes (GHCI Instruction.IO R12), if it is 1, 2 or 4.
    pub const fn from_bytes(bytes: u64) -> Option<PortWidth> {
        match bytes {
            1 => Some(PortWidth::Byte),
            2 => Some(PortWidth::Word),
            4 => Some(PortWidth::Dword),
            _ => None,
        }
    }
}

/// The direction of a port access.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum IoDirection {
    /// IN / INS: from the port into the guest.
    In,
    /// OUT / OUTS: from the guest to the port.
    Out,
}

impl IoDirection {
    /// The direction as GHCI Instruction.IO wants it in R13: 0 = read (IN), 1 = write (OUT).
    /// This is the opposite polarity of the qualification's bit 3.
    pub const fn ghci_code(self) -> u64 {
        match self {
            IoDirection::In => 0,
            IoDirection::Out => 1,
        }
    }

    /// Inverse of [`IoDirection::ghci_code`].
    pub const fn from_ghci_code(code: u64) -> Option<IoDirection> {
        match code {
            0 => Some(IoDirection::In),
            1 => Some(IoDirection::Out),
            _ => None,
        }
    }
}

/// Where the port number of an I/O instruction comes from.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum PortEncoding {
    /// The port is in DX (`in al, dx`, INS, OUTS).
    Dx,
    /// The port is an 8-bit immediate (`in al, 0x71`).
    Immediate,
}

/// A decoded exit qualification for an I/O instruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct IoExitQualification {
    /// The access width.
    pub width: PortWidth,
    /// IN or OUT.
    pub direction: IoDirection,
    /// INS or OUTS rather than IN or OUT.
    pub string: bool,
    /// The instruction carried a REP prefix.
    pub rep: bool,
    /// Whether the port came from DX or an immediate.
    pub encoding: PortEncoding,
    /// The port number.
    pub port: u16,
}

/// Why a raw value is not a valid I/O exit qualification.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum QualificationError {
    /// A bit the SDM defines as reserved (15:7 or 63:32) is set.
    ReservedBitsSet {
        /// The raw qualification.
        raw: u64,
    },
    /// The size field (bits 2:0) is 2 or 4..=7, which the SDM says are not used.
    InvalidSize {
        /// The size field.
        size_field: u8,
    },
    /// A string instruction with an immediate port: INS and OUTS always take the port from DX,
    /// so no instruction produces this.
    ImmediateStringOperand,
}

impl IoExitQualification {
    /// The reserved bits: 15:7 and 63:32.
    pub const RESERVED_MASK: u64 = 0xffff_ffff_0000_ff80;

    const DIRECTION_IN: u64 = 1 << 3;
    const STRING: u64 = 1 << 4;
    const REP: u64 = 1 << 5;
    const IMMEDIATE: u64 = 1 << 6;

    /// Decodes a raw qualification, rejecting every value no I/O instruction produces.
    ///
    /// A REP bit without the string bit is accepted: the SDM does not tie bit 5 to bit 4, and
    /// `rep in al, dx` is a legal (if useless) instruction that executes once.
    pub const fn decode(raw: u64) -> Result<IoExitQualification, QualificationError> {
        if raw & Self::RESERVED_MASK != 0 {
            return Err(QualificationError::ReservedBitsSet { raw });
        }
        let width = match raw & 0b111 {
            0 => PortWidth::Byte,
            1 => PortWidth::Word,
            3 => PortWidth::Dword,
            other => return Err(QualificationError::InvalidSize { size_field: other as u8 }),
        };
        let direction =
            if raw & Self::DIRECTION_IN != 0 { IoDirection::In } else { IoDirection::Out };
        let string = raw & Self::STRING != 0;
        let encoding =
            if raw & Self::IMMEDIATE != 0 { PortEncoding::Immediate } else { PortEncoding::Dx };
        if string && matches!(encoding, PortEncoding::Immediate) {
            return Err(QualificationError::ImmediateStringOperand);
        }
        Ok(IoExitQualification {
            width,
            direction,
            string,
            rep: raw & Self::REP != 0,
            encoding,
            port: (raw >> 16) as u16,
        })
    }

    /// The #VE handler's fast path: IN or OUT of a register (no string), as (width, direction,
    /// port), for exactly the values [`IoExitQualification::decode`] accepts with `string`
    /// clear; None for everything else (string I/O, or anything `decode` rejects).
    #[inline]
    pub const fn decode_port_io(raw: u64) -> Option<(PortWidth, IoDirection, u16)> {
        if raw & (Self::RESERVED_MASK | Self::STRING) != 0 {
            return None;
        }
        let width = match raw & 0b111 {
            0 => PortWidth::Byte,
            1 => PortWidth::Word,
            3 => PortWidth::Dword,
            _ => return None,
        };
        let direction =
            if raw & Self::DIRECTION_IN != 0 { IoDirection::In } else { IoDirection::Out };
        Some((width, direction, (raw >> 16) as u16))
    }

    /// Encodes the qualification in the VMX layout. For every value `decode` accepts,
    /// `decode(raw)?.encode() == raw`.
    #[must_use]
    pub const fn encode(&self) -> u64 {
        let mut raw = (self.width.bytes() as u64 - 1) | (self.port as u64) << 16;
        if matches!(self.direction, IoDirection::In) {
            raw |= Self::DIRECTION_IN;
        }
        if self.string {
            raw |= Self::STRING;
        }
        if self.rep {
            raw |= Self::REP;
        }
        if matches!(self.encoding, PortEncoding::Immediate) {
            raw |= Self::IMMEDIATE;
        }
        raw
    }
}

/// The value of RAX after `in al/ax/eax, ...` returned `host_data`.
///
/// - 1 byte: bits 7:0 replaced, 63:8 kept.
/// - 2 bytes: bits 15:0 replaced, 63:16 kept.
/// - 4 bytes: bits 31:0 replaced and bits 63:32 cleared, because a 32-bit register write in
///   64-bit mode zero-extends.
///
/// `host_data` comes from the untrusted host (GHCI Instruction.IO R11) and may have garbage
/// above the access width; it is masked to the width first.
///
/// With the cargo feature `broken-in-merge` the 4-byte case keeps RAX\[63:32\] instead (the bug
/// EDK2 and td-shim have). That feature is a test-only switch: it exists so the kernel's
/// differential checks and this crate's tests can be shown to fail on a wrong merge. Never
/// enable it in a build that runs real workloads.
#[must_use]
pub const fn merge_in(rax: u64, width: PortWidth, host_data: u64) -> u64 {
    let data = host_data & width.mask();
    match width {
        PortWidth::Dword if !cfg!(feature = "broken-in-merge") => data,
        _ => (rax & !width.mask()) | data,
    }
}

/// The value `out ..., al/ax/eax` writes: the low `width` bytes of RAX, zero above.
#[must_use]
pub const fn out_value(rax: u64, width: PortWidth) -> u64 {
    rax & width.mask()
}

impl fmt::Display for QualificationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QualificationError::ReservedBitsSet { raw } => {
                write!(f, "I/O exit qualification {raw:#x} has reserved bits set")
            }
            QualificationError::InvalidSize { size_field } => {
                write!(f, "I/O exit qualification size field {size_field} is not 0, 1 or 3")
            }
            QualificationError::ImmediateStringOperand => {
                write!(
                    f,
                    "I/O exit qualification claims a string instruction with an immediate port"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DIRECTIONS: [IoDirection; 2] = [IoDirection::In, IoDirection::Out];
    const ENCODINGS: [PortEncoding; 2] = [PortEncoding::Dx, PortEncoding::Immediate];

    #[test]
    fn hand_computed_qualifications() {
        // in al, 0x71: size 0, IN (bit 3), immediate (bit 6), port 0x71.
        let in_al_imm = IoExitQualification {
            width: PortWidth::Byte,
            direction: IoDirection::In,
            string: false,
            rep: false,
            encoding: PortEncoding::Immediate,
            port: 0x71,
        };
        assert_eq!(in_al_imm.encode(), 0x0071_0048);
        assert_eq!(IoExitQualification::decode(0x0071_0048), Ok(in_al_imm));

        // out dx, eax with DX = 0x3f8: size 3, OUT, DX encoding.
        let out_dx_eax = IoExitQualification {
            width: PortWidth::Dword,
            direction: IoDirection::Out,
            string: false,
            rep: false,
            encoding: PortEncoding::Dx,
            port: 0x3f8,
        };
        assert_eq!(out_dx_eax.encode(), 0x03f8_0003);
        assert_eq!(IoExitQualification::decode(0x03f8_0003), Ok(out_dx_eax));

        // rep insw, port 0x1f0: size 1, IN (0x8), string (0x10), REP (0x20).
        let rep_insw = IoExitQualification {
            width: PortWidth::Word,
            direction: IoDirection::In,
            string: true,
            rep: true,
            encoding: PortEncoding::Dx,
            port: 0x1f0,
        };
        assert_eq!(rep_insw.encode(), 0x01f0_0039);
        assert_eq!(IoExitQualification::decode(0x01f0_0039), Ok(rep_insw));

        // outsb to port 0xffff: size 0, OUT, string.
        assert_eq!(
            IoExitQualification::decode(0xffff_0010),
            Ok(IoExitQualification {
                width: PortWidth::Byte,
                direction: IoDirection::Out,
                string: true,
                rep: false,
                encoding: PortEncoding::Dx,
                port: 0xffff,
            })
        );
    }

    #[test]
    fn every_field_combination_round_trips() {
        let mut checked = 0;
        for width in PortWidth::ALL {
            for direction in DIRECTIONS {
                for encoding in ENCODINGS {
                    for string in [false, true] {
                        for rep in [false, true] {
                            for port in [0u16, 0x21, 0x3f8, 0x8000, 0xffff] {
                                let q = IoExitQualification {
                                    width,
                                    direction,
                                    string,
                                    rep,
                                    encoding,
                                    port,
                                };
                                let raw = q.encode();
                                assert_eq!(raw & IoExitQualification::RESERVED_MASK, 0);
                                assert_eq!((raw >> 16) as u16, port);
                                assert_eq!(raw & 7, width.bytes() as u64 - 1);
                                assert_eq!(raw & 8 != 0, direction == IoDirection::In);
                                let expected = if string && encoding == PortEncoding::Immediate {
                                    Err(QualificationError::ImmediateStringOperand)
                                } else {
                                    Ok(q)
                                };
                                assert_eq!(IoExitQualification::decode(raw), expected, "{q:?}");
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 3 * 2 * 2 * 2 * 2 * 5);
    }

    #[test]
    fn all_low_sixteen_bit_patterns_are_classified() {
        // Exhaustive over the defined and reserved low bits, for a few ports.
        for port in [0u64, 0x71, 0xffff] {
            for low in 0..=0xffffu64 {
                let raw = low | port << 16;
                let result = IoExitQualification::decode(raw);
                if low & 0xff80 != 0 {
                    assert_eq!(result, Err(QualificationError::ReservedBitsSet { raw }));
                } else if matches!(low & 7, 2 | 4..=7) {
                    assert_eq!(
                        result,
                        Err(QualificationError::InvalidSize { size_field: (low & 7) as u8 })
                    );
                } else if low & 0x50 == 0x50 {
                    assert_eq!(result, Err(QualificationError::ImmediateStringOperand));
                } else {
                    assert_eq!(result.unwrap().encode(), raw);
                }
            }
        }
    }

    #[test]
    fn invalid_sizes_are_rejected() {
        for size_field in [2u8, 4, 5, 6, 7] {
            assert_eq!(
                IoExitQualification::decode(size_field as u64 | 0x0060_0000),
                Err(QualificationError::InvalidSize { size_field })
            );
        }
    }

    #[test]
    fn ghci_direction_is_the_opposite_of_the_qualification_bit() {
        assert_eq!(IoDirection::In.ghci_code(), 0);
        assert_eq!(IoDirection::Out.ghci_code(), 1);
        assert_eq!(IoDirection::from_ghci_code(0), Some(IoDirection::In));
        assert_eq!(IoDirection::from_ghci_code(1), Some(IoDirection::Out));
        assert_eq!(IoDirection::from_ghci_code(2), None);
    }

    #[test]
    fn widths() {
        for (bytes, width, mask) in [
            (1, PortWidth::Byte, 0xffu64),
            (2, PortWidth::Word, 0xffff),
            (4, PortWidth::Dword, 0xffff_ffff),
        ] {
            assert_eq!(width.bytes(), bytes as usize);
            assert_eq!(width.mask(), mask);
            assert_eq!(PortWidth::from_bytes(bytes), Some(width));
        }
        for bytes in [0, 3, 5, 8, u64::MAX] {
            assert_eq!(PortWidth::from_bytes(bytes), None);
        }
    }

    #[test]
    fn merge_in_hand_computed() {
        let rax = 0x1122_3344_5566_7788;
        let garbage = 0xdead_beef_cafe_f00d;
        assert_eq!(merge_in(rax, PortWidth::Byte, garbage), 0x1122_3344_5566_770d);
        assert_eq!(merge_in(rax, PortWidth::Word, garbage), 0x1122_3344_5566_f00d);
        // The 4-byte IN zero-extends: RAX[63:32] must not survive.
        let merged = merge_in(rax, PortWidth::Dword, garbage);
        assert_eq!(merged, 0x0000_0000_cafe_f00d, "4-byte IN gave {merged:#018x}");
        assert_eq!(out_value(rax, PortWidth::Byte), 0x88);
        assert_eq!(out_value(rax, PortWidth::Word), 0x7788);
        assert_eq!(out_value(rax, PortWidth::Dword), 0x5566_7788);
    }

    /// Reference model in a different style: operate on the eight little-endian bytes of RAX,
    /// copy the low host bytes over them, and clear bytes 4..8 for a doubleword.
    fn reference_merge_in(rax: u64, width: PortWidth, host_data: u64) -> u64 {
        let mut bytes = rax.to_le_bytes();
        let host = host_data.to_le_bytes();
        let n = width.bytes();
        bytes[..n].copy_from_slice(&host[..n]);
        if n == 4 {
            for byte in &mut bytes[4..] {
                *byte = 0;
            }
        }
        u64::from_le_bytes(bytes)
    }

    fn any_width() -> impl Strategy<Value = PortWidth> {
        prop::sample::select(PortWidth::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn decode_port_io_agrees_with_decode(raw in any::<u64>(), low in 0u64..0x80, port in any::<u16>()) {
            // Half of the cases with reserved bits clear, so that the fast path is exercised.
            for raw in [raw, low | (port as u64) << 16] {
                let reference = IoExitQualification::decode(raw)
                    .ok()
                    .filter(|a| !a.string)
                    .map(|a| (a.width, a.direction, a.port));
                prop_assert_eq!(IoExitQualification::decode_port_io(raw), reference);
            }
        }
    }

    proptest! {
        // No regression file: the `broken-in-merge` feature makes these fail on purpose, and
        // that must not leave files behind in the source tree.
        #![proptest_config(ProptestConfig {
            cases: 4096,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn merge_in_matches_the_byte_array_reference(
            rax: u64,
            width in any_width(),
            host_data: u64,
        ) {
            let got = merge_in(rax, width, host_data);
            let expected = reference_merge_in(rax, width, host_data);
            prop_assert_eq!(
                got,
                expected,
                "merge_in(rax={:#018x}, {:?}, host={:#018x}) = {:#018x}, reference {:#018x}",
                rax, width, host_data, got, expected
            );
        }

        #[test]
        fn out_value_is_the_low_bytes(rax: u64, width in any_width()) {
            let bytes = rax.to_le_bytes();
            let mut expected = [0u8; 8];
            expected[..width.bytes()].copy_from_slice(&bytes[..width.bytes()]);
            prop_assert_eq!(out_value(rax, width), u64::from_le_bytes(expected));
        }

        #[test]
        fn decode_never_panics_and_accepted_values_round_trip(raw: u64) {
            if let Ok(q) = IoExitQualification::decode(raw) {
                prop_assert_eq!(q.encode(), raw);
            }
        }

        #[test]
        fn reserved_bits_are_always_rejected(raw: u64, reserved in 1u64..) {
            // Force at least one reserved bit on, whatever else is set.
            let reserved = reserved & IoExitQualification::RESERVED_MASK;
            prop_assume!(reserved != 0);
            let raw = raw | reserved;
            prop_assert_eq!(
                IoExitQualification::decode(raw),
                Err(QualificationError::ReservedBitsSet { raw })
            );
        }

        #[test]
        fn a_single_reserved_bit_is_rejected(
            valid_low in 0u64..0x80,
            port: u16,
            bit in prop::sample::select((7..16).chain(32..64).collect::<Vec<u32>>()),
        ) {
            let raw = valid_low | (port as u64) << 16 | 1 << bit;
            prop_assert_eq!(
                IoExitQualification::decode(raw),
                Err(QualificationError::ReservedBitsSet { raw })
            );
        }
    }
}
