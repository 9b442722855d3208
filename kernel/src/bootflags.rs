//! Boot-time flags from QEMU's fw_cfg device, file `opt/tdx-unikernel/mode` (test image only,
//! cargo feature `test-modes`).
//!
//! The harness boots one image in several modes (native, softtdx, fatal-fault scenarios) by
//! passing `-fw_cfg name=opt/tdx-unikernel/mode,string=...`; a folded boot passes several modes
//! separated by `;`, one per segment ([`crate::fold`]). Without the file the mode is native.
//! The kernel a TD boots has no such module: the host controls fw_cfg.

const MODE_FILE: &[u8] = b"opt/tdx-unikernel/mode";
/// Room for the file: one mode, or the `;`-separated modes of a folded boot
/// (kernel/src/fold.rs), about 40 bytes each.
const MAX_MODE_LEN: usize = 2048;

/// A fault that the softtdx model injects and that must stop the kernel: each one is a run of
/// its own, judged by the harness as `"expect": "fatal"` (the runs share a folded boot,
/// [`crate::fold`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FatalScenario {
    IoInInvalidOperand,
    IoOutInvalidOperand,
    IoInRetry,
    IoOutRetry,
    UnknownExitReason,
    TdcallFailure,
    VeinfoGetFailure,
    /// Not a model fault: the kernel itself runs `rep insb` into an unmapped buffer, and the
    /// #VE handler must refuse it cleanly instead of faulting.
    StringIoUnmapped,
    /// Not a model fault: the kernel marks its IDT gate 20 not present, and the model must
    /// raise #NP at the first #VE as the CPU would.
    BrokenGate20,
    /// The model reports the first INS/OUTS #VE with the REP bit of the exit qualification
    /// flipped: the handler must find that the bytes at RIP disagree, and stop.
    MismatchedQualification,
    /// Not a model fault: the kernel reads memory TDVF (the model) left unaccepted before
    /// accepting it; the model must stop the run as the TDX module would (TD exit).
    TouchPending,
    /// The model's TDG.MEM.PAGE.ACCEPT returns a status the kernel's policy does not know; the
    /// frame allocator must stop with it.
    AcceptUnknownStatus,
    /// The model reports the first MMIO EPT-violation #VE with the shared bit cleared from the
    /// GPA: the handler must treat an EPT violation on a private GPA as fatal.
    MmioPrivateGpa,
    /// A hostile host: at the first virtio notify, the model's VMM moves the transmitq's used
    /// index 8 further, with one buffer in flight. The driver must refuse the value and stop.
    VirtioUsedIndex,
    /// A hostile host: after the first virtio notify, the model's VMM makes the used entry's
    /// length 64 KiB, larger than the buffer. The driver must refuse it and stop.
    VirtioUsedLength,
    /// Not a model fault: the kernel reads a page of its shared pool through the private
    /// physical-memory map; the model must end the TD as the module and the host would.
    PrivateAccessShared,
}

impl FatalScenario {
    pub const ALL: [FatalScenario; 16] = [
        Self::IoInInvalidOperand,
        Self::IoOutInvalidOperand,
        Self::IoInRetry,
        Self::IoOutRetry,
        Self::UnknownExitReason,
        Self::TdcallFailure,
        Self::VeinfoGetFailure,
        Self::StringIoUnmapped,
        Self::BrokenGate20,
        Self::MismatchedQualification,
        Self::TouchPending,
        Self::AcceptUnknownStatus,
        Self::MmioPrivateGpa,
        Self::VirtioUsedIndex,
        Self::VirtioUsedLength,
        Self::PrivateAccessShared,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::IoInInvalidOperand => "io-in-invalid-operand",
            Self::IoOutInvalidOperand => "io-out-invalid-operand",
            Self::IoInRetry => "io-in-retry",
            Self::IoOutRetry => "io-out-retry",
            Self::UnknownExitReason => "unknown-exit-reason",
            Self::TdcallFailure => "tdcall-failure",
            Self::VeinfoGetFailure => "veinfo-get-failure",
            Self::StringIoUnmapped => "string-io-unmapped",
            Self::BrokenGate20 => "broken-gate20",
            Self::MismatchedQualification => "mismatched-qualification",
            Self::TouchPending => "touch-pending",
            Self::AcceptUnknownStatus => "accept-unknown-status",
            Self::MmioPrivateGpa => "mmio-private-gpa",
            Self::VirtioUsedIndex => "virtio-used-index",
            Self::VirtioUsedLength => "virtio-used-length",
            Self::PrivateAccessShared => "private-access-shared",
        }
    }
}

