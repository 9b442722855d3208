//! The bodies of the single-parser targets, one module per crate.

pub mod loader;
pub mod ovmf;
pub mod td_rules;
pub mod tdx_attest;
pub mod tdx_ve;
pub mod xtask;
