//! The rows that matter, pinned. Each test names its source beside the row.

use super::*;

fn all(instruction: Instruction) -> [Outcome; 4] {
    ALL_VERSIONS.map(|v| classify(&instruction, v).outcome)
}

const VE_RDMSR: Outcome = Outcome::Ve { exit_reason: 31 };
const VE_WRMSR: Outcome = Outcome::Ve { exit_reason: 32 };
const VE_CPUID: Outcome = Outcome::Ve { exit_reason: 10 };

#[test]
fn wrmsr_efer() {
    // 1.0: niooss@9359de5 msr_config_lookup.c entry 121 FIXED_01 -> every write #VE.
    // 1.5.01+: td_msr_access.c wrmsr_ia32_efer L232-266 -> native iff only SCE (LMA ignored)
    // differs, #VE otherwise.
    let efer = |value| Instruction::Wrmsr { msr: Some(IA32_EFER), value };
    // Unknown value (e.g. bootloader 0.11.17 `Efer::update`: RDMSR, OR NXE, WRMSR).
    let set_nxe = efer(WrittenValue::read_modify(1 << 11, 0));
    let depends = Outcome::DependsOn { on: Condition::Value, possible: N | V, exit_reason: 32 };
    assert_eq!(all(set_nxe), [VE_WRMSR, depends, depends, depends]);
    assert_eq!(all(efer(WrittenValue::UNKNOWN)), [VE_WRMSR, depends, depends, depends]);
    // Writing back what was read, or toggling only SCE: native from 1.5.01 on, #VE on 1.0.
    let same = efer(WrittenValue::read_modify(0, 0));
    assert_eq!(all(same), [VE_WRMSR, Outcome::Native, Outcome::Native, Outcome::Native]);
    assert_eq!(
        classify(&efer(WrittenValue::read_modify(1, 0)), ModuleVersion::Newest).outcome,
        Outcome::Native
    );
    assert!(!is_native_in_every_version(&same));
    // RDMSR EFER is native everywhere (bitmap bit clear: 2.0.08 msr_lookup[474], 1.5.01 [126]).
    assert!(is_native_in_every_version(&Instruction::Rdmsr { msr: Some(IA32_EFER) }));
    assert!(classify(&set_nxe, ModuleVersion::V1_0).source.contains("wrmsr_ia32_efer"));
}

#[test]
fn apic_base_read_and_write() {
    // 2.0.08 msr_lookup[5] FIXED_1/VE both ways; 1.0/1.5.01 unlisted -> default #VE
    // (td_msr_access.c rd_wr_msr_generic_case).
    assert_eq!(all(Instruction::Rdmsr { msr: Some(0x1B) }), [VE_RDMSR; 4]);
    let write = Instruction::Wrmsr { msr: Some(0x1B), value: WrittenValue::UNKNOWN };
    assert_eq!(all(write), [VE_WRMSR; 4]);
    assert_eq!(msr_row(0x1B).unwrap().name, "IA32_APIC_BASE");
    assert_eq!(msr_row(0x1B).unwrap().lookup_2_0_08, 5);
}

#[test]
fn wrmsr_tsc_is_ve_and_rdmsr_tsc_native() {
    // 2.0.08 msr_lookup[3], 1.5.01 msr_lookup[0]: RD bitmap clear, WR #VE, all versions.
    let write = Instruction::Wrmsr { msr: Some(0x10), value: WrittenValue::constant(0) };
    assert_eq!(all(write), [VE_WRMSR; 4]);
    assert!(is_native_in_every_version(&Instruction::Rdmsr { msr: Some(0x10) }));
}

