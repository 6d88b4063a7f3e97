//! One TURN relay allocation, the way a calling client makes it: Allocate over UDP (RFC 5766), answered
//! "401 + realm + nonce", then again with the long-term credential (RFC 5389 §10.2: MESSAGE-INTEGRITY =
//! HMAC-SHA1 keyed by MD5(username:realm:password)). Success proves coturn runs, accepts the credentials
//! Synapse hands out (same shared secret on both sides) and has relay ports. The allocation is released
//! right away (Refresh, lifetime 0).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

const MAGIC: u32 = 0x2112_A442;
pub const ALLOCATE: u16 = 0x0003;
pub const REFRESH: u16 = 0x0004;
pub const SUCCESS: u16 = 0x0100;
pub const ERROR: u16 = 0x0110;

pub const USERNAME: u16 = 0x0006;
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ERROR_CODE: u16 = 0x0009;
pub const LIFETIME: u16 = 0x000D;
pub const REALM: u16 = 0x0014;
pub const NONCE: u16 = 0x0015;
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
pub const FINGERPRINT: u16 = 0x8028;

/// Time-limited TURN credentials, as Synapse's /voip/turnServer hands them to clients.
pub struct TurnCredentials {
    pub username: String,
    pub password: String,
}

/// MD5(username ":" realm ":" password): the long-term credential key.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    Md5::digest(format!("{username}:{realm}:{password}").as_bytes()).into()
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: u16,
    pub txid: [u8; 12],
    pub attrs: Vec<(u16, Vec<u8>)>,
}

impl Message {
    pub fn attr(&self, t: u16) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|(k, _)| *k == t)
            .map(|(_, v)| v.as_slice())
    }

    /// (code, reason) of an error response.
    pub fn error(&self) -> Option<(u16, String)> {
        let v = self.attr(ERROR_CODE)?;
        if v.len() < 4 {
            return None;
        }
        let code = u16::from(v[2] & 0x07) * 100 + u16::from(v[3]);
        Some((code, String::from_utf8_lossy(&v[4..]).into_owned()))
    }
}

/// Serialize; with `key`, append MESSAGE-INTEGRITY; always end with FINGERPRINT.
pub fn encode(kind: u16, txid: &[u8; 12], attrs: &[(u16, Vec<u8>)], key: Option<&[u8]>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    buf.extend_from_slice(&kind.to_be_bytes());
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&MAGIC.to_be_bytes());
    buf.extend_from_slice(txid);
    for (t, v) in attrs {
        push_attr(&mut buf, *t, v);
    }
    if let Some(key) = key {
        // The length covers the MESSAGE-INTEGRITY attribute itself while the HMAC is computed.
        let len = buf.len() - 20 + 24;
        set_len(&mut buf, len);
        let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("any key length");
        mac.update(&buf);
        let tag = mac.finalize().into_bytes();
        push_attr(&mut buf, MESSAGE_INTEGRITY, &tag);
    }
    let len = buf.len() - 20 + 8;
    set_len(&mut buf, len);
    let mut crc = flate2::Crc::new();
    crc.update(&buf);
    push_attr(
        &mut buf,
        FINGERPRINT,
        &(crc.sum() ^ 0x5354_554E).to_be_bytes(),
    );
    buf
}

fn push_attr(buf: &mut Vec<u8>, t: u16, v: &[u8]) {
    buf.extend_from_slice(&t.to_be_bytes());
    buf.extend_from_slice(&(v.len() as u16).to_be_bytes());
    buf.extend_from_slice(v);
    buf.resize(buf.len() + (4 - v.len() % 4) % 4, 0);
}

fn set_len(buf: &mut [u8], len: usize) {
    buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
}

pub fn decode(buf: &[u8]) -> Result<Message> {
    if buf.len() < 20 || buf[4..8] != MAGIC.to_be_bytes() {
        bail!("not a STUN message");
    }
    let kind = u16::from_be_bytes([buf[0], buf[1]]);
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if buf.len() < 20 + len {
        bail!("truncated STUN message");
    }
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&buf[8..20]);
    let mut attrs = Vec::new();
    let mut at = 20;
    while at + 4 <= 20 + len {
        let t = u16::from_be_bytes([buf[at], buf[at + 1]]);
        let l = usize::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]]));
        let end = at + 4 + l;
        if end > 20 + len {
            bail!("STUN attribute {t:#06x} overruns the message");
        }
        attrs.push((t, buf[at + 4..end].to_vec()));
        at = end + (4 - l % 4) % 4;
    }
    Ok(Message { kind, txid, attrs })
}

