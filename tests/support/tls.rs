//! TLS and SASL for tests: a private CA issuing certificates, and a front
//! that terminates TLS (and, if asked, authenticates SASL/SCRAM-SHA-512 the
//! way a Kafka broker does) before a mock-cluster broker, which speaks
//! neither. The broker advertises the front's address, so every connection a
//! client makes, bootstrap or not, goes through the front.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use hmac::{KeyInit, Mac};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use sha2::{Digest, Sha512};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A private certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate, PEM.
    pub pem: String,
}

/// A certificate the CA issued, with its key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    der: Vec<u8>,
    key_der: Vec<u8>,
}

impl Ca {
    pub fn new() -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: a certificate whose issuer equals its subject
        // looks self-signed to OpenSSL.
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("Ordo test CA {}", rand::random::<u32>()),
        );
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses).
    pub fn issue(&self, names: &[&str]) -> Issued {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].clone());
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }
}

impl Issued {
    fn server_config(&self) -> Arc<tokio_rustls::rustls::ServerConfig> {
        let config = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.der.clone())],
                PrivateKeyDer::try_from(self.key_der.clone()).expect("key"),
            )
            .expect("TLS config");
        Arc::new(config)
    }
}

/// SCRAM-SHA-512 credentials the front accepts.
#[derive(Clone)]
pub struct Scram {
    pub user: String,
    pub password: String,
}