/// What a kernel built with `broken-ve-ordering` executes in its #VE handler before
/// TDG.VP.VEINFO.GET (a #DF on hardware): chosen by `softtdx misorder=<name>`, so that one build
/// proves the ordering check for each kind of #VE the model raises, and the model's other
/// checks of the handler (a nested #VE, RF left set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misorder {
    /// A port write (the default).
    PortIo,
    /// WBINVD.
    Wbinvd,
    /// CPUID leaf 0xB subleaf 0, which the TDX module does not answer.
    Cpuid,
    /// Nothing before VEINFO.GET; after it, on the first #VE, CPUID of the hypervisor leaf
    /// 0x40000000, which must come back as a nested #VE (counted in `ve.cpuid`), not run
    /// natively. The handler then stops and says which it was.
    Nested,
    /// Nothing misordered: the handler emulates correctly but leaves RFLAGS.RF set when it
    /// advances RIP (`tdx::ve::advance` without its RF clear), which softtdx must catch.
    RfLeftSet,
}

impl Misorder {
    const ALL: [Misorder; 5] =
        [Self::PortIo, Self::Wbinvd, Self::Cpuid, Self::Nested, Self::RfLeftSet];

    pub fn name(self) -> &'static str {
        match self {
            Self::PortIo => "port-io",
            Self::Wbinvd => "wbinvd",
            Self::Cpuid => "cpuid",
            Self::Nested => "nested",
            Self::RfLeftSet => "rf-left-set",
        }
    }
}

static MISORDER: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

/// The misordered instruction the boot flags chose (see [`Misorder`]).
#[cfg_attr(not(feature = "broken-ve-ordering"), allow(dead_code))]
pub fn misorder() -> Misorder {
    let index = usize::from(MISORDER.load(core::sync::atomic::Ordering::Relaxed));
    Misorder::ALL[index.min(Misorder::ALL.len() - 1)]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// Read an unmapped address: the unexpected-exception path.
    PageFault,
    /// `panic!`: the panic handler.
    Panic,
    /// An empty IDT and an exception: a triple fault, which QEMU (-no-reboot) turns into exit 0.
    TripleFault,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Native,
    Softtdx(Option<FatalScenario>),
    /// Spin forever after boot: lets the harness prove that it reports a hang as a timeout.
    Hang,
    /// softtdx on, and the benchmarks (`cargo xtask bench`) instead of the self-test.
    Bench,
    /// softtdx on, the boot figures (`instructions.boot_to_frames_ready`, then the self-test to
    /// its verdict) and after it the `accept.*` figures: the bench boots it on the td machine
    /// at 2 GiB and 8 GiB to compare.
    BenchBoot,
    /// Crash on purpose, so that the harness can prove the crash paths report and fail.
    Crash(Crash),
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Softtdx(None) => "softtdx",
            Mode::Softtdx(Some(s)) => s.name(),
            Mode::Hang => "hang",
            Mode::Bench => "bench",
            Mode::BenchBoot => "bench boot",
            Mode::Crash(Crash::PageFault) => "crash page-fault",
            Mode::Crash(Crash::Panic) => "crash panic",
            Mode::Crash(Crash::TripleFault) => "crash triple-fault",
        }
    }

    fn parse(text: &[u8]) -> Option<Mode> {
        let text = core::str::from_utf8(text).ok()?.trim();
        match text {
            "native" => return Some(Mode::Native),
            "softtdx" => return Some(Mode::Softtdx(None)),
            "hang" => return Some(Mode::Hang),
            "bench" => return Some(Mode::Bench),
            "bench boot" => return Some(Mode::BenchBoot),
            "crash page-fault" => return Some(Mode::Crash(Crash::PageFault)),
            "crash panic" => return Some(Mode::Crash(Crash::Panic)),
            "crash triple-fault" => return Some(Mode::Crash(Crash::TripleFault)),
            _ => {}
        }
        if let Some(name) = text.strip_prefix("softtdx misorder=") {
            let index = Misorder::ALL.iter().position(|m| m.name() == name)?;
            MISORDER.store(index as u8, core::sync::atomic::Ordering::Relaxed);
            return Some(Mode::Softtdx(None));
        }
        let fault = text.strip_prefix("softtdx fault=")?;
        FatalScenario::ALL.into_iter().find(|s| s.name() == fault).map(|s| Mode::Softtdx(Some(s)))
    }
}

