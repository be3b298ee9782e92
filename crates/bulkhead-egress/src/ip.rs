//! The address classifier: which IP addresses are public, and why the
//! others are not. Pure; the guard applies it to every address a request
//! could connect to.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`), ULA `fc00::/7`,
    /// site-local `fec0::/10`, local-use NAT64 `64:ff9b:1::/48`.
    Private,
    /// `169.254/16`, `fe80::/10`.
    LinkLocal,
    /// Cloud instance metadata: `169.254.169.254`, `fd00:ec2::254`.
    Metadata,
    /// Carrier-grade NAT, `100.64.0.0/10`.
    SharedCgnat,
    /// Multicast and broadcast.
    Multicast,
    /// Documentation, benchmarking, IETF and other special-purpose or
    /// unallocated ranges (for IPv6: everything outside `2000::/3`).
    Reserved,
}

impl Reason {
    /// A word for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::Loopback => "loopback",
            Reason::Private => "private",
            Reason::LinkLocal => "link-local",
            Reason::Metadata => "cloud metadata",
            Reason::SharedCgnat => "carrier-grade NAT",
            Reason::Multicast => "multicast",
            Reason::Reserved => "reserved",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `None` for a public address, else why it is not one.
pub fn classify(ip: IpAddr) -> Option<Reason> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Option<Reason> {
    const RANGES: &[([u8; 4], u32, Reason)] = &[
        ([169, 254, 169, 254], 32, Reason::Metadata),
        ([0, 0, 0, 0], 8, Reason::Unspecified),
        ([10, 0, 0, 0], 8, Reason::Private),
        ([100, 64, 0, 0], 10, Reason::SharedCgnat),
        ([127, 0, 0, 0], 8, Reason::Loopback),
        ([169, 254, 0, 0], 16, Reason::LinkLocal),
        ([172, 16, 0, 0], 12, Reason::Private),
        ([192, 0, 0, 0], 24, Reason::Reserved),
        ([192, 0, 2, 0], 24, Reason::Reserved),
        ([192, 88, 99, 0], 24, Reason::Reserved),
        ([192, 168, 0, 0], 16, Reason::Private),
        ([198, 18, 0, 0], 15, Reason::Reserved),
        ([198, 51, 100, 0], 24, Reason::Reserved),
        ([203, 0, 113, 0], 24, Reason::Reserved),
        ([224, 0, 0, 0], 4, Reason::Multicast),
        ([255, 255, 255, 255], 32, Reason::Multicast),
        ([240, 0, 0, 0], 4, Reason::Reserved),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, reason)| *reason)
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

/// The IPv4 address embedded at bit offset `shift` (from the right).
fn embedded(ip: Ipv6Addr, shift: u32) -> Ipv4Addr {
    Ipv4Addr::from(((u128::from(ip) >> shift) & 0xffff_ffff) as u32)
}

fn classify_v6(ip: Ipv6Addr) -> Option<Reason> {
    if ip.is_unspecified() {
        return Some(Reason::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Reason::Loopback);
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some(Reason::Metadata);
    }
    // Forms that carry an IPv4 address reach it: judge the IPv4 address
    // (IPv4-mapped `::ffff:0:0/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`).
    if in_v6(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96)
        || in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96)
    {
        return classify_v4(embedded(ip, 0));
    }
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        return classify_v4(embedded(ip, 80));
    }
    const RANGES: &[([u16; 8], u32, Reason)] = &[
        // IPv4-compatible (deprecated), IPv4-translated, discard-only.
        ([0, 0, 0, 0, 0, 0, 0, 0], 96, Reason::Reserved),
        ([0, 0, 0, 0, 0xffff, 0, 0, 0], 96, Reason::Reserved),
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, Reason::Private),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, Reason::Reserved),
        // IETF protocol assignments (Teredo, ORCHID, …) and documentation.
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, Reason::Reserved),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, Reason::Reserved),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, Reason::Reserved),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, Reason::Private),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, Reason::LinkLocal),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, Reason::Private),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Reason::Multicast),
    ];
    if let Some((_, _, reason)) = RANGES
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
    {
        return Some(*reason);
    }
    // Only 2000::/3 is allocated as global unicast.
    if !in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        return Some(Reason::Reserved);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Option<Reason> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn every_range_is_classified() {
        use Reason::*;
        let cases: &[(&str, Option<Reason>)] = &[
            // IPv4
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("10.0.0.1", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.1", None),
            ("172.15.255.255", None),
            ("192.168.1.1", Some(Private)),
            ("169.254.0.1", Some(LinkLocal)),
            ("169.254.169.254", Some(Metadata)),
            ("100.64.0.1", Some(SharedCgnat)),
            ("100.127.255.255", Some(SharedCgnat)),
            ("100.100.100.200", Some(SharedCgnat)),
            ("100.128.0.1", None),
            ("100.63.255.255", None),
            ("192.0.0.192", Some(Reserved)),
            ("192.0.2.1", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            ("198.51.100.1", Some(Reserved)),
            ("203.0.113.1", Some(Reserved)),
            ("224.0.0.1", Some(Multicast)),
            ("255.255.255.255", Some(Multicast)),
            ("240.0.0.1", Some(Reserved)),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("93.184.216.34", None),
            // IPv6
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("fc00::1", Some(Private)),
            ("fd12:3456::1", Some(Private)),
            ("fd00:ec2::254", Some(Metadata)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fec0::1", Some(Private)),
            ("ff02::1", Some(Multicast)),
            ("2001:db8::1", Some(Reserved)),
            ("2001::1", Some(Reserved)),
            ("100::1", Some(Reserved)),
            ("::127.0.0.1", Some(Reserved)),
            ("::8.8.8.8", Some(Reserved)),
            ("4000::1", Some(Reserved)),
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001::200e", None),
            // IPv4 inside IPv6
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:169.254.169.254", Some(Metadata)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::ffff:100.64.0.1", Some(SharedCgnat)),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::7f00:1", Some(Loopback)),
            ("64:ff9b::808:808", None),
            ("64:ff9b:1::1", Some(Private)),
            ("2002:7f00:1::", Some(Loopback)),
            ("2002:a00:1::1", Some(Private)),
            ("2002:808:808::1", None),
        ];
        for (ip, want) in cases {
            assert_eq!(c(ip), *want, "{ip}");
        }
    }
}
