//! Self-test checks of attestation: the module's operand checks, the kernel's RTMR events, the
//! TDREPORT (REPORTTYPE, REPORTDATA echo, TEE_INFO_HASH) and the replay of every log the kernel
//! can see. Outside a TD each reports `skip`.
//!
//! The probes run first, so that the replay afterwards also shows that a refused
//! TDG.MR.RTMR.EXTEND changed no RTMR.
//!
//! Then GetQuote with the report: `attest.quote` asks the host as it is (a TD without a quote
//! service, and softtdx by default, answer QGS_UNAVAILABLE: skip with that reason), and under
//! softtdx `fault.getquote.*` has the model's VMM refuse bad operands and answer ERROR, a stuck
//! IN_FLIGHT, a quote too long for the buffer and a simulated quote, one request after another,
//! each of which the kernel reports and survives.

use super::{Context, Outcome, Tally};
use crate::attest::mr::{self, ExtendData, MrError, ReportBuffer, ReportData};
use crate::attest::quote::{self, GetQuoteError, MAX_QUOTE_LEN};
use crate::attest::{ccel, Hex, KERNEL_RTMR};
use crate::{fail, pass, println, skip};
use tdx_attest::quote::{QuoteError, SIMULATED_QUOTE_MARKER};
use tdx_attest::report::{TdReport, REPORT_SUBTYPE_TD, REPORT_TYPE_TDX, TDREPORT_SIZE};

const NOT_A_TD: &str = "not a TD: CPUID leaf 0x21 has no IntelTDX vendor";

/// What softtdx writes as MAC (kernel/src/softtdx/attest.rs): a report carrying it was made by
/// the model, not by a CPU.
const SIMULATED_MAC: &[u8; 32] = b"softtdx SIMULATED MAC - NOT REAL";

const CHECKS: [&str; 11] = [
    "attest.report_misaligned",
    "attest.reportdata_misaligned",
    "attest.report_subtype",
    "attest.rtmr_misaligned",
    "attest.rtmr_bad_index",
    "attest.rtmr_extend",
    "attest.report",
    "attest.tee_info_hash",
    "attest.rtmr_replay",
    "attest.ccel_replay",
    "attest.quote",
];