#[test]
fn pat_star_lstar_fs_gs_base_are_native() {
    // 2.0.08 msr_lookup[114] (PAT), [475] STAR, [476] LSTAR, [479] FS_BASE, [480] GS_BASE;
    // 1.5.01 [31], [127-133]; FIXED_0 in 1.0 too (README 1.6).
    for msr in [0x277, 0xC000_0081, 0xC000_0082, 0xC000_0100, 0xC000_0101] {
        assert!(is_native_in_every_version(&Instruction::Rdmsr { msr: Some(msr) }), "{msr:#x}");
        let write = Instruction::Wrmsr { msr: Some(msr), value: WrittenValue::UNKNOWN };
        assert!(is_native_in_every_version(&write), "{msr:#x}");
    }
}

#[test]
fn msr_outside_both_bitmap_ranges_is_ve_in_every_version() {
    // rd_wr_msr_generic_checks / is_msr_covered_by_bitmap (1.5.01 L63-99, 2.0.08): always #VE,
    // independent of REDUCE_VE.
    for msr in [0x2000, 0x4000_0000, 0xBFFF_FFFF, 0xC000_2000, 0xFFFF_FFFF] {
        assert!(!msr_in_bitmap(msr));
        assert_eq!(all(Instruction::Rdmsr { msr: Some(msr) }), [VE_RDMSR; 4]);
        let write = Instruction::Wrmsr { msr: Some(msr), value: WrittenValue::constant(0) };
        assert_eq!(all(write), [VE_WRMSR; 4]);
        assert!(classify(&write, ModuleVersion::Newest)
            .source
            .contains("is_msr_covered_by_bitmap"));
    }
}

#[test]
fn unlisted_msr_inside_the_bitmap_follows_the_default_rule() {
    // rd_wr_msr_generic_case, NULL entry: 1.0/1.5.01/1.5.05 #VE, 1.5.12+ #GP if REDUCE_VE.
    // 0x1FFF is in no msr_lookup row.
    assert!(msr_row(0x1FFF).is_none());
    let [v10, v1501, v1505, newest] = all(Instruction::Rdmsr { msr: Some(0x1FFF) });
    assert_eq!([v10, v1501, v1505], [VE_RDMSR; 3]);
    assert_eq!(newest.possible(), V | G);
}

#[test]
fn unknown_msr_operand_is_never_native() {
    let read = Instruction::Rdmsr { msr: None };
    assert!(all(read)
        .iter()
        .all(|o| matches!(o, Outcome::DependsOn { on: Condition::UnknownOperand, .. })));
    assert!(!is_native_in_every_version(&read));
}

#[test]
fn cpuid_0_and_0x21_subleaf_0_are_native() {
    // cpuid_configurations.c entries [10] (leaf 0) and [53] (0x21/0), td_cpuid.c L76-99.
    for (leaf, subleaf) in [(0, 0), (0, 7), (0x21, 0)] {
        let cpuid = Instruction::Cpuid { leaf: Some(leaf), subleaf: Some(subleaf) };
        assert!(is_native_in_every_version(&cpuid), "{leaf:#x}/{subleaf}");
    }
    // Leaf 0 ignores the subleaf, so an unknown ECX is fine.
    assert!(is_native_in_every_version(&Instruction::Cpuid { leaf: Some(0), subleaf: None }));
}

#[test]
fn cpuid_0x21_other_subleaf_is_ve() {
    // Only 0x21/0 is in cpuid_lookup[] (entry [53]); other subleaves #VE (1.5.01 td_cpuid.c
    // L76-84). 1.5.12+ may answer zeros with REDUCE_VE=1 (README 2.3).
    let cpuid = Instruction::Cpuid { leaf: Some(0x21), subleaf: Some(1) };
    let [v10, v1501, v1505, newest] = all(cpuid);
    assert_eq!([v10, v1501, v1505], [VE_CPUID; 3]);
    assert!(newest.possible().contains(V));
    let unknown = Instruction::Cpuid { leaf: Some(0x21), subleaf: None };
    assert!(!is_native_in_every_version(&unknown));
}

