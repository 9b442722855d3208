//! The one event our loader measures: the whole `kernel.elf` it read from the disk, before
//! ExitBootServices, as Linux's EFI stub measures the initrd it loads (`efi_measure_tagged_event`,
//! drivers/firmware/efi/libstub/efi-stub-helper.c): a tagged event into PCR 9, which TDVF maps
//! to RTMR[2] (`MapPcrToMrIndex(9)` = MR index 3). Shared by the loader (which logs it), the
//! harness (which replays it) and `cargo xtask measure` (which predicts it); also the length of
//! the firmware's TCG2 event log, which the loader prints.

/// The PCR the event goes to (EFI_TCG2_PROTOCOL); in a TD, MR index 3 = RTMR[2].
pub const PCR: u32 = 9;
/// EV_EVENT_TAG (TCG PC Client Platform Firmware Profile, event types).
pub const EVENT_TYPE: u32 = 0x0000_0006;
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

/// The length of a crypto-agile TCG event log that starts at `location` and whose last entry
/// starts at `last` (what EFI_TCG2_PROTOCOL.GetEventLog returns), read through `read(address,
/// buffer)`, which fills `buffer` from the log or says it cannot. The header is a
/// `TCG_PCR_EVENT` (EventSize at 28, event at 32) carrying `TCG_EfiSpecIdEvent`
/// (numberOfAlgorithms at 24, then {algorithmId u16, digestSize u16}); an entry is
/// `TCG_PCR_EVENT2` {PCRIndex u32, EventType u32, count u32, {hashAlg u16, digest}, EventSize
/// u32, Event}. `None` for a header or entry this cannot read.
///
/// `read` is a trait object, not a generic: a generic from this crate would be instantiated in
/// the loader under a symbol name that carries this crate's path-dependent hash, and rustc
/// orders such functions by symbol name, so `loader.efi` would change with the directory it is
/// built in (`cargo xtask loader-repro`).
pub fn log_len(
    location: u64,
    last: u64,
    read: &mut dyn FnMut(u64, &mut [u8]) -> bool,
) -> Option<u64> {
    let mut u32_at = |at: u64| {
        let mut b = [0u8; 4];
        read(at, &mut b).then(|| u32::from_le_bytes(b))
    };
    if last < location {
        return None;
    }
    let event = location + 32;
    let spec_size = u64::from(u32_at(location + 28)?);
    let algorithms = u64::from(u32_at(event + 24)?);
    if algorithms == 0 || algorithms > 8 || 28 + 4 * algorithms > spec_size {
        return None;
    }
    let mut sizes = [(0u16, 0u16); 8];
    for (i, slot) in sizes.iter_mut().take(algorithms as usize).enumerate() {
        let pair = u32_at(event + 28 + 4 * i as u64)?;
        *slot = (pair as u16, (pair >> 16) as u16);
    }
    let count = u32_at(last + 8)?;
    if count == 0 || u64::from(count) > algorithms {
        return None;
    }
    let mut at = last + 12;
    for _ in 0..count {
        let alg = u32_at(at)? as u16;
        let (_, size) = sizes.iter().take(algorithms as usize).find(|(a, _)| *a == alg)?;
        at += 2 + u64::from(*size);
    }
    let data = u64::from(u32_at(at)?);
    Some(at + 4 + data - location)
}

#[cfg(test)]
mod tests {
    /// A header announcing SHA-1 (20) and SHA-256 (32), then one entry with both digests and
    /// 3 bytes of data: the length covers the entry exactly; a digest of an algorithm the
    /// header does not announce makes it unreadable.
    #[test]
    fn log_len_reads_the_last_entry() {
        let mut log = vec![0u8; 32];
        let mut spec = b"Spec ID Event03\0".to_vec();
        spec.extend([0u8; 8]);
        spec.extend(2u32.to_le_bytes());
        spec.extend([4u8, 0, 20, 0, 0x0B, 0, 32, 0, 0]);
        log[28..32].copy_from_slice(&(spec.len() as u32).to_le_bytes());
        log.extend(&spec);
        let last = log.len();
        log.extend(9u32.to_le_bytes());
        log.extend(6u32.to_le_bytes());
        log.extend(2u32.to_le_bytes());
        log.extend([4u8, 0]);
        log.extend([1u8; 20]);
        log.extend([0x0Bu8, 0]);
        log.extend([2u8; 32]);
        log.extend(3u32.to_le_bytes());
        log.extend(b"abc");
        let end = log.len() as u64;
        log.extend([0xFFu8; 16]);
        let read = |log: &[u8], at: u64, buf: &mut [u8]| match log.get(at as usize..) {
            Some(rest) if rest.len() >= buf.len() => {
                buf.copy_from_slice(&rest[..buf.len()]);
                true
            }
            _ => false,
        };
        let base = 0x1000u64;
        let len =
            super::log_len(base, base + last as u64, &mut |at, buf| read(&log, at - base, buf));
        assert_eq!(len, Some(end));
        log[last + 12] = 0x0C; // SHA-384, not in the header
        let len =
            super::log_len(base, base + last as u64, &mut |at, buf| read(&log, at - base, buf));
        assert_eq!(len, None);
    }

    #[test]
    fn event_data_is_a_tagged_event() {
        let d = super::event_data();
        assert_eq!(&d[..4], &[0x1E, 0x4A, 0x1C, 0x7D]);
        assert_eq!(u32::from_le_bytes(d[4..8].try_into().unwrap()), 24);
        assert_eq!(&d[8..], b"tdx-unikernel kernel.elf");
    }
}
