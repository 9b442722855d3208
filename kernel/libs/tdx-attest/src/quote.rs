//! TDG.VP.VMCALL<GetQuote> (sub-function 0x10002): the shared buffer's layout and the guest's
//! policy for the answer, as pure logic (the kernel's caller is `kernel/src/attest/quote.rs`;
//! softtdx's VMM writes answers with [`write_answer`]; see docs/attestation.md).
//!
//! The buffer (GHCI "GetQuote"; QEMU target/i386/kvm/tdx-quote-generator.h; Linux
//! drivers/virt/coco/tdx-guest/tdx-guest.c `struct tdx_quote_buf`), little-endian: u64 version
//! (1), u64 status (the guest writes 0, the VMM IN_FLIGHT while it works, then SUCCESS, ERROR
//! or QGS_UNAVAILABLE), u32 in_len (the TDREPORT's 1024 bytes), u32 out_len (the VMM writes
//! the quote's size), then the data: the TDREPORT in, the quote out. The buffer is a 4 KiB
//! multiple (R13); QEMU caps it at 128 KiB. Without SetupEventNotifyInterrupt the guest polls
//! the status, with a bound (Linux polls once a second for up to 30 s).

use crate::report::TDREPORT_SIZE;

/// GetQuote's TDG.VP.VMCALL sub-function.
pub const GET_QUOTE: u64 = 0x10002;
/// The header's version.
pub const VERSION: u64 = 1;
/// Header bytes before the data.
pub const HEADER_LEN: usize = 24;
/// The VMM is still working.
pub const STATUS_IN_FLIGHT: u64 = u64::MAX;
/// The quote is in the buffer.
pub const STATUS_SUCCESS: u64 = 0;
/// The VMM or the quote service failed.
pub const STATUS_ERROR: u64 = 0x8000_0000_0000_0000;
/// No quote service (QEMU without `quote-generation-socket`).
pub const STATUS_QGS_UNAVAILABLE: u64 = 0x8000_0000_0000_0001;

/// What softtdx's VMM returns as a quote: this marker, then the TDREPORT it was sent. No
/// verifier can take it for a real one: a TDX quote starts with its version (4 or 5, u16) and
/// the TEE type 0x81 at offset 4, where this has ASCII text.
pub const SIMULATED_QUOTE_MARKER: &[u8; 64] =
    b"softtdx SIMULATED QUOTE - NOT REAL, NOT SIGNED, NOT A TDX QUOTE\n";

/// Writes the request header and the TDREPORT into `buffer` (the whole shared buffer); `None`
/// when it cannot hold them.
pub fn write_request(buffer: &mut [u8], tdreport: &[u8; TDREPORT_SIZE]) -> Option<()> {
    let buffer = buffer.get_mut(..HEADER_LEN + TDREPORT_SIZE)?;
    buffer[0..8].copy_from_slice(&VERSION.to_le_bytes());
    buffer[8..16].copy_from_slice(&0u64.to_le_bytes());
    buffer[16..20].copy_from_slice(&(TDREPORT_SIZE as u32).to_le_bytes());
    buffer[20..24].copy_from_slice(&0u32.to_le_bytes());
    buffer[HEADER_LEN..].copy_from_slice(tdreport);
    Some(())
}

/// The header's status word.
pub fn status(buffer: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(buffer.get(8..16)?.try_into().ok()?))
}

/// Why no quote came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuoteError {
    /// The host has no quote service.
    QgsUnavailable,
    /// The VMM or the quote service reported an error.
    Error,
    /// Still IN_FLIGHT after the bound.
    StillInFlight {
        /// How many times the status was read.
        polls: u32,
    },
    /// A status the GHCI does not define.
    UnknownStatus(u64),
    /// The VMM changed the header's version.
    BadVersion(u64),
    /// The quote size the VMM wrote does not fit the buffer after the header.
    TooLong {
        /// The size the VMM wrote.
        out_len: u32,
        /// The bytes after the header.
        room: usize,
    },
    /// SUCCESS with an empty quote.
    Empty,
}

impl core::fmt::Display for QuoteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            QuoteError::QgsUnavailable => write!(
                f,
                "GetQuote: the host has no quote service (QGS_UNAVAILABLE); start the TD with a \
                 quote-generation-socket"
            ),
            QuoteError::Error => {
                write!(f, "GetQuote: the VMM reported ERROR (status {STATUS_ERROR:#x})")
            }
            QuoteError::StillInFlight { polls } => {
                write!(f, "GetQuote: still IN_FLIGHT after {polls} polls; giving up")
            }
            QuoteError::UnknownStatus(s) => write!(f, "GetQuote: undefined status {s:#x}"),
            QuoteError::BadVersion(v) => write!(f, "GetQuote: the header's version became {v}"),
            QuoteError::TooLong { out_len, room } => write!(
                f,
                "GetQuote: the VMM says the quote is {out_len} bytes, the buffer holds {room}"
            ),
            QuoteError::Empty => write!(f, "GetQuote: SUCCESS with an empty quote"),
        }
    }
}

