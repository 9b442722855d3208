//! The check manifest: which checks each run must report, and with which result.
//!
//! The table is `checks.manifest` beside this file (its header describes the format). A run
//! that passes by its exit status is only judged a pass when its `CHECK` lines match the
//! manifest's column for its mode and machine exactly: no check missing, none unknown, each
//! with the listed result and, for a skip, the listed reason.

use crate::machine::Machine;
use crate::report::{Check, CheckResult};
use std::collections::BTreeMap;

const MANIFEST: &str = include_str!("checks.manifest");

/// What a run may report for one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    Pass,
    /// A skip whose detail contains this text.
    Skip(String),
}

/// The manifest, parsed: per column (`mode@machine`), the checks in manifest order.
#[derive(Debug)]
pub struct Manifest {
    columns: BTreeMap<String, Vec<(String, Want)>>,
}

impl Manifest {
    /// The manifest compiled into xtask. Its host tests keep it well-formed.
    pub fn builtin() -> Manifest {
        Manifest::parse(MANIFEST).expect("checks.manifest is well-formed (host-tested)")
    }

    /// Parses the manifest text; the error names the line.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut reasons: BTreeMap<&str, String> = BTreeMap::new();
        let mut columns: Vec<&str> = Vec::new();
        let mut table: BTreeMap<String, Vec<(String, Want)>> = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let at = |what: String| format!("checks.manifest line {}: {what}", index + 1);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let first = words.next().expect("a non-empty line has a word");
            match first {
                "reason" => {
                    let key = words.next().ok_or_else(|| at("reason without a key".into()))?;
                    let text = words.collect::<Vec<_>>().join(" ");
                    if text.is_empty() {
                        return Err(at(format!("reason {key} has no text")));
                    }
                    if reasons.insert(key, text).is_some() {
                        return Err(at(format!("reason {key} defined twice")));
                    }
                }
                "columns" => {
                    columns = words.collect();
                    for column in &columns {
                        table.insert(column.to_string(), Vec::new());
                    }
                }
                name => {
                    let cells: Vec<&str> = words.collect();
                    if columns.is_empty() {
                        return Err(at("a check row before the columns line".into()));
                    }
                    if cells.len() != columns.len() {
                        return Err(at(format!(
                            "{name} has {} cells for {} columns",
                            cells.len(),
                            columns.len()
                        )));
                    }
                    for (column, cell) in columns.iter().zip(cells) {
                        let want = match cell {
                            "-" => continue,
                            "pass" => Want::Pass,
                            key => Want::Skip(
                                reasons
                                    .get(key)
                                    .ok_or_else(|| at(format!("unknown reason {key}")))?
                                    .clone(),
                            ),
                        };
                        let rows = table.get_mut(*column).expect("inserted with the columns");
                        if rows.iter().any(|(n, _)| n == name) {
                            return Err(at(format!("{name} listed twice")));
                        }
                        rows.push((name.to_owned(), want));
                    }
                }
            }
        }
        if table.is_empty() {
            return Err("checks.manifest has no columns line".into());
        }
        Ok(Manifest { columns: table })
    }

    /// The checks a run of `mode` on `machine` must report, or None for a run the manifest
    /// has no column for.
    pub fn expected(&self, mode: &str, machine: Machine) -> Option<&[(String, Want)]> {
        self.columns.get(&format!("{mode}@{}", machine.name())).map(Vec::as_slice)
    }

    /// Compares a run's checks with its column. The error lists every difference, one per
    /// check, so that a dropped group shows all its members.
    pub fn judge(&self, mode: &str, machine: Machine, checks: &[Check]) -> Result<(), String> {
        let Some(expected) = self.expected(mode, machine) else {
            return Err(format!("the check manifest has no column {mode}@{}", machine.name()));
        };
        let mut problems = Vec::new();
        for (name, want) in expected {
            let reported: Vec<&Check> = checks.iter().filter(|c| &c.name == name).collect();
            let problem = match (reported.as_slice(), want) {
                ([], _) => Some(format!("missing check {name}")),
                ([_, _, ..], _) => Some(format!("{name} reported {} times", reported.len())),
                ([check], Want::Pass) if check.result == CheckResult::Pass => None,
                ([check], Want::Skip(reason))
                    if check.result == CheckResult::Skip && check.detail.contains(reason) =>
                {
                    None
                }
                ([check], Want::Pass) => Some(format!(
                    "{name}: expected pass, got {} ({})",
                    word(check.result),
                    check.detail
                )),
                ([check], Want::Skip(reason)) => Some(format!(
                    "{name}: expected skip \"{reason}\", got {} ({})",
                    word(check.result),
                    check.detail
                )),
            };
            problems.extend(problem);
        }
        for check in checks {
            if !expected.iter().any(|(name, _)| name == &check.name) {
                problems.push(format!("unexpected check {} (not in the manifest)", check.name));
            }
        }
        match problems.len() {
            0 => Ok(()),
            n if n > 6 => Err(format!(
                "manifest {mode}@{}: {} and {} more",
                machine.name(),
                problems[..6].join("; "),
                n - 6
            )),
            _ => Err(format!("manifest {mode}@{}: {}", machine.name(), problems.join("; "))),
        }
    }
}

