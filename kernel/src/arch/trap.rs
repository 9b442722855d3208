//! Trap entry: one stub per exception vector, one common path, one Rust dispatcher.
//!
//! Each stub pushes a dummy error code where the CPU pushes none, then the vector number, and
//! jumps to `trap_common`, which saves all 15 GPRs into a [`TrapFrame`], clears DF as the
//! System V ABI requires, and calls [`trap_dispatch`] with RSP 16-byte aligned. On return it
//! restores every register from the frame (handlers change RIP and GPRs through it) and
//! `iretq`s. The #VE handler needs exactly this: it must read and write the interrupted RAX,
//! RCX, RSI and RDI, which `extern "x86-interrupt"` handlers cannot reach.
//!
//! This module does not know who handles what: handlers are registered per vector
//! ([`register`]), as are a hook that runs before every return ([`set_resume_hook`], softtdx)
//! and the host report of the unexpected-exception path ([`set_fatal_reporter`], TDX).

use super::frame::TrapFrame;
use crate::console::EmergencyWriter;
use core::fmt::Write;
use core::sync::atomic::{AtomicUsize, Ordering};

/// The exception vectors (0-31, Intel SDM Vol. 3A, Table 6-1): one stub each, which the IDT's
/// gates point at (`super::idt`).
pub const EXCEPTION_VECTORS: usize = 32;

impl TrapFrame {
    /// Prints every saved register, for fatal diagnostics. Lock-free.
    pub fn dump(&self, out: &mut EmergencyWriter) {
        let _ = writeln!(
            out,
            "  RIP={:#018x} RSP={:#018x} RFLAGS={:#010x} CS={:#x} SS={:#x}",
            self.rip, self.rsp, self.rflags, self.cs, self.ss
        );
        let _ = writeln!(
            out,
            "  RAX={:#018x} RBX={:#018x} RCX={:#018x} RDX={:#018x}",
            self.rax, self.rbx, self.rcx, self.rdx
        );
        let _ = writeln!(
            out,
            "  RSI={:#018x} RDI={:#018x} RBP={:#018x} R8 ={:#018x}",
            self.rsi, self.rdi, self.rbp, self.r8
        );
        let _ = writeln!(
            out,
            "  R9 ={:#018x} R10={:#018x} R11={:#018x} R12={:#018x}",
            self.r9, self.r10, self.r11, self.r12
        );
        let _ =
            writeln!(out, "  R13={:#018x} R14={:#018x} R15={:#018x}", self.r13, self.r14, self.r15);
    }
}

// Vectors for which the CPU pushes an error code (Intel SDM Vol. 3A, Table 6-1): 8, 10-14, 17,
// 21, 29, 30. The stubs below push a dummy 0 for every other vector.
macro_rules! trap_stubs {
    ($($vector:literal)*) => {
        core::arch::global_asm!(
            $(
                concat!(".global trap_stub_", $vector),
                ".p2align 4",
                concat!("trap_stub_", $vector, ":"),
                concat!(".if ", $vector, " != 8 && ", $vector, " != 10 && ", $vector, " != 11 && ",
                        $vector, " != 12 && ", $vector, " != 13 && ", $vector, " != 14 && ",
                        $vector, " != 17 && ", $vector, " != 21 && ", $vector, " != 29 && ",
                        $vector, " != 30"),
                "    push 0",
                ".endif",
                concat!("    push ", $vector),
                "    jmp trap_common",
            )*
            ".section .data.rel.ro.trap_stub_table, \"aw\"",
            ".p2align 3",
            ".global trap_stub_table",
            "trap_stub_table:",
            $(concat!("    .quad trap_stub_", $vector),)*
            ".text",
        );
    };
}

trap_stubs!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);

