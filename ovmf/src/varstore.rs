//! Is a Secure Boot Platform Key enrolled in an OVMF variable store?
//!
//! A firmware enforces Secure Boot once a Platform Key (`PK`) is enrolled: the UEFI
//! specification (section 32.3, "Firmware/OS Key Exchange") puts the platform in user mode when
//! `PK` is set, and from then on the image verification handler refuses unsigned images. OVMF
//! keeps its variables in a firmware volume: the `OVMF_VARS*.fd` template of a split build, or
//! the first part of a combined `OVMF.fd`. Debian bookworm's `OVMF_VARS_4M.ms.fd` has `PK`, `KEK`,
//! `db` and `dbx` enrolled (Microsoft's keys); `OVMF_VARS_4M.fd` is empty.
//!
//! The store's variables are authenticated-variable headers
//! (`MdeModulePkg/Include/Guid/VariableFormat.h`, `AUTHENTICATED_VARIABLE_HEADER`), each on a
//! 4-byte boundary: `StartId` 0x55AA, `State`, a reserved byte, `Attributes` (u32),
//! `MonotonicCount` (u64), `TimeStamp` (16-byte `EFI_TIME`), `PubKeyIndex`, `NameSize`, `DataSize`
//! (u32 each), `VendorGuid` (16 bytes), then the UTF-16 name and the data. A variable counts
//! when its state is `VAR_ADDED` (0x3F), possibly with `VAR_IN_DELETED_TRANSITION` cleared
//! (0x3E); deleted ones (0x3C, 0x3D) are superseded copies.
//!
//! The scan looks for such headers anywhere in the bytes instead of walking the volume, so the
//! same function reads a VARS template and a combined image; a `PK` needs its exact name, the
//! EFI global-variable GUID, a valid state and data that fits, so random bytes do not match.
//! Untrusted input: no panics, every read bounds-checked.

/// `EFI_GLOBAL_VARIABLE` (8BE4DF61-93CA-11D2-AA0D-00E098032B8C) in its on-disk byte order.
const EFI_GLOBAL_VARIABLE: [u8; 16] = [
    0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c,
];

/// Size of `AUTHENTICATED_VARIABLE_HEADER`.
const HEADER_SIZE: usize = 60;
const START_ID: [u8; 2] = [0xaa, 0x55];
const VAR_ADDED: u8 = 0x3f;
const VAR_ADDED_IN_DELETED_TRANSITION: u8 = 0x3e;
/// `L"PK"` with its terminating NUL.
const PK_NAME: [u8; 6] = [b'P', 0, b'K', 0, 0, 0];

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    let field = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

/// True when `bytes` (a VARS template or a combined image) holds a live, non-empty `PK`.
pub fn platform_key_enrolled(bytes: &[u8]) -> bool {
    (0..bytes.len().saturating_sub(HEADER_SIZE)).step_by(4).any(|at| is_live_pk(bytes, at))
}

