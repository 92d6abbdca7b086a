//! The console's two settings that need parsing: its listen address (or
//! `off`) and the origins allowed to call it cross-origin.

use std::net::SocketAddr;

/// `CONSOLE_ALLOWED_ORIGINS`: origins, comma-separated, each kept as a
/// browser sends it in `Origin` (lower-case host, no default port).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsoleOrigins(pub Vec<String>);

impl std::str::FromStr for ConsoleOrigins {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let origins = value
            .split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty());
        origins
            .map(|origin| {
                url::Url::parse(origin)
                    .ok()
                    .filter(|url| {
                        matches!(url.scheme(), "http" | "https")
                            && url.host().is_some()
                            && url.path() == "/"
                            && url.query().is_none()
                            && url.username().is_empty()
                            && !origin.ends_with('/')
                    })
                    .map(|url| url.origin().ascii_serialization())
                    .ok_or_else(|| {
                        format!("{origin:?} is not an origin (scheme://host[:port], no path)")
                    })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// `CONSOLE_LISTEN_ADDR`: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleAddr(pub Option<SocketAddr>);

impl std::str::FromStr for ConsoleAddr {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim() {
            "off" => Ok(Self(None)),
            addr => addr
                .parse()
                .map(|addr| Self(Some(addr)))
                .map_err(|_| format!("{value:?} is neither an address (host:port) nor `off`")),
        }
    }
}