#[inline(never)]
pub fn run(ctx: &Context, tally: &mut Tally) {
    if !crate::tdx::is_td() {
        for name in CHECKS {
            tally.record(name, skip!("{NOT_A_TD}"));
        }
        return;
    }
    let mut buffer = ReportBuffer([0; 2 * TDREPORT_SIZE]);
    let data = ReportData([0; 64]);
    let base = mr::gpa_of(buffer.0.as_ptr() as u64).unwrap_or(u64::MAX);
    let data_gpa = mr::gpa_of(data.0.as_ptr() as u64).unwrap_or(u64::MAX);
    tally.run("attest.report_misaligned", || {
        expect_refusal(mr::report_raw(base + 64, data_gpa, 0), mr::OPERAND_ID_RCX)
    });
    tally.run("attest.reportdata_misaligned", || {
        expect_refusal(mr::report_raw(base, data_gpa + 8, 0), mr::OPERAND_ID_RDX)
    });
    tally.run("attest.report_subtype", || {
        expect_refusal(mr::report_raw(base, data_gpa, 1), mr::OPERAND_ID_R8)
    });
    let value = ExtendData([0x5A; 64]);
    let value_gpa = mr::gpa_of(value.0.as_ptr() as u64).unwrap_or(u64::MAX);
    tally.run("attest.rtmr_misaligned", || {
        expect_refusal(mr::rtmr_extend_raw(value_gpa + 8, KERNEL_RTMR as u64), mr::OPERAND_ID_RCX)
    });
    tally.run("attest.rtmr_bad_index", || {
        expect_refusal(mr::rtmr_extend_raw(value_gpa, 4), mr::OPERAND_ID_RDX)
    });

    let summary = tally_summary(tally);
    tally.run("attest.rtmr_extend", || {
        let identity = crate::fixed_format!(
            96,
            "tdx-unikernel {} mode={}",
            env!("CARGO_PKG_VERSION"),
            super::mode_name()
        );
        if let Err(e) = crate::attest::measure("kernel.identity", identity.as_str().as_bytes()) {
            return fail!("{e}");
        }
        if let Err(e) = crate::attest::measure("kernel.selftest", summary.as_str().as_bytes()) {
            return fail!("{e}");
        }
        pass!("2 events into RTMR[{KERNEL_RTMR}] (kernel.identity, kernel.selftest)")
    });

    // REPORTDATA binds the nonce and the results so far.
    let nonce = crate::attest::read_nonce();
    let summary = tally_summary(tally);
    let report_data =
        ReportData(crate::attest::report_data(&nonce.unwrap_or([0; 64]), summary.as_str()));
    match nonce {
        Some(n) => println!("# ATTEST REPORTDATA nonce={} summary={}", Hex(&n), summary.as_str()),
        None => println!("# ATTEST REPORTDATA nonce=none summary={}", summary.as_str()),
    }
    let report = mr::report(&mut buffer, &report_data);
    if let Ok(bytes) = &report {
        crate::attest::print_report(bytes);
    }
    tally.run("attest.report", || {
        let bytes = match &report {
            Ok(bytes) => bytes,
            Err(e) => return fail!("TDG.MR.REPORT failed: {e}"),
        };
        let r = TdReport::new(bytes);
        let ty = r.report_type();
        if ty.tee_type != REPORT_TYPE_TDX || ty.subtype != REPORT_SUBTYPE_TD {
            return fail!("REPORTTYPE {:#x}/{} (want 0x81/0)", ty.tee_type, ty.subtype);
        }
        if r.report_data() != &report_data.0 {
            return fail!("REPORTDATA not echoed");
        }
        let mac = if r.mac() == SIMULATED_MAC { "simulated by softtdx" } else { "from the CPU" };
        pass!(
            "REPORTTYPE 0x81 subtype 0 version {}, REPORTDATA echoed, nonce {}, MAC {mac}",
            ty.version,
            if nonce.is_some() { "from the host" } else { "absent (zeros)" }
        )
    });
    tally.run("attest.tee_info_hash", || {
        let Ok(bytes) = &report else { return fail!("no report") };
        let r = TdReport::new(bytes);
        if !r.tee_info_hash_matches() {
            return fail!(
                "TEE_INFO_HASH {} is not SHA-384 of TDINFO",
                Hex(&r.tee_info_hash()[..8])
            );
        }
        pass!("TEE_INFO_HASH = SHA-384(TDINFO) = {}...", Hex(&r.tee_info_hash()[..8]))
    });
    tally.run("attest.rtmr_replay", || {
        let Ok(bytes) = &report else { return fail!("no report") };
        let reported = TdReport::new(bytes).td_info().rtmr;
        let (replayed, events) = crate::attest::replay_own_events();
        if reported[KERNEL_RTMR] != replayed[KERNEL_RTMR] {
            return fail!(
                "RTMR[3] {}... but the kernel's {events} events replay to {}...",
                Hex(&reported[KERNEL_RTMR][..8]),
                Hex(&replayed[KERNEL_RTMR][..8])
            );
        }
        pass!("RTMR[3] = replay of {events} kernel events: {}...", Hex(&replayed[KERNEL_RTMR][..8]))
    });
    tally.run("attest.ccel_replay", || ccel_replay(ctx, &report));
    get_quote(tally, &report);
}

/// Where a quote lands: 8 KiB, kept out of the stack.
static QUOTE: spin::Mutex<[u8; MAX_QUOTE_LEN]> = spin::Mutex::new([0; MAX_QUOTE_LEN]);

