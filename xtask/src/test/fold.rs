//! Folded boots: runs that end the kernel within its first lines share one boot.
//!
//! A boot costs the firmware's ~2.5 s under TCG before the kernel runs; a fatal run's kernel
//! then stops within a dozen lines. Runs that expect the fatal stop and boot the same image on
//! the same machine are booted once, with their modes in one fw_cfg mode file separated by `;`.
//! Between them the kernel restarts itself as the loader started it (kernel/src/fold.rs) and
//! prints [`SEGMENT_END`] with the value it was about to write to the exit device. Each run is
//! judged on its own segment of the serial output exactly as when booted alone, with the exit
//! status QEMU would have given for that value; the last segment ends the machine for real.
//! Every such run still boots alone with `--run ID`.

use super::runs::NO_DEBUG_EXIT_RUNS;
use super::spec::{Expect, RunSpec};
use crate::build::LoaderKind;

/// The start of the kernel's line that ends a segment (kernel/src/fold.rs `SEGMENT_END`):
/// `{SEGMENT_END}{n} of {count}: exit {value:#x}; restarting the kernel for the next`.
pub const SEGMENT_END: &str = "tdx-unikernel: fold: end of segment ";

/// What the end line says when the kernel restarted for the next segment.
const RESTARTING: &str = "; restarting the kernel for the next";

/// Whether `spec` may share a boot: it expects the fatal stop of a kernel that runs (not a
/// loader refusal), and nothing of its boot is its own (firmware, TPM, NMIs over QMP, a
/// machine without the exit device).
fn foldable(spec: &RunSpec) -> bool {
    matches!(spec.expect, Expect::Fatal { .. })
        && spec.loader != LoaderKind::OwnOldApiKernel
        && !spec.variant.td_image
        && spec.firmware.is_none()
        && spec.mode_flag.as_deref().is_some_and(|flag| !flag.contains("nmi-window="))
        && !crate::tpm::wanted(&spec.id)
        && !NO_DEBUG_EXIT_RUNS.contains(&spec.id.as_str())
}

/// Whether `spec` may end a folded boot: it expects the machine to reset (a triple fault) or
/// the kernel to hang, which only the last segment can show, on a machine with nothing of its
/// own.
fn may_end_a_fold(spec: &RunSpec) -> bool {
    matches!(spec.expect, Expect::Crash { .. } | Expect::Timeout { .. })
        && spec.loader == LoaderKind::Own
        && !spec.variant.td_image
        && spec.firmware.is_none()
}

/// The boots for `specs`: indices of the runs each boot makes. Foldable runs of the same image
/// (kernel variant and loader) and machine share one boot, in list order, and one run that
/// expects a reset or a hang of that image and machine ends it.
pub fn boots(specs: &[RunSpec]) -> Vec<Vec<usize>> {
    let same_boot = |a: &RunSpec, b: &RunSpec| {
        a.variant == b.variant && a.loader == b.loader && a.machine == b.machine
    };
    let mut boots: Vec<Vec<usize>> = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        let shared = foldable(spec)
            .then(|| {
                boots.iter_mut().find(|boot| {
                    let first = &specs[boot[0]];
                    foldable(first) && same_boot(first, spec)
                })
            })
            .flatten();
        match shared {
            Some(boot) => boot.push(index),
            None => boots.push(vec![index]),
        }
    }
    // The resets and hangs: each ends the first fold of its image and machine that has no end
    // yet, wherever the two stand in the list.
    let mut ended = vec![false; boots.len()];
    let mut joined = vec![false; boots.len()];
    for single in 0..boots.len() {
        let spec = &specs[boots[single][0]];
        if boots[single].len() != 1 || !may_end_a_fold(spec) {
            continue;
        }
        let fold = (0..boots.len()).find(|&f| {
            let first = &specs[boots[f][0]];
            !ended[f] && boots[f].len() > 1 && foldable(first) && same_boot(first, spec)
        });
        if let Some(fold) = fold {
            let run = boots[single][0];
            boots[fold].push(run);
            ended[fold] = true;
            joined[single] = true;
        }
    }
    boots.into_iter().zip(joined).filter(|(_, joined)| !joined).map(|(boot, _)| boot).collect()
}

/// The name of a folded boot (its log file, its recorded duration): its first run's id.
pub fn boot_id(specs: &[&RunSpec]) -> String {
    format!("fold:{}", specs[0].id)
}

/// The mode file of a folded boot: each run's mode, separated by `;`.
pub fn mode_file(specs: &[&RunSpec]) -> String {
    specs
        .iter()
        .map(|spec| spec.mode_flag.as_deref().unwrap_or("native"))
        .collect::<Vec<_>>()
        .join(";")
}

/// One run's part of a folded boot's serial output.
#[derive(Debug, PartialEq, Eq)]
pub enum Segment {
    /// The kernel ended the segment and restarted: its output (up to and with the end line) and
    /// the exit status QEMU would have given for the value on the end line.
    Restarted { output: String, status: i32 },
    /// The segment the machine ended in: its output; QEMU's own ending applies.
    Last { output: String },
    /// Never reached: the machine ended in an earlier segment.
    NotReached,
}

/// Splits a folded boot's output into `count` segments.
pub fn split(output: &str, count: usize) -> Vec<Segment> {
    let mut segments = Vec::with_capacity(count);
    let (mut start, mut offset) = (0, 0);
    for line in output.split_inclusive('\n') {
        offset += line.len();
        if segments.len() + 1 >= count {
            // The last segment takes the rest.
            break;
        }
        if let Some(status) = restart_status(line) {
            segments.push(Segment::Restarted { output: output[start..offset].to_owned(), status });
            start = offset;
        }
    }
    segments.push(Segment::Last { output: output[start..].to_owned() });
    segments.resize_with(count, || Segment::NotReached);
    segments
}