/// A TLS (and optionally SASL) front before one broker.
pub struct KafkaFront {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KafkaFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KafkaFront {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream` once the
    /// client's TLS handshake (and SCRAM authentication, with `scram`) succeeded.
    pub async fn start(upstream: SocketAddr, cert: &Issued, scram: Option<Scram>) -> KafkaFront {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, scram) = (acceptor.clone(), scram.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    if let Some(scram) = scram {
                        if authenticate(&mut tls, &mut up, &scram).await.is_err() {
                            return;
                        }
                    }
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                });
            }
        });
        KafkaFront { port, task }
    }
}

/// Kafka API keys the front handles itself.
const API_SASL_HANDSHAKE: i16 = 17;
const API_API_VERSIONS: i16 = 18;
const API_SASL_AUTHENTICATE: i16 = 36;
/// Kafka error codes.
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

type Io = std::io::Result<()>;

fn fail(what: &str) -> std::io::Error {
    std::io::Error::other(what.to_string())
}

async fn read_frame<S: AsyncReadExt + Unpin>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let len = s.read_i32().await?;
    if !(0..=16 << 20).contains(&len) {
        return Err(fail("bad frame length"));
    }
    let mut buf = vec![0; len as usize];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<S: AsyncWriteExt + Unpin>(s: &mut S, body: &[u8]) -> Io {
    s.write_i32(body.len() as i32).await?;
    s.write_all(body).await?;
    s.flush().await
}

/// A Kafka request's header (v1/v2): api key, version, correlation id, and
/// where the body starts.
struct Header {
    api_key: i16,
    version: i16,
    correlation: i32,
    body: usize,
}

fn header(frame: &[u8]) -> std::io::Result<Header> {
    let get = |i: usize, n: usize| frame.get(i..i + n).ok_or_else(|| fail("short frame"));
    let api_key = i16::from_be_bytes(get(0, 2)?.try_into().unwrap_or_default());
    let version = i16::from_be_bytes(get(2, 2)?.try_into().unwrap_or_default());
    let correlation = i32::from_be_bytes(get(4, 4)?.try_into().unwrap_or_default());
    let client_len = i16::from_be_bytes(get(8, 2)?.try_into().unwrap_or_default()).max(0) as usize;
    Ok(Header {
        api_key,
        version,
        correlation,
        body: 10 + client_len,
    })
}

/// Serves ApiVersions (the broker's, plus SaslHandshake and SaslAuthenticate),
/// SaslHandshake and the SCRAM-SHA-512 exchange; returns once authenticated.
async fn authenticate<S>(tls: &mut S, up: &mut TcpStream, scram: &Scram) -> Io
where
    S: AsyncReadExt + AsyncWriteExt + Unpin,
{
    let mut server_first = None::<(String, String, Vec<u8>)>;
    loop {
        let frame = read_frame(tls).await?;
        let h = header(&frame)?;
        let mut out = h.correlation.to_be_bytes().to_vec();
        match h.api_key {
            API_API_VERSIONS => {
                write_frame(up, &frame).await?;
                let response = read_frame(up).await?;
                write_frame(tls, &with_sasl_apis(&response, h.version)?).await?;
                continue;
            }
            API_SASL_HANDSHAKE => {
                let body = &frame[h.body..];
                let n = i16::from_be_bytes([body[0], body[1]]) as usize;
                let mechanism = String::from_utf8_lossy(&body[2..2 + n]).into_owned();
                let code = if mechanism == "SCRAM-SHA-512" {
                    0
                } else {
                    UNSUPPORTED_SASL_MECHANISM
                };
                out.extend(code.to_be_bytes());
                out.extend(1i32.to_be_bytes());
                out.extend((13i16).to_be_bytes());
                out.extend(b"SCRAM-SHA-512");
                write_frame(tls, &out).await?;
                if code != 0 {
                    return Err(fail("unsupported mechanism"));
                }
            }
            API_SASL_AUTHENTICATE => {
                let body = &frame[h.body..];
                let n = i32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
                let token = String::from_utf8_lossy(&body[4..4 + n]).into_owned();
                let (reply, done) = match server_first.take() {
                    None => {
                        let bare = token.strip_prefix("n,,").ok_or_else(|| fail("gs2"))?;
                        let nonce = attribute(bare, 'r').ok_or_else(|| fail("nonce"))?;
                        let salt: Vec<u8> = (0..16).map(|_| rand::random::<u8>()).collect();
                        let first =
                            format!("r={nonce}{},s={},i=4096", rand::random::<u64>(), b64(&salt));
                        server_first = Some((bare.to_string(), first.clone(), salt));
                        (Ok(first), false)
                    }
                    Some((client_first, first, salt)) => {
                        (verify(scram, &client_first, &first, &salt, &token), true)
                    }
                };
                let (code, message, bytes) = match &reply {
                    Ok(r) => (0i16, None, r.as_bytes().to_vec()),
                    Err(m) => (SASL_AUTHENTICATION_FAILED, Some(m.clone()), vec![]),
                };
                out.extend(code.to_be_bytes());
                match message {
                    Some(m) => {
                        out.extend((m.len() as i16).to_be_bytes());
                        out.extend(m.as_bytes());
                    }
                    None => out.extend((-1i16).to_be_bytes()),
                }
                out.extend((bytes.len() as i32).to_be_bytes());
                out.extend(bytes);
                if h.version >= 1 {
                    out.extend(0i64.to_be_bytes());
                }
                write_frame(tls, &out).await?;
                match (reply, done) {
                    (Err(_), _) => return Err(fail("authentication failed")),
                    (Ok(_), true) => return Ok(()),
                    (Ok(_), false) => {}
                }
            }
            _ => return Err(fail("request before authentication")),
        }
    }
}

/// The broker's ApiVersions response with SaslHandshake (v0-1) and
/// SaslAuthenticate (v0-1) added.
fn with_sasl_apis(response: &[u8], version: i16) -> std::io::Result<Vec<u8>> {
    // correlation id (4), error code (2), then the array.
    if response.len() < 10 || response[4..6] != [0, 0] {
        // An error (e.g. a version the broker does not know): the client retries.
        return Ok(response.to_vec());
    }
    let mut out = response[..6].to_vec();
    let rest = &response[6..];
    let added = [
        (API_SASL_HANDSHAKE, 0i16, 1i16),
        (API_SASL_AUTHENTICATE, 0, 1),
    ];
    if version >= 3 {
        // Compact array: unsigned varint of count + 1; entries end with a tagged-field count.
        let (n, used) = uvarint(rest).ok_or_else(|| fail("varint"))?;
        let count = n - 1;
        let entries = &rest[used..used + count as usize * 7];
        put_uvarint(&mut out, count + added.len() as u64 + 1);
        out.extend(entries);
        for (key, min, max) in added {
            out.extend(key.to_be_bytes());
            out.extend(min.to_be_bytes());
            out.extend(max.to_be_bytes());
            out.push(0);
        }
        out.extend(&rest[used + count as usize * 7..]);
    } else {
        let count = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let entries = &rest[4..4 + count as usize * 6];
        out.extend((count + added.len() as i32).to_be_bytes());
        out.extend(entries);
        for (key, min, max) in added {
            out.extend(key.to_be_bytes());
            out.extend(min.to_be_bytes());
            out.extend(max.to_be_bytes());
        }
        out.extend(&rest[4 + count as usize * 6..]);
    }
    Ok(out)
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn attribute(message: &str, name: char) -> Option<String> {
    message
        .split(',')
        .find_map(|p| p.strip_prefix(&format!("{name}=")).map(str::to_string))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = hmac::Hmac::<Sha512>::new_from_slice(key).expect("hmac key");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// RFC 5802's Hi(): PBKDF2 with HMAC-SHA-512.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut u = hmac(password, &[salt, &1u32.to_be_bytes()].concat());
    let mut out = u.clone();
    for _ in 1..iterations {
        u = hmac(password, &u);
        out.iter_mut().zip(&u).for_each(|(o, x)| *o ^= x);
    }
    out
}

/// Checks the client's final message; returns the server's final message, or
/// the error a broker would send.
fn verify(
    scram: &Scram,
    client_first: &str,
    server_first: &str,
    salt: &[u8],
    client_final: &str,
) -> Result<String, String> {
    let refused = || {
        "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512".to_string()
    };
    let (without_proof, proof) = client_final.rsplit_once(",p=").ok_or_else(refused)?;
    let proof = base64::engine::general_purpose::STANDARD
        .decode(proof)
        .map_err(|_| refused())?;
    if attribute(client_first, 'n').as_deref() != Some(scram.user.as_str()) {
        return Err(refused());
    }
    let salted = hi(scram.password.as_bytes(), salt, 4096);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha512::digest(&client_key).to_vec();
    let auth = format!("{client_first},{server_first},{without_proof}");
    let signature = hmac(&stored_key, auth.as_bytes());
    let expected: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    if proof != expected {
        return Err(refused());
    }
    let server_key = hmac(&salted, b"Server Key");
    Ok(format!("v={}", b64(&hmac(&server_key, auth.as_bytes()))))
}