fn get_quote(tally: &mut Tally, report: &Result<[u8; TDREPORT_SIZE], MrError>) {
    let Ok(report) = report else {
        tally.record("attest.quote", fail!("no TDREPORT to quote"));
        return;
    };
    let mut out = QUOTE.lock();
    tally.run("attest.quote", || match quote::get_quote(report, &mut out, quote::HOST_BOUND) {
        Ok(len) => {
            quote::print_quote(&out[..len]);
            let kind = if out[..len].starts_with(SIMULATED_QUOTE_MARKER) {
                "simulated by softtdx"
            } else {
                "from the host's quote service"
            };
            pass!("a quote of {len} bytes, {kind}, printed on serial")
        }
        Err(GetQuoteError::Answer(QuoteError::QgsUnavailable)) => skip!(
            "no quote service: the host answered QGS_UNAVAILABLE (QEMU without \
             quote-generation-socket), reported and survived"
        ),
        Err(e) => fail!("{e}"),
    });
    if softtdx_active() {
        getquote_faults(tally, report, &mut out);
    }
}

#[cfg(feature = "test-modes")]
fn getquote_faults(tally: &mut Tally, report: &[u8; TDREPORT_SIZE], out: &mut [u8; MAX_QUOTE_LEN]) {
    use crate::softtdx::quote::{arm, QuoteFault, TAKEN};
    use crate::tdx::vmcall::VmcallError;
    use core::sync::atomic::Ordering;
    use tdx_ve::abi::TdVmCallStatus;

    // Operands the VMM must refuse, on a page of the pool that is shared but not the buffer.
    tally.run("fault.getquote.operands", || {
        let bit = crate::mm::shared_bit().unwrap_or(0);
        let pages = match crate::mm::shared::allocate(1) {
            Ok(pages) => pages,
            Err(e) => return fail!("{e}"),
        };
        let private = crate::attest::mr::gpa_of(report.as_ptr() as u64).unwrap_or(0) & !0xFFF;
        let cases = [
            ("private GPA", private, 4096, TdVmCallStatus::InvalidOperand),
            ("size 0", pages.gpa | bit, 0, TdVmCallStatus::InvalidOperand),
            ("GPA not 4 KiB aligned", (pages.gpa + 8) | bit, 4096, TdVmCallStatus::AlignError),
            ("size not 4 KiB aligned", pages.gpa | bit, 100, TdVmCallStatus::AlignError),
            ("never converted", private | bit, 4096, TdVmCallStatus::InvalidOperand),
            ("header version 0", pages.gpa | bit, 4096, TdVmCallStatus::InvalidOperand),
        ];
        for (what, gpa, size, want) in cases {
            match crate::tdx::vmcall::get_quote(gpa, size) {
                Err(VmcallError::Status { status, .. }) if status == want => {}
                other => return fail!("{what}: {other:?}, want {want:?}"),
            }
        }
        pass!("refused: private GPA, size 0, never converted, version 0 (INVALID_OPERAND); unaligned GPA or size (ALIGN_ERROR)")
    });

    // The host's number of polls with a short wait: under TCG each PAUSE costs a return to
    // QEMU's main loop, and the host's wait took 21 s of a boot (attest/quote.rs).
    let bound = quote::PollBound { polls: quote::HOST_BOUND.polls, pauses_between: 16 };
    let ask = |fault, out: &mut [u8; MAX_QUOTE_LEN]| {
        arm(Some(fault));
        let taken = TAKEN.load(Ordering::Relaxed);
        let result = quote::get_quote(report, out, bound);
        arm(None);
        (result, TAKEN.load(Ordering::Relaxed) - taken)
    };
    tally.run("fault.getquote.error", || match ask(QuoteFault::Error, out) {
        (Err(e @ GetQuoteError::Answer(QuoteError::Error)), 1) => pass!("reported: {e}"),
        (other, taken) => fail!("{other:?} after {taken} requests"),
    });
    tally.run("fault.getquote.in_flight", || {
        let before = quote::buffer_gpa();
        match (ask(QuoteFault::InFlight, out), quote::buffer_gpa()) {
            ((Err(e @ GetQuoteError::Answer(QuoteError::StillInFlight { polls })), 1), None)
                if polls == bound.polls && before.is_some() =>
            {
                pass!("reported: {e}; the buffer at {:#x} is abandoned", before.unwrap_or(0))
            }
            ((other, taken), now) => {
                fail!("{other:?} after {taken} requests; buffer {before:x?} then {now:x?}")
            }
        }
    });
    tally.run("fault.getquote.too_long", || match ask(QuoteFault::TooLong, out) {
        (Err(e @ GetQuoteError::Answer(QuoteError::TooLong { .. })), 1) => pass!("reported: {e}"),
        (other, taken) => fail!("{other:?} after {taken} requests"),
    });
    tally.run("fault.getquote.success", || {
        let (result, taken) = ask(QuoteFault::Success, out);
        let len = match result {
            Ok(len) if taken == 1 => len,
            other => return fail!("{other:?} after {taken} requests"),
        };
        let quote = &out[..len];
        let marker = SIMULATED_QUOTE_MARKER.len();
        if !quote.starts_with(SIMULATED_QUOTE_MARKER) || quote.get(marker..) != Some(&report[..]) {
            return fail!("{len} bytes that are not the marker and this TDREPORT");
        }
        quote::print_quote(quote);
        pass!("a simulated quote of {len} bytes (marker, then this TDREPORT), printed on serial")
    });
}

