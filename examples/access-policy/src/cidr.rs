//! IP networks in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or a bare address), parsed with
//! `std::net` alone and matched by comparing the masked bits of an address with the network's.
//!
//! IPv4 and IPv6 are kept apart: `0.0.0.0/0` is every IPv4 client and `::/0` every IPv6 client.
//! An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a dual-stack socket reports for an IPv4
//! peer) is treated as the IPv4 address it carries, both as a client and as a rule.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One network: the bits an address must start with, and how many bits that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpNetwork {
    /// An IPv4 network; `bits` has every bit past `prefix` cleared.
    V4 { bits: u32, prefix: u8 },
    /// An IPv6 network; `bits` has every bit past `prefix` cleared.
    V6 { bits: u128, prefix: u8 },
}

impl IpNetwork {
    /// Parses `address/prefix`, or a bare address (a network of that one address).
    ///
    /// Rejects a prefix longer than the address family allows and an address with bits set
    /// past the prefix (`10.1.2.3/8`): such a rule is most likely a typo, and silently widening
    /// it to `10.0.0.0/8` would let in far more clients than its author meant.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (address_text, prefix_text) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr =
            address_text.parse().map_err(|_| format!("{address_text:?} is not an IPv4 or IPv6 address"))?;
        let (family, max_prefix) = match address {
            IpAddr::V4(_) => ("IPv4", 32),
            IpAddr::V6(_) => ("IPv6", 128),
        };
        let prefix = match prefix_text {
            None => max_prefix,
            Some(p) => parse_prefix(p, family, max_prefix)?,
        };

        let (network, host_bits_set) = match address {
            IpAddr::V4(a) => {
                let (bits, mask) = (u32::from(a), v4_mask(prefix));
                (IpNetwork::V4 { bits: bits & mask, prefix }, bits & !mask != 0)
            }
            IpAddr::V6(a) => {
                let (bits, mask) = (u128::from(a), v6_mask(prefix));
                (IpNetwork::V6 { bits: bits & mask, prefix }, bits & !mask != 0)
            }
        };
        if host_bits_set {
            return Err(format!("{address} has bits set past the /{prefix} prefix (the network is {network})"));
        }
        Ok(network.unmapped())
    }

    /// Whether `address` is inside this network.
    pub fn contains(&self, address: IpAddr) -> bool {
        match (*self, address.to_canonical()) {
            (IpNetwork::V4 { bits, prefix }, IpAddr::V4(a)) => u32::from(a) & v4_mask(prefix) == bits,
            (IpNetwork::V6 { bits, prefix }, IpAddr::V6(a)) => u128::from(a) & v6_mask(prefix) == bits,
            _ => false,
        }
    }

    /// A rule inside `::ffff:0:0/96` written in IPv6 form becomes the IPv4 rule it means, so it
    /// matches the same clients as the IPv4 spelling would (clients are unmapped the same way).
    fn unmapped(self) -> Self {
        match self {
            IpNetwork::V6 { bits, prefix } if prefix >= 96 => match Ipv6Addr::from(bits).to_ipv4_mapped() {
                Some(v4) => IpNetwork::V4 { bits: u32::from(v4), prefix: prefix - 96 },
                None => self,
            },
            other => other,
        }
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IpNetwork::V4 { bits, prefix } => write!(f, "{}/{prefix}", Ipv4Addr::from(bits)),
            IpNetwork::V6 { bits, prefix } => write!(f, "{}/{prefix}", Ipv6Addr::from(bits)),
        }
    }
}

fn parse_prefix(text: &str, family: &str, max: u8) -> Result<u8, String> {
    // `u8::from_str` would also take "+8"; a prefix length is plain digits.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("prefix length {text:?} is not a number"));
    }
    match text.parse::<u8>() {
        Ok(prefix) if prefix <= max => Ok(prefix),
        _ => Err(format!("prefix length {text} is out of range for {family} (0 to {max})")),
    }
}

