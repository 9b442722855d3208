//! TCG crypto-agile event logs: a `TCG_PCR_EVENT` header whose event is the
//! `TCG_EfiSpecIdEvent` ("Spec ID Event03"), then `TCG_PCR_EVENT2` entries (TCG PC Client
//! Platform Firmware Profile, sections "Event Logging" and "TCG_PCR_EVENT2 Structure").
//!
//! The same format carries the firmware's log in a TD (the ACPI CCEL table's area, where the
//! index field is the CC measurement register index: 1..=4 for RTMR[0..3], EDK2
//! `CcMeasurement.h`) and under a TPM (EFI_TCG2_PROTOCOL.GetEventLog, index = PCR).
//!
//! Parsing stops at the end of the buffer or at the first entry that does not fit, so a log
//! area with unused space after the last entry (CCEL's LAML covers the whole area) ends cleanly.

/// TPM_ALG_SHA1.
pub const ALG_SHA1: u16 = 0x0004;
/// TPM_ALG_SHA256.
pub const ALG_SHA256: u16 = 0x000B;
/// TPM_ALG_SHA384.
pub const ALG_SHA384: u16 = 0x000C;
/// TPM_ALG_SHA512.
pub const ALG_SHA512: u16 = 0x000D;

/// EV_NO_ACTION: informational, never extended.
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// EV_EFI_BOOT_SERVICES_APPLICATION: an image started with LoadImage (our loader).
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
/// EV_EVENT_TAG: a tagged event (Linux's EFI stub and our loader measure loaded files so).
pub const EV_EVENT_TAG: u32 = 0x0000_0006;
/// EV_IPL: an initial program loader's event.
pub const EV_IPL: u32 = 0x0000_000D;

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const MAX_ALGORITHMS: usize = 5;

/// Why a log cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogError {
    /// Shorter than its header.
    Truncated,
    /// The first event is not a `Spec ID Event03` (a SHA-1-only log, or no log).
    NotCryptoAgile,
    /// More digest algorithms than this parser keeps, or a zero digest size.
    BadAlgorithms,
}

/// The digest algorithms and sizes the log's header announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecId {
    algorithms: [(u16, u16); MAX_ALGORITHMS],
    count: usize,
}

impl SpecId {
    /// The (algorithm, digest size) pairs.
    pub fn algorithms(&self) -> &[(u16, u16)] {
        &self.algorithms[..self.count]
    }

    fn digest_size(&self, alg: u16) -> Option<usize> {
        self.algorithms().iter().find(|(a, _)| *a == alg).map(|(_, s)| usize::from(*s))
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A parsed log: its header and the bytes of its `TCG_PCR_EVENT2` entries.
#[derive(Clone, Copy, Debug)]
pub struct EventLog<'a> {
    spec: SpecId,
    entries: &'a [u8],
    header: &'a [u8],
}

impl<'a> EventLog<'a> {
    /// Parses the header of the log in `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, LogError> {
        // TCG_PCR_EVENT: PCRIndex u32, EventType u32, SHA-1 digest [20], EventSize u32, Event.
        let event_size = u32_at(bytes, 28).ok_or(LogError::Truncated)? as usize;
        let event = bytes.get(32..32usize.saturating_add(event_size)).ok_or(LogError::Truncated)?;
        if u32_at(bytes, 4) != Some(EV_NO_ACTION) || event.get(..16) != Some(SPEC_ID_SIGNATURE) {
            return Err(LogError::NotCryptoAgile);
        }
        // TCG_EfiSpecIdEvent: signature [16], platformClass u32, minor, major, errata, uintnSize
        // (u8 each), numberOfAlgorithms u32 @24, then {algorithmId u16, digestSize u16}.
        let count = u32_at(event, 24).ok_or(LogError::Truncated)? as usize;
        if count == 0 || count > MAX_ALGORITHMS {
            return Err(LogError::BadAlgorithms);
        }
        let mut algorithms = [(0u16, 0u16); MAX_ALGORITHMS];
        for (i, slot) in algorithms.iter_mut().take(count).enumerate() {
            let alg = u16_at(event, 28 + 4 * i).ok_or(LogError::Truncated)?;
            let size = u16_at(event, 30 + 4 * i).ok_or(LogError::Truncated)?;
            if size == 0 || size > 64 {
                return Err(LogError::BadAlgorithms);
            }
            *slot = (alg, size);
        }
        let header_len = 32 + event_size;
        Ok(EventLog {
            spec: SpecId { algorithms, count },
            entries: &bytes[header_len..],
            header: &bytes[..header_len],
        })
    }

    /// The header's algorithms.
    pub fn spec_id(&self) -> SpecId {
        self.spec
    }

