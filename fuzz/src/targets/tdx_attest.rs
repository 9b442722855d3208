//! tdx-attest: the firmware's event log (the CCEL area in a TD, written by firmware the guest
//! does not control) and the TDREPORT, as the kernel decodes it and as the harness reads the
//! printed one back from the serial log (written by the guest under test).

use crate::attest;
use crate::input::Input;
use tdx_attest::event_log::{self, EventLog, ALG_SHA256, ALG_SHA384};
use tdx_attest::quote::{self, Poll, QuoteError, HEADER_LEN};
use tdx_attest::report::{offset, TdInfo, TdReport, TDREPORT_SIZE};
use tdx_attest::rtmr;

/// A TCG crypto-agile event log: the fuzzer's bytes as a log, or (first byte odd) a log built
/// from them with the library's own writers, which must parse back to what was written.
pub fn event_log(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        check_log(rest);
    } else {
        round_trip(rest);
    }
}

/// Every entry lies inside the buffer, its digests have the header's sizes, the walk ends, and
/// replay extends at most once per entry.
fn check_log(bytes: &[u8]) {
    let Ok(log) = EventLog::parse(bytes) else { return };
    let spec = log.spec_id();
    let algorithms = spec.algorithms();
    assert!(!algorithms.is_empty() && algorithms.len() <= 5);
    assert!(algorithms.iter().all(|&(_, size)| (1..=64).contains(&size)));
    assert!(log.header().len() <= bytes.len());
    let range = bytes.as_ptr_range();
    let mut count = 0;
    for event in log.events() {
        count += 1;
        // An entry has at least its index, type, digest count, one digest and a data size.
        assert!(count <= bytes.len() / 19, "more entries than the bytes can hold");
        let data = event.data.as_ptr_range();
        assert!(range.start <= data.start && data.end <= range.end);
        for &(alg, _) in algorithms {
            // The size the header gives the algorithm first.
            let size = algorithms.iter().find(|(a, _)| *a == alg).unwrap().1;
            if let Some(digest) = event.digest(alg) {
                assert_eq!(digest.len(), usize::from(size));
            }
        }
    }
    let mut rtmrs = [[0u8; 48]; 5];
    let extended = log.replay(ALG_SHA384, &mut rtmrs, rtmr::extend);
    assert!(extended <= count);
    let mut pcrs = [[0u8; 32]; 24];
    let extended = log.replay(ALG_SHA256, &mut pcrs, |old, new| tdx_attest::sha256(&[old, new]));
    assert!(extended <= count);
}

/// A log written by `write_spec_id_header` and `write_event2` reads back entry for entry.
fn round_trip(data: &[u8]) {
    let mut input = Input::new(data);
    let mut algorithms = Vec::new();
    for _ in 0..1 + input.u8() % 5 {
        algorithms.push((input.u16(), 1 + u16::from(input.u8() % 64)));
    }
    let mut log = vec![0u8; 8192];
    let Some(mut at) = event_log::write_spec_id_header(&mut log, &algorithms) else { return };
    let mut written = Vec::new();
    while !input.is_empty() && written.len() < 16 {
        let (index, event_type) = (input.u32(), input.u32());
        let (alg, size) = algorithms[usize::from(input.u8()) % algorithms.len()];
        // The parser looks sizes up by algorithm; the header's first entry for it wins.
        let size = algorithms.iter().find(|(a, _)| *a == alg).map_or(size, |(_, s)| *s);
        let digest = input.bytes(usize::from(size)).to_vec();
        if digest.len() != usize::from(size) {
            break;
        }
        let len = usize::from(input.u8());
        let event = input.bytes(len).to_vec();
        // An index of u32::MAX reads as unused log space, as the parser's docs say.
        if index == u32::MAX {
            break;
        }
        let Some(n) =
            event_log::write_event2(&mut log[at..], index, event_type, alg, &digest, &event)
        else {
            break;
        };
        at += n;
        written.push((index, event_type, alg, digest, event));
    }
    let parsed = EventLog::parse(&log[..at]).expect("a written header parses");
    assert_eq!(parsed.spec_id().algorithms(), &algorithms[..]);
    let events: Vec<_> = parsed.events().collect();
    assert_eq!(events.len(), written.len());
    for (event, (index, event_type, alg, digest, data)) in events.iter().zip(&written) {
        assert_eq!((event.index, event.event_type), (*index, *event_type));
        assert_eq!(event.digest(*alg), Some(&digest[..]));
        assert_eq!(event.data, &data[..]);
    }
}