#[test]
fn cpuid_hypervisor_range_is_ve() {
    // td_cpuid.c: 0x40000000-0x4FFFFFFF never in cpuid_lookup[] (1.5.01), checked first (2.0.08).
    for leaf in [0x4000_0000, 0x4000_0001, 0x4FFF_FFFF] {
        let cpuid = Instruction::Cpuid { leaf: Some(leaf), subleaf: Some(0) };
        assert_eq!(all(cpuid), [VE_CPUID; 4]);
    }
}

#[test]
fn mov_cr4_clearing_mce_is_ve() {
    // td_vmcs_init.c L318-380: MCE is module-owned and the read shadow has MCE=1, so a value
    // with MCE=0 exits; write_guest_cr4 L1336-1378 -> #VE exit reason 28. 2.0.18
    // write_guest_cr4: with TD_CTLS.REDUCE_VE=1 only the virtual MCE changes.
    let clear_mce = Instruction::MovToCr4(WrittenValue::read_modify(0, 1 << 6));
    let [v10, v1501, v1505, newest] = all(clear_mce);
    let cr_ve = Outcome::Ve { exit_reason: 28 };
    assert_eq!([v10, v1501, v1505], [cr_ve; 3]);
    assert_eq!(newest.possible(), N | V);
    // Setting a guest-owned bit (OSXSAVE) in a read-modify-write does not exit.
    let set_osxsave = Instruction::MovToCr4(WrittenValue::read_modify(1 << 18, 0));
    assert!(is_native_in_every_version(&set_osxsave));
    // A constant with MCE set and nothing module-owned changed is native; one without MCE is not.
    assert!(is_native_in_every_version(&Instruction::MovToCr4(WrittenValue::constant(0x6e0))));
    assert!(!is_native_in_every_version(&Instruction::MovToCr4(WrittenValue::constant(0x6a0))));
    // KL (bit 19) is always #GP (is_guest_cr4_allowed_by_td_config).
    let kl = Instruction::MovToCr4(WrittenValue::read_modify(1 << 19, 0));
    assert_eq!(all(kl), [Outcome::Gp; 4]);
}

#[test]
fn mov_cr0() {
    // td_vmcs_init.c L277-316: WP is guest-owned; NE/PE/CD/NW are module-owned (shadow PE=NE=1).
    let set_wp = Instruction::MovToCr0(WrittenValue::read_modify(1 << 16, 0));
    assert!(is_native_in_every_version(&set_wp));
    let clear_ne = Instruction::MovToCr0(WrittenValue::read_modify(0, 1 << 5));
    assert_eq!(all(clear_ne)[0].possible(), V | G);
    let set_cd = Instruction::MovToCr0(WrittenValue::read_modify(1 << 30, 0));
    assert!(!is_native_in_every_version(&set_cd));
    assert!(!is_native_in_every_version(&Instruction::MovToCr0(WrittenValue::UNKNOWN)));
    // A write that changes only reserved bits exits and the module completes it
    // (`cr0_write`), so the coarse rule must allow native completion (td_rules fuzz target).
    let reserved_only = 0xc0ed;
    assert_eq!(cr0_write(reserved_only, 0).outcome, Outcome::Native);
    let coarse = Instruction::MovToCr0(WrittenValue::constant(reserved_only));
    assert_eq!(all(coarse)[0].possible(), N | V | G);
}