/// The exit status of a segment the kernel ended with `line` and restarted after, as QEMU's
/// isa-debug-exit gives it for the value there (`(value << 1) | 1`). `None` for any other line,
/// also for an end line that says the kernel could not restart (the machine ends there).
fn restart_status(line: &str) -> Option<i32> {
    let at = line.find(SEGMENT_END)?;
    if !line.contains(RESTARTING) {
        return None;
    }
    let hex =
        line[at..].split_once(": exit 0x")?.1.split(|c: char| !c.is_ascii_hexdigit()).next()?;
    Some((i32::from_str_radix(hex, 16).ok()? << 1) | 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test::runs::default_runs;
    use std::time::Duration;

    const END: &str = "tdx-unikernel: fold: end of segment";

    #[test]
    fn each_segment_gets_its_output_and_the_status_of_its_end_line() {
        let output = format!(
            "firmware\ntdx: TD detected\nFATAL a\n\n{END} 1 of 3: exit 0x11; restarting the kernel \
             for the next\ntdx: TD detected\nSUMMARY passed=1 failed=0 skipped=0\n{END} 2 of 3: \
             exit 0x10; restarting the kernel for the next\ntdx: not a TD\nPANIC b\n"
        );
        let segments = split(&output, 3);
        let Segment::Restarted { output: first, status: 35 } = &segments[0] else {
            panic!("{segments:?}")
        };
        assert!(
            first.starts_with("firmware\n")
                && first.contains("FATAL a")
                && first.ends_with("next\n")
        );
        let Segment::Restarted { output: second, status: 33 } = &segments[1] else {
            panic!("{segments:?}")
        };
        assert!(second.starts_with("tdx: TD detected\nSUMMARY") && !second.contains("FATAL"));
        assert_eq!(segments[2], Segment::Last { output: "tdx: not a TD\nPANIC b\n".into() });
    }

    #[test]
    fn a_refused_restart_ends_the_boot_and_later_segments_are_not_reached() {
        let output = format!(
            "tdx: TD detected\nFATAL a\n{END} 1 of 3: exit 0x11; cannot restart: the entry \
             record was not taken: 5-level paging\n"
        );
        let segments = split(&output, 3);
        assert_eq!(segments[0], Segment::Last { output: output.clone() });
        assert_eq!(segments[1..], [Segment::NotReached, Segment::NotReached]);
        // A boot that ended before any end line: the first segment holds it all.
        assert_eq!(
            split("firmware\n", 2),
            [Segment::Last { output: "firmware\n".into() }, Segment::NotReached]
        );
        // An end line in the last segment is not a restart the harness expected.
        let extra = format!("{END} 1 of 1: exit 0x11; restarting the kernel for the next\nmore\n");
        assert_eq!(split(&extra, 1), [Segment::Last { output: extra.clone() }]);
    }

    #[test]
    fn the_fatal_runs_share_boots_by_image_and_machine_and_the_reset_ends_one() {
        let specs = default_runs(Duration::from_secs(1), None, None);
        let boots = boots(&specs);
        let ids =
            |boot: &Vec<usize>| boot.iter().map(|&i| specs[i].id.as_str()).collect::<Vec<_>>();
        let folded: Vec<Vec<&str>> = boots.iter().filter(|b| b.len() > 1).map(ids).collect();
        assert_eq!(folded.len(), 2, "{folded:?}");
        // The default image on the td machine: every fatal scenario, the attributes' fatal
        // runs, the two crashes of the native kernel, and the triple fault last.
        let first = &folded[0];
        assert!(FATAL_SCENARIO_IDS.iter().all(|id| first.contains(id)), "{first:?}");
        assert!(
            first.contains(&"attributes:no-sept-ve-disable") && first.contains(&"harness:panic")
        );
        assert_eq!(first.last(), Some(&"harness:triple-fault"));
        // The broken-ve-ordering kernel: its five runs, and the hang.
        assert_eq!(folded[1].len(), 6);
        // The hang ends the other.
        assert_eq!(folded[1].last(), Some(&"harness:hang"));
        // Never folded: a pass, a run with its own QMP NMIs, the loader's refusal.
        for alone in ["native", "td-machine:native", "harness:old-bootloader-api"] {
            assert!(boots.iter().any(|b| ids(b) == [alone]), "{alone} must boot alone");
        }
        // Every run is in exactly one boot.
        let mut all: Vec<usize> = boots.concat();
        all.sort();
        assert_eq!(all, (0..specs.len()).collect::<Vec<_>>());
    }

    const FATAL_SCENARIO_IDS: [&str; 3] =
        ["fatal:io-in-retry", "fatal:touch-pending", "fatal:private-access-shared"];

    #[test]
    fn the_mode_file_joins_the_modes_in_boot_order() {
        let specs = default_runs(Duration::from_secs(1), None, None);
        let boot = boots(&specs).into_iter().find(|b| b.len() > 1).unwrap();
        let runs: Vec<&RunSpec> = boot.iter().map(|&i| &specs[i]).collect();
        let file = mode_file(&runs);
        assert_eq!(file.split(';').count(), runs.len());
        assert!(file.starts_with("softtdx attributes=0x0;"), "{file}");
        assert!(file.ends_with(";crash triple-fault"), "{file}");
    }
}