/// What one look at the buffer says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Look again later.
    InFlight,
    /// The quote is in the buffer.
    Done {
        /// Its length, from [`HEADER_LEN`].
        len: usize,
    },
}

/// Judges the buffer after the VMM's answer (`buffer` is the whole shared buffer).
pub fn check(buffer: &[u8]) -> Result<Poll, QuoteError> {
    // A buffer without a whole header carries no answer.
    let Some(header) = buffer.get(..HEADER_LEN).and_then(|h| h.try_into().ok()) else {
        return Err(QuoteError::Error);
    };
    check_header(header, buffer.len())
}

/// Judges a copy of the header (taken from shared memory into private memory once, so that the
/// host cannot change it between the checks) of a shared buffer of `buffer_len` bytes. A
/// [`Poll::Done`] length always fits the buffer after the header.
pub fn check_header(header: &[u8; HEADER_LEN], buffer_len: usize) -> Result<Poll, QuoteError> {
    let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or([0; 8]));
    let version = word(0);
    if version != VERSION {
        return Err(QuoteError::BadVersion(version));
    }
    match word(8) {
        STATUS_IN_FLIGHT => Ok(Poll::InFlight),
        STATUS_QGS_UNAVAILABLE => Err(QuoteError::QgsUnavailable),
        STATUS_ERROR => Err(QuoteError::Error),
        STATUS_SUCCESS => {
            let out_len = u32::from_le_bytes(header[20..24].try_into().unwrap_or([0; 4]));
            let room = buffer_len.saturating_sub(HEADER_LEN);
            if out_len as usize > room {
                return Err(QuoteError::TooLong { out_len, room });
            }
            if out_len == 0 {
                return Err(QuoteError::Empty);
            }
            Ok(Poll::Done { len: out_len as usize })
        }
        other => Err(QuoteError::UnknownStatus(other)),
    }
}

/// The VMM's side, for softtdx: writes the header's `status` and `out_len` and, when `quote` is
/// given, the quote after the header (QEMU `tdx_get_quote_completion`: the quote at the
/// payload, out_len, then the status). `None` when the quote does not fit.
pub fn write_answer(
    buffer: &mut [u8],
    status: u64,
    out_len: u32,
    quote: Option<&[u8]>,
) -> Option<()> {
    if buffer.len() < HEADER_LEN {
        return None;
    }
    if let Some(quote) = quote {
        buffer.get_mut(HEADER_LEN..HEADER_LEN + quote.len())?.copy_from_slice(quote);
    }
    buffer[20..24].copy_from_slice(&out_len.to_le_bytes());
    buffer[8..16].copy_from_slice(&status.to_le_bytes());
    Some(())
}

