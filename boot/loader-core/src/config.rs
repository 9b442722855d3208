//! The kernel's `.bootloader-config` section (bootloader_api 0.11.17, `BootloaderConfig`).
//!
//! The section is `BootloaderConfig::SERIALIZED_LEN` (133) bytes: a 16-byte UUID, the API
//! version (major, minor, patch as little-endian u16, then a pre-release byte), then the stack
//! size and the mappings. `BootloaderConfig::deserialize` checks length, UUID and encodings but
//! not the version, so the version is compared here first: a kernel built against another
//! bootloader_api may lay out `BootInfo` differently, and entering it would be a silent
//! corruption rather than an error.

use bootloader_api::BootloaderConfig;
use core::fmt;

const UUID_LEN: usize = 16;
const VERSION: core::ops::Range<usize> = UUID_LEN..UUID_LEN + 7;

/// The serialized default config of the bootloader_api this loader was built with: its UUID and
/// version bytes are what a kernel's section must carry.
fn reference() -> [u8; BootloaderConfig::SERIALIZED_LEN] {
    BootloaderConfig::new_default().serialize()
}

/// A version as it is serialized: major, minor, patch, pre-release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SerializedVersion {
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
    pub pre_release: bool,
}

impl SerializedVersion {
    fn from_bytes(b: &[u8]) -> Self {
        SerializedVersion {
            major: u16::from_le_bytes([b[0], b[1]]),
            minor: u16::from_le_bytes([b[2], b[3]]),
            patch: u16::from_le_bytes([b[4], b[5]]),
            pre_release: b[6] != 0,
        }
    }

    /// The version this loader was built with.
    pub fn supported() -> Self {
        Self::from_bytes(&reference()[VERSION])
    }
}

impl fmt::Display for SerializedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if self.pre_release {
            write!(f, "-pre")?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    Length(usize),
    NotABootloaderConfig,
    Version { found: SerializedVersion, supported: SerializedVersion },
    Invalid(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Length(len) => write!(
                f,
                ".bootloader-config is {len} bytes, expected {}",
                BootloaderConfig::SERIALIZED_LEN
            ),
            ConfigError::NotABootloaderConfig => {
                write!(f, ".bootloader-config does not start with bootloader_api's UUID")
            }
            ConfigError::Version { found, supported } => write!(
                f,
                "the kernel was built against bootloader_api {found}, this loader supports only {supported}"
            ),
            ConfigError::Invalid(why) => write!(f, ".bootloader-config is invalid: {why}"),
        }
    }
}

/// Reads a `.bootloader-config` section, refusing any version but the supported one.
pub fn parse(section: &[u8]) -> Result<BootloaderConfig, ConfigError> {
    if section.len() != BootloaderConfig::SERIALIZED_LEN {
        return Err(ConfigError::Length(section.len()));
    }
    let reference = reference();
    if section[..UUID_LEN] != reference[..UUID_LEN] {
        return Err(ConfigError::NotABootloaderConfig);
    }
    if section[VERSION] != reference[VERSION] {
        return Err(ConfigError::Version {
            found: SerializedVersion::from_bytes(&section[VERSION]),
            supported: SerializedVersion::supported(),
        });
    }
    BootloaderConfig::deserialize(section).map_err(ConfigError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootloader_api::config::Mapping;

    fn kernel_config() -> BootloaderConfig {
        let mut config = BootloaderConfig::new_default();
        config.mappings.physical_memory = Some(Mapping::Dynamic);
        config.kernel_stack_size = 128 * 1024;
        config
    }

    #[test]
    fn the_supported_version_is_0_11_17() {
        let v = SerializedVersion::supported();
        assert_eq!((v.major, v.minor, v.patch, v.pre_release), (0, 11, 17, false));
    }

    #[test]
    fn a_matching_config_round_trips() {
        let parsed = parse(&kernel_config().serialize()).unwrap();
        assert_eq!(parsed.kernel_stack_size, 128 * 1024);
        assert_eq!(parsed.mappings.physical_memory, Some(Mapping::Dynamic));
    }

    #[test]
    fn another_version_is_refused_with_both_versions_named() {
        let mut bytes = kernel_config().serialize();
        bytes[VERSION.start + 4] = 16; // patch 16
        let err = parse(&bytes).unwrap_err();
        assert!(matches!(err, ConfigError::Version { .. }));
        assert_eq!(
            err.to_string(),
            "the kernel was built against bootloader_api 0.11.16, this loader supports only 0.11.17"
        );
        let mut pre = kernel_config().serialize();
        pre[VERSION.end - 1] = 1;
        assert!(matches!(parse(&pre), Err(ConfigError::Version { .. })));
    }

    #[test]
    fn wrong_length_uuid_or_encoding_is_refused() {
        let bytes = kernel_config().serialize();
        assert_eq!(parse(&bytes[..132]), Err(ConfigError::Length(132)));
        let mut uuid = bytes;
        uuid[0] ^= 1;
        assert_eq!(parse(&uuid), Err(ConfigError::NotABootloaderConfig));
        let mut mapping = bytes;
        mapping[VERSION.end + 8] = 7; // the kernel-stack mapping's variant byte
        assert!(matches!(parse(&mapping), Err(ConfigError::Invalid(_))));
    }
}
