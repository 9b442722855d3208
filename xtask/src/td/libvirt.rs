//! `cargo xtask libvirt-xml`: a libvirt domain that boots the unikernel image in a TD, for
//! hosts managed through libvirt (`virsh define`, then `virsh start --console`).
//!
//! Checked against libvirt's `docs/formatdomain.rst` ("Launch Security", "BIOS bootloader",
//! "Hypervisor features") and its `tests/qemuxmlconfdata/launch-security-tdx.xml`:
//!
//! - `<quoteGenerationService/>` inside `<launchSecurity type='tdx'>` (`--quote-service`) has
//!   libvirt give QEMU the host's Quote Generation Service for TDG.VP.VMCALL<GetQuote>
//!   (ATTEST-FACTS §4); without it QEMU answers QGS_UNAVAILABLE. Not checked against a libvirt
//!   here: no libvirt with TDX is installed.
//! - `<launchSecurity type='tdx'><policy>` holds the TD ATTRIBUTES word, which libvirt passes
//!   to QEMU as the `tdx-guest` object's `attributes`: bit 0 DEBUG, bit 28 SEPT_VE_DISABLE
//!   ([`super::qemu::td_attributes`]). Without `<policy>` QEMU's default, 0x10000000, applies;
//!   we always write it.
//! - `<loader type='rom'>` makes libvirt pass the firmware with `-bios`, the only way to load
//!   TDVF (no pflash in a TD) and, with no `<nvram>`, a stateless firmware.
//! - `<ioapic driver='qemu'/>` is libvirt's spelling of `kernel-irqchip=split`, which TDX
//!   requires; `<smm state='off'/>` because a TD has no SMM.
//! - There is no `<interface>`: the domain has no network. USB and the memory balloon are
//!   turned off; nothing here uses them.
//! - The virtio console: a second `<console>` with a `virtio` target on a virtio-serial
//!   controller with one port (libvirt `docs/formatdomain.rst`, "Consoles, serial, parallel &
//!   channel devices" and "Controllers": `ports` is virtio-serial's `max_ports`), writing to a
//!   file beside the domain's QEMU log. QEMU makes it modern-only with ACCESS_PLATFORM in a TD
//!   by itself. The first `<console>` stays the serial one that `virsh console` shows.
//! - `isa-debug-exit` has no libvirt element, so it goes through `<qemu:commandline>` (libvirt
//!   `docs/drvqemu.rst`, "Pass-through of arbitrary qemu commands", namespace
//!   `http://libvirt.org/schemas/domain/qemu/1.0`). To see a TD's ReportFatalError message in
//!   QEMU's log (`/var/log/libvirt/qemu/NAME.log`), add `-d guest_errors` there by hand; it is
//!   left out because OVMF's device probing floods that log (see [`super::qemu`]).
//!
//! libvirt's documentation asks for no special `<memoryBacking>` for TDX: QEMU 10.1 backs a
//! TD's private memory with guest_memfd by itself (`tdx_guest_init` sets
//! `require_guest_memfd`), so the domain leaves memory backing at libvirt's default.

use super::qemu::{td_attributes, utf8_path, validate_memory, validate_vcpus, DEBUG_EXIT_IOBASE};
use anyhow::{bail, Result};
use std::fmt::Write as _;
use std::path::Path;

/// libvirt's namespace for `<qemu:commandline>`.
pub const QEMU_NAMESPACE: &str = "http://libvirt.org/schemas/domain/qemu/1.0";

/// Escapes text for XML content and single- or double-quoted attribute values.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// XML 1.0 cannot carry most control characters at all, escaped or not.
fn check_xml_text(what: &str, text: &str) -> Result<()> {
    if let Some(c) = text.chars().find(|&c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
        bail!("{what} {text:?} contains the control character {c:?}, which XML cannot carry");
    }
    Ok(())
}

/// A libvirt domain for the image. `name` becomes the domain name (`virsh start NAME`).
/// Fails with one line for out-of-range vCPUs or memory, an empty name, or a path that is not
/// UTF-8 or holds characters XML cannot carry; everything else is escaped.
pub fn domain_xml(
    name: &str,
    image: &Path,
    firmware: &Path,
    vcpus: u32,
    memory_mib: u64,
    sept_ve_disable: bool,
    debug: bool,
) -> Result<String> {
    validate_vcpus(vcpus)?;
    validate_memory(memory_mib)?;
    if name.trim().is_empty() {
        bail!("the libvirt domain name must not be empty");
    }
    let image = utf8_path("image", image)?;
    let firmware = utf8_path("firmware", firmware)?;
    check_xml_text("domain name", name)?;
    check_xml_text("image path", image)?;
    check_xml_text("firmware path", firmware)?;

    let policy = td_attributes(sept_ve_disable, debug);
    let name = xml_escape(name);
    let image = xml_escape(image);
    let firmware = xml_escape(firmware);

    let mut xml = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        xml,
        "\
<domain type='kvm' xmlns:qemu='{QEMU_NAMESPACE}'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu placement='static'>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <loader type='rom'>{firmware}</loader>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
    <apic/>
    <ioapic driver='qemu'/>
    <smm state='off'/>
  </features>
  <cpu mode='host-passthrough'/>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{image}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>
    <serial type='pty'>
      <target port='0'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <controller type='virtio-serial' index='0' ports='1'/>
    <console type='file'>
      <source path='/var/log/libvirt/qemu/{name}-virtio-console.log'/>
      <target type='virtio' port='0'/>
    </console>
    <memballoon model='none'/>
  </devices>
  <launchSecurity type='tdx'>
    <policy>{policy:#x}</policy>
  </launchSecurity>
  <qemu:commandline>
    <qemu:arg value='-device'/>
    <qemu:arg value='isa-debug-exit,iobase={DEBUG_EXIT_IOBASE:#x},iosize=0x04'/>
  </qemu:commandline>
</domain>
"
    );
    Ok(xml)
}

