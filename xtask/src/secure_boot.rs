//! Secure Boot, diagnosed: the firmware's refusal of our loader, recognised on serial.
//!
//! Our boot image is unsigned: the loader (rust-osdev bootloader's UEFI stage today, our own
//! loader once it replaces it) carries no Authenticode signature. A firmware that enforces Secure
//! Boot with enrolled keys (Debian's `OVMF_CODE_4M.ms.fd` with `OVMF_VARS_4M.ms.fd`, Debian's
//! TDX build `OVMF.inteltdx.ms.fd`, Fedora's `*.secboot.fd` with enrolled VARS) refuses to load it.
//! EDK2's boot manager then prints one line per refused boot option and waits for a key in its
//! menu forever, so without this module a run ends at its timeout with no word about why.
//!
//! The line comes from EDK2's `MdeModulePkg/Library/UefiBootManagerLib/BmBoot.c`
//! (`EfiBootManagerBoot`), `BdsDxe: failed to load Boot#### "<description>" from <path>: <status>`,
//! where the status is `Access Denied` when the image verification handler rejects the image
//! (`SecurityPkg/Library/DxeImageVerificationLib`: not signed by a key in `db`) and
//! `Security Violation` when the policy defers it. Newer EDK2 appends
//! ` -- rejected probably by Secure Boot` to `Access Denied`. Seen on this project's machines with
//! Debian bookworm's OVMF 2022.11:
//!
//! ```text
//! BdsDxe: failed to load Boot0002 "UEFI QEMU HARDDISK QM00001 " from PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x0,0xFFFF,0x0): Access Denied
//! ```

/// The statuses with which EDK2's boot manager reports an image that Secure Boot rejected.
const REFUSAL_STATUSES: [&str; 2] = ["Access Denied", "Security Violation"];

/// True when `line` (ANSI escapes already stripped) is the firmware refusing a boot option
/// because of Secure Boot.
pub fn is_refusal(line: &str) -> bool {
    let line = line.trim();
    let Some(at) = line.find("BdsDxe: failed to ") else { return false };
    let rest = &line[at + "BdsDxe: failed to ".len()..];
    if !(rest.starts_with("load Boot") || rest.starts_with("start Boot")) {
        return false;
    }
    // The status follows the last ": " (the description and device path may contain colons,
    // but never ": " followed by one of these words at the end).
    let Some((_, status)) = line.rsplit_once(": ") else { return false };
    let status = status.trim_end_matches(" -- rejected probably by Secure Boot");
    REFUSAL_STATUSES.contains(&status)
}

/// The first refusal line in serial output (raw, with ANSI escapes and carriage returns).
pub fn find_refusal(serial: &str) -> Option<String> {
    crate::ansi::strip_ansi(serial)
        .lines()
        .find(|line| is_refusal(line))
        .map(|line| line.trim().to_owned())
}

/// The one line a run ends with when the firmware refused the loader: what happened, why, and
/// what to use instead.
pub fn refusal_reason(line: &str) -> String {
    refusal_reason_with(line, None)
}