core::arch::global_asm!(
    ".global trap_common",
    "trap_common:",
    "    push rax",
    "    push rbx",
    "    push rcx",
    "    push rdx",
    "    push rsi",
    "    push rdi",
    "    push rbp",
    "    push r8",
    "    push r9",
    "    push r10",
    "    push r11",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    cld",
    "    mov rdi, rsp",
    "    call {dispatch}",
    // The resume hook, if one is registered (`set_resume_hook`), with the same frame.
    "    mov rdi, rsp",
    "    mov rax, qword ptr [rip + {hook}]",
    "    test rax, rax",
    "    jz 2f",
    "    call rax",
    "2:",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop r11",
    "    pop r10",
    "    pop r9",
    "    pop r8",
    "    pop rbp",
    "    pop rdi",
    "    pop rsi",
    "    pop rdx",
    "    pop rcx",
    "    pop rbx",
    "    pop rax",
    // Drop the vector and the error code.
    "    add rsp, 16",
    "    iretq",
    dispatch = sym trap_dispatch,
    hook = sym RESUME_HOOK,
);

extern "C" {
    static trap_stub_table: [u64; EXCEPTION_VECTORS];
}

/// The address of the entry stub for `vector`.
pub fn stub_address(vector: usize) -> u64 {
    assert!(vector < EXCEPTION_VECTORS, "no stub for vector {vector}");
    // SAFETY: the table is immutable data emitted by the assembly above, one entry per vector.
    unsafe { trap_stub_table[vector] }
}

/// Expectation armed by a self-test check that deliberately raises an exception.
pub mod expected {
    use core::sync::atomic::{AtomicU64, Ordering};

    const NONE: u64 = u64::MAX;
    static VECTOR: AtomicU64 = AtomicU64::new(NONE);
    static SKIP: AtomicU64 = AtomicU64::new(0);
    static TAKEN: AtomicU64 = AtomicU64::new(0);

    /// Expects one exception with `vector`; the handler resumes `skip` bytes after the
    /// faulting RIP (0 for traps such as int3, whose RIP already points past the instruction).
    pub fn arm(vector: u64, skip: u64) {
        TAKEN.store(0, Ordering::SeqCst);
        SKIP.store(skip, Ordering::SeqCst);
        VECTOR.store(vector, Ordering::SeqCst);
    }

    /// Disarms and returns how many expected exceptions were taken.
    pub fn disarm() -> u64 {
        VECTOR.store(NONE, Ordering::SeqCst);
        TAKEN.load(Ordering::SeqCst)
    }

    pub(super) fn take(vector: u64) -> Option<u64> {
        if VECTOR.load(Ordering::SeqCst) != vector {
            return None;
        }
        VECTOR.store(NONE, Ordering::SeqCst);
        TAKEN.fetch_add(1, Ordering::SeqCst);
        Some(SKIP.load(Ordering::SeqCst))
    }
}

/// A handler registered for one vector: returns whether it handled the exception (false lets
/// an armed expectation or the unexpected-exception report have it).
pub type Handler = fn(&mut TrapFrame) -> bool;
/// Runs after every handled exception, just before the trap path restores the registers
/// (softtdx's CPU looks at the instruction about to resume). Called from `trap_common`; when
/// none is registered the trap path spends three instructions on finding that out.
#[cfg_attr(not(feature = "test-modes"), allow(dead_code))] // Only the test image uses it.
pub type ResumeHook = extern "sysv64" fn(&mut TrapFrame);
/// Tells the host that the kernel cannot continue (ReportFatalError in a TD).
pub type FatalReporter = fn(&str);

/// Registered handlers, as `fn` pointers cast to usize (0 = none). The trap path does not know
/// who handles what: `tdx` registers #VE at boot, softtdx its #DB and #UD when it is enabled.
static HANDLERS: [AtomicUsize; EXCEPTION_VECTORS] =
    [const { AtomicUsize::new(0) }; EXCEPTION_VECTORS];
static RESUME_HOOK: AtomicUsize = AtomicUsize::new(0);
static FATAL_REPORTER: AtomicUsize = AtomicUsize::new(0);

/// Registers `handler` for `vector`, replacing any earlier one.
pub fn register(vector: u64, handler: Handler) {
    HANDLERS[vector as usize].store(handler as usize, Ordering::Release);
}