/// An XOR-MAPPED/XOR-RELAYED-ADDRESS value.
pub fn xor_address(v: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 8 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC >> 16) as u16;
    let mut mask = MAGIC.to_be_bytes().to_vec();
    mask.extend_from_slice(txid);
    let ip = match v[1] {
        0x01 => {
            let b: [u8; 4] = std::array::from_fn(|i| v[4 + i] ^ mask[i]);
            IpAddr::V4(Ipv4Addr::from(b))
        }
        0x02 if v.len() >= 20 => {
            let b: [u8; 16] = std::array::from_fn(|i| v[4 + i] ^ mask[i]);
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

struct Client {
    socket: UdpSocket,
    server: SocketAddr,
}

impl Client {
    /// Send and wait for the answer with the same transaction id; UDP may drop either, so try 3 times.
    fn exchange(&self, kind: u16, attrs: &[(u16, Vec<u8>)], key: Option<&[u8]>) -> Result<Message> {
        let txid: [u8; 12] = rand::random();
        let request = encode(kind, &txid, attrs, key);
        let mut buf = [0u8; 1500];
        for _ in 0..3 {
            self.socket.send(&request)?;
            loop {
                match self.socket.recv(&mut buf) {
                    Ok(n) => match decode(&buf[..n]) {
                        Ok(m) if m.txid == txid => return Ok(m),
                        _ => continue,
                    },
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(e) => return Err(anyhow!("{}: {e} (is coturn listening?)", self.server)),
                }
            }
        }
        bail!(
            "{}: no answer to a TURN request (is coturn running and listening on UDP {}?)",
            self.server,
            crate::layout::TURN_PORT
        )
    }
}

/// Allocate a UDP relay on `server` with `creds`; returns the relayed address. The allocation is freed.
pub fn allocate(
    server: SocketAddr,
    creds: &TurnCredentials,
    timeout: Duration,
) -> Result<SocketAddr> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).context("opening a UDP socket")?;
    socket.connect(server)?;
    socket.set_read_timeout(Some(timeout))?;
    let client = Client { socket, server };
    let udp = (REQUESTED_TRANSPORT, vec![17, 0, 0, 0]);
    let first = client.exchange(ALLOCATE, std::slice::from_ref(&udp), None)?;
    let (realm, mut nonce) = match (first.attr(REALM), first.attr(NONCE)) {
        (Some(r), Some(n)) if first.kind == ALLOCATE | ERROR => (r.to_vec(), n.to_vec()),
        _ => bail!(
            "{server}: expected a 401 challenge to an unauthenticated Allocate, got {}",
            describe(&first)
        ),
    };
    let key = long_term_key(
        &creds.username,
        &String::from_utf8_lossy(&realm),
        &creds.password,
    );
    let auth = |nonce: &[u8]| {
        vec![
            (USERNAME, creds.username.as_bytes().to_vec()),
            (REALM, realm.clone()),
            (NONCE, nonce.to_vec()),
        ]
    };
    for _ in 0..2 {
        let mut attrs = auth(&nonce);
        attrs.push(udp.clone());
        let answer = client.exchange(ALLOCATE, &attrs, Some(&key))?;
        if answer.kind == ALLOCATE | SUCCESS {
            let relayed = answer
                .attr(XOR_RELAYED_ADDRESS)
                .and_then(|v| xor_address(v, &answer.txid))
                .ok_or_else(|| anyhow!("{server}: the Allocate answer has no relayed address"))?;
            let mut release = auth(&nonce);
            release.push((LIFETIME, 0u32.to_be_bytes().to_vec()));
            let _ = client.exchange(REFRESH, &release, Some(&key));
            return Ok(relayed);
        }
        match answer.error() {
            Some((438, _)) => {
                // Stale nonce: the answer carries a fresh one.
                nonce = answer.attr(NONCE).map(<[u8]>::to_vec).unwrap_or(nonce);
            }
            Some((401, _)) => bail!(
                "{server}: coturn refuses the credentials Synapse hands out: static-auth-secret in \
                 {} and Synapse's turn_shared_secret differ",
                crate::layout::COTURN_CONFIG
            ),
            _ => bail!("{server}: Allocate failed: {}", describe(&answer)),
        }
    }
    bail!("{server}: Allocate failed: the nonce kept going stale")
}