/// [`refusal_reason`], naming `instead` (the firmware this host offers without
/// `--firmware`/`OVMF_PATH`) when there is one, else the usual distribution paths.
pub fn refusal_reason_with(line: &str, instead: Option<&std::path::Path>) -> String {
    let head = format!(
        "the firmware enforces Secure Boot and refused our unsigned loader ({line}); use a firmware \
         without enrolled keys instead"
    );
    match instead {
        Some(path) => format!(
            "{head}: --firmware {} (what xtask picks on this host without --firmware/OVMF_PATH)",
            path.display()
        ),
        None => format!(
            "{head}: drop --firmware/OVMF_PATH to let xtask choose one, or pass e.g. \
             /usr/share/OVMF/OVMF_CODE_4M.fd (Debian, TCG), /usr/share/edk2/ovmf/OVMF_CODE.fd \
             (Fedora), /usr/share/ovmf/OVMF.fd (Debian/Ubuntu, TCG or a TD)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian bookworm, OVMF 2022.11-6+deb12u2, `OVMF_CODE_4M.ms.fd` + `OVMF_VARS_4M.ms.fd`,
    /// booting this project's image under QEMU 7.2 (captured on the development machine).
    const BOOKWORM_MS: &str = "\u{1b}[2J\u{1b}[01;01H\u{1b}[=3h\u{1b}[2J\u{1b}[01;01HBdsDxe: failed to load Boot0001 \"UEFI QEMU DVD-ROM QM00005 \" from PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x2,0xFFFF,0x0): Not Found\r\n\
BdsDxe: loading Boot0002 \"UEFI QEMU HARDDISK QM00001 \" from PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x0,0xFFFF,0x0)\r\n\
BdsDxe: failed to load Boot0002 \"UEFI QEMU HARDDISK QM00001 \" from PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x0,0xFFFF,0x0): Access Denied\r\n\
BdsDxe: loading Boot0003 \"EFI Internal Shell\" from Fv(7CB8BDC9-F8EB-4F34-AAEA-3EE4AF6516A1)/FvFile(7C04A583-9E3E-4F1C-AD65-E05268D0B4D1)\r\n\
BdsDxe: failed to start Boot0003 \"EFI Internal Shell\" from Fv(7CB8BDC9-F8EB-4F34-AAEA-3EE4AF6516A1)/FvFile(7C04A583-9E3E-4F1C-AD65-E05268D0B4D1): Security Violation\r\n\
BdsDxe: No bootable option or device was found.\r\n\
BdsDxe: Press any key to enter the Boot Manager Menu.\r\n";

    #[test]
    fn bookworms_refusal_is_recognised_and_the_first_one_named() {
        let line = find_refusal(BOOKWORM_MS).expect("a refusal");
        assert!(line.starts_with("BdsDxe: failed to load Boot0002 \"UEFI QEMU HARDDISK"), "{line}");
        assert!(line.ends_with(": Access Denied"), "{line}");
    }

    #[test]
    fn newer_edk2_wording_is_recognised() {
        // EDK2 since 2023 (BmBoot.c) adds the hint to the status.
        let line = "BdsDxe: failed to load Boot0002 \"UEFI Misc Device\" from PciRoot(0x0)/Pci(0x3,0x0): Access Denied -- rejected probably by Secure Boot";
        assert!(is_refusal(line));
        assert!(is_refusal("BdsDxe: failed to load Boot0001 \"x\" from Fv(1): Security Violation"));
    }

    #[test]
    fn other_boot_failures_and_normal_boots_are_not_refusals() {
        for line in [
            "BdsDxe: failed to load Boot0001 \"UEFI QEMU DVD-ROM QM00005 \" from PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x2,0xFFFF,0x0): Not Found",
            "BdsDxe: loading Boot0002 \"UEFI QEMU HARDDISK QM00001 \" from PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x0,0xFFFF,0x0)",
            "BdsDxe: starting Boot0002 \"UEFI QEMU HARDDISK QM00001 \" from PciRoot(0x0)",
            "BdsDxe: No bootable option or device was found.",
            "CHECK pass serial.scratch Access Denied",
            "tdx-unikernel: kernel entered: Access Denied",
            "",
        ] {
            assert!(!is_refusal(line), "{line}");
        }
        let normal = "BdsDxe: loading Boot0002 \"UEFI QEMU HARDDISK QM00001 \"\r\nBdsDxe: starting Boot0002\r\ntdx-unikernel: kernel entered\r\n";
        assert_eq!(find_refusal(normal), None);
    }

    #[test]
    fn the_reason_is_one_line_naming_secure_boot_and_an_alternative() {
        let reason = refusal_reason("BdsDxe: failed to load Boot0002 \"d\" from p: Access Denied");
        assert!(!reason.contains('\n'));
        assert!(reason.contains("Secure Boot") && reason.contains("unsigned"), "{reason}");
        assert!(reason.contains("/usr/share/OVMF/OVMF_CODE_4M.fd"), "{reason}");
        let here = refusal_reason_with("x: Access Denied", Some(std::path::Path::new("/fw/A.fd")));
        assert!(
            here.ends_with(
                "--firmware /fw/A.fd (what xtask picks on this host without \
                                --firmware/OVMF_PATH)"
            ),
            "{here}"
        );
        assert!(!here.contains('\n'));
    }
}
