//! Memory management: physical frames, including the memory TDVF left unaccepted.

pub mod frames;
