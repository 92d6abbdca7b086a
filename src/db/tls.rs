//! TLS to PostgreSQL as libpq does it: `sslmode` and `sslrootcert` are read
//! from the URL's query (`postgres://...?sslmode=verify-full&sslrootcert=ca.pem`),
//! and every connection the server opens (the pool, the listener, the
//! migrations) goes through one [`PgConnector`], so all of them keep the
//! same promise.
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | not looked at |
//! | `prefer` (the default, as in libpq) | if the server offers it; plaintext if it refuses | not checked |
//! | `require` | always | not checked; with `sslrootcert`, as `verify-ca` (as libpq does) |
//! | `verify-ca` | always | signed by `sslrootcert` (or the system's roots) |
//! | `verify-full` | always | and issued for the host name in the URL |
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`; the checks of
//! the verify modes are the rustls verifiers below. A TLS failure is named
//! by its setting (`DATABASE_URL's sslmode=verify-full ...`), and under
//! `require` and the verify modes there is no plaintext fallback: a server
//! that refuses TLS is refused.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::Socket;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// Where the roots that sign the server's certificate come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootCert {
    /// No `sslrootcert`.
    Unset,
    /// `sslrootcert=system` (as PostgreSQL 16's libpq): the system's roots.
    System,
    /// `sslrootcert=<PEM file>`.
    File(PathBuf),
}

/// The stream a TLS-capable PostgreSQL connection runs over.
pub type PgTlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// How to connect to one PostgreSQL URL, with the TLS its `sslmode` and
/// `sslrootcert` ask for. Built once per URL at start; cheap to clone.
#[derive(Clone)]
pub struct PgConnector {
    /// The URL's other options, with tokio-postgres's `ssl_mode` set.
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    mode: SslMode,
    root_cert: RootCert,
    /// The setting the URL came from, to name in errors.
    setting: &'static str,
}

impl fmt::Debug for PgConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio-postgres's Config redacts the password.
        f.debug_struct("PgConnector")
            .field("config", &self.config)
            .field("mode", &self.mode)
            .field("root_cert", &self.root_cert)
            .field("setting", &self.setting)
            .finish()
    }
}

/// Why a PostgreSQL connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PgConnectError {
    /// The TLS the URL asks for could not be had: the server refused TLS
    /// under `require` or a verify mode, or its certificate or host name
    /// failed the check. A configuration error, not an outage: the message
    /// names the setting.
    #[error("{0}")]
    Tls(String),
    /// Anything else (unreachable, authentication, no such database...).
    #[error("{}", with_cause(.0))]
    Postgres(tokio_postgres::Error),
    /// Connected, but diesel's set-up queries failed.
    #[error(transparent)]
    Setup(ConnectionError),
}

