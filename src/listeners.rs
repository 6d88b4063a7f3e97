//! What faces the clients, derived once from host.toml: which sockets nginx listens on, whether it
//! terminates TLS (and so which certificates exist), what the firewall opens and whose forwarded client
//! address is believed. The playbooks and templates branch on this one value (`listeners.*`) instead of
//! on `edge.mode`, so direct and proxied hosts differ only where this says they do.
//!
//! - direct: nginx owns 80 (ACME challenges, redirects), 443 and 8448 with certbot's certificates.
//! - proxied: an edge (tunnel, load balancer, another web server) terminates TLS and forwards plain HTTP
//!   to `edge.listen:edge.port`; no certificate is requested, and the lineages a direct host had are kept
//!   on disk (a switch back needs no new issuance) with their renewal turned off (nothing would answer
//!   certbot's HTTP-01 challenges any more).

use serde::Serialize;

use crate::config::HostConfig;
use crate::layout::{FEDERATION_PORT, HTTPS_PORT, HTTP_PORT, TURNS_PORT};

/// Ports nginx binds in direct mode: HTTP (ACME), HTTPS, federation.
pub const DIRECT_PORTS: [u16; 3] = [HTTP_PORT, HTTPS_PORT, FEDERATION_PORT];

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Listeners {
    /// nginx terminates TLS itself (direct mode).
    pub tls: bool,
    /// certbot requests and renews the certificates (TLS here and `acme.enabled`).
    pub acme: bool,
    /// Names nginx and coturn present certificates for, in a stable order; empty behind an edge.
    pub cert_names: Vec<String>,
    /// Certificate lineages a direct host had that nothing serves now (behind an edge): kept, not renewed.
    pub unused_certs: Vec<String>,
    /// `listen` sockets of every vhost (TLS flags are the templates' business).
    pub web: Vec<String>,
    /// Further sockets of the Synapse vhost for federation (8448); behind an edge it arrives on `web`.
    pub federation: Vec<String>,
    /// Port 80 (ACME challenges, redirects to HTTPS); none behind an edge.
    pub http: Vec<String>,
    /// TCP ports nginx must be able to bind (preflight).
    pub ports: Vec<u16>,
    /// ufw rules for the web side ("443/tcp", or "8080/tcp from 10.0.0.2" for an edge elsewhere).
    pub firewall: Vec<String>,
    /// Ports whose allow rules belong to the firewall step in one mode or the other: a rule on them that
    /// this host does not want (say, 443 after a switch to proxied) is removed.
    pub firewall_managed: Vec<u16>,
    /// Peers whose X-Forwarded-For nginx believes (`set_real_ip_from`); none in direct mode.
    pub real_ip_from: Vec<String>,
    /// The port `.well-known/matrix/server` names, where other servers reach federation.
    pub federation_port: u16,
    /// Where an edge forwards to (edge-config): `http://ADDRESS:PORT`.
    pub upstream: String,
    /// Name prefix of this mode's vhost files in sites-available/sites-enabled, and the other mode's,
    /// whose links a switch removes.
    pub site: String,
    pub other_site: String,
}

const DIRECT_SITE: &str = "matrix-provision";
const EDGE_SITE: &str = "matrix-provision-edge";