/// `xml` from [`domain_xml`] with a `<quoteGenerationService/>` in its `<launchSecurity>`.
pub fn with_quote_service(xml: &str) -> String {
    xml.replacen("  </launchSecurity>", "    <quoteGenerationService/>\n  </launchSecurity>", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml(sept: bool, debug: bool) -> String {
        domain_xml(
            "tdx-unikernel",
            Path::new("/img/disk.img"),
            Path::new("/fw/OVMF.fd"),
            1,
            2048,
            sept,
            debug,
        )
        .unwrap()
    }

    #[test]
    fn policy_follows_the_attribute_bits() {
        assert!(xml(true, false).contains("<policy>0x10000000</policy>"));
        assert!(xml(true, true).contains("<policy>0x10000001</policy>"));
        assert!(xml(false, true).contains("<policy>0x1</policy>"));
        assert!(xml(false, false).contains("<policy>0x0</policy>"));
    }

    #[test]
    fn no_network_no_pflash_split_irqchip() {
        let xml = xml(true, false);
        assert!(!xml.contains("<interface"));
        assert!(!xml.contains("pflash"));
        assert!(!xml.contains("<nvram"));
        assert!(xml.contains("<ioapic driver='qemu'/>"));
        assert!(xml.contains("<loader type='rom'>/fw/OVMF.fd</loader>"));
    }

    #[test]
    fn special_characters_are_escaped() {
        let xml = domain_xml(
            "a<b>&'c\"",
            Path::new("/img/it's <new> & \"improved\".img"),
            Path::new("/fw/a&b.fd"),
            2,
            4096,
            true,
            false,
        )
        .unwrap();
        assert!(xml.contains("<name>a&lt;b&gt;&amp;&apos;c&quot;</name>"));
        assert!(xml.contains(
            "<source file='/img/it&apos;s &lt;new&gt; &amp; &quot;improved&quot;.img'/>"
        ));
        assert!(xml.contains("<loader type='rom'>/fw/a&amp;b.fd</loader>"));
        // Every quote in the output is markup: none comes from the inputs (the name's appears
        // escaped twice: the domain name and the virtio console's file).
        assert_eq!(xml.matches("&apos;").count(), 3);
        assert!(xml.contains("<source path='/var/log/libvirt/qemu/a&lt;b&gt;&amp;&apos;c&quot;-virtio-console.log'/>"));
    }

    #[test]
    fn bad_inputs_are_one_line_errors() {
        let firmware = Path::new("/fw.fd");
        let cases = [
            domain_xml("", Path::new("/i"), firmware, 1, 2048, true, false),
            domain_xml("x", Path::new("/i\u{1}"), firmware, 1, 2048, true, false),
            domain_xml("x", Path::new("/i"), firmware, 0, 2048, true, false),
            domain_xml("x", Path::new("/i"), firmware, 1, 100, true, false),
        ];
        for case in cases {
            let error = case.unwrap_err().to_string();
            assert!(!error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn well_formed_enough() {
        // No XML parser among the allowed crates: check that every element opened is closed, in
        // order, which catches the usual template slips.
        let xml = xml(true, true);
        let mut stack: Vec<String> = Vec::new();
        let mut rest = xml.as_str();
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').unwrap() + start;
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if let Some(closing) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(closing), "in\n{xml}");
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap().to_string());
            }
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    #[test]
    fn quote_service_goes_inside_launch_security() {
        let xml = domain_xml("x", Path::new("/i"), Path::new("/f"), 1, 2048, true, false).unwrap();
        let with = with_quote_service(&xml);
        let at = with.find("<quoteGenerationService/>").unwrap();
        assert!(with.find("<launchSecurity type='tdx'>").unwrap() < at);
        assert!(at < with.find("</launchSecurity>").unwrap());
        assert_eq!(with.matches("quoteGenerationService").count(), 1);
    }
}
