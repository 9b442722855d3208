//! The audit runs of `cargo xtask test` (`"mode": "audit"`): each is a [`RunSpec`] whose
//! `mode_flag` names the audit, judged here instead of from a serial self-test.

use super::{audit, Request, Unavailable};
use crate::build::LoaderKind;
use crate::report::{Check, CheckResult};
use crate::test::spec::{Expect, RunReport, RunSpec, Verdict};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The audit runs (three boots): our loader's boot path together with the softtdx run, the
/// upstream loader's boot path (expected to fail on its EFER write), and the softtdx run of a
/// kernel with a port access that bypasses the #VE path (expected to fail naming it).
pub fn runs(timeout: Duration) -> Vec<RunSpec> {
    let spec = |id: &str, loader, softtdx: bool, expect: Expect, bypass: bool| RunSpec {
        id: id.into(),
        mode: "audit",
        mode_flag: softtdx.then(|| "softtdx".into()),
        variant: crate::build::KernelVariant { audit_bypass: bypass, ..Default::default() },
        loader,
        machine: crate::machine::Machine::Legacy,
        expect,
        timeout,
        firmware: None,
    };
    vec![
        spec("audit:own", LoaderKind::OwnLa57, true, Expect::Pass, false),
        spec(
            "audit:upstream",
            LoaderKind::Upstream,
            false,
            Expect::Fail {
                check: "WRMSR IA32_EFER (0xc0000080) in bootloader_x86_64_common::enable_nxe_bit"
                    .into(),
            },
            false,
        ),
        spec(
            "audit:softtdx-bypass",
            LoaderKind::Own,
            true,
            Expect::Fail { check: "port I/O in kernel::selftest::audit_bypass".into() },
            true,
        ),
    ]
}

/// Runs one audit and judges it against its expectation.
pub fn execute(spec: &RunSpec, firmware: &ovmf::Firmware, log: PathBuf) -> Result<RunReport> {
    let request = Request {
        loader: spec.loader,
        softtdx: spec.mode_flag.is_some(),
        bypass: spec.variant.audit_bypass,
    };
    let result = audit(request, firmware, spec.timeout);
    if let Some(reason) = result.as_ref().err().and_then(skip_reason) {
        std::fs::write(&log, format!("skipped: {reason}\n"))
            .with_context(|| format!("cannot write {}", log.display()))?;
        return Ok(RunReport::skipped(spec, reason, &log));
    }
    let (verdict, reason, text, wall, log_bytes) = match result {
        Ok(audit) => (
            if audit.passed { Verdict::Pass } else { Verdict::Fail },
            audit.verdict.clone(),
            audit.report,
            audit.wall,
            audit.log_bytes,
        ),
        // An audit that cannot run (no plugin, QEMU died) is a failure of the run itself.
        Err(error) => {
            (Verdict::Crash, format!("{error:#}"), format!("error: {error:#}\n"), Duration::ZERO, 0)
        }
    };
    std::fs::write(&log, &text).with_context(|| format!("cannot write {}", log.display()))?;
    let judged = match &spec.expect {
        Expect::Pass => verdict == Verdict::Pass,
        Expect::Fail { check } => verdict == Verdict::Fail && reason.contains(check.as_str()),
        _ => false,
    };
    let name = format!("audit.{}", spec.id.trim_start_matches("audit:"));
    let tests = vec![Check {
        name,
        result: if verdict == Verdict::Pass { CheckResult::Pass } else { CheckResult::Fail },
        detail: format!("plugin log {log_bytes} bytes"),
    }];
    Ok(RunReport {
        id: spec.id.clone(),
        mode: "audit".into(),
        loader: spec.loader.name().into(),
        machine: spec.machine,
        expect: spec.expect.word().into(),
        verdict,
        judged: if judged { "ok".into() } else { "wrong".into() },
        reason,
        qemu_status: None,
        wall_ms: wall.as_millis(),
        tests,
        counters: BTreeMap::new(),
        log: log.display().to_string(),
    })
}

/// The reason to skip an audit that failed with `error`: only [`Unavailable`] (no plugin API
/// fits this QEMU), so that the run is neither passed nor failed; any other error fails the run.
fn skip_reason(error: &anyhow::Error) -> Option<String> {
    let Unavailable(why) = error.downcast_ref()?;
    Some(format!("td-audit needs a QEMU plugin API it can build for: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::plugin_api;

    #[test]
    fn only_a_qemu_without_a_fitting_plugin_api_skips() {
        let old = plugin_api::choose((5, 2, 0)).map_err(Unavailable).unwrap_err();
        let reason = skip_reason(&anyhow::Error::from(old).context("audit")).unwrap();
        assert!(reason.contains("QEMU 5.2.0 predates the versioned TCG plugin API"), "{reason}");
        // QEMU dying, a refused plugin for a release in the table: failures, never skips.
        assert_eq!(skip_reason(&anyhow::anyhow!("QEMU did not finish within 120 s")), None);
        let wrong_table = anyhow::anyhow!(
            "plugin requires API version 4, but this QEMU supports only up to version 1; plugin_api::RELEASES is wrong for this QEMU"
        );
        assert_eq!(skip_reason(&wrong_table), None);
        let skip = RunReport::skipped(
            &runs(Duration::from_secs(1))[0],
            reason,
            std::path::Path::new("x.log"),
        );
        assert_eq!((skip.verdict, skip.judged.as_str()), (Verdict::Skip, "skip"));
        assert!(skip.tests.is_empty(), "a skipped audit reports no check, so none passes");
    }
}
