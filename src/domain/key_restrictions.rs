//! What an API key may be used for beyond being valid (issue 27): the
//! networks its calls may come from, the permissions it grants, and what
//! its owner attaches to it (metadata, the customer's own id). Parsed at
//! the edge with every violation named, and matched here, as pure
//! functions, so VerifyApiKey and Check judge a key the same way.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::FieldViolation;

/// At most this many networks per key.
pub const MAX_NETWORKS: usize = 32;
/// At most this many permissions per key, or required by one call.
pub const MAX_PERMISSIONS: usize = 32;
/// A permission's length in bytes.
pub const MAX_PERMISSION_LEN: usize = 128;
/// At most this many metadata entries per key.
pub const MAX_METADATA_ENTRIES: usize = 32;
/// A metadata key's length in bytes.
pub const MAX_METADATA_KEY_LEN: usize = 64;
/// A metadata value's length in bytes.
pub const MAX_METADATA_VALUE_LEN: usize = 512;
/// All metadata keys and values together, in bytes.
pub const MAX_METADATA_BYTES: usize = 4096;
/// An external id's length in bytes.
pub const MAX_EXTERNAL_ID_LEN: usize = 128;

/// The networks a key's calls may come from; empty means anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedNetworks {
    networks: Vec<IpNet>,
    /// A stored list that does not read back (only a hand-edited row could
    /// hold one) allows nothing: a restriction fails closed.
    nowhere: bool,
}

impl AllowedNetworks {
    /// CIDR strings from request field `field` (each element named by its
    /// index), IPv4 or IPv6. A network with host bits set (`10.0.0.1/8`)
    /// is refused rather than silently widened: the owner meant something
    /// else.
    pub fn parse(field: &str, values: &[String]) -> Result<Self, FieldViolation> {
        if values.len() > MAX_NETWORKS {
            return Err(FieldViolation::new(
                field,
                format!("must list at most {MAX_NETWORKS} networks"),
            ));
        }
        let mut networks = Vec::with_capacity(values.len());
        for (index, value) in values.iter().enumerate() {
            let element = format!("{field}[{index}]");
            let network: IpNet = value.trim().parse().map_err(|_| {
                FieldViolation::new(
                    &element,
                    "must be a network in CIDR notation, such as 203.0.113.0/24 or 2001:db8::/32",
                )
            })?;
            if network.trunc() != network {
                return Err(FieldViolation::new(
                    &element,
                    format!("has host bits set: the network is {}", network.trunc()),
                ));
            }
            networks.push(network);
        }
        Ok(Self {
            networks,
            nowhere: false,
        })
    }

    /// The networks as stored (validated when written); an unreadable list
    /// allows no address.
    pub fn from_stored(values: &[String]) -> Self {
        Self::parse("allowed_networks", values).unwrap_or(Self {
            networks: Vec::new(),
            nowhere: true,
        })
    }

    /// No address can match.
    fn nowhere() -> Self {
        Self {
            networks: Vec::new(),
            nowhere: true,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && !self.nowhere
    }

    /// Whether a call from `address` is allowed. An IPv4-mapped IPv6
    /// address (`::ffff:203.0.113.9`) is its IPv4 address. A restricted key
    /// refuses a call whose address is not known.
    pub fn allow(&self, address: Option<IpAddr>) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(address) = address.map(unmapped) else {
            return false;
        };
        self.networks
            .iter()
            .any(|network| network.contains(&address))
    }

    /// The networks in CIDR notation, as stored and shown.
    pub fn to_strings(&self) -> Vec<String> {
        self.networks.iter().map(ToString::to_string).collect()
    }

    /// As stored: a JSON array of CIDR strings.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.to_strings()).unwrap_or_else(|_| "[]".into())
    }
}

/// `address` with an IPv4-mapped IPv6 address turned into its IPv4 one.
fn unmapped(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// One permission: letters, digits and `._:/-`, such as `chat.write` or
/// `models/gpt-4o`; granted with a trailing `*` it grants every permission
/// that starts with what precedes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission(String);

impl Permission {
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        let body = value.strip_suffix('*').unwrap_or(value);
        let well_formed = !value.is_empty()
            && value.len() <= MAX_PERMISSION_LEN
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b));
        match well_formed {
            true => Ok(Self(value.to_owned())),
            false => Err(FieldViolation::new(
                field,
                format!(
                    "must be 1 to {MAX_PERMISSION_LEN} letters, digits or ._:/- (a trailing * grants \
                     every permission it begins)"
                ),
            )),
        }
    }

    /// Whether this granted permission grants `required`.
    pub fn grants(&self, required: &Permission) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => required.0.starts_with(prefix),
            None => self.0 == required.0,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A list of permissions from request field `field`, each element named by
