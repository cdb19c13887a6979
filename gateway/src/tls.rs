//! TLS settings shared by every connection the gateway makes or accepts over TLS: the MQTT
//! source and its drain connection, the MQTT alert sink, the InfluxDB sink (https), and the
//! embedded broker's TLS listener.
//!
//! Owns the one `tls` table written in the config ([`TlsConfig`] for a client, [`ListenerTls`]
//! for a listener), reading and checking its PEM files at load (so `gateway check` refuses an
//! unreadable CA file or a key without its certificate, naming the field and the fix), and
//! turning them into what each library takes: a rustls 0.23 `ClientConfig` for rumqttc,
//! tokio-rustls and reqwest (the InfluxDB sink), a `ServerConfig` for the listener. It does not
//! open connections and does not decide whether TLS is required (the broker's config does that
//! for its listeners).
//!
//! Rules (README §Configuration reference, *TLS*):
//! - `ca_file` is required and is the whole trust store: only certificates it signs are
//!   accepted, the built-in public roots are not consulted (a site's brokers and stores use a
//!   private CA; for a public one give the system bundle, `/etc/ssl/certs/ca-certificates.crt`);
//! - `cert_file` and `key_file` (a client certificate) come together or not at all; the key is
//!   a secret: never printed, not even in `Debug`;
//! - `server_name` is the name the server's certificate must carry when it differs from the
//!   host connected to (a broker reached by IP whose certificate names `broker.site.lan`).
//!
//! The crypto provider is rustls' `ring`, the one rumqttc and reqwest 0.12 build (rustls 0.23):
//! no other TLS stack is added.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use serde::Deserialize;

use crate::config::Problems;

/// The registered port of MQTT over TLS (IANA `secure-mqtt`), the default of an MQTT source or
/// sink with a `tls` table and no port.
pub const MQTT_TLS_PORT: u16 = 8883;

/// A client's `tls = { ... }` table, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA certificate(s) the server's certificate must chain to.
    pub ca_file: PathBuf,
    /// PEM file of this gateway's client certificate (chain), when the server asks for one.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Name the server's certificate must carry, when not the host connected to.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// A validated client `tls` table: the files read and checked, the rustls configuration built.
#[derive(Clone)]
pub struct ClientTls {
    /// The CA file (for messages).
    pub ca_file: PathBuf,
    ca_pem: Vec<u8>,
    identity: Option<Identity>,
    /// The name the server's certificate is checked against instead of the host.
    pub server_name: Option<ServerName<'static>>,
    rustls: Arc<ClientConfig>,
}

/// A client certificate and its key, as PEM. The key is a secret.
#[derive(Clone, PartialEq, Eq)]
struct Identity {
    cert_file: PathBuf,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never appears; the certificate is public but long, its file says enough.
        f.debug_struct("ClientTls")
            .field("ca_file", &self.ca_file)
            .field(
                "client_cert",
                &self.identity.as_ref().map(|i| i.cert_file.display()),
            )
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ClientTls {
    /// Same files with the same contents (the rustls configuration follows from them).
    fn eq(&self, other: &Self) -> bool {
        self.ca_file == other.ca_file
            && self.ca_pem == other.ca_pem
            && self.identity == other.identity
            && self.server_name == other.server_name
    }
}
impl Eq for ClientTls {}

/// The crypto provider every TLS configuration here uses.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read a PEM file named by the config field `field` (`.../tls.ca_file`); the message names
/// the path and the fix.
fn read_pem(at: &str, path: &Path, p: &mut Problems) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            p.push(
                at,
                format!(
                    "cannot read {}: {e}; check the path and that the gateway's user may read it",
                    path.display()
                ),
            );
            None
        }
    }
}

/// Every certificate of a PEM file; a problem when there is none or one is not valid PEM.
fn certificates(
    at: &str,
    path: &Path,
    pem: &[u8],
    p: &mut Problems,
) -> Vec<CertificateDer<'static>> {
    match CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if certs.is_empty() => {
            p.push(
                at,
                format!(
                    "{} holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block); give the certificate in PEM, not DER",
                    path.display()
                ),
            );
            Vec::new()
        }
        Ok(certs) => certs,
        Err(e) => {
            p.push(
                at,
                format!(
                    "{} is not valid PEM ({e}); give the certificate in PEM",
                    path.display()
                ),
            );
            Vec::new()
        }
    }
}

