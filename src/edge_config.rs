//! `matrix-provision edge-config KIND host.toml`: the edge's side of a host behind one (edge.mode =
//! "proxied"), rendered from the same host.toml and [`Listeners`] as our nginx, so both sides name the
//! same hosts, forward to the same listener and agree on who may say what the client's address is.
//! The templates live in `templates/edge/`.

use anyhow::{bail, Result};
use minijinja::context;

use crate::config::HostConfig;
use crate::listeners::Listeners;
use crate::render::Renderer;

/// The edge templates (registered with every [`Renderer`]; no playbook writes them).
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "edge/cloudflared.yml.j2",
        include_str!("../templates/edge/cloudflared.yml.j2"),
    ),
    (
        "edge/apache.conf.j2",
        include_str!("../templates/edge/apache.conf.j2"),
    ),
    (
        "edge/haproxy.cfg.j2",
        include_str!("../templates/edge/haproxy.cfg.j2"),
    ),
    (
        "edge/Caddyfile.j2",
        include_str!("../templates/edge/Caddyfile.j2"),
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EdgeKind {
    /// Ingress rules of a Cloudflare Tunnel (cloudflared's config.yml).
    Cloudflared,
    /// An Apache site (mod_proxy, mod_ssl).
    Apache,
    /// HAProxy frontend and backend sections.
    Haproxy,
    /// A Caddyfile.
    Caddy,
}

impl EdgeKind {
    fn template(self) -> &'static str {
        match self {
            EdgeKind::Cloudflared => "edge/cloudflared.yml.j2",
            EdgeKind::Apache => "edge/apache.conf.j2",
            EdgeKind::Haproxy => "edge/haproxy.cfg.j2",
            EdgeKind::Caddy => "edge/Caddyfile.j2",
        }
    }
}

/// The public names the edge forwards, in the order nginx serves them: Synapse, server_name (when it
/// delegates), Element.
pub fn names(config: &HostConfig) -> Vec<String> {
    let mut names = vec![config.synapse.host.clone()];
    if config.delegated() {
        names.push(config.server_name.clone());
    }
    if config.element.enabled {
        names.push(config.element.host.clone());
    }
    names
}

/// The edge's configuration for this host.
pub fn render(config: &HostConfig, kind: EdgeKind) -> Result<String> {
    if !config.proxied() {
        bail!(
            "edge.mode is \"direct\": nginx here faces the internet itself and there is no edge to configure; \
             set mode = \"proxied\" under [edge] (and edge.listen, edge.trusted) first"
        );
    }
    if kind == EdgeKind::Cloudflared
        && config.edge.federation_port != 443
        && config.synapse.federation
    {
        bail!(
            "edge.federation_port = {}: a Cloudflare Tunnel carries HTTPS on 443 only; set federation_port = 443 \
             under [edge] (federation is then delegated to {}:443)",
            config.edge.federation_port,
            config.synapse.host
        );
    }
    // The edge templates use only ports and certbot's paths, which no release changes.
    let paths = crate::layout::Layout::new(
        config,
        &crate::release::NEWEST,
        std::path::Path::new(crate::layout::PACKAGED_BINARY),
    );
    let ctx = context! {
        config => config.for_templates(),
        paths => paths,
        delegated => config.delegated(),
        listeners => Listeners::of(config),
        names => names(config),
    };
    Renderer::new().render(kind.template(), &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(edge: &str) -> HostConfig {
        crate::config::parse(
            &format!("server_name = \"example.com\"\n[turn]\nenabled = false\n[edge]\nmode = \"proxied\"\n{edge}"),
            "t",
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_kind_forwards_our_names_to_our_listener() {
        let c = config("listen = \"10.0.0.5\"\ntrusted = [\"10.0.0.2\"]\n");
        for kind in [
            EdgeKind::Cloudflared,
            EdgeKind::Apache,
            EdgeKind::Haproxy,
            EdgeKind::Caddy,
        ] {
            let out = render(&c, kind).unwrap_or_else(|e| panic!("{kind:?}: {e:#}"));
            assert!(out.contains("10.0.0.5:8080"), "{kind:?}:\n{out}");
            for name in ["matrix.example.com", "example.com", "element.example.com"] {
                assert!(out.contains(name), "{kind:?} lacks {name}:\n{out}");
            }
            assert!(
                out.contains("10.0.0.2"),
                "{kind:?} names no trusted address:\n{out}"
            );
            assert!(
                !out.contains("8448"),
                "{kind:?}: federation is on 443:\n{out}"
            );
        }
    }

    #[test]
    fn haproxy_replaces_the_clients_forwarded_header_and_binds_8448_when_asked() {
        let c = config("federation_port = 8448\n");
        let out = render(&c, EdgeKind::Haproxy).unwrap();
        assert!(
            out.contains("http-request set-header X-Forwarded-For %[src]"),
            "{out}"
        );
        assert!(out.contains("bind :8448 ssl"), "{out}");
        assert!(out.contains("server nginx 127.0.0.1:8080"), "{out}");
        assert!(
            out.contains("acl matrix_provision_host hdr(host),field(1,:) -i example.com"),
            "{out}"
        );
    }

    #[test]
    fn cloudflared_routes_only_what_nginx_serves_and_refuses_8448() {
        let out = render(&config(""), EdgeKind::Cloudflared).unwrap();
        assert!(out.contains("path: ^/(_matrix|_synapse/client)/"), "{out}");
        assert!(out.contains("path: ^/\\.well-known/matrix/"), "{out}");
        assert!(
            out.trim_end().ends_with("- service: http_status:404"),
            "{out}"
        );
        let err = render(&config("federation_port = 8448\n"), EdgeKind::Cloudflared).unwrap_err();
        assert!(err.to_string().contains("federation_port = 443"), "{err}");
    }

    #[test]
    fn a_direct_host_has_no_edge_to_configure() {
        let c = crate::config::parse(
            "server_name = \"example.com\"\n[acme]\nemail = \"a@example.com\"\n",
            "t",
        )
        .unwrap();
        let err = render(&c, EdgeKind::Haproxy).unwrap_err().to_string();
        assert!(err.contains("mode = \"proxied\""), "{err}");
    }
}
