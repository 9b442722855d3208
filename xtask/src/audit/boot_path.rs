//! The boot-path judgement, from the decoded entries.

use super::*;

/// Which side of ExitBootServices an entry executed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sides {
    pub before: bool,
    pub after: bool,
}

pub struct Judgement {
    pub lines: Vec<String>,
    pub problems: Vec<String>,
    pub summary: String,
}

/// Judges the window from the loader's entry to the kernel's first LIDT.
pub fn judge(entries: &[Entry]) -> Result<Judgement> {
    let loader_entry = entries
        .iter()
        .find(|e| e.image == "loader" && e.kind == "entry")
        .map(|e| e.executions.first)
        .context("the loader's entry point never executed (was the image's loader recognised?)")?;
    let lidt = entries
        .iter()
        .filter(|e| e.image == "kernel" && e.decoded == Decoded::Lidt)
        .map(|e| e.executions.first)
        .min();
    // ExitBootServices: the loader's last call through EFI_BOOT_SERVICES+0xE8, or the first
    // entry into a function named `...::exit_boot_services` (marked by the audit), whichever
    // comes first. The earlier point is the conservative one: more counts as "after".
    let call = entries
        .iter()
        .filter(|e| e.image == "loader" && e.decoded == Decoded::ExitBootServicesCall)
        .map(|e| {
            (e.executions.last, "the loader's last call through EFI_BOOT_SERVICES+0xE8".to_string())
        })
        .max_by_key(|(seq, _)| *seq);
    let entered = entries
        .iter()
        .filter(|e| e.image == "loader" && e.kind == "mark")
        .map(|e| {
            let name = e.function.as_deref().unwrap_or("<no symbol>");
            (e.executions.first, format!("first entry into {name}"))
        })
        .min_by_key(|(seq, _)| *seq);
    let ebs = [call, entered].into_iter().flatten().min_by_key(|(seq, _)| *seq);
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    let mut checked = 0;
    lines.push(match &ebs {
        Some((seq, how)) => format!("ExitBootServices: {how} (event {seq})"),
        None => "ExitBootServices: not seen (no call through EFI_BOOT_SERVICES+0xE8, no exit_boot_services function entered); every entry counts as after it".into(),
    });
    let ebs = ebs.map(|(seq, _)| seq);
    lines.push(match lidt {
        Some(seq) => format!("window: loader entry (event {loader_entry}) to the kernel's first LIDT (event {seq})"),
        None => format!("window: loader entry (event {loader_entry}) to the end of the run (the kernel never executed LIDT)"),
    });
    for entry in entries {
        let Decoded::Rule(instruction) = entry.decoded else { continue };
        let in_window = entry.executions.first >= loader_entry
            && lidt.is_none_or(|end| entry.executions.first < end);
        if !in_window {
            continue;
        }
        checked += 1;
        if td_rules::is_native_in_every_version(&instruction) {
            lines.push(format!(
                "native       {}: {} x{}",
                entry.describe(),
                instruction_name(&instruction),
                entry.executions.count
            ));
            continue;
        }
        let sides = Sides {
            before: ebs.is_some_and(|e| entry.executions.first < e),
            after: ebs.is_none_or(|e| entry.executions.last > e),
        };
        let problem = sides.after || !tdvf_handles(&instruction);
        let side = match (sides.before, sides.after) {
            (true, true) => "before+after",
            (true, false) => "before",
            _ => "after",
        };
        let line = format!(
            "{} {side:<12} {}: {} x{}: {}",
            if problem { "UNSAFE" } else { "ok    " },
            entry.describe(),
            instruction_name(&instruction),
            entry.executions.count,
            outcomes_text(&instruction)
        );
        if problem {
            let text = format!(
                "{} in {}",
                instruction_name(&instruction),
                short(entry.function.as_deref().unwrap_or("<no symbol>"))
            );
            if !problems.contains(&text) {
                problems.push(text);
            }
        }
        lines.push(line);
    }
    let summary = format!(
        "{checked} candidate instructions executed in the window, {} unsafe",
        problems.len()
    );
    Ok(Judgement { lines, problems, summary })
}

/// With a loader that hands over in 5-level paging (`test-enable-la57`), the trampoline's
/// switch out of it must be among what was judged: `enter_kernel` wrote CR4 (clearing
/// LA57) and CR0 (PG off, PG on). Without this a boot that took the trampoline's 4-level
/// branch (LA57 never on) would pass the audit and say nothing of the 5-level path. The
/// switch's 32-bit stretch is decoded as 64-bit code (the plugin does not tell the mode); its
/// instructions (`mov` to and from CR0/CR3/CR4, `btr`, `bts`, `push`, `retf`) encode the same
/// in both modes, with the same operand bits, so the judgement holds for it.
pub fn la57_switch_judged(entries: &[Entry]) -> Result<String, String> {
    let in_trampoline =
        |e: &&Entry| e.image == "loader" && e.function.as_deref() == Some("enter_kernel");
    let cr4 = entries
        .iter()
        .filter(in_trampoline)
        .filter(|e| matches!(e.decoded, Decoded::Rule(TdInstruction::MovToCr4(_))))
        .count();
    let cr0 = entries
        .iter()
        .filter(in_trampoline)
        .filter(|e| matches!(e.decoded, Decoded::Rule(TdInstruction::MovToCr0(_))))
        .count();
    if cr4 >= 1 && cr0 >= 2 {
        Ok(format!(
            "the trampoline's switch out of 5-level paging ran and was judged ({cr0} MOV to CR0, {cr4} MOV to CR4 in enter_kernel)"
        ))
    } else {
        Err(format!(
            "the trampoline's switch out of 5-level paging did not run ({cr0} MOV to CR0, {cr4} MOV to CR4 in enter_kernel; want 2 and 1): the audit did not cover it"
        ))
    }
}