/// tokio-postgres's message with its cause (the server's own message, as
/// in `database "x" does not exist`), which its `Display` leaves out.
fn with_cause(error: &tokio_postgres::Error) -> String {
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

impl From<PgConnectError> for ConnectionError {
    fn from(error: PgConnectError) -> Self {
        match error {
            PgConnectError::Setup(error) => error,
            other => ConnectionError::BadConnection(other.to_string()),
        }
    }
}

impl PgConnector {
    /// Parses `url`, read from `setting` (`DATABASE_URL` or
    /// `DATABASE_LISTEN_URL`), and loads `sslrootcert`, so a bad value or
    /// an unreadable file stops the start naming the setting.
    pub fn new(url: &str, setting: &'static str) -> anyhow::Result<Self> {
        let mut parsed =
            url::Url::parse(url).with_context(|| format!("{setting} is not a valid URL"))?;
        let (mut mode, mut root_cert) = (SslMode::Prefer, RootCert::Unset);
        let mut rest = Vec::new();
        for (key, value) in parsed.query_pairs() {
            match &*key {
                "sslmode" => {
                    mode = SslMode::parse(&value).with_context(|| {
                        format!(
                            "{setting}'s sslmode must be disable, prefer, require, verify-ca or \
                             verify-full (got {value:?})"
                        )
                    })?;
                }
                "sslrootcert" if value == "system" => root_cert = RootCert::System,
                "sslrootcert" => root_cert = RootCert::File(PathBuf::from(&*value)),
                _ => rest.push((key.into_owned(), value.into_owned())),
            }
        }
        // As libpq 16: the system's roots vouch for any name, so only a
        // name check makes them mean something.
        anyhow::ensure!(
            root_cert != RootCert::System || mode == SslMode::VerifyFull,
            "{setting}: sslrootcert=system needs sslmode=verify-full (got {})",
            mode.as_str()
        );
        if rest.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(rest);
        }
        let mut config = tokio_postgres::Config::from_str(parsed.as_str()).map_err(|error| {
            anyhow::anyhow!(
                "{setting} is not a valid PostgreSQL URL: {}",
                with_cause(&error)
            )
        })?;
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        let tls = MakeRustlsConnect::new(client_config(mode, &root_cert, setting)?);
        Ok(Self {
            config,
            tls,
            mode,
            root_cert,
            setting,
        })
    }

    /// The same server and options, another database (to create the
    /// service's own from `postgres`).
    pub fn with_database(&self, name: &str) -> Self {
        let mut other = self.clone();
        other.config.dbname(name);
        other
    }

    /// The connection options, for a caller that adds its own (timeouts,
    /// keepalives) before [`PgConnector::connect_with`].
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Opens a connection with `config` (this connector's, maybe with more
    /// options) over this connector's TLS. The connection object does the
    /// I/O and must be polled.
    pub async fn connect_with(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<Socket, PgTlsStream>,
        ),
        PgConnectError,
    > {
        config
            .connect(self.tls.clone())
            .await
            .map_err(|error| self.name_tls_failure(error))
    }

    /// A diesel connection, for the pool and the migrations.
    pub async fn establish(&self) -> Result<AsyncPgConnection, PgConnectError> {
        let (client, connection) = self.connect_with(&self.config).await?;
        AsyncPgConnection::try_from_client_and_connection(client, connection)
            .await
            .map_err(PgConnectError::Setup)
    }

    /// Opens one connection to prove the TLS settings at start: a TLS
    /// failure stops the start; anything else (the database is down or
    /// still coming up) is only logged, since the server starts without a
    /// database and serves once it answers.
    pub async fn check_at_start(&self, timeout: std::time::Duration) -> anyhow::Result<()> {
        match tokio::time::timeout(timeout, self.connect_with(&self.config)).await {
            Ok(Ok(_connected)) => Ok(()),
            Ok(Err(PgConnectError::Tls(message))) => Err(anyhow::anyhow!(message)),
            Ok(Err(error)) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot reach PostgreSQL at {} yet",
                    self.setting
                );
                Ok(())
            }
            Err(_) => {
                tracing::warn!("PostgreSQL at {} did not answer in time", self.setting);
                Ok(())
            }
        }
    }

    /// tokio-postgres reports every TLS failure (a server that refuses TLS
    /// under `require`, a handshake or certificate failure) as its one
    /// `Tls` kind, whose message starts so; its kinds are not public.
    fn name_tls_failure(&self, error: tokio_postgres::Error) -> PgConnectError {
        if !error
            .to_string()
            .starts_with("error performing TLS handshake")
        {
            return PgConnectError::Postgres(error);
        }
        let root_cert = match &self.root_cert {
            RootCert::Unset => match self.mode {
                SslMode::VerifyCa | SslMode::VerifyFull => {
                    " (no sslrootcert: the system's roots)".to_owned()
                }
                _ => String::new(),
            },
            RootCert::System => " with sslrootcert=system".to_owned(),
            RootCert::File(path) => format!(" with sslrootcert={}", path.display()),
        };
        PgConnectError::Tls(format!(
            "{}'s sslmode={}{root_cert}: no TLS connection to PostgreSQL: {}",
            self.setting,
            self.mode.as_str(),
            with_cause(&error)
        ))
    }
}