impl Listeners {
    pub fn of(config: &HostConfig) -> Listeners {
        let edge = &config.edge;
        let names = cert_names(config);
        let managed = {
            // 5349: TURN over TLS, which a host behind an edge has no certificate for.
            let mut m = vec![HTTP_PORT, HTTPS_PORT, FEDERATION_PORT, TURNS_PORT];
            if !m.contains(&edge.port) {
                m.push(edge.port);
            }
            m
        };
        let upstream = format!("http://{}:{}", edge.listen, edge.port);
        let both = |port: u16| vec![port.to_string(), format!("[::]:{port}")];
        let tcp = |port: u16| format!("{port}/tcp");
        if !config.proxied() {
            return Listeners {
                tls: true,
                acme: config.acme.enabled,
                cert_names: names,
                unused_certs: Vec::new(),
                web: both(HTTPS_PORT),
                federation: if config.synapse.federation {
                    both(FEDERATION_PORT)
                } else {
                    Vec::new()
                },
                http: both(HTTP_PORT),
                ports: DIRECT_PORTS.to_vec(),
                firewall: [HTTP_PORT, HTTPS_PORT]
                    .into_iter()
                    .chain(config.synapse.federation.then_some(FEDERATION_PORT))
                    .map(tcp)
                    .collect(),
                firewall_managed: managed,
                real_ip_from: Vec::new(),
                federation_port: HTTPS_PORT,
                upstream,
                site: DIRECT_SITE.into(),
                other_site: EDGE_SITE.into(),
            };
        }
        // Traffic from loopback never crosses ufw: an edge on this host needs no rule at all.
        let loopback_listen = edge
            .listen
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
        let firewall = if loopback_listen {
            Vec::new()
        } else {
            edge.trusted
                .iter()
                .filter(|a| {
                    !a.split('/')
                        .next()
                        .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                        .is_some_and(|ip| ip.is_loopback())
                })
                .map(|a| format!("{} from {a}", tcp(edge.port)))
                .collect()
        };
        Listeners {
            tls: false,
            acme: false,
            cert_names: Vec::new(),
            unused_certs: names,
            web: vec![format!("{}:{}", edge.listen, edge.port)],
            federation: Vec::new(),
            http: Vec::new(),
            ports: vec![edge.port],
            firewall,
            firewall_managed: managed,
            real_ip_from: edge.trusted.clone(),
            federation_port: edge.federation_port,
            upstream,
            site: EDGE_SITE.into(),
            other_site: DIRECT_SITE.into(),
        }
    }
}

/// Every name a direct host needs a certificate for, without duplicates, in a stable order.
pub fn cert_names(config: &HostConfig) -> Vec<String> {
    let mut names = vec![config.synapse.host.clone()];
    if config.delegated() {
        names.push(config.server_name.clone());
    }
    if config.element.enabled {
        names.push(config.element.host.clone());
    }
    if config.turn.enabled {
        names.push(config.turn.host.clone());
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn config(extra: &str) -> HostConfig {
        parse(
            &format!("server_name = \"example.com\"\n[acme]\nemail = \"a@example.com\"\n{extra}"),
            "t",
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn direct_owns_80_443_8448_and_the_certificates() {
        let l = Listeners::of(&config(""));
        assert!(l.tls && l.acme);
        assert_eq!(l.ports, vec![80, 443, 8448]);
        assert_eq!(l.firewall, vec!["80/tcp", "443/tcp", "8448/tcp"]);
        assert_eq!(
            l.cert_names,
            vec![
                "matrix.example.com",
                "example.com",
                "element.example.com",
                "turn.example.com"
            ]
        );
        assert!(l.unused_certs.is_empty() && l.real_ip_from.is_empty());
        assert_eq!(l.federation_port, 443);
        assert_eq!(l.firewall_managed, vec![80, 443, 8448, 5349, 8080]);
    }

    #[test]
    fn proxied_on_loopback_opens_nothing_and_requests_no_certificate() {
        let l = Listeners::of(&config(
            "[turn]\nenabled = false\n[edge]\nmode = \"proxied\"\n",
        ));
        assert!(!l.tls && !l.acme);
        assert!(l.cert_names.is_empty() && l.http.is_empty() && l.federation.is_empty());
        assert_eq!(l.web, vec!["127.0.0.1:8080"]);
        assert_eq!(l.ports, vec![8080]);
        assert!(l.firewall.is_empty(), "{:?}", l.firewall);
        assert_eq!(l.real_ip_from, vec!["127.0.0.1"]);
        // What a direct host had stays on disk, unused.
        assert_eq!(
            l.unused_certs,
            vec!["matrix.example.com", "example.com", "element.example.com"]
        );
        assert_eq!(l.upstream, "http://127.0.0.1:8080");
    }

    #[test]
    fn proxied_on_an_internal_address_opens_its_port_to_the_edge_only() {
        let l = Listeners::of(&config(
            "[turn]\nexternal_ip = \"203.0.113.7\"\n[edge]\nmode = \"proxied\"\nlisten = \"10.0.0.5\"\nport = 8081\ntrusted = [\"10.0.0.2\", \"127.0.0.1\", \"fd00::/64\"]\nfederation_port = 8448\n",
        ));
        assert_eq!(l.web, vec!["10.0.0.5:8081"]);
        assert_eq!(
            l.firewall,
            vec!["8081/tcp from 10.0.0.2", "8081/tcp from fd00::/64"]
        );
        assert_eq!(l.federation_port, 8448);
        assert_eq!(l.firewall_managed, vec![80, 443, 8448, 5349, 8081]);
    }
}
