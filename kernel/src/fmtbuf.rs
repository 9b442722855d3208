//! A fixed-capacity string for formatting without the heap (fatal paths, self-test details).

use core::fmt;

#[derive(Clone, Copy)]
pub struct FixedString<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> FixedString<N> {
    pub const fn new() -> Self {
        Self { bytes: [0; N], len: 0 }
    }

    pub fn as_str(&self) -> &str {
        // Only whole UTF-8 characters are ever appended (see write_str).
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> fmt::Write for FixedString<N> {
    /// Appends as much of `s` as fits, cutting at a character boundary; never fails, so a long
    /// message is truncated instead of lost.
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = N - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// `format!` into a [`FixedString`].
#[macro_export]
macro_rules! fixed_format {
    ($n:literal, $($arg:tt)*) => {{
        let mut s = $crate::fmtbuf::FixedString::<$n>::new();
        let _ = core::fmt::Write::write_fmt(&mut s, format_args!($($arg)*));
        s
    }};
}
