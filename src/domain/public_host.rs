//! Whether a URL's host is a destination on the public internet, judged
//! from the host alone (SSRF, OWASP API7). Addresses are judged against the
//! IANA IPv4 and IPv6 Special-Purpose Address Registries, with IPv4 carried
//! inside IPv6 judged as the IPv4 it reaches; names are refused when they
//! only resolve inside a network (single labels, special-use and private
//! suffixes).
//!
//! The host comes from the `url` crate, which already reduces every textual
//! form to one: IPv4 in decimal, hex, octal or shortened form
//! (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`) becomes `127.0.0.1`;
//! names are percent-decoded, IDNA-mapped (fullwidth, uppercase) and
//! lowercased to ASCII; IPv6 zone ids are refused.
//!
//! What a string cannot show is where a name resolves: `127.0.0.1.nip.io`,
//! a public name an attacker points at 10.0.0.1, a name that changes answer
//! between check and use (DNS rebinding), or `svc.namespace` found through a
//! resolver's search domains. Whoever calls the URL must resolve it, refuse
//! the same addresses at connect time, and not follow redirects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::Host;

/// Why `host` is not a public destination, in words for the client, or
/// `None` if nothing in the string says so.
pub fn non_public_reason(host: &Host<&str>) -> Option<String> {
    match host {
        Host::Ipv4(ip) => ipv4_reason(*ip),
        Host::Ipv6(ip) => ipv6_reason(*ip),
        Host::Domain(name) => name_reason(name),
    }
}

/// Why connecting to `ip` would not reach the public internet, or `None`:
/// for judging what a name resolved to, at connect time.
pub fn non_public_address_reason(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(ip) => ipv4_reason(ip),
        IpAddr::V6(ip) => ipv6_reason(ip),
    }
}

/// IANA IPv4 Special-Purpose Address Registry, plus multicast and the
/// reserved 240/4. Every entry is refused, including the few the registry
/// marks globally reachable (192.0.0.9 and .10 in 192.0.0.0/24, AS112, AMT,
/// the 6to4 relay anycast): they are anycast services that answer from the
/// nearest operator's network, never an LLM API, and an anycast address
/// reaching "the nearest box" is exactly what SSRF looks for.
// One block a line, as the registry lists them.
#[rustfmt::skip]
const IPV4_SPECIAL: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0),        8, "\"this network\" (RFC 791)"),
    (Ipv4Addr::new(10, 0, 0, 0),       8, "private-use (RFC 1918)"),
    (Ipv4Addr::new(100, 64, 0, 0),    10, "shared address space, carrier-grade NAT (RFC 6598)"),
    (Ipv4Addr::new(127, 0, 0, 0),      8, "loopback (RFC 1122)"),
    (Ipv4Addr::new(169, 254, 0, 0),   16, "link-local, where cloud metadata lives (RFC 3927)"),
    (Ipv4Addr::new(172, 16, 0, 0),    12, "private-use (RFC 1918)"),
    (Ipv4Addr::new(192, 0, 0, 0),     24, "IETF protocol assignments (RFC 6890)"),
    (Ipv4Addr::new(192, 0, 2, 0),     24, "documentation, TEST-NET-1 (RFC 5737)"),
    (Ipv4Addr::new(192, 31, 196, 0),  24, "AS112-v4 (RFC 7535)"),
    (Ipv4Addr::new(192, 52, 193, 0),  24, "AMT (RFC 7450)"),
    (Ipv4Addr::new(192, 88, 99, 0),   24, "deprecated 6to4 relay anycast (RFC 7526)"),
    (Ipv4Addr::new(192, 168, 0, 0),   16, "private-use (RFC 1918)"),
    (Ipv4Addr::new(192, 175, 48, 0),  24, "AS112 direct delegation (RFC 7534)"),
    (Ipv4Addr::new(198, 18, 0, 0),    15, "benchmarking (RFC 2544)"),
    (Ipv4Addr::new(198, 51, 100, 0),  24, "documentation, TEST-NET-2 (RFC 5737)"),
    (Ipv4Addr::new(203, 0, 113, 0),   24, "documentation, TEST-NET-3 (RFC 5737)"),
    (Ipv4Addr::new(224, 0, 0, 0),      4, "multicast (RFC 5771)"),
    (Ipv4Addr::new(240, 0, 0, 0),      4, "reserved, with broadcast 255.255.255.255 (RFC 1112)"),
];

