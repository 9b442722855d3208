//! What a run is (its spec, what it expects, the options) and what it gives (its report).

use crate::build::{KernelVariant, LoaderKind};
use crate::machine::Machine;
use crate::report::Check;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    Pass,
    /// The run fails, and the named check is among the failed ones.
    Fail {
        check: String,
    },
    /// The run fails, and every one of the named checks is among the failed ones.
    FailEach {
        checks: Vec<String>,
    },
    /// The kernel stops through its fatal path; one FATAL line contains every one of `reason`.
    /// In a TD or under softtdx the host must also have received ReportFatalError, unless the
    /// model itself stopped the machine (`host_report: false`).
    Fatal {
        reason: Vec<String>,
        host_report: bool,
    },
    /// The kernel printed `marker` and then never exited.
    Timeout {
        marker: String,
    },
    /// QEMU reports a guest reset or triple fault (exit 0 under -no-reboot) after the kernel
    /// printed `marker`.
    Crash {
        marker: String,
    },
    /// The firmware refuses to load our unsigned loader because it enforces Secure Boot.
    Refused,
    /// The kernel passes its own self-test, but the harness must refuse it as a pass, with an
    /// error containing `because` (e.g. a check the manifest demands is missing).
    Rejected {
        because: String,
    },
}

impl Expect {
    pub fn word(&self) -> &'static str {
        match self {
            Expect::Pass => "pass",
            Expect::Fail { .. } | Expect::FailEach { .. } => "fail",
            Expect::Fatal { .. } => "fatal",
            Expect::Timeout { .. } => "timeout",
            Expect::Crash { .. } => "crash",
            Expect::Refused => "refused",
            Expect::Rejected { .. } => "reject",
        }
    }
}

#[derive(Clone, Debug)]
pub struct RunSpec {
    pub id: String,
    /// "native" or "softtdx": what the kernel runs as.
    pub mode: &'static str,
    /// The QEMU machine: q35 with its defaults, or the machine a TD gets.
    pub machine: Machine,
    /// The fw_cfg mode flag, when not the default.
    pub mode_flag: Option<String>,
    pub variant: KernelVariant,
    pub loader: LoaderKind,
    pub expect: Expect,
    pub timeout: Duration,
    /// Firmware for this run instead of the one the run was started with (its VARS template,
    /// if any, is found and copied as for `--firmware`). The run is skipped when it is absent.
    pub firmware: Option<PathBuf>,
}

pub struct Options {
    pub timeout: Duration,
    pub json: Option<PathBuf>,
    pub qemu_args: Vec<String>,
    pub fail_check: Option<String>,
    pub kvm: bool,
    pub firmware: ovmf::Firmware,
    pub runs: Vec<String>,
    pub skip_host_tests: bool,
    /// Every run through this loader; `None`: the default, with the pass runs under both.
    pub loader: Option<LoaderKind>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Timeout,
    Crash,
    /// The firmware refused our loader (Secure Boot); the kernel never ran.
    Refused,
    /// The run could not be made on this host (the reason says why); neither passed nor failed.
    Skip,
}

#[derive(Serialize)]
pub struct RunReport {
    pub id: String,
    pub mode: String,
    pub machine: Machine,
    pub loader: String,
    pub expect: String,
    pub verdict: Verdict,
    pub judged: String,
    pub reason: String,
    pub qemu_status: Option<i32>,
    pub wall_ms: u128,
    pub tests: Vec<Check>,
    pub counters: BTreeMap<String, u64>,
    pub log: String,
}

impl RunReport {
    /// The report of a run that was not made, and why (neither passed nor failed).
    pub fn skipped(spec: &RunSpec, reason: String, log: &Path) -> RunReport {
        RunReport {
            id: spec.id.clone(),
            mode: spec.mode.into(),
            machine: spec.machine,
            loader: spec.loader.name().into(),
            expect: spec.expect.word().into(),
            verdict: Verdict::Skip,
            judged: "skip".into(),
            reason,
            qemu_status: None,
            wall_ms: 0,
            tests: Vec::new(),
            counters: BTreeMap::new(),
            log: log.display().to_string(),
        }
    }

    /// The report of a run of a folded boot that ended before the run's segment: a failure.
    pub fn not_reached(spec: &RunSpec, note: String, log: &Path) -> RunReport {
        RunReport {
            verdict: Verdict::Crash,
            judged: "wrong".into(),
            reason: format!("not reached: the machine ended in an earlier segment ({note})"),
            ..RunReport::skipped(spec, String::new(), log)
        }
    }
}

#[derive(Serialize)]
pub struct Report {
    pub passed: u32,
    pub failed: u32,
    pub runs: Vec<RunReport>,
}
