//! TLS for test servers on loopback: a CA made fresh for each run with a server certificate
//! it signed for `127.0.0.1` and `localhost`, and a one-answer HTTP(S) server for tests of
//! clients that fetch one document.
//!
//! Nothing here may listen beyond loopback or be linked into a shipped binary.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// How long the one-answer server waits for its client, to connect and to send.
const WAIT: Duration = Duration::from_secs(30);

/// A per-run CA and the server configuration of a leaf certificate it signed.
#[derive(Debug)]
pub struct TestCa {
    /// The CA certificate, PEM: what clients must trust.
    pub ca_pem: String,
    /// rustls on `ring`, HTTP/1.1 by ALPN, the leaf for `127.0.0.1` and `localhost`.
    pub server_config: Arc<rustls::ServerConfig>,
}

impl TestCa {
    /// A fresh CA named `name` and its leaf. Panics if it cannot.
    pub fn generate(name: &str) -> TestCa {
        let ca_key = KeyPair::generate().expect("test CA: key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .expect("test CA: self-sign the CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().expect("test CA: server key");
        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("server params");
        server_params
            .distinguished_name
            .push(DnType::CommonName, name);
        server_params.is_ca = IsCa::ExplicitNoCa;
        server_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // OpenSSL's strict verification (Python's default context) wants the link to the
        // issuer spelled out.
        server_params.use_authority_key_identifier_extension = true;
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("test CA: sign the server certificate");

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let chain: Vec<CertificateDer<'static>> = vec![server_cert.der().clone()];
        let mut server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("test CA: TLS protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("test CA: TLS server configuration");
        server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TestCa {
            ca_pem: ca_cert.pem(),
            server_config: Arc::new(server_config),
        }
    }

    /// Writes the CA certificate to `path`, for a client's CA file or `SSL_CERT_FILE`.
    pub fn write_ca_file(&self, path: &Path) {
        std::fs::write(path, &self.ca_pem).expect("test CA: write the CA file");
    }
}

/// A server on `127.0.0.1` that answers one connection's first request with a fixed
/// answer, over TLS when given a configuration; joining it gives the request's head (or
/// `None` when the client never completed one, e.g. it refused the certificate).
#[derive(Debug)]
pub struct OneAnswerServer {
    /// Where it listens.
    pub addr: SocketAddr,
    thread: JoinHandle<Option<String>>,
}

impl OneAnswerServer {
    /// Starts it. `answer` is the whole response, status line, headers and body, as the
    /// test wants it on the wire (chunked, lying about its length, …).
    pub fn start(tls: Option<Arc<rustls::ServerConfig>>, answer: Vec<u8>) -> OneAnswerServer {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let thread = std::thread::spawn(move || {
            // A client that never connects must not hang the test that joins this thread.
            let deadline = Instant::now() + WAIT;
            let tcp = loop {
                match listener.accept() {
                    Ok((tcp, _)) => break tcp,
                    Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => return None,
                }
            };
            tcp.set_nonblocking(false).ok()?;
            tcp.set_read_timeout(Some(WAIT)).ok()?;
            match tls {
                Some(config) => {
                    let conn = rustls::ServerConnection::new(config).ok()?;
                    answer_one(rustls::StreamOwned::new(conn, tcp), &answer)
                }
                None => answer_one(tcp, &answer),
            }
        });
        OneAnswerServer { addr, thread }
    }

    /// The request head the server received.
    pub fn request(self) -> Option<String> {
        self.thread.join().expect("the one-answer server panicked")
    }
}

fn answer_one(mut stream: impl Read + Write, answer: &[u8]) -> Option<String> {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        request.extend_from_slice(&buf[..n]);
    }
    // The client may hang up early (it read enough to refuse the document): not our error.
    let _ = stream.write_all(answer).and_then(|()| stream.flush());
    Some(String::from_utf8_lossy(&request).into_owned())
}
