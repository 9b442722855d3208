//! Reads the kernel ELF from the loader's own volume.

use crate::frames;
use core::fmt;
use loader_core::paging::PAGE_4K;
use uefi::proto::media::file::{File, FileAttribute, FileInfo, FileMode};
use uefi::{boot, cstr16, CStr16};

/// Where the image builder (`boot/`) puts the kernel on the ESP.
pub const KERNEL_PATH: &CStr16 = cstr16!("\\kernel.elf");

#[derive(Debug)]
pub struct FileError {
    what: &'static str,
    status: uefi::Status,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {} \\kernel.elf on the loader's volume: {:?}", self.what, self.status)
    }
}

fn failed(what: &'static str) -> impl Fn(uefi::Error) -> FileError {
    move |e| FileError { what, status: e.status() }
}

/// The kernel file, in pages that stay allocated (reported as `Bootloader`, as
/// `BootInfo::kernel_addr` points there).
pub fn read() -> Result<&'static [u8], FileError> {
    let mut fs =
        boot::get_image_file_system(boot::image_handle()).map_err(failed("open the volume of"))?;
    let mut root = fs.open_volume().map_err(failed("open the volume of"))?;
    let handle =
        root.open(KERNEL_PATH, FileMode::Read, FileAttribute::empty()).map_err(failed("open"))?;
    let mut file = handle
        .into_regular_file()
        .ok_or(FileError { what: "read (a directory)", status: uefi::Status::INVALID_PARAMETER })?;
    #[repr(C, align(8))]
    struct InfoBuffer([u8; 512]);
    let mut info = InfoBuffer([0; 512]);
    let size = file
        .get_info::<FileInfo>(&mut info.0)
        .map_err(|e| FileError { what: "stat", status: e.status() })?
        .file_size() as usize;
    let pages = size.div_ceil(PAGE_4K as usize).max(1);
    let start = frames::allocate_zeroed(pages).map_err(failed("allocate memory for"))?;
    // SAFETY: fresh pages of at least `size` bytes, ours alone, kept until the kernel runs.
    let buffer = unsafe { frames::bytes_mut(start, size) };
    let read = file.read(buffer).map_err(failed("read"))?;
    if read != size {
        return Err(FileError { what: "read all of", status: uefi::Status::END_OF_FILE });
    }
    // `file`, `root` and `fs` close here, before ExitBootServices.
    Ok(buffer)
}