/// Registers the hook that runs before every return from a handled exception.
#[cfg_attr(not(feature = "test-modes"), allow(dead_code))] // Only the test image uses it.
pub fn set_resume_hook(hook: ResumeHook) {
    RESUME_HOOK.store(hook as usize, Ordering::Release);
}

/// Registers what the unexpected-exception report calls to tell the host.
pub fn set_fatal_reporter(reporter: FatalReporter) {
    FATAL_REPORTER.store(reporter as usize, Ordering::Release);
}

/// Called by `trap_common` for every exception.
extern "sysv64" fn trap_dispatch(frame: &mut TrapFrame) {
    // The stubs push vectors 0-31 only; the mask keeps the index in bounds without a branch.
    let handler = HANDLERS[frame.vector as usize % EXCEPTION_VECTORS].load(Ordering::Acquire);
    let handled = handler != 0 && {
        // SAFETY: only `register` stores non-zero values, and each is a `Handler`.
        let handler = unsafe { core::mem::transmute::<usize, Handler>(handler) };
        handler(frame)
    };
    if !handled {
        match expected::take(frame.vector) {
            Some(skip) => frame.rip += skip,
            None => unexpected_exception(frame),
        }
    }
}

fn unexpected_exception(frame: &TrapFrame) -> ! {
    let mut out = EmergencyWriter::new();
    if register_dump_allowed() {
        let cr2 = x86_64::registers::control::Cr2::read_raw();
        let _ = writeln!(
            out,
            "\nFATAL: unexpected exception vector={} ({}) error_code={:#x} RIP={:#x} CR2={:#x}",
            frame.vector,
            exception_name(frame.vector),
            frame.error_code,
            frame.rip,
            cr2
        );
        frame.dump(&mut out);
    } else {
        // A non-debug TD: what went wrong, not the register file (see `set_register_dump`).
        let _ = writeln!(
            out,
            "\nFATAL: unexpected exception vector={} ({}) error_code={:#x} (registers not \
             shown: not a debug TD)",
            frame.vector,
            exception_name(frame.vector),
            frame.error_code
        );
    }
    let reporter = FATAL_REPORTER.load(Ordering::Acquire);
    if reporter != 0 {
        // SAFETY: only `set_fatal_reporter` stores non-zero values, each a `FatalReporter`.
        let reporter = unsafe { core::mem::transmute::<usize, FatalReporter>(reporter) };
        let message = crate::fixed_format!(
            64,
            "unexpected exception vector={} ({})",
            frame.vector,
            exception_name(frame.vector)
        );
        reporter(message.as_str());
    }
    crate::exit::exit(crate::exit::ExitCode::Failure)
}

/// Whether fatal paths may print register contents (RIP, RSP, CR2, the GPRs, guest linear
/// addresses). True until [`set_register_dump`] says otherwise.
static REGISTER_DUMP: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

/// Sets whether fatal paths print register contents. In a TD the serial port is the host's: a
/// non-debug TD prints only what went wrong (vector, error code, exit reason, port, status, what
/// ReportFatalError carries) and never its registers, which may hold secrets; a debug TD (TD
/// attribute bit 0: the host can read its registers anyway) and a kernel outside a TD keep the
/// full dump. `crate::tdx` turns it off when it finds a TD and on again for a debug TD.
pub fn set_register_dump(allowed: bool) {
    REGISTER_DUMP.store(allowed, Ordering::Release);
}

/// Whether fatal paths may print register contents (see [`set_register_dump`]).
pub fn register_dump_allowed() -> bool {
    REGISTER_DUMP.load(Ordering::Acquire)
}

fn exception_name(vector: u64) -> &'static str {
    const NAMES: [&str; EXCEPTION_VECTORS] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "reserved", "#TS", "#NP",
        "#SS", "#GP", "#PF", "reserved", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "reserved",
        "reserved", "reserved", "reserved", "reserved", "reserved", "#HV", "#VC", "#SX",
        "reserved",
    ];
    NAMES.get(vector as usize).copied().unwrap_or("?")
}
