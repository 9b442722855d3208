//! Pure logic of the TDX #VE handler and of the softtdx model, with no asm, no globals and no
//! allocation, so that `cargo test` checks it on the host.
//!
//! - [`regs`]: GPR numbering as in the TDG.VP.VMCALL bitmap, and the register-view trait.
//! - [`accept`]: TDG.MEM.PAGE.ACCEPT's operand and statuses, and accepting a range (2 MiB where
//!   possible, the 4 KiB fallback, retries).
//! - [`page_state`]: per-4 KiB page states (private, shared, pending) as sparse ranges (softtdx).
//! - [`allowlist`]: the ports a TD lets through to the host.
//! - [`abi`]: TDCALL leaves, TDG.VP.VMCALL sub-functions, status codes and register bitmaps,
//!   TDG.VP.VEINFO.GET and TDG.VP.INFO outputs (TDX module ABI, Intel GHCI).
//! - [`io`]: the VMX I/O exit qualification and the architectural IN/OUT effect on RAX (Intel
//!   SDM Vol. 3C "Exit Qualification for I/O Instructions", Vol. 1 64-bit register rules).
//! - [`string_io`]: INS/OUTS with and without REP, element by element.
//! - [`decode`]: the #VE handler's decoder for the instructions that raise #VE (softtdx has its
//!   own, iced-x86).
//! - [`mapgpa`]: the guest's side of MapGPA's RETRY protocol (bounded, R11 checked).
//! - [`mmio`]: the EPT-violation #VE's MMIO instructions (MOV, MOVZX, MOVSX): decode, linear
//!   address, data and the exact register write.
//! - [`delivery`]: how the CPU delivers an exception through an IDT gate (softtdx only).
//!
//! Blanket assumptions: the guest runs in 64-bit mode (so a 0x67 prefix means 32-bit addressing
//! and 16-bit addressing does not occur, and the CS/DS/ES/SS bases are 0); everything that comes
//! from the host VMM is untrusted and masked or checked before it reaches guest state; nothing
//! here panics on any input (the #VE handler cannot afford to).
//!
//! The cargo feature `broken-in-merge` deliberately breaks [`io::merge_in`] for tests of the
//! kernel's differential checks; see its documentation.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod abi;
pub mod accept;
pub mod allowlist;
pub mod decode;
pub mod delivery;
pub mod io;
pub mod mapgpa;
pub mod mmio;
pub mod page_state;
pub mod regs;
pub mod string_io;