/// IANA IPv6 Special-Purpose Address Registry and the non-unicast parts of
/// the IPv6 address space, most specific first so the reason is the
/// narrowest. All refused: IPv4 carried in the deprecated or local-use forms
/// (IPv4-compatible, IPv4-translated, 64:ff9b:1::/48, 6to4, Teredo) would
/// reach whatever that IPv4 is through a translator or relay, and none of
/// these forms has a use for a public API.
// One block a line, as the registry lists them.
#[rustfmt::skip]
const IPV6_SPECIAL: &[(Ipv6Addr, u8, &str)] = &[
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),              128, "the unspecified address (RFC 4291)"),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1),              128, "loopback (RFC 4291)"),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),               96, "IPv4-compatible, deprecated (RFC 4291)"),
    (Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0),          96, "IPv4-translated (RFC 2765)"),
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),       48, "local-use IPv4/IPv6 translation (RFC 8215)"),
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),           64, "discard-only (RFC 6666)"),
    (Ipv6Addr::new(0x100, 0, 0, 1, 0, 0, 0, 0),           64, "dummy prefix (RFC 9780)"),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),          32, "Teredo, carrying an obfuscated IPv4 (RFC 4380)"),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),          23, "IETF protocol assignments (RFC 2928)"),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),      32, "documentation (RFC 3849)"),
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0),          16, "6to4, carrying an IPv4 (RFC 3056)"),
    (Ipv6Addr::new(0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0),  48, "AS112 direct delegation (RFC 7534)"),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),          20, "documentation (RFC 9637)"),
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0),          16, "SRv6 segment identifiers (RFC 9602)"),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),           7, "unique local (RFC 4193)"),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),          10, "link-local (RFC 4291)"),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),          10, "site-local, deprecated (RFC 3879)"),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),           8, "multicast (RFC 4291)"),
];

/// Name suffixes (and whole names) that never reach a public server.
#[rustfmt::skip]
const INTERNAL_SUFFIXES: &[(&str, &str)] = &[
    // IANA Special-Use Domain Names (RFC 6761 and later).
    ("localhost",   "loopback names (RFC 6761)"),
    ("local",       "multicast DNS and Kubernetes cluster names (RFC 6762)"),
    ("arpa",        "DNS infrastructure: home.arpa, ipv4only.arpa, reverse zones (RFC 8375, RFC 7050)"),
    ("test",        "reserved for testing (RFC 6761)"),
    ("invalid",     "reserved as invalid (RFC 6761)"),
    ("example",     "reserved for documentation (RFC 6761)"),
    ("onion",       "Tor onion services (RFC 7686)"),
    ("alt",         "non-DNS namespaces (RFC 9476)"),
    // Reserved by ICANN for private use; GCP's metadata.google.internal.
    ("internal",    "private use (ICANN, 2024)"),
    // Kubernetes service names, and built-in namespaces that a pod's
    // search domains complete ("kubernetes.default").
    ("svc",         "Kubernetes services"),
    ("default",     "the Kubernetes default namespace"),
    ("kube-system", "a Kubernetes system namespace"),
    ("kube-public", "a Kubernetes system namespace"),
    // Private names in common use (RFC 6762 appendix G) and /etc/hosts'.
    ("lan",         "private networks"),
    ("home",        "private networks"),
    ("corp",        "private networks"),
    ("intranet",    "private networks"),
    ("private",     "private networks"),
    ("localdomain", "loopback names of /etc/hosts"),
];