/// Where the softtdx model injects NMIs (`softtdx nmi=<point>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NmiPoint {
    /// At the instruction after every successful TDG.VP.VEINFO.GET of a #VE handler: the
    /// earliest point a TD's NMI can arrive inside the handler.
    AfterVeinfo,
}

#[derive(Clone, Copy)]
pub struct BootFlags {
    pub mode: Mode,
    /// The TD attributes softtdx reports (`softtdx ... attributes=0x...`), when not its own.
    pub td_attributes: Option<u64>,
    /// Where softtdx injects NMIs (`softtdx nmi=after-veinfo`), if anywhere.
    pub softtdx_nmi: Option<NmiPoint>,
    /// Before the self-test, wait (bounded) until this many NMIs have arrived, for a harness
    /// that injects them from outside (`... nmi-window=N`).
    pub nmi_window: Option<u32>,
    /// The raw flag text when it could not be parsed, for the report.
    pub unparsed: bool,
    /// Where the flags came from in fw_cfg, for [`reread`].
    item: Option<crate::fw_cfg::Item>,
}

/// Reads the boot flags. Runs before softtdx is enabled, so the accesses execute natively
/// (in a real TD they go through #VE like any other port access).
pub fn read() -> BootFlags {
    read_from(crate::fw_cfg::find(MODE_FILE))
}

/// Reads the boot flags again from the item [`read`] found (`flags.item`), without walking
/// fw_cfg's directory again: under softtdx this read goes through #VE, and a directory walk is
/// some two thousand of them (the self-test's `etc/e820` read walks it through #VE).
pub fn reread(flags: &BootFlags) -> BootFlags {
    read_from(flags.item)
}

fn read_from(item: Option<crate::fw_cfg::Item>) -> BootFlags {
    let mut text = [0u8; MAX_MODE_LEN];
    let none = BootFlags {
        mode: Mode::Native,
        td_attributes: None,
        softtdx_nmi: None,
        nmi_window: None,
        unparsed: false,
        item,
    };
    let unparsed = BootFlags { unparsed: true, ..none };
    let Some(item) = item else {
        return none;
    };
    let size = crate::fw_cfg::read_item(item, &mut text);
    let Ok(text) = core::str::from_utf8(&text[..size.min(MAX_MODE_LEN)]) else {
        return unparsed;
    };
    // A folded boot: this segment's mode.
    crate::fold::set_segments(text.split(';').count() as u32);
    let Some(text) = text.split(';').nth(crate::fold::segment() as usize) else {
        return unparsed;
    };
    // A mode may end with ` nmi-window=N` and a softtdx mode with ` nmi=<point>` and
    // ` attributes=0x...` (the TD attributes the model reports), in that order.
    let (text, td_attributes) = match text.trim().split_once(" attributes=") {
        Some((mode, hex)) => {
            let digits = hex.trim().strip_prefix("0x").unwrap_or(hex.trim());
            match u64::from_str_radix(digits, 16) {
                Ok(value) => (mode, Some(value)),
                Err(_) => return unparsed,
            }
        }
        None => (text, None),
    };
    let (text, softtdx_nmi) = match text.trim().split_once(" nmi=") {
        Some((mode, "after-veinfo")) => (mode, Some(NmiPoint::AfterVeinfo)),
        Some(_) => return unparsed,
        None => (text, None),
    };
    let (text, nmi_window) = match text.trim().split_once(" nmi-window=") {
        Some((mode, count)) => match count.trim().parse::<u32>() {
            Ok(count) => (mode, Some(count)),
            Err(_) => return unparsed,
        },
        None => (text, None),
    };
    let flags = |mode| BootFlags {
        mode,
        td_attributes,
        softtdx_nmi,
        nmi_window,
        unparsed: false,
        item: Some(item),
    };
    match Mode::parse(text.as_bytes()) {
        Some(mode @ Mode::Softtdx(_)) => flags(mode),
        Some(mode) if td_attributes.is_none() && softtdx_nmi.is_none() => flags(mode),
        _ => unparsed,
    }
}