/// The TDREPORT: the fuzzer's bytes as a report (first byte even), or as the serial log the
/// harness extracts a printed report, its events and its nonce from.
pub fn tdreport(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        let mut bytes = [0u8; TDREPORT_SIZE];
        bytes[..rest.len().min(TDREPORT_SIZE)]
            .copy_from_slice(&rest[..rest.len().min(TDREPORT_SIZE)]);
        check_report(&bytes);
        return;
    }
    let serial = String::from_utf8_lossy(rest);
    let Ok(printed) = attest::extract(&serial) else { return };
    if let Some(bytes) = printed.report {
        check_report(&bytes);
    }
    let extensions: Vec<_> = printed
        .events
        .iter()
        .map(|(index, data)| rtmr::Extension {
            index: *index,
            value: tdx_attest::sha384(&[data.as_bytes()]),
        })
        .collect();
    let replayed = rtmr::replay(&extensions);
    if extensions.iter().all(|e| e.index >= rtmr::RTMR_COUNT) {
        assert_eq!(replayed, [[0u8; 48]; rtmr::RTMR_COUNT]);
    }
}

/// Every field is the bytes at its offset, and TDINFO decodes and encodes to itself.
fn check_report(bytes: &[u8; TDREPORT_SIZE]) {
    let report = TdReport::new(bytes);
    let ty = report.report_type();
    assert_eq!([ty.tee_type, ty.subtype, ty.version], bytes[..3]);
    assert_eq!(report.cpusvn()[..], bytes[offset::CPUSVN..offset::CPUSVN + 16]);
    assert_eq!(report.report_data()[..], bytes[offset::REPORT_DATA..offset::REPORT_DATA + 64]);
    assert_eq!(report.mac()[..], bytes[offset::MAC..offset::MAC + 32]);
    assert_eq!(report.td_info_bytes()[..], bytes[offset::TD_INFO..]);
    let info = report.td_info();
    assert_eq!(TdInfo::from_bytes(&info.to_bytes()), info);
    assert_eq!(info.rtmr[3][..], bytes[offset::TD_INFO + offset::TD_INFO_RTMR0 + 144..][..48]);
    let _ = report.tee_info_hash_matches();
}

/// GetQuote's answer, as the host writes it into the shared buffer: the first byte picks the
/// buffer's length (in 8-byte steps, so shorter and longer than the bytes given), the rest is
/// the buffer; then the same bytes as a sequence of headers, one per poll.
pub fn get_quote(data: &[u8]) {
    let Some((&size, rest)) = data.split_first() else { return };
    let buffer_len = usize::from(size) * 8 + HEADER_LEN;
    let mut buffer = vec![0u8; buffer_len];
    let n = rest.len().min(buffer_len);
    buffer[..n].copy_from_slice(&rest[..n]);
    let whole = quote::check(&buffer);
    let header: [u8; HEADER_LEN] = buffer[..HEADER_LEN].try_into().unwrap();
    assert_eq!(whole, quote::check_header(&header, buffer_len), "the buffer and its header agree");
    match whole {
        // A quote always fits the buffer after the header, and is never empty.
        Ok(Poll::Done { len }) => assert!(len > 0 && HEADER_LEN + len <= buffer_len),
        Ok(Poll::InFlight) => assert_eq!(quote::status(&buffer), Some(quote::STATUS_IN_FLIGHT)),
        Err(QuoteError::TooLong { out_len, room }) => {
            assert!(out_len as usize > room && room == buffer_len - HEADER_LEN)
        }
        Err(_) => {}
    }
    // Truncated buffers are judged without a panic.
    let _ = quote::check(&rest[..rest.len().min(HEADER_LEN + 7)]);
    // A poll over successive headers stops at the first answer, or after the bound.
    let headers: Vec<[u8; HEADER_LEN]> = rest
        .chunks(HEADER_LEN)
        .map(|c| {
            let mut h = [0u8; HEADER_LEN];
            h[..c.len()].copy_from_slice(c);
            h
        })
        .collect();
    let bound = headers.len().min(30) as u32;
    let mut looks = 0;
    let result = quote::poll(bound, buffer_len, |i| {
        looks += 1;
        headers[i as usize]
    });
    match result {
        Ok(len) => assert!(len > 0 && HEADER_LEN + len <= buffer_len),
        Err(QuoteError::StillInFlight { polls }) => assert_eq!((polls, looks), (bound, bound)),
        Err(_) => assert!(looks <= bound),
    }
}