fn describe(m: &Message) -> String {
    match m.error() {
        Some((code, reason)) => format!("error {code} {reason}"),
        None => format!("message type {:#06x}", m.kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Cross-checked with an independent implementation (Python's hmac/hashlib/zlib) for this message:
    // Allocate, txid 000102…0b, USERNAME "user", REALM "turn.example.org", NONCE "abc", REQUESTED-TRANSPORT
    // UDP, MESSAGE-INTEGRITY keyed by MD5("user:turn.example.org:pass"), FINGERPRINT.
    #[test]
    fn encodes_integrity_and_fingerprint_like_an_independent_implementation() {
        let txid: [u8; 12] = std::array::from_fn(|i| i as u8);
        let key = long_term_key("user", "turn.example.org", "pass");
        let msg = encode(
            ALLOCATE,
            &txid,
            &[
                (USERNAME, b"user".to_vec()),
                (REALM, b"turn.example.org".to_vec()),
                (NONCE, b"abc".to_vec()),
                (REQUESTED_TRANSPORT, vec![17, 0, 0, 0]),
            ],
            Some(&key),
        );
        let hex: String = msg.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, EXPECTED);
        let back = decode(&msg).unwrap();
        assert_eq!(back.attr(REALM), Some(&b"turn.example.org"[..]));
        assert_eq!(back.attr(NONCE), Some(&b"abc"[..]));
    }

    const EXPECTED: &str = "0003004c2112a442000102030405060708090a0b0006000475736572001400107475726e2e6578616d706c652e6f726700150003616263000019000411000000000800146f11d0bb2eb1c7e0b2675c14abf23fb2eb299e9980280004f1fe078f";

    #[test]
    fn xor_relayed_address_round_trip() {
        let txid = [7u8; 12];
        // 203.0.113.7:49160 XORed with the magic cookie.
        let port = 49160u16 ^ 0x2112;
        // 0 ^ 0x12 = 0x12
        let ip = [203 ^ 0x21, 0x12, 113 ^ 0xA4, 7 ^ 0x42];
        let v = [
            0,
            1,
            (port >> 8) as u8,
            port as u8,
            ip[0],
            ip[1],
            ip[2],
            ip[3],
        ];
        assert_eq!(
            xor_address(&v, &txid),
            Some("203.0.113.7:49160".parse().unwrap())
        );
    }

    /// A coturn stand-in on loopback: challenges, checks MESSAGE-INTEGRITY with `password`, relays.
    /// Returns the kinds of requests it saw.
    fn fake_coturn(
        password: &'static str,
    ) -> (SocketAddr, std::thread::JoinHandle<Vec<(u16, bool)>>) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let m = decode(&buf[..n]).unwrap();
                let authed = m.attr(USERNAME).is_some();
                seen.push((m.kind, authed));
                let reply = if !authed {
                    encode(
                        m.kind | ERROR,
                        &m.txid,
                        &[
                            (ERROR_CODE, vec![0, 0, 4, 1]),
                            (REALM, b"turn.example.org".to_vec()),
                            (NONCE, b"n1".to_vec()),
                        ],
                        None,
                    )
                } else {
                    let user = String::from_utf8(m.attr(USERNAME).unwrap().to_vec()).unwrap();
                    let key = long_term_key(&user, "turn.example.org", password);
                    let plain: Vec<_> = m
                        .attrs
                        .iter()
                        .filter(|(t, _)| *t != MESSAGE_INTEGRITY && *t != FINGERPRINT)
                        .cloned()
                        .collect();
                    if encode(m.kind, &m.txid, &plain, Some(&key)) != buf[..n] {
                        encode(
                            m.kind | ERROR,
                            &m.txid,
                            &[(ERROR_CODE, vec![0, 0, 4, 1])],
                            None,
                        )
                    } else if m.kind == ALLOCATE {
                        let port = 49160u16 ^ 0x2112;
                        let v = vec![
                            0,
                            1,
                            (port >> 8) as u8,
                            port as u8,
                            203 ^ 0x21,
                            0x12,
                            113 ^ 0xA4,
                            7 ^ 0x42,
                        ];
                        encode(
                            m.kind | SUCCESS,
                            &m.txid,
                            &[(XOR_RELAYED_ADDRESS, v)],
                            Some(&key),
                        )
                    } else {
                        let done = m.kind == REFRESH && m.attr(LIFETIME) == Some(&[0, 0, 0, 0][..]);
                        socket
                            .send_to(&encode(m.kind | SUCCESS, &m.txid, &[], Some(&key)), from)
                            .unwrap();
                        if done {
                            break;
                        }
                        continue;
                    }
                };
                socket.send_to(&reply, from).unwrap();
            }
            seen
        });
        (addr, handle)
    }

    #[test]
    fn allocates_with_the_long_term_credential_and_releases_the_relay() {
        let (addr, server) = fake_coturn("secret-pass");
        let creds = TurnCredentials {
            username: "1700000000:@doctor:example.org".into(),
            password: "secret-pass".into(),
        };
        let relayed = allocate(addr, &creds, Duration::from_secs(2)).unwrap();
        assert_eq!(relayed, "203.0.113.7:49160".parse().unwrap());
        let seen = server.join().unwrap();
        assert_eq!(
            seen,
            vec![(ALLOCATE, false), (ALLOCATE, true), (REFRESH, true)]
        );
    }

    #[test]
    fn a_secret_mismatch_is_named() {
        let (addr, _server) = fake_coturn("coturn-side");
        let creds = TurnCredentials {
            username: "1700000000:@doctor:example.org".into(),
            password: "synapse-side".into(),
        };
        let err = allocate(addr, &creds, Duration::from_secs(2))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("static-auth-secret") && err.contains("turn_shared_secret"),
            "{err}"
        );
    }

    #[test]
    fn nothing_listening_is_an_error_that_names_coturn() {
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let creds = TurnCredentials {
            username: "u".into(),
            password: "p".into(),
        };
        let err = allocate(
            ([127, 0, 0, 1], port).into(),
            &creds,
            Duration::from_millis(200),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("coturn"), "{err}");
    }
}