    /// The header event (`TCG_PCR_EVENT` with the Spec ID event).
    pub fn header(&self) -> &'a [u8] {
        self.header
    }

    /// The entries, in log order.
    pub fn events(&self) -> Events<'a> {
        Events { spec: self.spec, rest: self.entries }
    }

    /// Replays every entry except EV_NO_ACTION into `registers` (index = the entry's index
    /// field), with the digests of `alg`, whose size must be `N`. Registers start at zero, except
    /// that a `StartupLocality` EV_NO_ACTION event sets the last byte of register 0 to the
    /// locality (TCG PC Client PFP, "Startup Locality Event"; a TPM's PCR 0 starts so). Entries
    /// for indices beyond `registers` are ignored. Returns how many entries were extended.
    pub fn replay<const N: usize>(
        &self,
        alg: u16,
        registers: &mut [[u8; N]],
        extend: impl Fn(&[u8; N], &[u8; N]) -> [u8; N],
    ) -> usize {
        let mut extended = 0;
        for event in self.events() {
            if event.event_type == EV_NO_ACTION {
                if let Some(locality) = startup_locality(event.data) {
                    if let Some(r0) = registers.first_mut() {
                        *r0 = [0; N];
                        r0[N - 1] = locality;
                    }
                }
                continue;
            }
            let Some(digest) = event.digest(alg).and_then(|d| <&[u8; N]>::try_from(d).ok()) else {
                continue;
            };
            if let Some(r) = registers.get_mut(event.index as usize) {
                *r = extend(r, digest);
                extended += 1;
            }
        }
        extended
    }
}

fn startup_locality(data: &[u8]) -> Option<u8> {
    // TCG_EfiStartupLocalityEvent: Signature "StartupLocality\0" (16), StartupLocality u8.
    if data.len() == 17 && &data[..16] == b"StartupLocality\0" {
        return Some(data[16]);
    }
    None
}

/// One `TCG_PCR_EVENT2`.
#[derive(Clone, Copy, Debug)]
pub struct Event<'a> {
    /// PCRIndex (a TPM PCR) or, in a CC log, the MR index (1..=4 = RTMR[0..3]).
    pub index: u32,
    /// EventType.
    pub event_type: u32,
    digests: &'a [u8],
    digest_count: usize,
    spec: SpecId,
    /// The event data.
    pub data: &'a [u8],
}

impl<'a> Event<'a> {
    /// The digest of algorithm `alg`, if the entry carries one.
    pub fn digest(&self, alg: u16) -> Option<&'a [u8]> {
        let mut at = 0;
        for _ in 0..self.digest_count {
            let a = u16_at(self.digests, at)?;
            let size = self.spec.digest_size(a)?;
            let digest = self.digests.get(at + 2..at + 2 + size)?;
            if a == alg {
                return Some(digest);
            }
            at += 2 + size;
        }
        None
    }
}

/// The entries of a log.
#[derive(Clone, Copy, Debug)]
pub struct Events<'a> {
    spec: SpecId,
    rest: &'a [u8],
}

impl<'a> Iterator for Events<'a> {
    type Item = Event<'a>;

    fn next(&mut self) -> Option<Event<'a>> {
        let b = self.rest;
        let index = u32_at(b, 0)?;
        let event_type = u32_at(b, 4)?;
        let digest_count = u32_at(b, 8)? as usize;
        // Unused log space (all zeros or all ones) is not an entry.
        if digest_count == 0 || digest_count > MAX_ALGORITHMS || index == u32::MAX {
            self.rest = &[];
            return None;
        }
        let mut at = 12;
        for _ in 0..digest_count {
            let Some(size) = u16_at(b, at).and_then(|alg| self.spec.digest_size(alg)) else {
                self.rest = &[];
                return None;
            };
            at += 2 + size;
        }
        let digests = b.get(12..at)?;
        let size = u32_at(b, at)? as usize;
        let data = b.get(at + 4..(at + 4).checked_add(size)?);
        let Some(data) = data else {
            self.rest = &[];
            return None;
        };
        self.rest = &b[at + 4 + size..];
        Some(Event { index, event_type, digests, digest_count, spec: self.spec, data })
    }
}

/// Writes a `TCG_PCR_EVENT2` with one digest into `out` (for tests and for logs a program
/// builds itself); returns the bytes written, or `None` if `out` is too small.
pub fn write_event2(
    out: &mut [u8],
    index: u32,
    event_type: u32,
    alg: u16,
    digest: &[u8],
    data: &[u8],
) -> Option<usize> {
    let len = 12 + 2 + digest.len() + 4 + data.len();
    let out = out.get_mut(..len)?;
    out[0..4].copy_from_slice(&index.to_le_bytes());
    out[4..8].copy_from_slice(&event_type.to_le_bytes());
    out[8..12].copy_from_slice(&1u32.to_le_bytes());
    out[12..14].copy_from_slice(&alg.to_le_bytes());
    out[14..14 + digest.len()].copy_from_slice(digest);
    let at = 14 + digest.len();
    out[at..at + 4].copy_from_slice(&(data.len() as u32).to_le_bytes());
    out[at + 4..].copy_from_slice(data);
    Some(len)
}