#[cfg(not(feature = "test-modes"))]
fn getquote_faults(_: &mut Tally, _: &[u8; TDREPORT_SIZE], _: &mut [u8; MAX_QUOTE_LEN]) {}

fn ccel_replay(ctx: &Context, report: &Result<[u8; TDREPORT_SIZE], MrError>) -> Outcome {
    let rsdp = ctx.boot_info.rsdp_addr.into_option();
    let log = match ccel::log_area(rsdp) {
        Ok(log) => log,
        Err(missing) => {
            let why = match missing {
                ccel::Missing::NoRsdp => "the loader passed no RSDP",
                ccel::Missing::NoCcel => "no CCEL table in the XSDT",
                ccel::Missing::Unreadable(why) => why,
            };
            if softtdx_active() {
                return skip!(
                    "no firmware event log under softtdx: the firmware ran outside a TD ({why})"
                );
            }
            return fail!("a TD's firmware event log: {why}");
        }
    };
    let Ok(bytes) = report else { return fail!("no report") };
    let reported = TdReport::new(bytes).td_info().rtmr;
    match ccel::replay(log) {
        Err(e) => fail!("CCEL log of {} bytes: {e:?}", log.len()),
        Ok((replayed, extended)) => {
            for i in 0..3 {
                if replayed[i] != reported[i] {
                    return fail!(
                        "RTMR[{i}] {}... but the CCEL's {extended} entries replay to {}...",
                        Hex(&reported[i][..8]),
                        Hex(&replayed[i][..8])
                    );
                }
            }
            pass!("RTMR[0..2] = replay of {extended} CCEL entries")
        }
    }
}

fn expect_refusal(result: Result<(), MrError>, operand: u64) -> Outcome {
    match result {
        Err(e) if e.class() == mr::TDX_OPERAND_INVALID && e.operand() == operand => {
            pass!("refused: {e}")
        }
        Err(e) => fail!("refused with the wrong status: {e}"),
        Ok(()) => fail!("accepted"),
    }
}

fn tally_summary(tally: &Tally) -> crate::fmtbuf::FixedString<64> {
    let (passed, failed, skipped) = tally.counts();
    crate::fixed_format!(64, "passed={passed} failed={failed} skipped={skipped}")
}

fn softtdx_active() -> bool {
    #[cfg(feature = "test-modes")]
    return crate::softtdx::is_active();
    #[cfg(not(feature = "test-modes"))]
    return false;
}
