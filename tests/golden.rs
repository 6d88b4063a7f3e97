//! Golden files for every config file matrix-provision renders.
//!
//! Each variant below is a host.toml, rendered through the real playbooks (so the
//! golden tree holds exactly the files apply writes, at their paths); its expected files live in
//! `tests/golden/<variant>/<path on the host>` and must match the rendering byte for byte.
//!
//! After an intended template change, regenerate them and review the diff:
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test --test golden
//! git diff tests/golden
//! ```
//!
//! Besides the byte comparison, what can be checked offline is checked: JSON parses as JSON, YAML
//! parses as YAML with the expected keys, nginx braces balance. `tests/support/nginx-check.sh` runs
//! the real `nginx -t` over the rendered vhosts where nginx is installed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use matrix_provision::config::{HostConfig, Registration};
use matrix_provision::playbook::{self, Inputs, RenderedFile};
use matrix_provision::release::{self, Release};
use matrix_provision::render::{Facts, RenderContext, Renderer};
use matrix_provision::system::FakeSystem;
use yaml_rust2::{Yaml, YamlLoader};

const POSTGRES_PASSWORD: &str = "golden-pg-password-0123456789";
const TURN_SECRET: &str = "golden-turn-secret-abcdefghij";

/// host.toml for server_name example.com with every default but `synapse.registration` (the default is
/// "token"; most variants are closed servers), plus `extra` (further sections).
fn host_toml(registration: &str, extra: &str) -> HostConfig {
    let text = format!(
        "server_name = \"example.com\"\n[acme]\nemail = \"admin@example.com\"\n\
         [synapse]\nregistration = \"{registration}\"\n{extra}"
    );
    matrix_provision::config::parse(&text, "golden host.toml")
        .unwrap_or_else(|e| panic!("{e:?}\n{text}"))
}

/// A Debian 13 host (what a new server runs) unless a variant says otherwise.
fn facts(ram_mb: u64, cpus: u32) -> Facts {
    on(release::NEWEST, ram_mb, cpus)
}

fn on(release: Release, ram_mb: u64, cpus: u32) -> Facts {
    Facts {
        ram_mb,
        cpus,
        sizing: matrix_provision::sizing::Sizing::of(ram_mb, cpus),
        release,
        // Loopback, a private LAN address behind NAT and a public IPv6 one.
        addresses: vec![
            "127.0.0.1".into(),
            "10.0.0.5".into(),
            "::1".into(),
            "2001:db8:5::5".into(),
        ],
        mounts: vec!["/".into(), "/var/lib/postgresql".into()],
    }
}

fn context(config: HostConfig, facts: Facts) -> RenderContext {
    RenderContext::new(config, facts, &inputs())
}

/// The run's inputs as apply from /usr/local/bin sees them.
fn inputs() -> Inputs {
    Inputs {
        config_path: "/root/host.toml".into(),
        self_exe: "/usr/local/bin/matrix-provision".into(),
    }
}

