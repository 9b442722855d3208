//! Parsing the plugin's log (format: xtask/td-audit/src/lib.rs).

use std::collections::HashMap;

/// One instrumented instruction, as translated once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Translation {
    pub id: u64,
    pub vaddr: u64,
    pub block_start: u64,
    /// Bytes from the block start through the end of the instruction.
    pub bytes: Vec<u8>,
    /// `entry`, `mark`, `snap`, or the plugin's opcode class.
    pub kind: String,
}

/// Executions of one translation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Executions {
    pub count: u64,
    pub first: u64,
    pub last: u64,
    pub at_snap: u64,
}

#[derive(Debug, Default)]
pub struct PluginLog {
    /// Image name -> load address.
    pub images: HashMap<String, u64>,
    pub translations: Vec<Translation>,
    pub executions: HashMap<u64, Executions>,
}

fn hex(field: Option<&str>) -> Result<u64, String> {
    let field = field.ok_or("missing field")?;
    u64::from_str_radix(field, 16).map_err(|_| format!("bad number {field}"))
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Parses the log; it must end with the plugin's `END` line (QEMU exited normally).
pub fn parse(text: &str) -> Result<PluginLog, String> {
    let mut log = PluginLog::default();
    let mut ended = false;
    for (number, line) in text.lines().enumerate() {
        let mut fields = line.split(' ');
        let at = |e: String| format!("plugin log line {}: {e}", number + 1);
        match fields.next() {
            Some("IMAGE") => {
                let name = fields.next().ok_or_else(|| at("missing name".into()))?;
                log.images.insert(name.to_owned(), hex(fields.next()).map_err(at)?);
            }
            Some("T") => {
                let id = hex(fields.next()).map_err(at)?;
                let vaddr = hex(fields.next()).map_err(at)?;
                let block_start = hex(fields.next()).map_err(at)?;
                let text = fields.next().ok_or_else(|| at("missing bytes".into()))?;
                // Pairs of hex digits, taken as bytes: a non-ASCII character is an error, not
                // a slice through it (the plugin_log fuzz target found the panic).
                let bytes = text
                    .as_bytes()
                    .chunks(2)
                    .map(|pair| match pair {
                        [high, low] => Some(hex_digit(*high)? << 4 | hex_digit(*low)?),
                        _ => None,
                    })
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(|| at("bad bytes".into()))?;
                let kind = fields
                    .next()
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| at("missing kind".into()))?
                    .to_owned();
                log.translations.push(Translation { id, vaddr, block_start, bytes, kind });
            }
            Some("X") => {
                let id = hex(fields.next()).map_err(at)?;
                let executions = Executions {
                    count: hex(fields.next()).map_err(at)?,
                    first: hex(fields.next()).map_err(at)?,
                    last: hex(fields.next()).map_err(at)?,
                    at_snap: hex(fields.next()).map_err(at)?,
                };
                log.executions.insert(id, executions);
            }
            Some("END") => ended = true,
            Some("") | None => {}
            Some(other) => return Err(at(format!("unknown record {other}"))),
        }
    }
    if !ended {
        return Err("the plugin log has no END line (QEMU did not exit normally)".into());
    }
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_record() {
        let text = "IMAGE loader 1e243000\nT 0 1e249100 1e249100 4157 entry\n\
                    T 4 1e250830 1e250810 b90f30 priv\nX 0 1 0 0 0\nX 4 2 4 9 1\nEND\n";
        let log = parse(text).unwrap();
        assert_eq!(log.images["loader"], 0x1e24_3000);
        assert_eq!(log.translations[1].bytes, vec![0xb9, 0x0f, 0x30]);
        assert_eq!(log.translations[1].kind, "priv");
        assert_eq!(log.executions[&4], Executions { count: 2, first: 4, last: 9, at_snap: 1 });
    }

    #[test]
    fn a_truncated_or_corrupt_log_is_an_error() {
        assert!(parse("IMAGE loader 10\n").unwrap_err().contains("no END"));
        assert!(parse("T 0 zz 1 00 io\nEND\n").unwrap_err().contains("line 1"));
        assert!(parse("Q\nEND\n").unwrap_err().contains("unknown record"));
        // Non-ASCII or odd-length bytes are an error line, not a panic (plugin_log fuzz target).
        assert!(parse("T 0 1 1 0\u{e9}0 io\nEND\n").unwrap_err().contains("bad bytes"));
        assert!(parse("T 0 1 1 abc io\nEND\n").unwrap_err().contains("bad bytes"));
        // An empty kind (a trailing space) is missing, not "" (plugin_log fuzz target).
        assert!(parse("T 0 1e27b 1e 41 \nEND\n").unwrap_err().contains("missing kind"));
    }
}
