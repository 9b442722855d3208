//! Which instructions to instrument: a cheap opcode match, a superset of what the TDX module
//! intercepts (the exact decode and the rules are `cargo xtask td-audit`'s job).

/// The candidate kind of the instruction `bytes`, or None if it is certainly native in a TD.
pub fn candidate(bytes: &[u8]) -> Option<&'static str> {
    let mut i = 0;
    // Legacy prefixes, then REX.
    while i < bytes.len()
        && matches!(
            bytes[i],
            0x66 | 0x67 | 0xF0 | 0xF2 | 0xF3 | 0x2E | 0x36 | 0x3E | 0x26 | 0x64 | 0x65
        )
    {
        i += 1;
    }
    if i < bytes.len() && (0x40..=0x4F).contains(&bytes[i]) {
        i += 1;
    }
    let opcode = *bytes.get(i)?;
    let next = |k: usize| bytes.get(i + k).copied();
    match opcode {
        0xE4..=0xE7 | 0xEC..=0xEF | 0x6C..=0x6F => Some("io"),
        0xF4 => Some("hlt"),
        // CALL near indirect with a 32-bit displacement of 0xE8: the offset of
        // EFI_BOOT_SERVICES.ExitBootServices (UEFI 2.10 section 4.4).
        0xFF => {
            let modrm = next(1)?;
            if modrm >> 6 != 0b10 || (modrm >> 3) & 7 != 2 {
                return None;
            }
            let displacement_at = if modrm & 7 == 0b100 { 3 } else { 2 };
            let d: [u8; 4] =
                bytes.get(i + displacement_at..i + displacement_at + 4)?.try_into().ok()?;
            (u32::from_le_bytes(d) == 0xE8).then_some("ebs-call")
        }
        0x0F => {
            let op2 = next(1)?;
            let modrm = next(2);
            let reg = modrm.map(|m| (m >> 3) & 7);
            let memory = modrm.is_some_and(|m| m >> 6 != 3);
            match op2 {
                0x30 | 0x32 | 0xA2 | 0x22 | 0x08 | 0x09 | 0x33 | 0x37 | 0xAA | 0x78 | 0x79 => {
                    Some("priv")
                }
                0x01 => match modrm? {
                    // VMCALL..VMXOFF, MONITOR/MWAIT, XSETBV, VMFUNC, ENCLS/ENCLV/PCONFIG,
                    // TDCALL/SEAMCALL/SEAMOPS (0F 01 CC-CF).
                    0xC0..=0xC5 | 0xC8 | 0xC9 | 0xCC..=0xCF | 0xD1 | 0xD4 => Some("priv"),
                    _ if memory && reg == Some(3) => Some("lidt"),
                    _ if reg == Some(6) => Some("priv"), // LMSW
                    _ => None,
                },
                // VMPTRLD/VMCLEAR/VMXON (/6) and VMPTRST (/7) take memory operands; the register
                // forms are RDRAND/RDSEED/RDPID.
                0xC7 if memory && matches!(reg, Some(6 | 7)) => Some("priv"),
                // INVEPT / INVVPID (66 0F 38 80/81).
                0x38 if matches!(next(2), Some(0x80 | 0x81)) => Some("priv"),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::candidate;

    #[test]
    fn finds_what_a_td_may_intercept() {
        assert_eq!(candidate(&[0x0F, 0x30]), Some("priv")); // wrmsr
        assert_eq!(candidate(&[0xEC]), Some("io")); // in al, dx
        assert_eq!(candidate(&[0x66, 0xED]), Some("io")); // in ax, dx
        assert_eq!(candidate(&[0xF3, 0x6E]), Some("io")); // rep outsb
        assert_eq!(candidate(&[0x0F, 0xA2]), Some("priv")); // cpuid
        assert_eq!(candidate(&[0x0F, 0x22, 0xE0]), Some("priv")); // mov cr4, rax
        assert_eq!(candidate(&[0x41, 0x0F, 0x01, 0x18]), Some("lidt")); // lidt [r8]
        assert_eq!(candidate(&[0x0F, 0x01, 0x10]), None); // lgdt [rax]
        assert_eq!(candidate(&[0xFF, 0x90, 0xE8, 0, 0, 0]), Some("ebs-call")); // call [rax+0xe8]
        assert_eq!(candidate(&[0x41, 0xFF, 0x94, 0x24, 0xE8, 0, 0, 0]), Some("ebs-call"));
        assert_eq!(candidate(&[0xFF, 0x90, 0xE0, 0, 0, 0]), None);
        assert_eq!(candidate(&[0x0F, 0xC7, 0xF0]), None); // rdrand eax
        assert_eq!(candidate(&[0x66, 0x0F, 0x01, 0xCC]), Some("priv")); // tdcall
        assert_eq!(candidate(&[0x48, 0x89, 0xC8]), None); // mov rax, rcx
    }
}