/// The variants, by directory name under tests/golden/.
fn variants() -> Vec<(&'static str, RenderContext)> {
    // (a) delegated example.com → matrix.example.com, defaults except token registration (so that the
    // three variants cover all three registration modes).
    let a = host_toml("token", "");

    // (b) Synapse serves server_name itself, private server: no federation, closed, no presence,
    // coturn behind NAT, admin API exposed.
    let b = matrix_provision::config::parse(
        r#"server_name = "chat.example.org"
[acme]
email = "admin@example.com"
[synapse]
host = "chat.example.org"
registration = "closed"
federation = false
presence = false
expose_admin_api = true
max_upload_size_mb = 100
[element]
host = "element.example.org"
[turn]
host = "turn.example.org"
external_ip = "203.0.113.7"
min_port = 50000
max_port = 50999
# Metrics through the SSH tunnel only, without federation (no federation queue alert).
[metrics]
enabled = true
backup_max_age = "8d"
"#,
        "golden host.toml (b)",
    )
    .unwrap_or_else(|e| panic!("{e:?}"));

    // (c) open registration on a small VPS: 2 GB RAM, 1 CPU.
    let c = host_toml("open", "");

    // (d) Synapse alone: no Element, no TURN, on a large host (caps of the PostgreSQL formulas); backups
    // to an SFTP repository at 03:30, media retention and the remote-media purge timer; metrics with the UI
    // on the Synapse vhost, the database on its own filesystem (issue 14).
    let d = host_toml(
        "closed",
        "admin_user = \"admin\"\n[element]\nenabled = false\n[turn]\nenabled = false\n\
         [backup]\nenabled = true\nrepository = \"sftp:backup@backup.example.net:/srv/restic/matrix\"\n\
         schedule = \"03:30\"\n[media]\nlocal_media_lifetime_days = 365\nremote_media_lifetime_days = 30\n\
         purge_remote_media_days = 14\n\
         [metrics]\nenabled = true\nexpose_ui = true\n",
    );

    // (g) Synapse workers, auto-sized on 8 CPUs and 16 GB, with one event persister on top (issue 13).
    let workers = host_toml(
        "closed",
        "[synapse.workers]\nmode = \"auto\"\nevent_persister = 1\n",
    );

    // (e, f) examples/host.toml as a user starts from, parsed, on each supported release: the codename,
    // the PostgreSQL cluster and what nginx the release has.
    let example = || {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/host.toml");
        matrix_provision::config::parse(&fs::read_to_string(&path).unwrap(), "examples/host.toml")
            .unwrap_or_else(|e| panic!("examples/host.toml: {e:?}"))
    };

    // (g) behind an edge on another machine: plain HTTP on an internal address for it alone, federation
    // through the edge on 8448, TURN on its own public address without TLS, no ACME email at all.
    let g = matrix_provision::config::parse(
        "server_name = \"example.com\"\n[synapse]\nregistration = \"closed\"\n\
         [turn]\nexternal_ip = \"203.0.113.7\"\n\
         [edge]\nmode = \"proxied\"\nlisten = \"10.0.0.5\"\ntrusted = [\"10.0.0.2\", \"fd00::/64\"]\nfederation_port = 8448\n",
        "golden host.toml",
    )
    .unwrap_or_else(|e| panic!("{e:?}"));

    vec![
        ("a-delegated-defaults", context(a, facts(4096, 2))),
        ("g-proxied-internal", context(g, facts(4096, 2))),
        (
            "e-debian12-example",
            context(example(), on(release::SUPPORTED[0], 4096, 2)),
        ),
        (
            "f-debian13-example",
            context(example(), on(release::NEWEST, 4096, 2)),
        ),
        ("b-same-host-private", context(b, facts(8192, 4))),
        ("c-open-small-vps", context(c, facts(2048, 1))),
        ("d-synapse-only-big", context(d, facts(65536, 16))),
        ("h-workers-auto", context(workers, facts(16384, 8))),
    ]
}

/// The files the real playbooks render for a variant, as they place them: a fake host with the variant's
/// facts and fixed secrets goes through `playbook::build`, so the golden tree follows the playbooks.
fn playbook_files(ctx: &RenderContext) -> Vec<RenderedFile> {
    let mut sys = FakeSystem::new();
    sys.facts.ram_mb = ctx.facts.ram_mb;
    sys.facts.cpus = ctx.facts.cpus;
    sys.facts.os_version_id = ctx.facts.release.version.into();
    sys.facts.os_codename = ctx.facts.release.codename.into();
    sys.facts.addresses = ctx
        .facts
        .addresses
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    sys.put(
        "/var/lib/matrix-provision/secrets/postgres_password",
        POSTGRES_PASSWORD,
    );
    let mountinfo: String = (ctx.facts.mounts.iter().enumerate())
        .map(|(i, m)| format!("{i} 1 8:{i} / {m} rw - ext4 /dev/sda{i} rw\n"))
        .collect();
    sys.put("/proc/self/mountinfo", &mountinfo);
    sys.put(
        "/etc/matrix-synapse/secrets/turn_shared_secret",
        TURN_SECRET,
    );
    playbook::build(&ctx.config, &inputs(), &sys, true)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .rendered
}