/// The mask keeping the first `prefix` bits; `checked_shl` turns the shift by the full width
/// (prefix 0) into an all-zero mask instead of an overflow.
fn v4_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn v6_mask(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNetwork {
        IpNetwork::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn v4_network_contains_its_range_only() {
        let n = net("10.0.0.0/8");
        assert!(n.contains(ip("10.0.0.0")));
        assert!(n.contains(ip("10.255.255.255")));
        assert!(!n.contains(ip("11.0.0.0")));
        assert!(!n.contains(ip("9.255.255.255")));
    }

    #[test]
    fn odd_prefix_lengths_split_inside_an_octet() {
        let n = net("192.168.4.0/23");
        assert!(n.contains(ip("192.168.4.1")));
        assert!(n.contains(ip("192.168.5.254")));
        assert!(!n.contains(ip("192.168.6.0")));
        assert!(!n.contains(ip("192.168.3.255")));
    }

    #[test]
    fn prefix_edges() {
        let everything_v4 = net("0.0.0.0/0");
        assert!(everything_v4.contains(ip("1.2.3.4")));
        assert!(everything_v4.contains(ip("255.255.255.255")));
        assert!(!everything_v4.contains(ip("::1")), "a v4 rule never matches a v6 client");

        let one_v4 = net("192.0.2.7/32");
        assert_eq!(one_v4, net("192.0.2.7"), "a bare address is a /32");
        assert!(one_v4.contains(ip("192.0.2.7")));
        assert!(!one_v4.contains(ip("192.0.2.6")));
        assert!(!one_v4.contains(ip("192.0.2.8")));

        let everything_v6 = net("::/0");
        assert!(everything_v6.contains(ip("2001:db8::1")));
        assert!(everything_v6.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!everything_v6.contains(ip("10.0.0.1")), "a v6 rule never matches a v4 client");

        let one_v6 = net("2001:db8::1/128");
        assert_eq!(one_v6, net("2001:db8::1"), "a bare address is a /128");
        assert!(one_v6.contains(ip("2001:db8::1")));
        assert!(!one_v6.contains(ip("2001:db8::2")));
        assert!(!one_v6.contains(ip("2001:db8::")));
    }

    #[test]
    fn v6_network_contains_its_range_only() {
        let n = net("2001:db8::/32");
        assert!(n.contains(ip("2001:db8::1")));
        assert!(n.contains(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!n.contains(ip("2001:db9::1")));
        assert!(!n.contains(ip("2001:db7:ffff::1")));
    }

    #[test]
    fn mapped_clients_match_v4_rules() {
        let n = net("10.0.0.0/8");
        assert!(n.contains(ip("::ffff:10.0.0.1")));
        assert!(!n.contains(ip("::ffff:11.0.0.1")));
        // Only the mapped form is unwrapped, not any address ending in the same bits.
        assert!(!n.contains(ip("::10.0.0.1")));
        assert!(!net("::/0").contains(ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn mapped_rules_become_v4_rules() {
        assert_eq!(net("::ffff:10.0.0.0/104"), net("10.0.0.0/8"));
        assert_eq!(net("::ffff:192.0.2.7"), net("192.0.2.7"));
        assert!(net("::ffff:10.0.0.0/104").contains(ip("10.9.9.9")));
    }

    #[test]
    fn malformed_entries_are_refused_with_the_reason() {
        let cases = [
            ("10.0.0.0/33", "out of range for IPv4 (0 to 32)"),
            ("2001:db8::/129", "out of range for IPv6 (0 to 128)"),
            ("10.0.0.0/999", "out of range"),
            ("10.0.0.0/", "is not a number"),
            ("10.0.0.0/+8", "is not a number"),
            ("10.0.0.0/8/8", "is not a number"),
            ("10.0.0/8", "is not an IPv4 or IPv6 address"),
            ("example.com", "is not an IPv4 or IPv6 address"),
            ("", "is not an IPv4 or IPv6 address"),
            ("10.1.2.3/8", "bits set past the /8 prefix (the network is 10.0.0.0/8)"),
            ("2001:db8::1/32", "(the network is 2001:db8::/32)"),
        ];
        for (text, expected) in cases {
            match IpNetwork::parse(text) {
                Ok(n) => panic!("{text:?} parsed as {n}"),
                Err(e) => assert!(e.contains(expected), "{text:?}: {e:?} does not mention {expected:?}"),
            }
        }
    }
}