#[test]
fn minimal_td_resolves_the_configuration() {
    use ModuleVersion::*;
    let minimal = |i: Instruction| ALL_VERSIONS.map(|v| classify_minimal_td(&i, v).outcome);
    // td_vmcs_init.c L216-218: MONITOR exiting with virtual CPUID.MONITOR=0; 1.0/1.5.01 #VE,
    // 1.5.05+ #UD (1.5.05 dispatcher L749-751).
    let mwait = Outcome::Ve { exit_reason: 36 };
    assert_eq!(minimal(Instruction::Mwait), [mwait, mwait, Outcome::Ud, Outcome::Ud]);
    let monitor = Outcome::Ve { exit_reason: 39 };
    assert_eq!(minimal(Instruction::Monitor), [monitor, monitor, Outcome::Ud, Outcome::Ud]);
    // td_vmcs_init.c L220-221 (PCONFIG not enabled) and td_rdpmc_exit (PERFMON=0).
    assert_eq!(minimal(Instruction::Pconfig), [Outcome::Ud; 4]);
    assert_eq!(minimal(Instruction::Rdpmc), [Outcome::Gp; 4]);
    // README 2.3: leaf 0xB #VE unless ENUM_TOPOLOGY; 0x21/1 unlisted, #VE unless REDUCE_VE.
    for (leaf, subleaf) in [(0xB, 0), (0x21, 1), (2, 0), (6, 0)] {
        let cpuid = Instruction::Cpuid { leaf: Some(leaf), subleaf: Some(subleaf) };
        assert_eq!(minimal(cpuid), [VE_CPUID; 4], "leaf {leaf:#x}/{subleaf}");
    }
    let leaf1 = Instruction::Cpuid { leaf: Some(1), subleaf: Some(0) };
    assert_eq!(minimal(leaf1), [Outcome::Native; 4]);
    // Unchanged where classify is already decided, and where the table cannot tell.
    assert_eq!(
        classify_minimal_td(&Instruction::Wbinvd, V1_0).outcome,
        classify(&Instruction::Wbinvd, V1_0).outcome
    );
    let unknown = Instruction::Cpuid { leaf: None, subleaf: None };
    assert_eq!(classify_minimal_td(&unknown, V1_0).outcome.possible(), N | V);
}

#[test]
fn exact_cr0_writes() {
    // write_guest_cr0 (helpers.c L1248-1305, README 3.1), in its order.
    let base: u64 = 0x8000_0033; // PG, NE, ET, MP, PE
    assert_eq!(cr0_write(base, 0).outcome, Outcome::Native); // nothing module-owned changes
    assert_eq!(cr0_write(base | (1 << 16), 0).outcome, Outcome::Native); // WP guest-owned
    assert_eq!(cr0_write(base & !(1 << 5), 0).outcome, Outcome::Gp); // NE cleared: FIXED0
    assert_eq!(cr0_write(base | (1 << 40), 0).outcome, Outcome::Gp); // 63:32: FIXED1
    assert_eq!(cr0_write(base & !1, 0).outcome, Outcome::Gp); // PE=0 with PG=1
    let cr_ve = Outcome::Ve { exit_reason: 28 };
    assert_eq!(cr0_write(base | (1 << 30), 0).outcome, cr_ve); // CD
    assert_eq!(cr0_write(base | (1 << 29), 0).outcome, cr_ve); // NW
    assert_eq!(cr0_write((base & !(1 << 31)) & !1, 0).outcome, cr_ve); // PE=0, PG=0
                                                                       // WP cleared while CR4.CET=1, with CD set so that the write exits: #GP first.
    assert_eq!(cr0_write((base | (1 << 30)) & !(1 << 16), 1 << 23).outcome, Outcome::Gp);
    // Reserved bit 6 is module-owned: exits, and completes (silently ignored).
    assert_eq!(cr0_write(base | (1 << 6), 0).outcome, Outcome::Native);
}

#[test]
fn exact_cr4_writes() {
    // write_guest_cr4 (helpers.c L1336-1378, README 3.2).
    use ModuleVersion::*;
    let base: u64 = 0x6e0; // MCE, PAE, PGE, OSFXSR, OSXMMEXCPT
    assert_eq!(cr4_write(base, 1 << 16, V1_5_01).outcome, Outcome::Native);
    assert_eq!(cr4_write(base | (1 << 18), 1 << 16, V1_5_01).outcome, Outcome::Native);
    let cr_ve = Outcome::Ve { exit_reason: 28 };
    assert_eq!(cr4_write(base & !(1 << 6), 1 << 16, V1_0).outcome, cr_ve); // clear MCE
    assert_eq!(cr4_write(base | (1 << 13), 1 << 16, V1_5_01).outcome, cr_ve); // VMXE
    assert_eq!(cr4_write(base | (1 << 19), 1 << 16, V1_5_01).outcome, Outcome::Gp); // KL
    assert_eq!(cr4_write(base | (1 << 22), 1 << 16, V1_5_01).outcome, Outcome::Gp); // PKE
    assert_eq!(cr4_write(base | (1 << 15), 1 << 16, V1_5_01).outcome, Outcome::Gp);
    // FIXED1
}

