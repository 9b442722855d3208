//! A GPT disk with one FAT EFI system partition holding `EFI/BOOT/BOOTX64.EFI` (our loader) and
//! `kernel.elf`, written with the gpt and fatfs crates.
//!
//! Reproducible: the disk and partition GUIDs, the FAT volume id and label and every timestamp
//! are fixed, so the same loader and kernel give the same bytes.
//! Layout (UEFI 2.10, 5 "GUID Partition Table (GPT) Disk Layout"): LBA 0 protective MBR,
//! LBA 1 GPT header, the ESP from 1 MiB, the backup GPT in the last MiB.

use std::io::{Cursor, Seek, SeekFrom, Write};

/// Bumped whenever the bytes this module writes for the same inputs change; part of the
/// image's content key in xtask.
pub const LAYOUT_VERSION: u32 = 1;

const SECTOR: u64 = 512;
const MIB: u64 = 1024 * 1024;
const DISK_GUID: uuid::Uuid = uuid::Uuid::from_u128(0x7d1c_4a1e_5e1f_4b7a_9d2e_0b00_7d00_0001);
const ESP_GUID: uuid::Uuid = uuid::Uuid::from_u128(0x7d1c_4a1e_5e1f_4b7a_9d2e_0b00_7d00_0002);
const VOLUME_ID: u32 = 0x7d1c_4a1e;
const VOLUME_LABEL: [u8; 11] = *b"TDX-UNIKRNL";

/// Where the loader looks for the kernel (`boot/loader/src/kernel_file.rs`).
pub const KERNEL_FILE: &str = "kernel.elf";

/// Every FAT timestamp: 2020-01-01 00:00, a fixed date, whatever fatfs's features: with its
/// `chrono` feature (which any crate in the build could turn on) its default is the clock.
#[derive(Debug)]
struct FixedTime;

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date { year: 2020, month: 1, day: 1 }
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time { hour: 0, min: 0, sec: 0, millis: 0 },
        }
    }
}

static FIXED_TIME: FixedTime = FixedTime;

fn io(context: &'static str) -> impl Fn(std::io::Error) -> String {
    move |e| format!("{context}: {e}")
}

/// The FAT partition's bytes.
fn fat_partition(loader: &[u8], kernel: &[u8]) -> Result<Vec<u8>, String> {
    // Room for both files, FAT overhead and slack, rounded to whole MiB.
    let payload = (loader.len() + kernel.len()) as u64;
    let size = (payload + payload / 8 + 2 * MIB).next_multiple_of(MIB);
    let mut volume = Cursor::new(vec![0u8; size as usize]);
    fatfs::format_volume(
        &mut volume,
        fatfs::FormatVolumeOptions::new().volume_id(VOLUME_ID).volume_label(VOLUME_LABEL),
    )
    .map_err(io("cannot format the FAT volume"))?;
    volume.seek(SeekFrom::Start(0)).map_err(io("cannot rewind the FAT volume"))?;
    {
        let options = fatfs::FsOptions::new().time_provider(&FIXED_TIME);
        let fs = fatfs::FileSystem::new(&mut volume, options)
            .map_err(io("cannot open the new FAT volume"))?;
        {
            let root = fs.root_dir();
            let boot = root
                .create_dir("EFI")
                .and_then(|efi| efi.create_dir("BOOT"))
                .map_err(io("cannot create EFI/BOOT"))?;
            boot.create_file("BOOTX64.EFI")
                .and_then(|mut f| f.write_all(loader))
                .map_err(io("cannot write EFI/BOOT/BOOTX64.EFI"))?;
            root.create_file(KERNEL_FILE)
                .and_then(|mut f| f.write_all(kernel))
                .map_err(io("cannot write the kernel"))?;
        }
        fs.unmount().map_err(io("cannot finish the FAT volume"))?;
    }
    Ok(volume.into_inner())
}

/// The whole disk's bytes.
pub fn disk_image(loader: &[u8], kernel: &[u8]) -> Result<Vec<u8>, String> {
    let fat = fat_partition(loader, kernel)?;
    let total = MIB + fat.len() as u64 + MIB;
    let mut disk = Cursor::new(vec![0u8; total as usize]);
    let sectors = u32::try_from(total / SECTOR - 1).map_err(|_| "disk too large".to_owned())?;
    gpt::mbr::ProtectiveMBR::with_lb_size(sectors)
        .overwrite_lba0(&mut disk)
        .map_err(|e| format!("cannot write the protective MBR: {e}"))?;
    let mut gpt = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(disk, Some(DISK_GUID))
        .map_err(|e| format!("cannot create the GPT: {e}"))?;
    let id = gpt
        .add_partition(
            "EFI system",
            fat.len() as u64,
            gpt::partition_types::EFI,
            0,
            Some(MIB / SECTOR),
        )
        .map_err(|e| format!("cannot add the EFI system partition: {e}"))?;
    let mut partitions = gpt.take_partitions();
    let esp = partitions.get_mut(&id).expect("the partition just added");
    esp.part_guid = ESP_GUID;
    let start = esp.bytes_start(gpt::disk::LogicalBlockSize::Lb512).map_err(|e| e.to_string())?;
    gpt.update_partitions(partitions).map_err(|e| format!("cannot update the GPT: {e}"))?;
    let mut disk = gpt.write().map_err(|e| format!("cannot write the GPT: {e}"))?;
    disk.seek(SeekFrom::Start(start)).map_err(io("cannot seek to the ESP"))?;
    disk.write_all(&fat).map_err(io("cannot write the ESP"))?;
    Ok(disk.into_inner())
}