/// its index; duplicates are kept once.
pub fn parse_permissions(
    field: &str,
    values: &[String],
) -> Result<Vec<Permission>, FieldViolation> {
    if values.len() > MAX_PERMISSIONS {
        return Err(FieldViolation::new(
            field,
            format!("must list at most {MAX_PERMISSIONS} permissions"),
        ));
    }
    let mut permissions = values
        .iter()
        .enumerate()
        .map(|(index, value)| Permission::parse(&format!("{field}[{index}]"), value))
        .collect::<Result<Vec<_>, _>>()?;
    permissions.sort();
    permissions.dedup();
    Ok(permissions)
}

/// Permissions as stored: a JSON array of strings.
pub fn permissions_json(permissions: &[Permission]) -> String {
    let values: Vec<&str> = permissions.iter().map(Permission::as_str).collect();
    serde_json::to_string(&values).unwrap_or_else(|_| "[]".into())
}

/// The required permissions that `granted` does not grant (empty: all are
/// granted).
pub fn missing_permissions<'a>(
    granted: &[Permission],
    required: &'a [Permission],
) -> Vec<&'a Permission> {
    required
        .iter()
        .filter(|needed| !granted.iter().any(|permission| permission.grants(needed)))
        .collect()
}

/// Everything a key carries beyond being valid, as its cached record holds
/// it: `None` there for a key with none, which keeps a plain key's
/// verification as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyGrants {
    pub networks: AllowedNetworks,
    pub permissions: Vec<Permission>,
    pub metadata: Metadata,
    pub external_id: Option<String>,
}

impl KeyGrants {
    /// What a key holds, as stored (JSON written by this service); `None`
    /// for a key with no restriction and nothing attached.
    pub fn from_stored(
        networks: &str,
        permissions: &str,
        metadata: &str,
        external_id: Option<String>,
    ) -> Option<Self> {
        let networks = match serde_json::from_str::<Vec<String>>(networks) {
            Ok(values) => AllowedNetworks::from_stored(&values),
            Err(_) => AllowedNetworks::nowhere(),
        };
        let permissions = serde_json::from_str::<Vec<String>>(permissions)
            .unwrap_or_default()
            .iter()
            .filter_map(|value| Permission::parse("permissions", value).ok())
            .collect();
        let metadata = Metadata(
            serde_json::from_str::<BTreeMap<String, String>>(metadata).unwrap_or_default(),
        );
        let grants = Self {
            networks,
            permissions,
            metadata,
            external_id,
        };
        (grants != Self::default()).then_some(grants)
    }
}

/// A key's metadata: what its owner attaches for the gateway (a plan, a
/// customer's name), bounded so that a key's cached record stays small.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    pub fn parse(
        field: &str,
        entries: &std::collections::HashMap<String, String>,
    ) -> Result<Self, FieldViolation> {
        if entries.len() > MAX_METADATA_ENTRIES {
            return Err(FieldViolation::new(
                field,
                format!("must have at most {MAX_METADATA_ENTRIES} entries"),
            ));
        }
        let mut total = 0;
        for (key, value) in entries {
            let key_ok = !key.is_empty()
                && key.len() <= MAX_METADATA_KEY_LEN
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !key_ok {
                return Err(FieldViolation::new(
                    field,
                    format!(
                        "keys must be 1 to {MAX_METADATA_KEY_LEN} letters, digits or ._-; {key:?} is not"
                    ),
                ));
            }
            if value.len() > MAX_METADATA_VALUE_LEN || value.chars().any(char::is_control) {
                return Err(FieldViolation::new(
                    format!("{field}[{key}]"),
                    format!(
                        "must be at most {MAX_METADATA_VALUE_LEN} bytes without control characters"
                    ),
                ));
            }
            total += key.len() + value.len();
        }
        if total > MAX_METADATA_BYTES {
            return Err(FieldViolation::new(
                field,
                format!("must total at most {MAX_METADATA_BYTES} bytes of keys and values"),
            ));
        }
        Ok(Self(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ))
    }

    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// As stored: a JSON object of strings.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".into())
    }
}

/// The owner's own id for the customer a key was issued to: at most 128
/// bytes without control characters; empty means none.
pub fn parse_external_id(field: &str, value: &str) -> Result<Option<String>, FieldViolation> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > MAX_EXTERNAL_ID_LEN || value.chars().any(char::is_control) {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {MAX_EXTERNAL_ID_LEN} bytes without control characters"),
        ));
    }
    Ok(Some(value.to_owned()))
}

