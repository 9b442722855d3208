//! Whether the loader runs in a TD, from CPUID alone.

/// The TDX leaf: subleaf 0 returns the vendor string "IntelTDX    " in EBX, EDX, ECX (TDX
/// module ABI, CPUID leaf 0x21; Linux `arch/x86/coco/tdx/tdx.c` compares the same three
/// registers, in that order, and first checks the maximum basic leaf).
pub const TDX_LEAF: u32 = 0x21;
pub const SIGNATURE: &[u8; 12] = b"IntelTDX    ";

/// `cpuid(leaf, subleaf)` returns EAX, EBX, ECX, EDX. A CPU whose maximum basic leaf is below
/// 0x21 answers leaf 0x21 with the data of its highest leaf, so that is checked first.
pub fn is_td(cpuid: impl Fn(u32, u32) -> [u32; 4]) -> bool {
    if cpuid(0, 0)[0] < TDX_LEAF {
        return false;
    }
    let [_, ebx, ecx, edx] = cpuid(TDX_LEAF, 0);
    let mut signature = [0u8; 12];
    signature[0..4].copy_from_slice(&ebx.to_le_bytes());
    signature[4..8].copy_from_slice(&edx.to_le_bytes());
    signature[8..12].copy_from_slice(&ecx.to_le_bytes());
    &signature == SIGNATURE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(text: &[u8]) -> u32 {
        u32::from_le_bytes(text.try_into().unwrap())
    }

    #[test]
    fn the_tdx_signature_is_read_in_ebx_edx_ecx_order() {
        let td = |leaf, _| match leaf {
            0 => [0x23, 0, 0, 0],
            0x21 => [0, word(b"Inte"), word(b"    "), word(b"lTDX")],
            _ => [0; 4],
        };
        assert!(is_td(td));
        // EBX, ECX, EDX in that order spell "Inte    lTDX": not a TD.
        let swapped = |leaf, _| match leaf {
            0 => [0x23, 0, 0, 0],
            0x21 => [0, word(b"Inte"), word(b"lTDX"), word(b"    ")],
            _ => [0; 4],
        };
        assert!(!is_td(swapped));
    }

    #[test]
    fn a_low_maximum_leaf_is_not_a_td() {
        // Leaf 0x21 above the maximum returns the highest leaf's data, whatever it holds.
        let low = |leaf, _| match leaf {
            0 => [0x20, 0, 0, 0],
            _ => [0, word(b"Inte"), word(b"    "), word(b"lTDX")],
        };
        assert!(!is_td(low));
        assert!(!is_td(|_, _| [0xd, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]));
    }
}
