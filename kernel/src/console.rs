//! The serial console on COM1, and a lock-free emergency writer for fatal paths.
//!
//! The console is the uart_16550 driver behind a spin lock, used by `print!`/`println!`. Output
//! is formatted into a buffer and sent in chunks: uart_16550's `send_bytes` reads the line
//! status register once and then writes up to 16 bytes (the 16550 FIFO), so a long line costs
//! one LSR read per 16 bytes instead of one per byte. In a TD every register access is a host
//! exit, which puts the floor at 1 + 1/16 exits per byte.
//!
//! The driver's backend depends on where the kernel runs: natively it is `PioBackend` (IN/OUT);
//! in a TD (and under softtdx) it is [`DirectBackend`], which makes the
//! TDG.VP.VMCALL<Instruction.IO> hypercall itself, so that console output costs one exit per
//! access and no #VE. The serial self-test checks keep driving the UART through `PioBackend`
//! ([`with_pio_uart`]), so that the #VE path stays covered.
//!
//! The lock does not disable interrupts and #VE cannot be masked, so exception handlers never
//! take it: they print through [`EmergencyWriter`], which owns no state and in a TD also uses
//! hypercalls, so printing diagnostics from the #VE handler never re-enters the #VE path.

use crate::tdx::vmcall::VmcallError;
use core::fmt::{self, Write};
use spin::Mutex;
use tdx_ve::io::{IoDirection, PortWidth};
use uart_16550::backend::{Backend, PioBackend};
use uart_16550::{Config, Uart16550};

pub const COM1: u16 = 0x3F8;
/// Line status register and its "transmitter holding register empty" bit (16550 datasheet).
const LSR_OFFSET: u16 = 5;
const LSR_THR_EMPTY: u8 = 1 << 5;
/// How many line-status reads one emergency message may spend waiting for the transmitter.
/// In a TD each read is a host exit, and a host that never reports the transmitter empty must
/// not stall the fatal path (and the ReportFatalError after it): once the budget is spent, the
/// rest of the message is written without waiting. 16 bytes of FIFO drain in under 2 ms at
/// 115200 baud; 100,000 reads are far more than a working UART needs for a whole message.
const THR_POLL_BUDGET: u32 = 100_000;
/// The 16550 transmit FIFO; output is sent in chunks of this many bytes.
pub const FIFO_SIZE: usize = 16;
/// Bytes formatted before the console sends them; a multiple of the FIFO size.
const BUFFER_SIZE: usize = 16 * FIFO_SIZE;

/// COM1 through TDG.VP.VMCALL<Instruction.IO> directly, behind the port allowlist
/// ([`crate::tdx::io`]): one host exit per register access, no #VE.
pub struct DirectBackend {
    base: u16,
}

impl DirectBackend {
    /// # Safety
    /// The eight ports from `base` must be a 16550 that nothing else drives meanwhile.
    pub const unsafe fn new(base: u16) -> Self {
        Self { base }
    }
}

// Not inlined: the driver calls these from many places, and each inlined copy of a hypercall
// with its allowlist and error path is large (the kernel a TD boots stays under 96 KiB).
impl Backend for DirectBackend {
    #[inline(never)]
    unsafe fn read(&mut self, register_offset: u8) -> u8 {
        let port = self.base + register_offset as u16;
        match crate::tdx::io::read(port, PortWidth::Byte) {
            Ok(value) => value as u8,
            Err(error) => direct_io_failed(IoDirection::In, port, error),
        }
    }

    #[inline(never)]
    unsafe fn write(&mut self, register_offset: u8, value: u8) {
        let port = self.base + register_offset as u16;
        if let Err(error) = crate::tdx::io::write(port, PortWidth::Byte, value as u64) {
            direct_io_failed(IoDirection::Out, port, error)
        }
    }
}

/// A failed Instruction.IO hypercall of the console: as fatal as one inside the #VE handler.
/// The console does not stop the machine itself: it panics, and the panic handler prints
/// through the lock-free writer (the console lock is held here), sends ReportFatalError and
/// exits (kernel/src/main.rs). Stopping the machine is `exit`'s business, which prints through
/// this module: the console never calls it.
#[cold]
#[inline(never)]
fn direct_io_failed(direction: IoDirection, port: u16, error: VmcallError) -> ! {
    let (verb, preposition) = match direction {
        IoDirection::In => ("IN", "from"),
        IoDirection::Out => ("OUT", "to"),
    };
    panic!("direct I/O: {verb} {preposition} port {port:#x} (1-byte): {error}")
}

/// The console's driver, with the backend chosen at [`init`].
enum Uart {
    Pio(Uart16550<PioBackend>),
    Direct(Uart16550<DirectBackend>),
}

impl Uart {
    fn send_bytes_exact(&mut self, bytes: &[u8]) {
        match self {
            Uart::Pio(uart) => uart.send_bytes_exact(bytes),
            Uart::Direct(uart) => uart.send_bytes_exact(bytes),
        }
    }
}

static CONSOLE: Mutex<Option<Uart>> = Mutex::new(None);

/// Initialises COM1. In a TD (CPUID says so; under softtdx once the model is on) the console
/// uses [`DirectBackend`].
pub fn init() {
    let uart = if crate::tdx::detect() {
        // SAFETY: COM1 is the standard 16550 port on every machine this kernel boots on, and
        // nothing else drives it except through this console or the emergency writer.
        let mut uart = unsafe { Uart16550::new_with_backend(DirectBackend::new(COM1)) };
        uart.init(Config::default()).ok().map(|()| Uart::Direct(uart))
    } else {
        // SAFETY: as above.
        let uart = unsafe { Uart16550::new_port(COM1) };
        uart.ok().and_then(|mut uart| uart.init(Config::default()).ok().map(|()| Uart::Pio(uart)))
    };
    *CONSOLE.lock() = uart;
}