/// The rustls configuration each mode asks for, with ring (the crate's one
/// provider).
fn client_config(
    mode: SslMode,
    root_cert: &RootCert,
    setting: &str,
) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // libpq: "if a root CA file exists, the behavior of sslmode=require
    // will be the same as that of verify-ca".
    let checks = match (mode, root_cert) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, RootCert::Unset) => {
            Checks::None
        }
        (SslMode::Require | SslMode::VerifyCa, _) => Checks::Chain,
        (SslMode::VerifyFull, _) => Checks::ChainAndName,
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("rustls has no TLS versions")?;
    let verifier: Arc<dyn ServerCertVerifier> = match checks {
        Checks::None => Arc::new(AnyCertificate(provider)),
        Checks::Chain => Arc::new(ChainOnly {
            roots: Arc::new(roots(root_cert, setting)?),
            provider,
        }),
        Checks::ChainAndName => WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots(root_cert, setting)?),
            provider,
        )
        .build()
        .with_context(|| format!("{setting}'s sslrootcert holds no usable root"))?,
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

enum Checks {
    None,
    Chain,
    ChainAndName,
}

/// The roots of `sslrootcert`, or the system's when it is unset or `system`.
fn roots(root_cert: &RootCert, setting: &str) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        RootCert::File(path) => {
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|error| {
                    anyhow::anyhow!(
                        "{setting}'s sslrootcert: cannot read {} as PEM certificates: {error}",
                        path.display()
                    )
                })?;
            let (added, _ignored) = roots.add_parsable_certificates(certificates);
            anyhow::ensure!(
                added > 0,
                "{setting}'s sslrootcert: {} holds no usable certificate",
                path.display()
            );
        }
        RootCert::Unset | RootCert::System => {
            let loaded = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(loaded.certs);
            anyhow::ensure!(
                !roots.is_empty(),
                "{setting}: no sslrootcert and no system root certificates to verify the \
                 server's certificate with"
            );
        }
    }
    Ok(roots)
}

/// The handshake signature checks, alike in every verifier here: with the
/// algorithms of the provider at `self.$provider`.
macro_rules! check_handshake_signatures {
    ($provider:tt) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.$provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.$provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.$provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// `prefer` and `require` without `sslrootcert`: encryption without
/// authentication, as libpq. The handshake's signature is still checked
/// against the certificate presented, so SCRAM's channel binding (tokio-
/// postgres-rustls's `tls-server-end-point`) binds the login to it.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    check_handshake_signatures!(0);
}

/// `verify-ca`: the chain must lead to a trusted root, whatever name the
/// certificate is for.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let certificate = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &certificate,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    check_handshake_signatures!(provider);
}

#[cfg(test)]
mod tests {
    use super::{PgConnector, SslMode};

    #[test]
    fn sslmode_is_read_from_the_url_and_prefer_by_default() {
        let connector = PgConnector::new("postgres://u@h/db", "DATABASE_URL").unwrap();
        assert_eq!(connector.mode, SslMode::Prefer);
        for (value, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-full", SslMode::VerifyFull),
        ] {
            let url = format!("postgres://u@h/db?application_name=x&sslmode={value}");
            let connector = PgConnector::new(&url, "DATABASE_URL").unwrap();
            assert_eq!(connector.mode, mode);
            assert_eq!(connector.config().get_application_name(), Some("x"));
        }
    }

    #[test]
    fn a_bad_sslmode_or_an_unreadable_sslrootcert_names_the_setting() {
        for url in [
            "postgres://u@h/db?sslmode=verify",
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            "postgres://u@h/db?sslmode=require&sslrootcert=system",
            // Client certificates are not supported: refused, not ignored.
            "postgres://u@h/db?sslmode=verify-full&sslcert=/client.pem",
        ] {
            let error = PgConnector::new(url, "DATABASE_LISTEN_URL").unwrap_err();
            let message = format!("{error:#}");
            assert!(message.contains("DATABASE_LISTEN_URL"), "{message}");
            assert!(message.contains("ssl"), "{message}");
        }
    }
}
