//! `rediss://` against a redis-server with TLS on, its certificate signed by a CA made here
//! with the `openssl` CLI (the `tls` feature: `cargo test -p multiproc-redis --features tls
//! --test tls`).
#![cfg(feature = "tls")]

mod common;

use common::{Children, RedisServer, free_port, spawn_self, wait_line};
use multiproc_redis::{ConnectError, LinkError, Options, RemoteQueue};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the openssl CLI is needed for this test");
    assert!(st.success(), "openssl {args:?} failed");
}

/// A CA and a server certificate for 127.0.0.1 in `dir`: ca.pem, srv.pem, srv.key.
fn make_certs(dir: &Path) {
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    #[rustfmt::skip]
    let steps: [&[&str]; 3] = [
        &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=multiproc test CA"],
        &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1"],
        &["x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
          "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf"],
    ];
    for s in steps {
        openssl(dir, s);
    }
}

fn opts() -> Options {
    Options {
        connect_timeout: Duration::from_secs(2),
        ..Options::default()
    }
}

/// Child role: connect over TLS trusting MULTIPROC_REDIS_CA_FILE, put and get back.
#[test]
fn zz_child_entry() {
    let Ok(url) = std::env::var("MP_TLS_URL") else {
        return;
    };
    let q: RemoteQueue<String> = RemoteQueue::connect_with(&url, "tlsq", opts()).unwrap();
    q.put(&"over tls".to_string()).unwrap();
    let got = q.get_timeout(Duration::from_secs(5)).unwrap();
    println!("TLSOK {got}");
}

#[test]
fn rediss_url_talks_tls_and_checks_the_certificate() {
    let dir = std::env::temp_dir().join(format!("mp-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    make_certs(&dir);
    let tls_port = free_port();
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let (port_s, cert, key, ca) = (
        tls_port.to_string(),
        p("srv.pem"),
        p("srv.key"),
        p("ca.pem"),
    );
    let r = RedisServer::start_with(&[
        "--tls-port",
        &port_s,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    // Without the CA the server's certificate is not trusted: a clear error, in time.
    let e = RemoteQueue::<String>::connect_with(&url, "tlsq", opts()).unwrap_err();
    assert!(
        matches!(e, ConnectError::Link(LinkError::Unreachable { .. })),
        "{e:?}"
    );
    // Plain redis:// to the TLS port is not TLS: refused too.
    let plain = format!("redis://127.0.0.1:{tls_port}");
    assert!(RemoteQueue::<String>::connect_with(&plain, "tlsq", opts()).is_err());
    // Trusting the CA: works (in a child, as the variable is process-wide).
    let mut kids = Children::default();
    let i = kids.push(spawn_self(
        "zz_child_entry",
        &[("MP_TLS_URL", url), ("MULTIPROC_REDIS_CA_FILE", ca.clone())],
    ));
    assert_eq!(wait_line(&mut kids.0[i], "TLSOK "), "over tls");
    drop(r);
    let _ = std::fs::remove_dir_all(&dir);
}