fn in_ipv4_prefix(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_ipv6_prefix(ip: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

/// The special-purpose block `ip` is in, as "in a.b.c.d/n, purpose".
fn ipv4_block(ip: Ipv4Addr) -> Option<String> {
    IPV4_SPECIAL
        .iter()
        .find(|(net, len, _)| in_ipv4_prefix(ip, *net, *len))
        .map(|(net, len, what)| format!("in {net}/{len}, {what}"))
}

fn ipv4_reason(ip: Ipv4Addr) -> Option<String> {
    ipv4_block(ip).map(|block| format!("{ip} is {block}"))
}

fn ipv6_reason(ip: Ipv6Addr) -> Option<String> {
    // The two forms that are an IPv4 address in IPv6 clothing: a dual-stack
    // socket connects ::ffff:a.b.c.d to a.b.c.d, a NAT64 gateway
    // 64:ff9b::a.b.c.d too. They are as public as the IPv4 they carry.
    let carried = if in_ipv6_prefix(ip, Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96) {
        ip.to_ipv4_mapped()
    } else if in_ipv6_prefix(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        let [.., a, b, c, d] = ip.octets();
        Some(Ipv4Addr::new(a, b, c, d))
    } else {
        None
    };
    if let Some(v4) = carried {
        return ipv4_block(v4).map(|block| format!("{ip} reaches {v4}, which is {block}"));
    }
    if let Some((net, len, what)) = IPV6_SPECIAL
        .iter()
        .find(|(net, len, _)| in_ipv6_prefix(ip, *net, *len))
    {
        return Some(format!("{ip} is in {net}/{len}, {what}"));
    }
    // Only 2000::/3 is allocated for global unicast; the rest of the space
    // is reserved by the IETF and routes nowhere public.
    let global_unicast = Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0);
    (!in_ipv6_prefix(ip, global_unicast, 3))
        .then(|| format!("{ip} is outside global unicast 2000::/3"))
}

/// `name` is what `url` made of the host: percent-decoded, IDNA-mapped,
/// lowercase ASCII. Lowercased again so the check holds on its own.
fn name_reason(name: &str) -> Option<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    // Never produced by `url` for http(s), which turns numeric hosts into
    // addresses; kept so an address can never pass as a name.
    if let Ok(ip) = name.parse::<IpAddr>() {
        return match ip {
            IpAddr::V4(ip) => ipv4_reason(ip),
            IpAddr::V6(ip) => ipv6_reason(ip),
        };
    }
    if name.is_empty() || !name.contains('.') {
        return Some(format!(
            "\"{name}\" is a single-label name, resolved only inside a network"
        ));
    }
    INTERNAL_SUFFIXES
        .iter()
        .find(|(suffix, _)| {
            name.strip_suffix(suffix)
                .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
        })
        .map(|(suffix, what)| format!("\"{name}\" ends in .{suffix}, {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    /// The host `url` parses out of `input`, judged.
    fn judge(input: &str) -> Option<String> {
        let url = Url::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        non_public_reason(&url.host().expect("a host"))
    }

    #[test]
    fn public_addresses_and_names_are_accepted() {
        for input in [
            "https://api.example.com/v1",
            "https://api.openai.com/v1/chat/completions",
            "https://LLM.Example.COM./v1",
            "https://bücher.de/x", // IDNA
            "http://8.8.8.8/",
            "http://1.1.1.1:8080/",
            "http://100.63.255.255/", // just below 100.64/10
            "http://100.128.0.0/",    // just above
            "http://172.15.255.255/",
            "http://172.32.0.0/",
            "http://192.0.1.255/",
            "http://192.169.0.0/",
            "http://198.17.255.255/",
            "http://198.20.0.0/",
            "http://223.255.255.255/",
            "http://[2606:4700:4700::1111]/",
            "http://[2001:4860:4860::8888]/",
            "http://[2001:200::1]/", // just above 2001::/23
            "http://[::ffff:8.8.8.8]/",
            "http://[64:ff9b::808:808]/", // NAT64 of 8.8.8.8
            "http://[2a00:1450:4001::200e]/",
        ] {
            assert_eq!(judge(input), None, "{input} was refused");
        }
    }

    #[test]
    fn special_purpose_ipv4_in_every_textual_form_is_refused() {
        for input in [
            "http://0.0.0.0/",
            "http://0/",
            "http://0.1.2.3/",
            "http://10.0.0.1/",
            "http://100.64.0.1/",
            "http://100.127.255.255/",
            "http://127.0.0.1/",
            "http://127.255.255.254/",
            "http://2130706433/",      // decimal
            "http://0x7f000001/",      // hex
            "http://0x7f.1/",          // hex, shortened
            "http://0177.0.0.1/",      // octal
            "http://017700000001/",    // octal, whole
            "http://127.1/",           // shortened
            "http://127.0.1/",         // shortened
            "http://127.0.0.1./",      // trailing dot
            "http://%31%32%37.0.0.1/", // percent-encoded
            "http://１２７.０.０.１/", // fullwidth digits
            "http://169.254.169.254/",
            "http://172.16.0.1/",
            "http://172.31.255.255/",
            "http://192.0.0.1/",
            "http://192.0.0.9/",   // PCP anycast: see IPV4_SPECIAL
            "http://192.0.0.10/",  // TURN anycast
            "http://192.0.0.170/", // NAT64 discovery
            "http://192.0.0.192/",
            "http://192.0.2.1/",
            "http://192.31.196.1/",
            "http://192.52.193.1/",
            "http://192.88.99.1/",
            "http://192.168.1.1/",
            "http://192.175.48.1/",
            "http://198.18.0.1/",
            "http://198.19.255.255/",
            "http://198.51.100.1/",
            "http://203.0.113.1/",
            "http://224.0.0.1/",
            "http://239.255.255.250/",
            "http://240.0.0.1/",
            "http://255.255.255.255/",
        ] {
            assert!(judge(input).is_some(), "{input} was accepted");
        }
    }

    #[test]
    fn special_purpose_ipv6_and_ipv4_inside_ipv6_are_refused() {
        for input in [
            "http://[::]/",
            "http://[::1]/",
            "http://[0:0:0:0:0:0:0:1]/",
            "http://[0000::0001]/",
            "http://[::ffff:127.0.0.1]/", // mapped
            "http://[::ffff:7f00:1]/",    // mapped, hex
            "http://[::FFFF:A9FE:A9FE]/", // mapped metadata, uppercase
            "http://[::ffff:10.0.0.1]/",
            "http://[::ffff:0:7f00:1]/",    // IPv4-translated
            "http://[::ffff:0:808:808]/",   // IPv4-translated, even public
            "http://[::127.0.0.1]/",        // IPv4-compatible
            "http://[::808:808]/",          // IPv4-compatible, even public
            "http://[64:ff9b::7f00:1]/",    // NAT64 of 127.0.0.1
            "http://[64:ff9b::127.0.0.1]/", // the same, dotted
            "http://[64:ff9b::a9fe:a9fe]/", // NAT64 of the metadata address
            "http://[64:ff9b:1::7f00:1]/",  // local-use NAT64
            "http://[64:ff9b:1:ffff::]/",
            "http://[100::1]/",
            "http://[100:0:0:1::1]/",
            "http://[2001::1]/",                              // Teredo
            "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", // Teredo of 127.0.0.1
            "http://[2001:2::1]/",                            // benchmarking
            "http://[2001:1ff:ffff::1]/",
            "http://[2001:db8::1]/",
            "http://[2002:7f00:1::]/",   // 6to4 of 127.0.0.1
            "http://[2002:808:808::1]/", // 6to4, even public
            "http://[2620:4f:8000::1]/",
            "http://[3fff::1]/",
            "http://[3fff:fff::1]/",
            "http://[5f00::1]/",
            "http://[fc00::1]/",
            "http://[fd00:ec2::254]/", // AWS metadata
            "http://[fe80::1]/",
            "http://[FE80::1]/",
            "http://[febf::1]/",
            "http://[fec0::1]/",
            "http://[ff02::1]/",
            "http://[4000::1]/", // outside 2000::/3
            "http://[1::1]/",
        ] {
            assert!(judge(input).is_some(), "{input} was accepted");
        }
    }

    #[test]
    fn single_label_and_internal_names_in_every_form_are_refused() {
        for input in [
            "http://localhost/",
            "http://localhost./",
            "http://LOCALHOST/",
            "http://%6c%6f%63%61%6c%68%6f%73%74/", // percent-encoded
            "http://ｌｏｃａｌｈｏｓｔ/",          // fullwidth
            "http://instance-data/",
            "http://instance-data./",
            "http://metadata/",
            "http://Metadata./",
            "http://metadata.google.internal/",
            "http://METADATA.GOOGLE.INTERNAL./",
            "http://metadata.google.ｉｎｔｅｒｎａｌ/",
            "http://metadata。google。internal/", // ideographic full stops
            "http://instance-data.ec2.internal/",
            "http://kubernetes.default.svc/",
            "http://kubernetes.default.svc.cluster.local/",
            "http://kubernetes.default/",
            "http://kube-dns.kube-system/",
            "http://db.prod.svc./",
            "http://printer.local/",
            "http://app.localhost/",
            "http://router.home.arpa/",
            "http://ipv4only.arpa/",
            "http://1.0.0.127.in-addr.arpa/",
            "http://thing.test/",
            "http://thing.invalid/",
            "http://thing.example/",
            "http://abc.onion/",
            "http://nas.lan/",
            "http://wiki.corp/",
            "http://host.localdomain/",
            "http://localhost.localdomain/",
        ] {
            assert!(judge(input).is_some(), "{input} was accepted");
        }
    }

    #[test]
    fn suffixes_match_whole_labels_only() {
        for input in [
            "https://notlocal.com/",
            "https://svc.example.com/",
            "https://internal.example.com/",
            "https://mylocal.dev/",
            "https://default.ai/",
        ] {
            assert_eq!(judge(input), None, "{input} was refused");
        }
    }

    #[test]
    fn reasons_say_which_range_or_suffix() {
        assert_eq!(
            judge("http://198.18.0.1/").unwrap(),
            "198.18.0.1 is in 198.18.0.0/15, benchmarking (RFC 2544)"
        );
        assert!(judge("http://[64:ff9b::7f00:1]/")
            .unwrap()
            .contains("reaches 127.0.0.1, which is in 127.0.0.0/8"));
        assert!(judge("http://instance-data/")
            .unwrap()
            .contains("single-label"));
        assert!(judge("http://kubernetes.default.svc/")
            .unwrap()
            .contains(".svc"));
    }
}