/// Runs `f` with a uart_16550 driver on COM1 that uses `PioBackend` (IN/OUT, so #VE in a TD),
/// for the serial self-test checks. The console's lock is held meanwhile, so no output
/// interleaves with what `f` does to the UART. None if the console did not initialise.
pub fn with_pio_uart<R>(f: impl FnOnce(&mut Uart16550<PioBackend>) -> R) -> Option<R> {
    let console = CONSOLE.lock();
    console.as_ref()?;
    // SAFETY: COM1 as in `init`; the console is locked, so this driver has the UART to itself.
    let mut uart = unsafe { Uart16550::new_port(COM1) }.ok()?;
    Some(f(&mut uart))
}

/// Formats into a buffer and sends it in chunks, turning `\n` into `\r\n`.
pub struct BufferedWriter<'a, F: FnMut(&[u8])> {
    buffer: [u8; BUFFER_SIZE],
    len: usize,
    send: &'a mut F,
}

impl<'a, F: FnMut(&[u8])> BufferedWriter<'a, F> {
    pub fn new(send: &'a mut F) -> Self {
        Self { buffer: [0; BUFFER_SIZE], len: 0, send }
    }

    fn push(&mut self, byte: u8) {
        if self.len == BUFFER_SIZE {
            self.flush();
        }
        self.buffer[self.len] = byte;
        self.len += 1;
    }

    pub fn flush(&mut self) {
        if self.len > 0 {
            (self.send)(&self.buffer[..self.len]);
            self.len = 0;
        }
    }
}

impl<F: FnMut(&[u8])> Write for BufferedWriter<'_, F> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                self.push(b'\r');
            }
            self.push(byte);
        }
        Ok(())
    }
}

impl<F: FnMut(&[u8])> Drop for BufferedWriter<'_, F> {
    fn drop(&mut self) {
        self.flush();
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    let mut console = CONSOLE.lock();
    match console.as_mut() {
        Some(uart) => {
            // Serial first, then the virtio console once it is up (a copy the harness compares).
            let mut send = |bytes: &[u8]| {
                uart.send_bytes_exact(bytes);
                crate::drivers::virtio_console::write(bytes);
            };
            let _ = BufferedWriter::new(&mut send).write_fmt(args);
        }
        None => {
            let _ = EmergencyWriter::new().write_fmt(args);
        }
    }
}

/// Sends `text` byte by byte, one LSR poll and one THR write per byte, as the console did
/// before it buffered: the bench's reference for exits per byte.
#[cfg(feature = "test-modes")]
pub fn print_bytewise_pio(text: &str) {
    let _ = with_pio_uart(|uart| {
        for byte in text.bytes() {
            if byte == b'\n' {
                uart.send_bytes_exact(b"\r");
            }
            uart.send_bytes_exact(&[byte]);
        }
    });
}

/// Sends `text` buffered, through `PioBackend` (so through #VE in a TD): the bench's reference
/// for what buffering alone saves.
#[cfg(feature = "test-modes")]
pub fn print_buffered_pio(text: &str) {
    let _ = with_pio_uart(|uart| {
        let mut send = |bytes: &[u8]| uart.send_bytes_exact(bytes);
        let _ = BufferedWriter::new(&mut send).write_str(text);
    });
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

/// A COM1 writer that takes no lock and, in a TD, raises no #VE: one value per message, with
/// one budget of line-status polls for the whole message ([`THR_POLL_BUDGET`]).
pub struct EmergencyWriter {
    polls_left: u32,
}

impl EmergencyWriter {
    /// A writer for one message.
    pub const fn new() -> Self {
        Self { polls_left: THR_POLL_BUDGET }
    }

    fn read_register(offset: u16) -> u8 {
        // SAFETY: COM1's registers have no memory side effects.
        unsafe { crate::port::raw_in(COM1 + offset, PortWidth::Byte) as u8 }
    }

    fn write_register(offset: u16, value: u8) {
        // SAFETY: COM1's registers have no memory side effects.
        unsafe { crate::port::raw_out(COM1 + offset, PortWidth::Byte, value as u32) };
    }

    fn write_byte(&mut self, byte: u8) {
        while self.polls_left > 0 {
            self.polls_left -= 1;
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
                self.write_byte(b'\r');
            }
            self.write_byte(byte);
        }
        Ok(())
    }
}

/// COM1 written with the native port instructions, never through the #VE path: the softtdx
/// model's host console, and the end line of a folded boot's segment (test image only). Under
/// softtdx it must run with RFLAGS.TF clear, or the model would deliver a #VE for each access.
#[cfg(feature = "test-modes")]
pub struct NativeConsole;

#[cfg(feature = "test-modes")]
impl Write for NativeConsole {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                native_out(b'\r');
            }
            for _ in 0..100_000 {
                // SAFETY: COM1's line status register has no memory side effects.
                if unsafe { crate::port::inb(COM1 + LSR_OFFSET) } & LSR_THR_EMPTY != 0 {
                    break;
                }
            }
            native_out(byte);
        }
        Ok(())
    }
}

#[cfg(feature = "test-modes")]
fn native_out(byte: u8) {
    // SAFETY: COM1's transmit register has no memory side effects.
    unsafe { crate::port::outb(COM1, byte) };
}
