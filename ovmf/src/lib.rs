//! Finding and checking UEFI firmware.
