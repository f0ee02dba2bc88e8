use super::*;

fn settings(url: &str) -> (String, TlsSettings) {
    TlsSettings::take_from(url).unwrap()
}

fn network() -> Network {
    Network::from_env().unwrap()
}

fn tls(url: &str) -> (tokio_postgres::Config, PgTls) {
    configure(url, Some(&network())).unwrap()
}

#[test]
fn the_tls_parameters_leave_the_url_and_the_others_stay() {
    let (rest, taken) = settings(
        "postgres://u:p%3Fw?d@db.example.com:5433/cred?application_name=a&sslmode=verify-ca\
         &sslrootcert=certs%2Fca.pem&connect_timeout=5",
    );
    assert_eq!(
        rest,
        "postgres://u:p%3Fw?d@db.example.com:5433/cred?application_name=a&connect_timeout=5"
    );
    assert_eq!(taken.mode, Some(SslMode::VerifyCa));
    assert_eq!(
        taken.root_cert,
        Some(RootCert::File(PathBuf::from("certs/ca.pem")))
    );
    assert!(rest.parse::<tokio_postgres::Config>().is_ok());

    let (rest, taken) = settings("postgresql://u@h/db?sslmode=require");
    assert_eq!(rest, "postgresql://u@h/db");
    assert_eq!(taken.mode, Some(SslMode::Require));
    let (rest, taken) = settings("postgres://u@h/db");
    assert_eq!(rest, "postgres://u@h/db");
    assert_eq!(taken, TlsSettings::default());
}

#[test]
fn a_bad_tls_parameter_is_refused_without_quoting_the_url() {
    let url = "postgres://u:hunter2@h/db?sslmode=hunter2-verify";
    let message = TlsSettings::take_from(url).err().unwrap().to_string();
    assert!(message.contains("sslmode"), "{message}");
    assert!(message.contains("verify-full"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");

    let message = TlsSettings::take_from("postgres://u@h/db?sslcert=me.crt")
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("sslcert"), "{message}");
    assert!(message.contains("not supported"), "{message}");

    let message = TlsSettings::take_from("postgres://u@h/db?sslrootcert=")
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("sslrootcert"), "{message}");
}

#[test]
fn a_root_file_that_cannot_be_used_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let empty = dir.path().join("empty-ca.pem");
    std::fs::write(&empty, "").unwrap();
    for (path, reason) in [(&missing, "no such file"), (&empty, "no certificate")] {
        let url = format!(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert={}",
            path.display()
        );
        let (_, taken) = settings(&url);
        let message = taken.resolve(&network()).err().unwrap().to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("sslrootcert"), "{message}");
        assert!(message.contains(reason), "{message}");
    }
}

#[test]
fn sslrootcert_system_means_verify_full_as_in_libpq() {
    let (_, tls) = tls("postgres://u@db.example.com/db?sslrootcert=system");
    assert_eq!(tls.mode, SslMode::VerifyFull);
    let (_, taken) = settings("postgres://u@h/db?sslrootcert=system&sslmode=require");
    let message = taken.resolve(&network()).err().unwrap().to_string();
    assert!(message.contains("verify-full"), "{message}");
}

#[test]
fn each_mode_maps_to_what_the_driver_tries_and_what_is_checked() {
    let cases = [
        ("", DriverMode::Prefer, false),
        ("?sslmode=disable", DriverMode::Disable, false),
        ("?sslmode=allow", DriverMode::Prefer, false),
        ("?sslmode=prefer", DriverMode::Prefer, false),
        ("?sslmode=require", DriverMode::Require, false),
        ("?sslmode=verify-ca", DriverMode::Require, true),
        ("?sslmode=verify-full", DriverMode::Require, true),
    ];
    for (query, driver, checked) in cases {
        let (config, tls) = tls(&format!("postgres://u@127.0.0.1/db{query}"));
        assert_eq!(config.get_ssl_mode(), driver, "{query}");
        assert_eq!(tls.checks_chain, checked, "{query}");
    }
    // Over a Unix socket the server offers no TLS, and libpq asks for none.
    let (config, _) = tls("postgres://u@%2Frun%2Fpostgresql/db?sslmode=verify-full");
    assert_eq!(config.get_ssl_mode(), DriverMode::Disable);
}

#[test]
fn require_with_a_root_file_checks_the_chain_as_in_libpq() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, ca.cert.pem()).unwrap();
    let (_, tls) = tls(&format!(
        "postgres://u@127.0.0.1/db?sslmode=require&sslrootcert={}",
        path.display()
    ));
    assert!(tls.checks_chain);
    assert!(
        tls.setting.contains("trusting only sslrootcert"),
        "{}",
        tls.setting
    );
}

fn warning(url: &str) -> Option<String> {
    let (config, tls) = tls(url);
    tls.warning(&config)
}

#[test]
fn a_remote_server_below_verify_full_is_warned_about() {
    let message = warning("postgres://u@db.example.com/db?sslmode=require").unwrap();
    assert!(message.contains("db.example.com"), "{message}");
    assert!(message.contains("sslmode=require"), "{message}");
    assert!(message.contains("set sslmode=verify-full"), "{message}");

    let message = warning("postgres://u@10.1.2.3:5432/db").unwrap();
    assert!(message.contains("10.1.2.3"), "{message}");
    assert!(message.contains("default, prefer"), "{message}");
    assert!(message.contains("in clear"), "{message}");

    let message = warning("postgres://u@db.example.com/db?sslmode=verify-ca").unwrap();
    assert!(message.contains("name this host"), "{message}");
    // The address decides where the connection goes, whatever the name.
    assert!(warning("postgres://u@db.test/db?hostaddr=192.0.2.7&sslmode=disable").is_some());
}

#[test]
fn this_machine_or_verify_full_is_not_warned_about() {
    for url in [
        "postgres://u@127.0.0.1/db?sslmode=disable",
        "postgres://u@localhost/db",
        "postgres://u@[::1]:5432/db?sslmode=require",
        "postgres://u@db.test/db?hostaddr=127.0.0.1&sslmode=verify-ca",
        "postgres://u@%2Frun%2Fpostgresql/db",
        "postgres://u@db.example.com/db?sslmode=verify-full",
    ] {
        assert_eq!(warning(url), None, "{url}");
    }
}