/// Writes a `Spec ID Event03` header announcing `algorithms`; returns the bytes written.
pub fn write_spec_id_header(out: &mut [u8], algorithms: &[(u16, u16)]) -> Option<usize> {
    let event_len = 24 + 4 + 4 * algorithms.len() + 1;
    let len = 32 + event_len;
    let out = out.get_mut(..len)?;
    out.fill(0);
    out[4..8].copy_from_slice(&EV_NO_ACTION.to_le_bytes());
    out[28..32].copy_from_slice(&(event_len as u32).to_le_bytes());
    let event = &mut out[32..];
    event[..16].copy_from_slice(SPEC_ID_SIGNATURE);
    event[21] = 2; // specVersionMajor
    event[23] = 2; // uintnSize: UINT64
    event[24..28].copy_from_slice(&(algorithms.len() as u32).to_le_bytes());
    for (i, (alg, size)) in algorithms.iter().enumerate() {
        event[28 + 4 * i..30 + 4 * i].copy_from_slice(&alg.to_le_bytes());
        event[30 + 4 * i..32 + 4 * i].copy_from_slice(&size.to_le_bytes());
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(events: &[(u32, u32, [u8; 48], &[u8])]) -> Vec<u8> {
        let mut log = vec![0u8; 4096];
        let mut at = write_spec_id_header(&mut log, &[(ALG_SHA384, 48)]).unwrap();
        for (index, ty, digest, data) in events {
            at += write_event2(&mut log[at..], *index, *ty, ALG_SHA384, digest, data).unwrap();
        }
        log
    }

    #[test]
    fn parses_and_replays_with_trailing_space() {
        let log = build(&[(1, EV_IPL, [1; 48], b"a"), (3, EV_EVENT_TAG, [2; 48], b"bc")]);
        let parsed = EventLog::parse(&log).unwrap();
        assert_eq!(parsed.spec_id().algorithms(), &[(ALG_SHA384, 48)]);
        let events: Vec<_> = parsed.events().collect();
        assert_eq!(events.len(), 2, "zero padding after the last entry ends the log");
        assert_eq!(events[1].data, b"bc");
        assert_eq!(events[1].digest(ALG_SHA384), Some(&[2u8; 48][..]));
        assert_eq!(events[1].digest(ALG_SHA256), None);
        let mut mrs = [[0u8; 48]; 5];
        assert_eq!(parsed.replay(ALG_SHA384, &mut mrs, crate::rtmr::extend), 2);
        assert_eq!(mrs[1], crate::rtmr::extend(&[0; 48], &[1; 48]));
        assert_eq!(mrs[3], crate::rtmr::extend(&[0; 48], &[2; 48]));
        assert_eq!(mrs[2], [0; 48]);
    }

    #[test]
    fn ones_padding_and_truncation_end_cleanly() {
        let mut log = build(&[(2, EV_IPL, [1; 48], b"x")]);
        let end = log.len() - 4096 + 2048;
        log[end..].fill(0xFF);
        assert_eq!(EventLog::parse(&log).unwrap().events().count(), 1);
        let parsed_len = {
            let header = write_spec_id_header(&mut [0u8; 128], &[(ALG_SHA384, 48)]).unwrap();
            header + 12 + 2 + 48 + 4 + 1
        };
        for cut in 0..parsed_len {
            let _ = EventLog::parse(&log[..cut]).map(|l| l.events().count());
        }
        assert_eq!(EventLog::parse(&log[..parsed_len - 1]).unwrap().events().count(), 0);
        assert_eq!(EventLog::parse(&[0u8; 64]).unwrap_err(), LogError::NotCryptoAgile);
    }

    #[test]
    fn startup_locality_sets_pcr0() {
        let mut log = vec![0u8; 1024];
        let mut at = write_spec_id_header(&mut log, &[(ALG_SHA256, 32)]).unwrap();
        at += write_event2(
            &mut log[at..],
            0,
            EV_NO_ACTION,
            ALG_SHA256,
            &[0; 32],
            b"StartupLocality\0\x03",
        )
        .unwrap();
        write_event2(&mut log[at..], 0, EV_IPL, ALG_SHA256, &[9; 32], b"").unwrap();
        let mut pcrs = [[0u8; 32]; 24];
        let sha256_extend = |a: &[u8; 32], b: &[u8; 32]| crate::sha256(&[a, b]);
        EventLog::parse(&log).unwrap().replay(ALG_SHA256, &mut pcrs, sha256_extend);
        let mut initial = [0u8; 32];
        initial[31] = 3;
        assert_eq!(pcrs[0], sha256_extend(&initial, &[9; 32]));
    }
}