/// The private key of a PEM file; a problem when there is none. The message never holds key
/// material.
fn private_key(
    at: &str,
    path: &Path,
    pem: &[u8],
    p: &mut Problems,
) -> Option<PrivateKeyDer<'static>> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Some(key),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            p.push(
                at,
                format!(
                    "{} holds no PEM private key (PKCS#8 `BEGIN PRIVATE KEY`, PKCS#1 `BEGIN RSA PRIVATE KEY` or SEC1 `BEGIN EC PRIVATE KEY`); an encrypted key must be decrypted first",
                    path.display()
                ),
            );
            None
        }
        Err(_) => {
            p.push(
                at,
                format!(
                    "{} is not valid PEM; give the private key in PEM",
                    path.display()
                ),
            );
            None
        }
    }
}

/// A certificate and its key from `cert_file` and `key_file`, both given or neither; `at` is
/// the table's path (`mqtt[0].tls`). `None` when neither is set or on a problem.
fn cert_and_key(
    at: &str,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
    p: &mut Problems,
) -> Option<(
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    Identity,
)> {
    let (cert_file, key_file) = match (cert_file, key_file) {
        (None, None) => return None,
        (Some(c), Some(k)) => (c, k),
        (None, Some(_)) => {
            p.push(
                format!("{at}.key_file"),
                "a key without its certificate: set `cert_file` too (the certificate the key belongs to), or remove `key_file`",
            );
            return None;
        }
        (Some(_), None) => {
            p.push(
                format!("{at}.cert_file"),
                "a certificate without its key: set `key_file` too (its private key, PEM), or remove `cert_file`",
            );
            return None;
        }
    };
    let cert_at = format!("{at}.cert_file");
    let key_at = format!("{at}.key_file");
    let cert_pem = read_pem(&cert_at, cert_file, p)?;
    let key_pem = read_pem(&key_at, key_file, p)?;
    let certs = certificates(&cert_at, cert_file, &cert_pem, p);
    let key = private_key(&key_at, key_file, &key_pem, p)?;
    if certs.is_empty() {
        return None;
    }
    Some((
        certs,
        key,
        Identity {
            cert_file: cert_file.to_path_buf(),
            cert_pem,
            key_pem,
        },
    ))
}

impl TlsConfig {
    /// Read and check the files, build the rustls configuration. `at` is this table's path
    /// (`mqtt[0].tls`); every problem is pushed to `p` naming the field and the fix.
    pub fn validate(&self, at: &str, p: &mut Problems) -> Option<ClientTls> {
        let before = p.len();
        let ca_at = format!("{at}.ca_file");
        let roots = read_pem(&ca_at, &self.ca_file, p).map(|pem| {
            let certs = certificates(&ca_at, &self.ca_file, &pem, p);
            let mut roots = RootCertStore::empty();
            for (i, cert) in certs.into_iter().enumerate() {
                if let Err(e) = roots.add(cert) {
                    p.push(
                        &ca_at,
                        format!(
                            "certificate {} of {} is not a usable CA certificate ({e}); give the CA that signed the server's certificate",
                            i + 1,
                            self.ca_file.display()
                        ),
                    );
                }
            }
            (pem, roots)
        });
        let identity = cert_and_key(at, self.cert_file.as_deref(), self.key_file.as_deref(), p);
        let server_name = self.server_name.as_ref().and_then(|name| {
            ServerName::try_from(name.clone())
                .map_err(|_| {
                    p.push(
                        format!("{at}.server_name"),
                        format!("\"{name}\" is not a DNS name or IP address; give the name the server's certificate carries, or remove it to check the host"),
                    );
                })
                .ok()
        });
        let (ca_pem, roots) = roots?;
        if p.len() > before {
            return None;
        }
        let rustls = match client_config(
            roots,
            identity
                .as_ref()
                .map(|(c, k, _)| (c.clone(), k.clone_key())),
            server_name.clone(),
        ) {
            Ok(c) => c,
            Err(e) => {
                let field = if identity.is_some() {
                    "key_file"
                } else {
                    "ca_file"
                };
                p.push(
                    format!("{at}.{field}"),
                    format!("the TLS configuration cannot be built: {e}; check that `key_file` is the key of `cert_file`"),
                );
                return None;
            }
        };
        Some(ClientTls {
            ca_file: self.ca_file.clone(),
            ca_pem,
            identity: identity.map(|(_, _, i)| i),
            server_name,
            rustls,
        })
    }
}

