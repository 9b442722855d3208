//! The one event our loader measures: the whole `kernel.elf` it read from the disk, before
//! ExitBootServices, as Linux's EFI stub measures the initrd it loads (`efi_measure_tagged_event`,
//! drivers/firmware/efi/libstub/efi-stub-helper.c): a tagged event into PCR 9, which TDVF maps
//! to RTMR[2] (`MapPcrToMrIndex(9)` = MR index 3). Shared by the loader (which logs it), the
//! harness (which replays it) and `cargo xtask measure` (which predicts it).

/// The PCR the event goes to (EFI_TCG2_PROTOCOL); in a TD, MR index 3 = RTMR[2].
pub const PCR: u32 = 9;
/// EV_EVENT_TAG.
pub const EVENT_TYPE: u32 = crate::event_log::EV_EVENT_TAG;
/// The tagged event id, our own (Linux uses 0x8F3B22EC for its initrd).
pub const TAG_ID: u32 = 0x7D1C_4A1E;
/// The tag's data: names what was measured.
pub const DESCRIPTION: &[u8; 24] = b"tdx-unikernel kernel.elf";
/// Length of [`event_data`].
pub const EVENT_DATA_LEN: usize = 8 + DESCRIPTION.len();

/// The event data logged with the digest: `TCG_PCClientTaggedEvent` {taggedEventID u32,
/// taggedEventDataSize u32, taggedEventData}. The digest is not of this but of the file.
pub fn event_data() -> [u8; EVENT_DATA_LEN] {
    let mut data = [0u8; EVENT_DATA_LEN];
    data[0..4].copy_from_slice(&TAG_ID.to_le_bytes());
    data[4..8].copy_from_slice(&(DESCRIPTION.len() as u32).to_le_bytes());
    data[8..].copy_from_slice(DESCRIPTION);
    data
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_data_is_a_tagged_event() {
        let d = super::event_data();
        assert_eq!(&d[..4], &[0x1E, 0x4A, 0x1C, 0x7D]);
        assert_eq!(u32::from_le_bytes(d[4..8].try_into().unwrap()), 24);
        assert_eq!(&d[8..], b"tdx-unikernel kernel.elf");
    }
}
