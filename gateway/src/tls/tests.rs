//! The `tls` table's checks against files made here: a CA and certificates generated with rcgen
//! for each test (never checked in), and files that are wrong in the ways a technician's are.

use super::*;

/// A CA, a server certificate it signed for 127.0.0.1 and `localhost`, and a client
/// certificate, written as PEM files into a temporary directory.
pub(crate) struct TestPki {
    pub(crate) dir: tempfile::TempDir,
}

impl TestPki {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let write =
            |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "anju test CA");
        let ca = ca.self_signed(&ca_key).expect("ca");
        write("ca.pem", &ca.pem());
        for (name, sans) in [
            (
                "server",
                vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            ),
            ("client", vec!["gateway.test".to_owned()]),
        ] {
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = rcgen::CertificateParams::new(sans)
                .expect("params")
                .signed_by(&key, &ca, &ca_key)
                .expect("sign");
            write(&format!("{name}.pem"), &cert.pem());
            write(&format!("{name}.key"), &key.serialize_pem());
        }
        Self { dir }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn check(c: &TlsConfig) -> Result<ClientTls, Vec<String>> {
    let mut p = Problems::default();
    let found = c.validate("mqtt[0].tls", &mut p);
    let messages: Vec<String> = p.into_vec().iter().map(ToString::to_string).collect();
    match found {
        Some(t) if messages.is_empty() => Ok(t),
        _ => Err(messages),
    }
}

fn config(pki: &TestPki) -> TlsConfig {
    TlsConfig {
        ca_file: pki.path("ca.pem"),
        cert_file: None,
        key_file: None,
        server_name: None,
    }
}

#[test]
fn a_ca_file_with_or_without_a_client_certificate_is_accepted() {
    let pki = TestPki::new();
    let plain = check(&config(&pki)).expect("valid");
    assert_eq!(plain.ca_file, pki.path("ca.pem"));
    assert!(plain.server_name.is_none());
    let with_cert = check(&TlsConfig {
        cert_file: Some(pki.path("client.pem")),
        key_file: Some(pki.path("client.key")),
        server_name: Some("broker.site.lan".to_owned()),
        ..config(&pki)
    })
    .expect("valid");
    assert_eq!(
        with_cert.server_name_for("10.0.0.5").expect("name"),
        ServerName::try_from("broker.site.lan").expect("name")
    );
    // The key is a secret: Debug shows where the certificate is, never the key.
    let key = std::fs::read_to_string(pki.path("client.key")).expect("key");
    let line = key.lines().nth(1).expect("key line");
    let shown = format!("{with_cert:?}");
    assert!(!shown.contains(line), "{shown}");
    assert!(shown.contains("client.pem"), "{shown}");
}

#[test]
fn unusable_files_are_refused_naming_the_field_the_path_and_the_fix() {
    let pki = TestPki::new();
    let missing = pki.path("nope.pem");
    let err = check(&TlsConfig {
        ca_file: missing.clone(),
        ..config(&pki)
    })
    .expect_err("missing");
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(
        err[0].starts_with(&format!(
            "mqtt[0].tls.ca_file: cannot read {}:",
            missing.display()
        )),
        "{err:?}"
    );
    assert!(
        err[0].ends_with("that the gateway's user may read it"),
        "{err:?}"
    );

    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let err = check(&TlsConfig {
        ca_file: garbage.clone(),
        ..config(&pki)
    })
    .expect_err("garbage");
    assert_eq!(
        err,
        [format!(
            "mqtt[0].tls.ca_file: {} holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block); give the certificate in PEM, not DER",
            garbage.display()
        )]
    );

    // A key without its certificate, and the other way round.
    let err = check(&TlsConfig {
        key_file: Some(pki.path("client.key")),
        ..config(&pki)
    })
    .expect_err("key alone");
    assert_eq!(
        err,
        ["mqtt[0].tls.key_file: a key without its certificate: set `cert_file` too (the certificate the key belongs to), or remove `key_file`"]
    );
    let err = check(&TlsConfig {
        cert_file: Some(pki.path("client.pem")),
        ..config(&pki)
    })
    .expect_err("cert alone");
    assert!(
        err[0].starts_with("mqtt[0].tls.cert_file: a certificate without its key"),
        "{err:?}"
    );

    // A certificate given as the key: no key in it.
    let err = check(&TlsConfig {
        cert_file: Some(pki.path("client.pem")),
        key_file: Some(pki.path("client.pem")),
        ..config(&pki)
    })
    .expect_err("no key");
    assert!(
        err[0].starts_with(&format!(
            "mqtt[0].tls.key_file: {} holds no PEM private key",
            pki.path("client.pem").display()
        )),
        "{err:?}"
    );

    // The server's key with the client's certificate: not a pair.
    let err = check(&TlsConfig {
        cert_file: Some(pki.path("client.pem")),
        key_file: Some(pki.path("server.key")),
        ..config(&pki)
    })
    .expect_err("mismatch");
    assert!(
        err[0].starts_with("mqtt[0].tls.key_file: the TLS configuration cannot be built:")
            && err[0].ends_with("check that `key_file` is the key of `cert_file`"),
        "{err:?}"
    );

    let err = check(&TlsConfig {
        server_name: Some("not a name!".to_owned()),
        ..config(&pki)
    })
    .expect_err("name");
    assert!(
        err[0].starts_with(
            "mqtt[0].tls.server_name: \"not a name!\" is not a DNS name or IP address"
        ),
        "{err:?}"
    );
}