/// The loader (`EFI/BOOT/BOOTX64.EFI`) and `kernel.elf` of a disk image [`disk_image`] wrote,
/// read back through its GPT and FAT (for `cargo xtask measure` and the TPM run, which must
/// hash exactly what the firmware and the loader read).
pub fn read_files(image: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    use std::io::Read;
    let disk = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .open_from_device(Cursor::new(image.to_vec()))
        .map_err(|e| format!("no GPT: {e}"))?;
    let esp = disk
        .partitions()
        .values()
        .find(|p| p.part_type_guid == gpt::partition_types::EFI)
        .ok_or("no EFI system partition")?;
    let start = usize::try_from(esp.first_lba * SECTOR).map_err(|e| e.to_string())?;
    let end = usize::try_from((esp.last_lba + 1) * SECTOR).map_err(|e| e.to_string())?;
    let partition = image.get(start..end).ok_or("the ESP runs past the end of the image")?;
    let fs = fatfs::FileSystem::new(Cursor::new(partition.to_vec()), fatfs::FsOptions::new())
        .map_err(io("the ESP is not a FAT volume"))?;
    let read = |path: &str| -> Result<Vec<u8>, String> {
        let mut bytes = Vec::new();
        fs.root_dir()
            .open_file(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| format!("cannot read {path} from the ESP: {e}"))?;
        Ok(bytes)
    };
    Ok((read("EFI/BOOT/BOOTX64.EFI")?, read(KERNEL_FILE)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn files_read_back_as_written() {
        let image = disk_image(&fake_loader(), &fake_kernel()).unwrap();
        assert_eq!(read_files(&image).unwrap(), (fake_loader(), fake_kernel()));
        assert!(read_files(&image[..4096]).is_err());
    }

    fn fake_loader() -> Vec<u8> {
        let mut v = b"MZ fake loader".to_vec();
        v.resize(70_000, 0x5a);
        v
    }

    fn fake_kernel() -> Vec<u8> {
        (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn same_inputs_give_the_same_bytes() {
        let a = disk_image(&fake_loader(), &fake_kernel()).unwrap();
        let b = disk_image(&fake_loader(), &fake_kernel()).unwrap();
        assert_eq!(a.len(), b.len());
        assert!(a == b, "two builds from the same inputs differ");
        let mut other = fake_loader();
        other[100] ^= 1;
        assert!(disk_image(&other, &fake_kernel()).unwrap() != a, "a changed loader must show");
    }

    #[test]
    fn the_disk_has_a_protective_mbr_a_gpt_and_both_files() {
        let image = disk_image(&fake_loader(), &fake_kernel()).unwrap();
        assert_eq!(&image[510..512], &[0x55, 0xaa]);
        assert_eq!(image[446 + 4], 0xee, "protective MBR partition type");
        assert_eq!(&image[512..520], b"EFI PART");
        let disk = gpt::GptConfig::new()
            .writable(false)
            .open_from_device(Cursor::new(image.clone()))
            .unwrap();
        assert_eq!(*disk.guid(), DISK_GUID);
        let esp = &disk.partitions()[&1];
        assert_eq!(esp.part_type_guid, gpt::partition_types::EFI);
        assert_eq!(esp.part_guid, ESP_GUID);
        assert_eq!(esp.first_lba, 2048, "ESP aligned to 1 MiB");
        let start = esp.first_lba as usize * 512;
        let end = (esp.last_lba as usize + 1) * 512;
        let fs = fatfs::FileSystem::new(
            Cursor::new(image[start..end].to_vec()),
            fatfs::FsOptions::new(),
        )
        .unwrap();
        assert_eq!(fs.volume_id(), VOLUME_ID);
        let read = |path: &str| {
            let mut bytes = Vec::new();
            fs.root_dir().open_file(path).unwrap().read_to_end(&mut bytes).unwrap();
            bytes
        };
        assert_eq!(read("EFI/BOOT/BOOTX64.EFI"), fake_loader());
        assert_eq!(read(KERNEL_FILE), fake_kernel());
        let entry = fs.root_dir().iter().map(|e| e.unwrap()).find(|e| e.file_name() == KERNEL_FILE);
        assert_eq!(entry.unwrap().modified().date, fatfs::Date { year: 2020, month: 1, day: 1 });
    }
}