#[test]
fn other_exits() {
    // tdx_td_dispatcher.c L745-915 and vmcs_defs.h L45-66 (README 4).
    assert_eq!(all(Instruction::PortIo), [Outcome::Ve { exit_reason: 30 }; 4]);
    assert_eq!(all(Instruction::Hlt), [Outcome::Ve { exit_reason: 12 }; 4]);
    assert_eq!(all(Instruction::Wbinvd), [Outcome::Ve { exit_reason: 54 }; 4]);
    assert_eq!(all(Instruction::Invd), [Outcome::Ve { exit_reason: 13 }; 4]);
    assert_eq!(all(Instruction::Vmcall), [Outcome::Ve { exit_reason: 18 }; 4]);
    assert_eq!(all(Instruction::Vmx), [Outcome::Ud; 4]);
    // MWAIT: #VE in 1.0/1.5.01, #UD from 1.5.05 (dispatcher L749-751), native if MONITOR enabled.
    let [m10, m1501, m1505, _] = all(Instruction::Mwait);
    assert_eq!(m10.possible(), N | V);
    assert_eq!(m1501.possible(), N | V);
    assert_eq!(m1505.possible(), N | U);
    // XSETBV is never #VE (td_xsetbv.c).
    assert!(!all(Instruction::Xsetbv).iter().any(|o| o.possible().contains(V)));
}

#[test]
fn msr_rows_are_sorted_and_disjoint() {
    for pair in msr_table::MSR_ROWS.windows(2) {
        assert!(pair[0].first <= pair[0].last && pair[0].last < pair[1].first, "{pair:?}");
    }
}

/// Checks the generated table against ../shared/tdx-module/msr-table.json, when reachable.
#[test]
fn msr_table_matches_the_shared_json() {
    let path = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            std::path::PathBuf::from,
        )
        .join("../../../../shared/tdx-module/msr-table.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("skip: {} is not reachable (it lives outside the repository)", path.display());
        return;
    };
    let entries: serde_json::Value = serde_json::from_str(&text).unwrap();
    let set = |values: &[serde_json::Value]| {
        values.iter().fold(Outcomes(0), |acc, v| {
            acc | match v.as_str().unwrap() {
                "native" => N,
                "ve" => V,
                "gp" => G,
                other => panic!("unknown result {other}"),
            }
        })
    };
    let mut checked = 0;
    for entry in entries.as_array().unwrap() {
        let Some(hex) = entry["msr"].as_str().unwrap().strip_prefix("0x") else { continue };
        let msr = u32::from_str_radix(hex, 16).unwrap();
        let row = msr_row(msr).unwrap_or_else(|| panic!("{msr:#x} missing"));
        assert_eq!(row.first, msr);
        assert_eq!(row.name, entry["name"].as_str().unwrap());
        for (column, op) in ["rdmsr", "wrmsr"].iter().enumerate() {
            let possible = entry.get(format!("{op}_possible")).and_then(|p| p.as_array().cloned());
            let newest = set(&possible.unwrap_or_else(|| vec![entry[op].clone()]));
            assert_eq!(row.newest[column], newest, "{msr:#x} {op}");
            assert_eq!(row.v1_0[column], set(&[entry["v1_0"][op].clone()]), "{msr:#x} {op} 1.0");
            assert_eq!(row.v1_5_01[column], set(&[entry["v1_5_01"][op].clone()]), "{msr:#x} {op}");
        }
        checked += 1;
    }
    assert_eq!(checked, msr_table::MSR_ROWS.len());
}