/// The rustls client configuration: `roots` only, the client certificate if any, and the
/// server name check against `server_name` when it is set.
fn client_config(
    roots: RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    server_name: Option<ServerName<'static>>,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let roots = Arc::new(roots);
    let builder = match server_name {
        None => builder.with_root_certificates(roots),
        Some(name) => {
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NamedServerVerifier { inner, name }))
        }
    };
    let config = match identity {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Checks the server's certificate exactly as rustls' own verifier does, against a configured
/// name instead of the host connected to (rumqttc gives rustls the host; it has no option for
/// another name). Only the name differs: chain, validity and signatures are checked by
/// [`WebPkiServerVerifier`].
#[derive(Debug)]
struct NamedServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

impl ClientTls {
    /// The rustls configuration (for rumqttc and tokio-rustls).
    #[must_use]
    pub fn rustls(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.rustls)
    }

    /// The rumqttc transport for this table.
    #[must_use]
    pub fn mqtt_transport(&self) -> rumqttc::Transport {
        rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(self.rustls()))
    }

    /// Make `builder` use this table's rustls configuration: `ca_file` as the whole trust store
    /// and the client certificate, if any. reqwest 0.12 runs the same rustls 0.23 as rumqttc,
    /// so it takes the configuration built at load as it is, not the PEM files again.
    pub fn reqwest(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        builder.use_preconfigured_tls(ClientConfig::clone(&self.rustls))
    }

    /// The name a TLS connection to `host` is made for: the configured `server_name`, else the
    /// host.
    ///
    /// # Errors
    /// `host` is neither a DNS name nor an IP address.
    pub fn server_name_for(&self, host: &str) -> Result<ServerName<'static>, std::io::Error> {
        match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => ServerName::try_from(host.to_owned()).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("\"{host}\" is not a DNS name or IP address usable for TLS"),
                )
            }),
        }
    }
}

/// A listener's `tls = { ... }` table, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// Address of the TLS listener, e.g. `"0.0.0.0:8883"`.
    pub listen: std::net::SocketAddr,
    /// PEM file of the server certificate (chain, leaf first).
    pub cert_file: PathBuf,
    /// PEM file of its private key.
    pub key_file: PathBuf,
}

/// A validated listener `tls` table.
#[derive(Clone)]
pub struct ListenerTls {
    /// Where it listens.
    pub listen: std::net::SocketAddr,
    /// The rustls server configuration.
    pub rustls: Arc<ServerConfig>,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl ListenerTlsConfig {
    /// Read and check the certificate and key; `at` is this table's path
    /// (`embedded_broker.tls`).
    pub fn validate(&self, at: &str, p: &mut Problems) -> Option<ListenerTls> {
        if self.listen.port() == 0 {
            p.push(
                format!("{at}.listen"),
                format!("port 0 is not allowed: clients need to know it; the MQTT over TLS port is {MQTT_TLS_PORT}"),
            );
        }
        let (certs, key, _) = cert_and_key(at, Some(&self.cert_file), Some(&self.key_file), p)?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key));
        match config {
            Ok(c) => Some(ListenerTls {
                listen: self.listen,
                rustls: Arc::new(c),
            }),
            Err(e) => {
                p.push(
                    format!("{at}.key_file"),
                    format!("the TLS listener cannot be built: {e}; check that `key_file` is the key of `cert_file`"),
                );
                None
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