fn is_live_pk(bytes: &[u8], at: usize) -> bool {
    let Some(header) = bytes.get(at..at + HEADER_SIZE) else { return false };
    if header[0..2] != START_ID {
        return false;
    }
    if header[2] != VAR_ADDED && header[2] != VAR_ADDED_IN_DELETED_TRANSITION {
        return false;
    }
    let (Some(name_size), Some(data_size)) = (u32_at(header, 36), u32_at(header, 40)) else {
        return false;
    };
    if name_size as usize != PK_NAME.len()
        || data_size == 0
        || header[44..60] != EFI_GLOBAL_VARIABLE
    {
        return false;
    }
    let name_start = at + HEADER_SIZE;
    let Some(data_end) =
        name_start.checked_add(PK_NAME.len()).and_then(|n| n.checked_add(data_size as usize))
    else {
        return false;
    };
    bytes.get(name_start..name_start + PK_NAME.len()) == Some(&PK_NAME[..])
        && data_end <= bytes.len()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A VARS template with Microsoft-style keys enrolled (a `PK`), for the search's tests.
    pub(crate) fn enrolled_store() -> Vec<u8> {
        store(&[
            variable(VAR_ADDED, "KEK", EFI_GLOBAL_VARIABLE, &[0x30; 200]),
            variable(VAR_ADDED, "PK", EFI_GLOBAL_VARIABLE, &[0x30; 300]),
        ])
    }

    /// One authenticated variable as OVMF writes it.
    pub(crate) fn variable(state: u8, name: &str, guid: [u8; 16], data: &[u8]) -> Vec<u8> {
        let name: Vec<u8> =
            name.encode_utf16().chain([0]).flat_map(|unit| unit.to_le_bytes()).collect();
        let mut v = Vec::new();
        v.extend_from_slice(&START_ID);
        v.push(state);
        v.push(0);
        v.extend_from_slice(&0x27u32.to_le_bytes()); // NV+BS+RT+time-based auth
        v.extend_from_slice(&[0; 8 + 16 + 4]);
        v.extend_from_slice(&(name.len() as u32).to_le_bytes());
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(&guid);
        v.extend_from_slice(&name);
        v.extend_from_slice(data);
        while v.len() % 4 != 0 {
            v.push(0xff);
        }
        v
    }

    /// A store with `variables` after 0x64 bytes of volume and store headers.
    pub(crate) fn store(variables: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = vec![0u8; 0x64];
        for v in variables {
            bytes.extend_from_slice(v);
        }
        bytes.resize(bytes.len() + 4096, 0xff);
        bytes
    }

    #[test]
    fn an_enrolled_pk_is_found() {
        let certificate = vec![0x30; 1005];
        let bytes = store(&[
            variable(VAR_ADDED, "db", [7; 16], &[1; 300]),
            variable(VAR_ADDED, "PK", EFI_GLOBAL_VARIABLE, &certificate),
        ]);
        assert!(platform_key_enrolled(&bytes));
    }

    #[test]
    fn no_pk_deleted_pk_empty_pk_or_foreign_pk_is_not_enrolled() {
        let cases = [
            store(&[]),
            store(&[variable(VAR_ADDED, "KEK", EFI_GLOBAL_VARIABLE, &[1; 64])]),
            store(&[variable(0x3c, "PK", EFI_GLOBAL_VARIABLE, &[1; 64])]),
            store(&[variable(VAR_ADDED, "PK", EFI_GLOBAL_VARIABLE, &[])]),
            store(&[variable(VAR_ADDED, "PK", [9; 16], &[1; 64])]),
            store(&[variable(VAR_ADDED, "PKX", EFI_GLOBAL_VARIABLE, &[1; 64])]),
        ];
        for (i, bytes) in cases.iter().enumerate() {
            assert!(!platform_key_enrolled(bytes), "case {i}");
        }
    }

    #[test]
    fn a_pk_whose_data_runs_past_the_end_does_not_count() {
        let mut bytes = store(&[variable(VAR_ADDED, "PK", EFI_GLOBAL_VARIABLE, &[1; 64])]);
        bytes.truncate(0x64 + HEADER_SIZE + 6 + 10);
        assert!(!platform_key_enrolled(&bytes));
    }

    /// The files of Debian bookworm's `ovmf` package, where installed.
    #[test]
    fn debian_templates() {
        for (path, enrolled) in [
            ("/usr/share/OVMF/OVMF_VARS_4M.ms.fd", true),
            ("/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd", true),
            ("/usr/share/OVMF/OVMF_VARS_4M.fd", false),
            ("/usr/share/ovmf/OVMF.fd", false),
        ] {
            match std::fs::read(path) {
                Ok(bytes) => assert_eq!(platform_key_enrolled(&bytes), enrolled, "{path}"),
                Err(_) => println!("skip: {path} not installed"),
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = platform_key_enrolled(&bytes);
        }
    }
}
