//! The serial console on COM1, and a lock-free emergency writer for fatal paths.
//!
//! The console is the uart_16550 driver behind a spin lock, used by `print!`/`println!`. The
//! lock does not disable interrupts and #VE cannot be masked, so exception handlers never take
//! it: they print through [`EmergencyWriter`], which owns no state. In a TD the emergency writer
//! talks to the UART with TDG.VP.VMCALL<Instruction.IO> directly instead of executing IN/OUT,
//! so that printing diagnostics from the #VE handler never re-enters the #VE path.

use core::fmt::{self, Write};
use spin::Mutex;
use tdx_ve::io::PortWidth;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

pub const COM1: u16 = 0x3F8;
/// Line status register and its "transmitter holding register empty" bit (16550 datasheet).
const LSR_OFFSET: u16 = 5;
const LSR_THR_EMPTY: u8 = 1 << 5;
/// How long the emergency writer waits for the transmitter before it writes anyway.
const THR_POLL_LIMIT: u32 = 100_000;

static CONSOLE: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);

pub fn init() {
    // SAFETY: COM1 is the standard 16550 port on every machine this kernel boots on (QEMU q35
    // and TD guests), and nothing else in the kernel drives it except through this console or
    // the emergency writer.
    let uart = unsafe { Uart16550::new_port(COM1) };
    if let Ok(mut uart) = uart {
        if uart.init(Config::default()).is_ok() {
            *CONSOLE.lock() = Some(uart);
        }
    }
}

/// Runs `f` with the console's driver, for the serial self-test checks.
pub fn with_uart<R>(f: impl FnOnce(&mut Uart16550<PioBackend>) -> R) -> Option<R> {
    CONSOLE.lock().as_mut().map(f)
}

struct ConsoleWriter<'a>(&'a mut Uart16550<PioBackend>);

impl Write for ConsoleWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                self.0.send_bytes_exact(b"\r");
            }
            self.0.send_bytes_exact(&[byte]);
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    let mut console = CONSOLE.lock();
    match console.as_mut() {
        Some(uart) => {
            let _ = ConsoleWriter(uart).write_fmt(args);
        }
        None => {
            let _ = EmergencyWriter.write_fmt(args);
        }
    }
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::console::_print(format_args!($($arg)*)));
}

#[macro_export]
macro_rules! println {
    () => ($crate::print!("\n"));
    ($($arg:tt)*) => ($crate::console::_print(format_args!("{}\n", format_args!($($arg)*))));
}

/// A stateless COM1 writer that takes no lock and, in a TD, raises no #VE.
pub struct EmergencyWriter;

impl EmergencyWriter {
    fn read_register(offset: u16) -> u8 {
        // SAFETY: COM1's registers have no memory side effects.
        unsafe { crate::port::raw_in(COM1 + offset, PortWidth::Byte) as u8 }
    }

    fn write_register(offset: u16, value: u8) {
        // SAFETY: COM1's registers have no memory side effects.
        unsafe { crate::port::raw_out(COM1 + offset, PortWidth::Byte, value as u32) };
    }

    fn write_byte(byte: u8) {
        for _ in 0..THR_POLL_LIMIT {
            if Self::read_register(LSR_OFFSET) & LSR_THR_EMPTY != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        Self::write_register(0, byte);
    }
}

impl Write for EmergencyWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                Self::write_byte(b'\r');
            }
            Self::write_byte(byte);
        }
        Ok(())
    }
}