/// Rendered files of one variant, keyed by host path.
fn render_variant(_renderer: &Renderer, ctx: &RenderContext) -> BTreeMap<String, String> {
    playbook_files(ctx)
        .into_iter()
        .map(|f| (f.dest.display().to_string(), f.contents))
        .collect()
}

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Every file under `dir`, as host paths ("/etc/...").
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).unwrap();
                out.push(format!("/{}", rel.display()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn rendered_configs_match_golden_files() {
    let renderer = Renderer::new();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();

    for (variant, ctx) in variants() {
        let dir = golden_root().join(variant);
        let rendered = render_variant(&renderer, &ctx);
        if update {
            // Start from scratch so files of templates that no longer apply disappear.
            let _ = fs::remove_dir_all(&dir);
        }
        for (dest, text) in &rendered {
            let path = dir.join(dest.trim_start_matches('/'));
            if update {
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(&path, text).unwrap();
                continue;
            }
            match fs::read_to_string(&path) {
                Ok(expected) if expected == *text => {}
                Ok(expected) => failures.push(format!(
                    "{variant}{dest}: differs from {}\n{}",
                    path.display(),
                    first_difference(&expected, text)
                )),
                Err(e) => failures.push(format!("{variant}{dest}: {}: {e}", path.display())),
            }
        }
        for stale in files_under(&dir) {
            if !rendered.contains_key(&stale) {
                failures.push(format!(
                    "{variant}{stale}: golden file but nothing renders it"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\nIf the change is intended: UPDATE_GOLDEN=1 cargo test --test golden",
        failures.join("\n\n")
    );
}

fn first_difference(expected: &str, actual: &str) -> String {
    let (mut e, mut a) = (expected.lines(), actual.lines());
    for n in 1.. {
        match (e.next(), a.next()) {
            (None, None) => return "  (only line endings differ)".into(),
            (x, y) if x == y => continue,
            (x, y) => {
                return format!(
                    "  line {n}:\n  - golden:   {}\n  + rendered: {}",
                    x.unwrap_or("<end of file>"),
                    y.unwrap_or("<end of file>")
                )
            }
        }
    }
    unreachable!()
}

#[test]
fn every_template_is_covered_by_a_variant() {
    let covered: Vec<String> = variants()
        .iter()
        .flat_map(|(_, ctx)| playbook_files(ctx).into_iter().map(|f| f.template))
        .collect();
    for name in Renderer::new().names() {
        assert!(
            covered.iter().any(|t| t == name),
            "no golden variant renders {name}"
        );
    }
}

fn yaml(text: &str, what: &str) -> Yaml {
    let mut docs =
        YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{what}: not YAML: {e}"));
    assert_eq!(docs.len(), 1, "{what}: expected one YAML document");
    docs.remove(0)
}

fn json(text: &str, what: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: not JSON: {e}\n{text}"))
}

#[test]
fn synapse_fragments_are_yaml_with_the_intended_settings() {
    let renderer = Renderer::new();
    for (variant, ctx) in variants() {
        let files = render_variant(&renderer, &ctx);
        let c = &ctx.config;
        let get = |name: &str| {
            let path = format!("/etc/matrix-synapse/conf.d/{name}");
            yaml(&files[&path], &format!("{variant}{path}"))
        };

        let server = get("mp-server.yaml");
        assert_eq!(
            server["public_baseurl"].as_str(),
            Some(format!("https://{}/", c.synapse.host).as_str())
        );
        let listener = &server["listeners"][0];
        assert_eq!(listener["port"].as_i64(), Some(8008));
        assert_eq!(listener["bind_addresses"][0].as_str(), Some("127.0.0.1"));
        assert_eq!(listener["x_forwarded"].as_bool(), Some(true));
        assert_eq!(listener["tls"].as_bool(), Some(false));
        let names: Vec<&str> = listener["resources"][0]["names"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        if c.synapse.federation {
            assert_eq!(names, ["client", "federation"], "{variant}");
            assert!(server["federation_domain_whitelist"].is_badvalue());
        } else {
            assert_eq!(names, ["client"], "{variant}");
            assert_eq!(
                server["federation_domain_whitelist"].as_vec(),
                Some(&vec![])
            );
        }
        assert_eq!(
            server["max_upload_size"].as_str(),
            Some(format!("{}M", c.template_only["synapse.max_upload_size_mb"]).as_str())
        );
        // debconf owns these two.
        assert!(server["server_name"].is_badvalue() && server["report_stats"].is_badvalue());

        let db = get("mp-database.yaml");
        assert_eq!(db["database"]["name"].as_str(), Some("psycopg2"));
        assert_eq!(
            db["database"]["args"]["password"].as_str(),
            Some(POSTGRES_PASSWORD)
        );
        assert_eq!(db["database"]["args"]["dbname"].as_str(), Some("synapse"));

        let secrets = get("mp-secrets.yaml");
        for key in [
            "registration_shared_secret",
            "macaroon_secret_key",
            "form_secret",
        ] {
            assert_eq!(
                secrets[format!("{key}_path").as_str()].as_str(),
                Some(format!("/etc/matrix-synapse/secrets/{key}").as_str())
            );
            assert!(secrets[key].is_badvalue(), "{key} must not be inlined");
        }

        let reg = get("mp-registration.yaml");
        let flag = |k: &str| reg[k].as_bool();
        match c.synapse.registration {
            Registration::Closed => {
                assert_eq!(flag("enable_registration"), Some(false));
                assert_eq!(flag("registration_requires_token"), None);
            }
            Registration::Token => {
                assert_eq!(flag("enable_registration"), Some(true));
                assert_eq!(flag("registration_requires_token"), Some(true));
                assert_eq!(flag("enable_registration_without_verification"), None);
            }
            Registration::Open => {
                assert_eq!(flag("enable_registration"), Some(true));
                assert_eq!(flag("enable_registration_without_verification"), Some(true));
                assert!(files["/etc/matrix-synapse/conf.d/mp-registration.yaml"].contains("DANGER"));
            }
        }

        let presence = get("mp-presence.yaml");
        assert_eq!(
            presence["presence"]["enabled"].as_bool(),
            Some(c.synapse.presence)
        );

        if c.turn.enabled {
            let turn = get("mp-turn.yaml");
            let uris: Vec<&str> = turn["turn_uris"]
                .as_vec()
                .unwrap()
                .iter()
                .map(|u| u.as_str().unwrap())
                .collect();
            let h = &c.turn.host;
            // TURN over TLS needs the certificate only a direct host has.
            let mut want = vec![
                format!("turn:{h}:3478?transport=udp"),
                format!("turn:{h}:3478?transport=tcp"),
            ];
            if ctx.listeners.tls {
                want.push(format!("turns:{h}:5349?transport=tcp"));
            }
            assert_eq!(uris, want);
            assert_eq!(
                turn["turn_shared_secret_path"].as_str(),
                Some("/etc/matrix-synapse/secrets/turn_shared_secret")
            );
            assert_eq!(turn["turn_allow_guests"].as_bool(), Some(false));
        }
    }
}

#[test]
fn json_outputs_parse_and_point_at_synapse() {
    let renderer = Renderer::new();
    for (variant, ctx) in variants() {
        let c = &ctx.config;
        let base_url = format!("https://{}", c.synapse.host);
        let files = render_variant(&renderer, &ctx);

        if c.element.enabled {
            let cfg = json(&files["/etc/matrix-provision/element/config.json"], variant);
            let hs = &cfg["default_server_config"]["m.homeserver"];
            assert_eq!(hs["base_url"], base_url.as_str());
            assert_eq!(hs["server_name"], c.server_name.as_str());
            assert_eq!(cfg["disable_guests"], true);
            assert_eq!(cfg["room_directory"]["servers"][0], c.server_name.as_str());
        }

        // The .well-known bodies, from whichever vhost serves them.
        let site = &ctx.listeners.site;
        let vhost = if ctx.delegated {
            format!("/etc/nginx/sites-available/{site}-wellknown.conf")
        } else {
            format!("/etc/nginx/sites-available/{site}-synapse.conf")
        };
        let bodies = wellknown_bodies(&files[vhost.as_str()]);
        let client = json(&bodies["/.well-known/matrix/client"], variant);
        assert_eq!(client["m.homeserver"]["base_url"], base_url.as_str());
        if c.synapse.federation {
            let server = json(&bodies["/.well-known/matrix/server"], variant);
            assert_eq!(
                server["m.server"],
                format!("{}:{}", c.synapse.host, ctx.listeners.federation_port).as_str()
            );
        } else {
            assert!(!bodies.contains_key("/.well-known/matrix/server"));
        }
    }
}

/// `location = PATH { ... return 200 'BODY'; }` → PATH → BODY.
fn wellknown_bodies(vhost: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current = None;
    for line in vhost.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("location = /.well-known/matrix/") {
            current = Some(format!(
                "/.well-known/matrix/{}",
                rest.trim_end_matches(" {")
            ));
        } else if let Some(body) = line.strip_prefix("return 200 '") {
            let body = body.strip_suffix("';").expect("return line ends with ';");
            out.insert(
                current.take().expect("return inside a location"),
                body.into(),
            );
        }
    }
    out
}

#[test]
fn nginx_vhosts_are_balanced_and_route_as_intended() {
    let renderer = Renderer::new();
    for (variant, ctx) in variants() {
        let c = &ctx.config;
        let files = render_variant(&renderer, &ctx);
        for (dest, text) in files.iter().filter(|(d, _)| d.starts_with("/etc/nginx/")) {
            let mut depth = 0i32;
            for ch in text.chars() {
                depth += match ch {
                    '{' => 1,
                    '}' => -1,
                    _ => 0,
                };
                assert!(depth >= 0, "{variant}{dest}: '}}' without '{{'");
            }
            assert_eq!(depth, 0, "{variant}{dest}: unbalanced braces");
        }

        let synapse = &files[format!(
            "/etc/nginx/sites-available/{}-synapse.conf",
            ctx.listeners.site
        )
        .as_str()];
        assert!(synapse.contains("location ~ ^(/_matrix|/_synapse/client) {"));
        // proxy_pass without a URI part, or nginx normalises request paths.
        assert!(synapse.contains("proxy_pass http://matrix_synapse;"));
        // Upstream keepalive: an upstream with idle connections, HTTP/1.1 and no "Connection: close".
        assert!(synapse.contains(
            "upstream matrix_synapse {\n    server 127.0.0.1:8008;\n    keepalive 32;\n}"
        ));
        assert!(synapse.contains("proxy_set_header Connection \"\";"));
        // The workers' upstreams too: every upstream block keeps idle connections.
        for block in synapse.split("\nupstream ").skip(1) {
            let block = &block[..block.find('}').expect("upstream block ends")];
            assert!(
                block.contains("\n    keepalive 32;\n"),
                "{variant}: upstream {block} has no keepalive"
            );
        }
        assert_eq!(
            synapse.contains("location /_synapse/admin"),
            c.synapse.expose_admin_api
        );
        assert_eq!(
            synapse.contains("listen 8448"),
            c.synapse.federation && ctx.listeners.tls
        );
        if !ctx.listeners.tls {
            // Behind an edge: plain HTTP on its listener only, the client address believed from it alone.
            assert!(!files.contains_key("/etc/nginx/sites-available/matrix-provision-http.conf"));
            for (dest, text) in files.iter().filter(|(d, _)| d.contains("sites-available")) {
                assert!(!text.contains("ssl"), "{variant}{dest}: TLS behind an edge");
                assert!(!text.contains("listen 443"), "{variant}{dest}");
                if !dest.ends_with("default.conf") {
                    for a in &ctx.listeners.real_ip_from {
                        assert!(
                            text.contains(&format!("set_real_ip_from {a};")),
                            "{variant}{dest}"
                        );
                    }
                }
            }
            continue;
        }
        assert!(synapse.contains(&format!(
            "client_max_body_size {}M;",
            c.template_only["synapse.max_upload_size_mb"]
        )));

        let http = &files["/etc/nginx/sites-available/matrix-provision-http.conf"];
        assert!(
            !http.contains("ssl"),
            "{variant}: port 80 must not need a certificate"
        );
        let names_line = http
            .lines()
            .find_map(|l| l.trim().strip_prefix("server_name "))
            .unwrap();
        let names: Vec<&str> = names_line.trim_end_matches(';').split(' ').collect();
        let mut expected = vec![c.synapse.host.as_str()];
        if c.element.enabled {
            expected.push(&c.element.host);
        }
        if c.turn.enabled {
            expected.push(&c.turn.host);
        }
        if ctx.delegated {
            expected.push(&c.server_name);
        }
        assert_eq!(names, expected, "{variant}: port 80 names");

        // Only our default server is a default server: unknown names and no-SNI clients get nothing.
        let default = &files["/etc/nginx/sites-available/matrix-provision-default.conf"];
        for port in ["80", "443"]
            .into_iter()
            .chain(c.synapse.federation.then_some("8448"))
        {
            assert!(
                default.contains(&format!("listen {port} "))
                    || default.contains(&format!("listen {port};")),
                "{variant}: default server on {port}"
            );
        }
        assert!(default.contains("ssl_reject_handshake on;") && default.contains("return 444;"));
        for (dest, text) in files
            .iter()
            .filter(|(d, _)| d.contains("/sites-available/"))
        {
            if !dest.ends_with("matrix-provision-default.conf") {
                assert!(
                    !text.contains("default_server"),
                    "{variant}{dest}: a second default server"
                );
            }
        }
        // The version stays hidden in every server of ours, and never at http level, where the
        // package's nginx.conf may say it too (Debian 13's does): twice in one block fails nginx -t,
        // and with it dpkg's postinst on the upgrade that brings that nginx.conf.
        assert!(
            !files["/etc/nginx/conf.d/matrix-provision.conf"]
                .lines()
                .any(|l| !l.trim_start().starts_with('#') && l.contains("server_tokens")),
            "{variant}: no http-level server_tokens"
        );
        for (dest, text) in files
            .iter()
            .filter(|(d, _)| d.contains("/sites-available/"))
        {
            let servers = text.lines().filter(|l| l.trim() == "server {").count();
            let hidden = text
                .lines()
                .filter(|l| l.trim().starts_with("server_tokens off;"))
                .count();
            assert_eq!(
                servers, hidden,
                "{variant}{dest}: server_tokens off in each server"
            );
        }

        // Every location with its own add_header repeats the security headers (nginx drops inherited
        // add_header lines there); the TLS snippet carries them for the server level.
        let tls = &files["/etc/nginx/snippets/matrix-provision-tls.conf"];
        for header in [
            "Strict-Transport-Security",
            "X-Content-Type-Options",
            "Referrer-Policy",
        ] {
            assert!(
                tls.contains(&format!("add_header {header} ")),
                "{variant}: {header}"
            );
            for (dest, text) in files
                .iter()
                .filter(|(d, _)| d.contains("/sites-available/"))
            {
                // Location blocks, as our templates indent them inside a server block.
                for block in text.split("\n    location ").skip(1) {
                    let body = &block[..block.find('}').unwrap()];
                    if body.contains("add_header") {
                        assert!(
                            body.contains(&format!("add_header {header} ")),
                            "{variant}{dest}: location {} drops {header}",
                            block.lines().next().unwrap()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn coturn_never_relays_to_the_host_itself() {
    let renderer = Renderer::new();
    for (variant, ctx) in variants() {
        if !ctx.config.turn.enabled {
            continue;
        }
        let files = render_variant(&renderer, &ctx);
        let conf = &files["/etc/coturn/matrix-provision.conf"];
        let denied: Vec<&str> = conf
            .lines()
            .filter_map(|l| l.strip_prefix("denied-peer-ip="))
            .collect();
        let own = ctx.facts.addresses.iter().map(String::as_str);
        for addr in own.chain(ctx.config.turn.external_ip.as_deref()) {
            assert!(denied.contains(&addr), "{variant}: {addr} is not denied");
        }
        assert!(
            conf.lines().any(|l| l == "no-software-attribute"),
            "{variant}"
        );
        if !ctx.listeners.tls {
            assert!(
                conf.lines().any(|l| l == "no-tls") && !conf.contains("5349"),
                "{variant}"
            );
            continue;
        }
        for line in ["no-tlsv1", "no-tlsv1_1"] {
            assert!(conf.lines().any(|l| l == line), "{variant}: {line}");
        }
        let ciphers = conf
            .lines()
            .find_map(|l| l.strip_prefix("cipher-list="))
            .expect("a cipher list");
        assert!(ciphers
            .split(':')
            .all(|c| c.starts_with("ECDHE-") && !c.contains("CBC")));
    }
}

#[test]
fn hardening_drop_ins_sit_beside_the_package_units() {
    let renderer = Renderer::new();
    for (variant, ctx) in variants() {
        let files = render_variant(&renderer, &ctx);
        let mut units = vec!["matrix-synapse", "nginx"];
        if ctx.config.turn.enabled {
            units.push("coturn");
        }
        for unit in units {
            let path =
                format!("/etc/systemd/system/{unit}.service.d/matrix-provision-hardening.conf");
            let text = files
                .get(&path)
                .unwrap_or_else(|| panic!("{variant}: no {path}"));
            assert!(text.contains("[Service]\n"), "{variant}{path}");
            for key in [
                "ProtectSystem=strict",
                "NoNewPrivileges=yes",
                "SystemCallFilter=@system-service",
            ] {
                assert!(text.lines().any(|l| l == key), "{variant}{path}: {key}");
            }
            // Only nginx's root master keeps capabilities, and only those it uses.
            let caps = text
                .lines()
                .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
                .unwrap();
            assert_eq!(caps.is_empty(), unit != "nginx", "{variant}{path}: {caps}");
        }
    }
}

#[test]
fn secrets_appear_only_where_they_must() {
    let renderer = Renderer::new();
    for (variant, ctx) in variants() {
        for (dest, text) in render_variant(&renderer, &ctx) {
            let pg = dest == "/etc/matrix-synapse/conf.d/mp-database.yaml";
            let turn = dest == "/etc/coturn/matrix-provision.conf";
            assert_eq!(text.contains(POSTGRES_PASSWORD), pg, "{variant}{dest}");
            assert_eq!(text.contains(TURN_SECRET), turn, "{variant}{dest}");
        }
    }
}

#[test]
fn postgres_tuning_follows_the_documented_formulas() {
    let renderer = Renderer::new();
    let setting = |text: &str, key: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} missing"))
            .to_string()
    };
    let cases = [
        // ram_mb, cpus → shared_buffers, effective_cache_size, work_mem, maintenance, autovacuum, per_gather.
        // PostgreSQL's share (crate::sizing): 2/5 of what the OS (RAM / 4 within 512 MB..4 GB) leaves;
        // shared_buffers half of it, effective_cache_size it plus half the OS share.
        (2048, 1, "307MB", "870MB", "4MB", "76MB", "25MB", "0"),
        (4096, 2, "614MB", "1740MB", "4MB", "153MB", "51MB", "1"),
        (
            65536, 16, "8192MB", "26624MB", "64MB", "1024MB", "341MB", "4",
        ),
        (512, 1, "128MB", "256MB", "4MB", "64MB", "21MB", "0"),
    ];
    for (ram, cpus, sb, ecs, wm, mwm, avwm, gather) in cases {
        let ctx = context(host_toml("closed", ""), facts(ram, cpus));
        let text = renderer
            .render("postgres/matrix-provision.conf.j2", &ctx.to_value())
            .unwrap();
        let at = format!("{ram} MB / {cpus} CPU");
        assert_eq!(setting(&text, "shared_buffers"), sb, "{at}");
        assert_eq!(setting(&text, "effective_cache_size"), ecs, "{at}");
        assert_eq!(setting(&text, "work_mem"), wm, "{at}");
        assert_eq!(setting(&text, "maintenance_work_mem"), mwm, "{at}");
        assert_eq!(setting(&text, "autovacuum_work_mem"), avwm, "{at}");
        // Durability is not traded for speed: no acknowledged message may be lost.
        assert!(!text.contains("\nsynchronous_commit"), "{at}");
        assert_eq!(
            setting(&text, "max_parallel_workers_per_gather"),
            gather,
            "{at}"
        );
        assert_eq!(setting(&text, "random_page_cost"), "1.1");
    }
}

/// Runs the rendered certbot hook with `install`, `systemctl` and `nginx` replaced by stubs that log
/// their arguments; returns (exit success, logged calls).
fn run_deploy_hook(hook: &str, renewed_domains: &str, nginx_ok: bool) -> (bool, Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let log = dir.path().join("calls.log");
    for (tool, status) in [
        ("install", 0),
        ("systemctl", 0),
        ("nginx", if nginx_ok { 0 } else { 1 }),
    ] {
        let stub = bin.join(tool);
        fs::write(
            &stub,
            format!("#!/bin/sh\necho \"{tool} $*\" >>\"$CALLS\"\nexit {status}\n"),
        )
        .unwrap();
        fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let script = dir.path().join("hook");
    fs::write(&script, hook).unwrap();
    let status = std::process::Command::new("/bin/sh")
        .arg(&script)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("CALLS", &log)
        .env("RENEWED_LINEAGE", "/etc/letsencrypt/live/lineage")
        .env("RENEWED_DOMAINS", renewed_domains)
        .status()
        .unwrap();
    let calls = fs::read_to_string(&log).unwrap_or_default();
    (status.success(), calls.lines().map(String::from).collect())
}

#[test]
fn deploy_hook_refreshes_coturn_cert_only_for_the_turn_name_and_gates_reload_on_nginx_t() {
    let renderer = Renderer::new();
    let ctx = context(host_toml("closed", ""), facts(4096, 2));
    let hook = renderer
        .render("certbot/deploy-hook.sh.j2", &ctx.to_value())
        .unwrap();

    let (ok, calls) = run_deploy_hook(&hook, "turn.example.com", true);
    assert!(ok, "{calls:?}");
    assert_eq!(
        calls,
        [
            "install -d -o root -g turnserver -m 0750 /etc/coturn/certs",
            "install -o root -g turnserver -m 0640 /etc/letsencrypt/live/lineage/fullchain.pem /etc/coturn/certs/fullchain.pem",
            "install -o root -g turnserver -m 0640 /etc/letsencrypt/live/lineage/privkey.pem /etc/coturn/certs/privkey.pem",
            "systemctl try-restart coturn.service",
            "nginx -t -q",
            "systemctl reload nginx.service",
        ]
    );

    // One certificate for several names, the TURN name among them.
    let (_, calls) = run_deploy_hook(&hook, "matrix.example.com turn.example.com", true);
    assert!(calls.contains(&"systemctl try-restart coturn.service".to_string()));

    // Other certificates, including a name that merely starts like the TURN host.
    for domains in ["matrix.example.com", "turn.example.com.evil.net", ""] {
        let (ok, calls) = run_deploy_hook(&hook, domains, true);
        assert!(ok);
        assert_eq!(
            calls,
            ["nginx -t -q", "systemctl reload nginx.service"],
            "{domains:?}"
        );
    }

    // A broken nginx configuration is never reloaded, and certbot hears about it.
    let (ok, calls) = run_deploy_hook(&hook, "matrix.example.com", false);
    assert!(!ok);
    assert_eq!(calls, ["nginx -t -q"]);
}