fn word(result: CheckResult) -> &'static str {
    match result {
        CheckResult::Pass => "pass",
        CheckResult::Fail => "fail",
        CheckResult::Skip => "skip",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, result: CheckResult, detail: &str) -> Check {
        Check { name: name.into(), result, detail: detail.into() }
    }

    /// What a correct kernel reports for a column: every listed check with its listed result.
    fn conforming(manifest: &Manifest, mode: &str, machine: Machine) -> Vec<Check> {
        manifest
            .expected(mode, machine)
            .unwrap()
            .iter()
            .map(|(name, want)| match want {
                Want::Pass => check(name, CheckResult::Pass, "ok"),
                Want::Skip(reason) => check(name, CheckResult::Skip, &format!("{reason} (why)")),
            })
            .collect()
    }

    #[test]
    fn the_builtin_manifest_parses_and_has_every_run_this_project_boots() {
        let manifest = Manifest::builtin();
        for (mode, machine) in [
            ("native", Machine::Legacy),
            ("softtdx", Machine::Legacy),
            ("native", Machine::Td),
            ("softtdx", Machine::Td),
            ("td", Machine::Td),
        ] {
            let checks = conforming(&manifest, mode, machine);
            assert!(checks.len() >= 20, "{mode}@{machine:?} has {} checks", checks.len());
            manifest.judge(mode, machine, &checks).unwrap();
        }
        assert!(manifest.expected("td", Machine::Legacy).is_none());
    }

    #[test]
    fn on_the_td_machine_the_pic_checks_skip_and_the_absent_pic_check_passes() {
        let manifest = Manifest::builtin();
        for mode in ["native", "softtdx", "td"] {
            let column = manifest.expected(mode, Machine::Td).unwrap();
            let want = |name: &str| column.iter().find(|(n, _)| n == name).unwrap().1.clone();
            assert_eq!(want("pic.absent"), Want::Pass);
            for name in ["pic.mask_readback", "pic.reinit", "pic.irr_isr"] {
                assert_eq!(want(name), Want::Skip("no 8259 PIC: QEMU gives TDs none".into()));
            }
        }
        let legacy = manifest.expected("softtdx", Machine::Legacy).unwrap();
        assert!(legacy.iter().any(|(n, w)| n == "pic.mask_readback" && *w == Want::Pass));
    }

    #[test]
    fn a_missing_group_fails_every_run_that_expects_it() {
        let manifest = Manifest::builtin();
        for (mode, machine) in
            [("native", Machine::Legacy), ("softtdx", Machine::Td), ("td", Machine::Td)]
        {
            let mut checks = conforming(&manifest, mode, machine);
            checks.retain(|c| {
                !["serial.", "pic.", "port."].iter().any(|group| c.name.starts_with(group))
            });
            let error = manifest.judge(mode, machine, &checks).unwrap_err();
            assert!(error.contains("missing check serial.scratch"), "{error}");
            assert!(error.contains("more"), "every missing check is counted: {error}");
        }
    }

    #[test]
    fn an_unknown_check_a_wrong_result_or_a_wrong_reason_fails() {
        let manifest = Manifest::builtin();
        let mut checks = conforming(&manifest, "native", Machine::Td);
        checks.push(check("pic.extra", CheckResult::Pass, ""));
        let error = manifest.judge("native", Machine::Td, &checks).unwrap_err();
        assert!(error.contains("unexpected check pic.extra"), "{error}");

        let mut checks = conforming(&manifest, "native", Machine::Td);
        let absent = checks.iter_mut().find(|c| c.name == "pic.absent").unwrap();
        absent.result = CheckResult::Skip;
        let error = manifest.judge("native", Machine::Td, &checks).unwrap_err();
        assert!(error.contains("pic.absent: expected pass, got skip"), "{error}");

        let mut checks = conforming(&manifest, "native", Machine::Td);
        let reinit = checks.iter_mut().find(|c| c.name == "pic.reinit").unwrap();
        reinit.detail = "some other reason".into();
        let error = manifest.judge("native", Machine::Td, &checks).unwrap_err();
        assert!(error.contains("pic.reinit: expected skip"), "{error}");

        let mut checks = conforming(&manifest, "native", Machine::Legacy);
        checks.push(checks[0].clone());
        let error = manifest.judge("native", Machine::Legacy, &checks).unwrap_err();
        assert!(error.contains("reported 2 times"), "{error}");
    }

    #[test]
    fn malformed_manifests_name_the_line() {
        let cases = [
            ("columns a@legacy b@legacy\nx pass\n", "line 2: x has 1 cells for 2 columns"),
            ("columns a@legacy\nx nope\n", "line 2: unknown reason nope"),
            ("x pass\n", "line 1: a check row before the columns line"),
            ("reason k one\nreason k two\n", "line 2: reason k defined twice"),
            ("columns a@legacy\nx pass\nx pass\n", "line 3: x listed twice"),
            ("# nothing\n", "no columns line"),
        ];
        for (text, want) in cases {
            let error = Manifest::parse(text).unwrap_err();
            assert!(error.contains(want), "{text:?}: {error}");
        }
    }
}