#[test]
fn a_listener_needs_a_matching_certificate_and_key() {
    let pki = TestPki::new();
    let at = |cert: &str, key: &str| ListenerTlsConfig {
        listen: "127.0.0.1:8883".parse().expect("addr"),
        cert_file: pki.path(cert),
        key_file: pki.path(key),
    };
    let mut p = Problems::default();
    let ok = at("server.pem", "server.key").validate("embedded_broker.tls", &mut p);
    assert!(ok.is_some() && p.is_empty());
    let mut p = Problems::default();
    assert!(at("server.pem", "client.key")
        .validate("embedded_broker.tls", &mut p)
        .is_none());
    let found: Vec<String> = p.into_vec().iter().map(|p| p.at.clone()).collect();
    assert_eq!(found, ["embedded_broker.tls.key_file"]);
}

#[test]
fn each_client_takes_the_same_table_and_mqtt_over_tls_defaults_to_8883() {
    let pki = TestPki::new();
    let ca = pki.path("ca.pem");
    let ca = ca.display();
    let source: crate::sources::mqtt::MqttSourceConfig = toml::from_str(&format!(
        "name = \"s\"\nhost = \"broker.site.lan\"\ntls = {{ ca_file = \"{ca}\" }}\n\
         [[subscriptions]]\nname = \"a\"\ntopic = \"n/{{device}}/{{sensor}}\"\npoint = \"{{sensor}}\"\npayload = {{ format = \"plain\" }}\n"
    ))
    .expect("toml");
    let s = source.validate("mqtt[0]").expect("valid");
    assert_eq!(s.port, MQTT_TLS_PORT);
    assert!(s.tls.is_some());

    let sink: crate::sinks::mqtt::MqttSinkConfig = toml::from_str(&format!(
        "host = \"bureau.example\"\nclient_id = \"gw\"\ntls = {{ ca_file = \"{ca}\", key_file = \"{}\" }}\n",
        pki.path("client.key").display()
    ))
    .expect("toml");
    let err = sink.validate("sinks[1]").expect_err("key alone");
    assert_eq!(err.len(), 1);
    assert!(err[0]
        .to_string()
        .starts_with("sinks[1].tls.key_file: a key without its certificate"));
    let sink: crate::sinks::mqtt::MqttSinkConfig = toml::from_str(&format!(
        "host = \"bureau.example\"\nclient_id = \"gw\"\ntls = {{ ca_file = \"{ca}\" }}\n"
    ))
    .expect("toml");
    assert_eq!(
        sink.validate("sinks[1]").expect("valid").port,
        MQTT_TLS_PORT
    );

    let influx = |url: &str, extra: &str| {
        toml::from_str::<crate::sinks::influxdb::InfluxSinkConfig>(&format!(
            "url = \"{url}\"\norg = \"o\"\nbucket = \"b\"\ntls = {{ ca_file = \"{ca}\"{extra} }}\n"
        ))
        .expect("toml")
        .validate("sinks[0]")
    };
    assert!(influx("https://store.site.lan:8086", "")
        .expect("valid")
        .tls
        .is_some());
    let err = influx("http://store.site.lan:8086", "").expect_err("http");
    assert_eq!(
        err[0].to_string(),
        "sinks[0].tls: a `tls` table needs an https:// url; change the url's scheme, or remove `tls`"
    );
    let err = influx("https://10.0.0.9:8086", ", server_name = \"store\"").expect_err("name");
    assert!(err[0]
        .to_string()
        .starts_with("sinks[0].tls.server_name: not supported for InfluxDB"));
}