/// Polls at most `max_polls` times: `look(n)` returns a private copy of the header at the
/// `n`-th look (0 first; the caller waits before every later one), judged against a buffer of
/// `buffer_len` bytes. The first answer that is not IN_FLIGHT ends it; `Ok` carries the
/// quote's length, which fits the buffer after the header.
pub fn poll(
    max_polls: u32,
    buffer_len: usize,
    mut look: impl FnMut(u32) -> [u8; HEADER_LEN],
) -> Result<usize, QuoteError> {
    for n in 0..max_polls {
        match check_header(&look(n), buffer_len)? {
            Poll::InFlight => continue,
            Poll::Done { len } => return Ok(len),
        }
    }
    Err(QuoteError::StillInFlight { polls: max_polls })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u64, out_len: u32) -> [u8; 4096] {
        let mut b = [0u8; 4096];
        write_request(&mut b, &[7u8; TDREPORT_SIZE]).unwrap();
        b[8..16].copy_from_slice(&status.to_le_bytes());
        b[20..24].copy_from_slice(&out_len.to_le_bytes());
        b
    }

    #[test]
    fn request_layout() {
        let mut b = [0xAAu8; 4096];
        write_request(&mut b, &[7u8; TDREPORT_SIZE]).unwrap();
        assert_eq!(&b[0..8], &1u64.to_le_bytes());
        assert_eq!(&b[8..16], &[0; 8]);
        assert_eq!(&b[16..20], &1024u32.to_le_bytes());
        assert_eq!(&b[20..24], &[0; 4]);
        assert_eq!(b[24], 7);
        assert_eq!(b[24 + 1024], 0xAA, "nothing written after the TDREPORT");
        assert!(write_request(&mut [0u8; 1000], &[0u8; TDREPORT_SIZE]).is_none());
    }

    #[test]
    fn each_answer_is_judged() {
        assert_eq!(check(&answered(STATUS_IN_FLIGHT, 0)), Ok(Poll::InFlight));
        assert_eq!(check(&answered(STATUS_QGS_UNAVAILABLE, 0)), Err(QuoteError::QgsUnavailable));
        assert_eq!(check(&answered(STATUS_ERROR, 0)), Err(QuoteError::Error));
        assert_eq!(
            check(&answered(STATUS_SUCCESS, 5000)),
            Err(QuoteError::TooLong { out_len: 5000, room: 4072 })
        );
        assert_eq!(check(&answered(STATUS_SUCCESS, 0)), Err(QuoteError::Empty));
        assert_eq!(check(&answered(STATUS_SUCCESS, 4072)), Ok(Poll::Done { len: 4072 }));
        assert_eq!(check(&answered(5, 0)), Err(QuoteError::UnknownStatus(5)));
        let mut b = answered(STATUS_SUCCESS, 10);
        b[0] = 2;
        assert_eq!(check(&b), Err(QuoteError::BadVersion(2)));
    }

    #[test]
    fn the_header_alone_is_judged_against_the_buffer_size() {
        let b = answered(STATUS_SUCCESS, 8168);
        let header: [u8; HEADER_LEN] = b[..HEADER_LEN].try_into().unwrap();
        assert_eq!(check_header(&header, 8192), Ok(Poll::Done { len: 8168 }));
        assert_eq!(
            check_header(&header, 4096),
            Err(QuoteError::TooLong { out_len: 8168, room: 4072 })
        );
        assert_eq!(check(&b[..10]), Err(QuoteError::Error));
    }

    #[test]
    fn an_answer_written_by_the_vmm_reads_back() {
        let mut b = [0u8; 4096];
        write_request(&mut b, &[7u8; TDREPORT_SIZE]).unwrap();
        let quote = [SIMULATED_QUOTE_MARKER.as_slice(), &[7u8; TDREPORT_SIZE]].concat();
        write_answer(&mut b, STATUS_SUCCESS, quote.len() as u32, Some(&quote)).unwrap();
        assert_eq!(check(&b), Ok(Poll::Done { len: 64 + 1024 }));
        assert_eq!(&b[HEADER_LEN..HEADER_LEN + 64], SIMULATED_QUOTE_MARKER);
        assert!(write_answer(&mut b, STATUS_SUCCESS, 5000, Some(&[0u8; 5000])).is_none());
        write_answer(&mut b, STATUS_QGS_UNAVAILABLE, 0, None).unwrap();
        assert_eq!(check(&b), Err(QuoteError::QgsUnavailable));
    }

    #[test]
    fn polling_is_bounded() {
        let header = |b: [u8; 4096]| -> [u8; HEADER_LEN] { b[..HEADER_LEN].try_into().unwrap() };
        let stuck = header(answered(STATUS_IN_FLIGHT, 0));
        let mut looks = Vec::new();
        let r = poll(30, 4096, |n| {
            looks.push(n);
            stuck
        });
        assert_eq!(r.unwrap_err(), QuoteError::StillInFlight { polls: 30 });
        assert_eq!(looks, (0..30).collect::<Vec<_>>());
        let answers = [stuck, stuck, header(answered(STATUS_SUCCESS, 16))];
        let mut i = 0;
        let len = poll(30, 4096, |n| {
            i += 1;
            answers[n as usize]
        })
        .unwrap();
        assert_eq!((len, i), (16, 3));
        let error = header(answered(STATUS_ERROR, 0));
        assert_eq!(poll(30, 4096, |_| error), Err(QuoteError::Error));
        assert_eq!(poll(0, 4096, |_| error), Err(QuoteError::StillInFlight { polls: 0 }));
    }

    #[test]
    fn messages_name_the_cause() {
        extern crate std;
        use std::string::ToString;
        assert!(QuoteError::QgsUnavailable.to_string().contains("QGS_UNAVAILABLE"));
        assert!(QuoteError::StillInFlight { polls: 30 }.to_string().contains("IN_FLIGHT after 30"));
        assert!(QuoteError::TooLong { out_len: 9, room: 8 }.to_string().contains("9 bytes"));
    }
}
