//! td-rules: what the TDX module does with an instruction, for operands the auditor and softtdx
//! read from guest code and registers.

use crate::input::Input;
use td_rules::{
    classify, classify_minimal_td, cr0_write, cr4_write, msr_in_bitmap, msr_row, Instruction,
    WrittenValue, ALL_VERSIONS,
};

fn value(input: &mut Input) -> WrittenValue {
    match input.u8() % 3 {
        0 => WrittenValue::UNKNOWN,
        1 => WrittenValue::constant(input.u64()),
        _ => WrittenValue::read_modify(input.u64(), input.u64()),
    }
}

fn maybe_u32(input: &mut Input) -> Option<u32> {
    input.bool().then(|| input.u32())
}

fn instruction(input: &mut Input) -> Instruction {
    use Instruction as I;
    match input.u8() % 22 {
        0 => I::PortIo,
        1 => I::Hlt,
        2 => I::Invd,
        3 => I::Wbinvd,
        4 => I::Vmcall,
        5 => I::Mwait,
        6 => I::Monitor,
        7 => I::Pconfig,
        8 => I::Rdpmc,
        9 => I::Vmx,
        10 => I::Getsec,
        11 => I::Rsm,
        12 => I::Encls,
        13 => I::Enclv,
        14 => I::Seamcall,
        15 => I::Tdcall,
        16 => I::Xsetbv,
        17 => I::Cpuid { leaf: maybe_u32(input), subleaf: maybe_u32(input) },
        18 => I::Rdmsr { msr: maybe_u32(input) },
        19 => I::Wrmsr { msr: maybe_u32(input), value: value(input) },
        20 => I::MovToCr0(value(input)),
        _ => I::MovToCr4(value(input)),
    }
}

/// Every lookup on any instruction and operand: the minimal TD is one of the configurations the
/// general classification covers, and the exact CR0/CR4 rules refine the classification of a
/// constant write.
pub fn lookups(data: &[u8]) {
    let mut input = Input::new(data);
    let instruction = instruction(&mut input);
    for version in ALL_VERSIONS {
        let general = classify(&instruction, version);
        let minimal = classify_minimal_td(&instruction, version);
        assert!(!general.source.is_empty() && !minimal.source.is_empty());
        assert!(
            general.outcome.possible().contains(minimal.outcome.possible()),
            "{instruction:?} in {version:?}: minimal TD {:?} outside {:?}",
            minimal.outcome,
            general.outcome
        );
    }
    let (new, other) = (input.u64(), input.u64());
    let minimal_cr0 =
        classify_minimal_td(&Instruction::MovToCr0(WrittenValue::constant(new)), ALL_VERSIONS[0]);
    let exact = cr0_write(new, other);
    assert!(
        minimal_cr0.outcome.possible().contains(exact.outcome.possible()),
        "CR0 write {new:#x}: {:?} outside {:?}",
        exact.outcome,
        minimal_cr0.outcome
    );
    for version in ALL_VERSIONS {
        let minimal_cr4 =
            classify_minimal_td(&Instruction::MovToCr4(WrittenValue::constant(new)), version);
        let exact = cr4_write(new, other, version);
        assert!(
            minimal_cr4.outcome.possible().contains(exact.outcome.possible()),
            "CR4 write {new:#x} in {version:?}: {:?} outside {:?}",
            exact.outcome,
            minimal_cr4.outcome
        );
    }
    let msr = input.u32();
    let _ = (msr_row(msr), msr_in_bitmap(msr));
}
