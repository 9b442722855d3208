//! Which QEMU TCG plugin API the td-audit plugin is built for.
//!
//! A plugin exports the API version it was built against (`qemu_plugin_version`), and QEMU
//! refuses to load it outside [QEMU_PLUGIN_MIN_VERSION, QEMU_PLUGIN_VERSION] (QEMU
//! plugins/loader.c, `plugin_load`): "plugin requires API version 1, but this QEMU supports only
//! a minimum version of 2". A shared library carries one version, so xtask reads the version of
//! the QEMU it will run, looks up the range that release accepts ([`RELEASES`]), and builds the
//! plugin (one source, xtask/td-audit) with the `qemu-plugin` crate's feature for the highest API
//! in that range which the crate binds ([`CRATE_APIS`]). Where none fits, the audit is skipped
//! with the reason.

use std::ops::RangeInclusive;

/// The plugin API versions the `qemu-plugin` crate (=10.1.0-v2) binds, one td-audit feature
/// `qemu-plugin-api-vN` each. Its v0 (QEMU 4.2 to 5.2) predates the version check and is not
/// offered: QEMU 6.0 and later refuse a plugin that declares no version.
pub const CRATE_APIS: RangeInclusive<u32> = 1..=5;

/// Where each QEMU release's plugin API range changed: (first release, min, cur, what changed),
/// valid up to the next row. From QEMU's include/qemu/qemu-plugin.h (QEMU_PLUGIN_VERSION and its
/// change list) and plugins/plugin.h (QEMU_PLUGIN_MIN_VERSION), and the `qemu-plugin` crate's
/// table of the release that introduced each version.
pub const RELEASES: [((u32, u32), u32, u32, &str); 5] = [
    ((6, 0), 0, 1, "versioned plugin API (a plugin must export qemu_plugin_version)"),
    (
        (9, 0),
        2,
        2,
        "qemu_plugin_n_vcpus, qemu_plugin_n_max_vcpus and the shared inline ops removed, so the minimum became 2",
    ),
    ((9, 1), 2, 3, "qemu_plugin_insn_data copies into the caller's buffer"),
    ((9, 2), 2, 4, "qemu_plugin_read_memory_vaddr"),
    ((10, 1), 2, 5, "memory and register writes, qemu_plugin_translate_vaddr"),
];

/// The plugin API to build for one QEMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The API version: the plugin is built with td-audit's `qemu-plugin-api-v{api}`.
    pub api: u32,
    /// The QEMU is newer than the newest release in [`RELEASES`] (or a development snapshot,
    /// micro version 50 or more): its range is assumed to be that of the release before it, and
    /// a refusal to load the plugin is a skip, not a failure.
    pub assumed: bool,
}

impl Choice {
    /// The td-audit feature that selects this API.
    pub fn feature(&self) -> String {
        format!("qemu-plugin-api-v{}", self.api)
    }
}

/// The API range [min, cur] of a QEMU release and whether it is assumed (see [`Choice`]), or
/// `None` before the versioned API.
pub fn range(qemu: (u32, u32, u32)) -> Option<(RangeInclusive<u32>, bool)> {
    let (major, minor, micro) = qemu;
    let row = RELEASES.iter().rev().find(|(first, ..)| *first <= (major, minor))?;
    let newest = RELEASES[RELEASES.len() - 1].0;
    let assumed = (major, minor) > newest || micro >= 50;
    Some((row.1..=row.2, assumed))
}

/// The API to build the plugin for, for QEMU version `qemu` (major, minor, micro); `Err` is the
/// reason to skip the audit.
pub fn choose(qemu: (u32, u32, u32)) -> Result<Choice, String> {
    let (major, minor, micro) = qemu;
    let shown = format!("QEMU {major}.{minor}.{micro}");
    let Some((accepted, assumed)) = range(qemu) else {
        return Err(format!(
            "{shown} predates the versioned TCG plugin API (QEMU 6.0); td-audit's plugin needs QEMU 6.0 or later"
        ));
    };
    let api = CRATE_APIS.clone().rev().find(|api| accepted.contains(api)).ok_or_else(|| {
        format!(
            "{shown} accepts TCG plugin API {}..={}, and the qemu-plugin crate binds only {}..={}",
            accepted.start(),
            accepted.end(),
            CRATE_APIS.start(),
            CRATE_APIS.end()
        )
    })?;
    Ok(Choice { api, assumed })
}

/// QEMU's refusal to load a plugin for its API version, if `qemu_output` has one
/// (plugins/loader.c: "Could not load plugin ...: plugin requires API version N, but this QEMU
/// supports only a minimum version of M" or "... only up to version M").
pub fn refusal(qemu_output: &str) -> Option<&str> {
    qemu_output.lines().map(str::trim).find(|line| line.contains("plugin requires API version"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::td::doctor::parse_qemu_version;

    fn choose_for(version_output: &str) -> Result<Choice, String> {
        choose(parse_qemu_version(version_output).expect("a version"))
    }

    #[test]
    fn each_qemu_gets_the_newest_api_it_accepts() {
        let cases = [
            ("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)", 1, false),
            ("QEMU emulator version 8.2.2 (Debian 1:8.2.2+ds-0ubuntu1.4)", 1, false),
            ("QEMU emulator version 9.0.0", 2, false),
            ("QEMU emulator version 9.1.2", 3, false),
            ("QEMU emulator version 9.2.4 (Debian 1:9.2.4+ds-1)", 4, false),
            ("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)", 4, false),
            ("QEMU emulator version 10.1.0 (Debian 1:10.1.0+ds-5)", 5, false),
            // Newer than the table, or a development snapshot: assumed.
            ("QEMU emulator version 11.1.0", 5, true),
            ("QEMU emulator version 10.1.50 (v10.1.0-1234-gabcdef)", 5, true),
            ("QEMU emulator version 8.2.90 (v9.0.0-rc0)", 1, true),
        ];
        for (output, api, assumed) in cases {
            assert_eq!(choose_for(output), Ok(Choice { api, assumed }), "{output}");
        }
        assert_eq!(Choice { api: 4, assumed: false }.feature(), "qemu-plugin-api-v4");
    }

    #[test]
    fn a_qemu_without_the_versioned_api_is_a_skip_with_the_reason() {
        let reason =
            choose_for("QEMU emulator version 5.2.0 (Debian 1:5.2+dfsg-11+deb11u3)").unwrap_err();
        assert!(reason.contains("QEMU 5.2.0 predates the versioned TCG plugin API"), "{reason}");
    }

    #[test]
    fn the_table_is_ordered_and_each_row_has_an_api_the_crate_binds() {
        for pair in RELEASES.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{:?} before {:?}", pair[0].0, pair[1].0);
            // QEMU never lowers either bound.
            assert!(pair[0].1 <= pair[1].1 && pair[0].2 < pair[1].2);
        }
        for (first, min, cur, _) in RELEASES {
            let (major, minor) = first;
            assert!((min..=cur).any(|api| CRATE_APIS.contains(&api)), "{major}.{minor}");
        }
    }

    #[test]
    fn qemu_s_refusal_is_recognised() {
        let stderr = "qemu-system-x86_64: -plugin /t/libtd_audit.so,out=x: Could not load plugin /t/libtd_audit.so: plugin requires API version 1, but this QEMU supports only a minimum version of 2\n";
        assert_eq!(
            refusal(stderr),
            Some(stderr.trim()),
            "the whole line, so the skip reason has both versions"
        );
        assert_eq!(refusal("qemu-system-x86_64: terminating on signal 15"), None);
    }
}