/// A client address a caller reports (VerifyApiKeyRequest.client_address);
/// empty means not reported.
pub fn parse_client_address(field: &str, value: &str) -> Result<Option<IpAddr>, FieldViolation> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .trim()
        .parse()
        .map(Some)
        .map_err(|_| FieldViolation::new(field, "must be an IPv4 or IPv6 address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn networks(values: &[&str]) -> AllowedNetworks {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        AllowedNetworks::parse("allowed_networks", &values).unwrap()
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn a_call_is_allowed_from_the_networks_a_key_lists() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&[], "203.0.113.9", true),
            (&["203.0.113.0/24"], "203.0.113.9", true),
            (&["203.0.113.0/24"], "203.0.114.9", false),
            (&["203.0.113.9/32"], "203.0.113.9", true),
            (&["203.0.113.9/32"], "203.0.113.10", false),
            (&["0.0.0.0/0"], "198.51.100.1", true),
            (&["0.0.0.0/0"], "2001:db8::1", false),
            (&["2001:db8::/32"], "2001:db8:1::9", true),
            (&["2001:db8::/32"], "2001:db9::9", false),
            (&["2001:db8::1/128"], "2001:db8::1", true),
            (&["2001:db8::1/128"], "2001:db8::2", false),
            (&["::/0"], "2001:db8::1", true),
            // An IPv4-mapped IPv6 address matches its IPv4 network.
            (&["203.0.113.0/24"], "::ffff:203.0.113.9", true),
            (&["203.0.113.0/24", "2001:db8::/32"], "2001:db8::5", true),
        ];
        for (listed, address, allowed) in cases {
            assert_eq!(
                networks(listed).allow(ip(address)),
                *allowed,
                "{listed:?} {address}"
            );
        }
        assert!(
            networks(&[]).allow(None),
            "no restriction, no address needed"
        );
        assert!(
            !networks(&["0.0.0.0/0"]).allow(None),
            "a restricted key needs the address"
        );
    }

    #[test]
    fn a_network_that_is_not_one_is_refused_saying_why() {
        let refuse = |value: &str| {
            AllowedNetworks::parse("allowed_networks", &[value.to_owned()])
                .unwrap_err()
                .description
        };
        assert!(refuse("10.0.0.1/8").contains("host bits set: the network is 10.0.0.0/8"));
        assert!(refuse("2001:db8::1/32").contains("2001:db8::/32"));
        assert!(refuse("10.0.0.0/33").contains("CIDR"));
        assert!(refuse("example.com/24").contains("CIDR"));
        assert!(refuse("10.0.0.0").contains("CIDR"));
        let too_many: Vec<String> = (0..=MAX_NETWORKS)
            .map(|i| format!("10.0.{i}.0/24"))
            .collect();
        assert!(AllowedNetworks::parse("allowed_networks", &too_many).is_err());
    }

    #[test]
    fn a_trailing_star_grants_every_permission_it_begins() {
        let p = |text: &str| Permission::parse("p", text).unwrap();
        let cases = [
            ("chat.write", "chat.write", true),
            ("chat.write", "chat.read", false),
            ("chat.*", "chat.write", true),
            ("chat.*", "chat.", true),
            ("chat.*", "chatter", false),
            ("models/*", "models/gpt-4o", true),
            ("models/gpt-4o", "models/gpt-4o-mini", false),
            ("*", "anything", true),
        ];
        for (granted, required, grants) in cases {
            assert_eq!(
                p(granted).grants(&p(required)),
                grants,
                "{granted} {required}"
            );
        }
        let granted = [p("chat.*"), p("models/gpt-4o")];
        let required = [p("chat.write"), p("models/gpt-4o-mini")];
        let missing = missing_permissions(&granted, &required);
        assert_eq!(missing, vec![&p("models/gpt-4o-mini")]);
        assert!(missing_permissions(&granted, &[]).is_empty());
    }

    #[test]
    fn malformed_permissions_metadata_and_ids_are_refused() {
        for bad in ["", "chat write", "chat.*.x*", "ü", &"x".repeat(129)] {
            assert!(Permission::parse("p", bad).is_err(), "{bad:?}");
        }
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::HashMap<_, _>>()
        };
        assert!(Metadata::parse("metadata", &map(&[("plan", "pro")])).is_ok());
        assert!(Metadata::parse("metadata", &map(&[("", "x")])).is_err());
        assert!(Metadata::parse("metadata", &map(&[("a b", "x")])).is_err());
        assert!(Metadata::parse("metadata", &map(&[("k", &"v".repeat(513))])).is_err());
        assert!(Metadata::parse("metadata", &map(&[("k", "line\nbreak")])).is_err());
        let many: Vec<(String, String)> = (0..=MAX_METADATA_ENTRIES)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert!(Metadata::parse("metadata", &many.into_iter().collect()).is_err());
        let big: Vec<(String, String)> = (0..10)
            .map(|i| (format!("k{i}"), "v".repeat(500)))
            .collect();
        assert!(Metadata::parse("metadata", &big.into_iter().collect()).is_err());
        assert_eq!(parse_external_id("external_id", "").unwrap(), None);
        assert!(parse_external_id("external_id", &"x".repeat(129)).is_err());
        assert!(parse_client_address("client_address", "203.0.113.9")
            .unwrap()
            .is_some());
        assert!(parse_client_address("client_address", "not-an-ip").is_err());
    }
}
