//! Serial text as a person reads it: OVMF and the kernel's console write ANSI escape sequences
//! and CR/LF line ends, which every parser of serial output strips first.

/// Removes ANSI escape sequences (CSI `ESC [ ... final`, and two-byte `ESC x`) and carriage
/// returns.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.next() == Some('[') {
                    // Parameters and intermediates, then one final byte in 0x40..=0x7e.
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_ansi_keeps_plain_text() {
        assert_eq!(strip_ansi("a\u{1b}[31mb\u{1b}[0mc\r\n"), "abc\n");
        assert_eq!(strip_ansi("\u{1b}"), "");
        assert_eq!(strip_ansi("x\u{1b}[="), "x");
    }
}
