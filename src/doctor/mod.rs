//! `doctor`: a read-only health report of a converged host. One [`Check`] per question, each ✓, ! (warning)
//! or ✗ with the command that fixes or explains it. What to check comes from the step graph apply would run
//! ([`ExpectedState`]: its units, firewall rules, certificates, TLS listeners, files, databases), so a
//! service or port added to a playbook is checked here with no change; on top come the live probes only
//! doctor makes (the certificate each port really serves, .well-known, federation, a TURN allocation).
//! Everything goes through [`System`]: commands (`systemctl show`, `openssl`, `ufw`, `psql`, `df`) and
//! HTTP GETs, so every check is unit-tested.

pub mod prometheus;
pub mod turn;

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::admin::TurnOffer;
use crate::config::HostConfig;
use crate::engine::{
    Contents, ExpectedBackup, ExpectedCert, ExpectedFile, ExpectedKind, ExpectedState, ExpectedTls,
    ExpectedUnit,
};
use crate::system::{psql, unit_state, Cmd, FileKind, System};

/// Certificates closer to expiry than this are a warning (certbot renews at 30 days left).
pub const CERT_WARN_DAYS: i64 = 14;
/// Free space below these is a warning / a failure.
pub const DISK_WARN_MB: u64 = 5 * 1024;
pub const DISK_FAIL_MB: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub name: String,
    pub level: Level,
    pub detail: String,
    /// What to run or change, for warnings and failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            level: Level::Ok,
            detail: detail.into(),
            hint: None,
        }
    }
    fn bad(
        level: Level,
        name: impl Into<String>,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            level,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
    fn fail(name: impl Into<String>, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check::bad(Level::Fail, name, detail, hint)
    }
}

/// Allocates a relay with the given credentials and returns the relayed address.
pub type RelayProbe<'a> =
    dyn Fn(&turn::TurnCredentials) -> anyhow::Result<std::net::SocketAddr> + 'a;

/// One report: the host's expected state, the seam to look at it, and the answers that need the outside
/// world or a session (latest Element release, Synapse's TURN offer, a relay allocation); tests stand in for them.
pub struct Doctor<'a> {
    pub config: &'a HostConfig,
    /// What apply leaves on this host, from the step graph it would run.
    pub expected: &'a ExpectedState,
    pub sys: &'a dyn System,
    /// Seconds since the epoch.
    pub now: i64,
    /// The latest Element release tag; None: do not ask.
    pub latest_element: Option<&'a dyn Fn() -> anyhow::Result<String>>,
    /// What Synapse offers a calling client (asked as the admin account); None: no credentials to ask with.
    pub turn_offer: Option<&'a dyn Fn() -> anyhow::Result<TurnOffer>>,
    /// Allocate a relay on our coturn with those credentials; returns the relayed address.
    pub turn_relay: Option<&'a RelayProbe<'a>>,
    /// Also check what the world sees: .well-known on server_name, federation keys on 8448.
    pub public: bool,
}

impl Doctor<'_> {
    pub fn run(&self) -> Vec<Check> {
        let (c, e) = (self.config, self.expected);
        let mut out = Vec::new();
        for unit in &e.units {
            out.push(self.service(&unit.unit));
            if let Some(url) = &unit.health_url {
                out.push(self.health(unit, url));
            }
            if let Some(probe) = &unit.probe {
                out.push(self.probe(&unit.unit, probe));
            }
        }
        for cert in &e.certificates {
            out.push(self.certificate(cert));
        }
        for tls in &e.tls {
            out.push(self.served(tls));
        }
        if c.delegated() && self.public {
            out.extend(self.well_known());
        }
        if c.synapse.federation && self.public {
            out.push(self.federation_keys());
        }
        if c.turn.enabled {
            out.extend(self.turn());
        }
        if let Some(rules) = &e.firewall {
            // SSH first, as apply opens it: every port apply would find sshd on now, plus the configured ones.
            let mut want: Vec<String> = Vec::new();
            if let Some(configured) = &e.firewall_ssh {
                let mut ports = crate::system::detect_ssh_ports(self.sys).ports;
                ports.extend(configured.iter().copied());
                want.extend(ports.iter().map(|p| format!("{p}/tcp")));
            }
            want.extend(
                rules
                    .iter()
                    .filter(|r| !want.contains(r))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            out.push(self.firewall(&want));
        }
        if !e.files.is_empty() {
            out.push(self.files(&e.files));
        }
        for db in &e.databases {
            out.push(self.collation(db));
        }
        if c.element.enabled {
            out.push(self.element());
        }
        if let Some(b) = &e.backup {
            out.push(self.backup(b));
        }
        if c.metrics.enabled {
            out.extend(prometheus::checks(self.sys, crate::layout::PROMETHEUS_URL));
        }
        out.push(self.disk("disk: media store", crate::layout::SYNAPSE_DATA_DIR));
        out.push(self.disk("disk: database", crate::layout::POSTGRES_DATA_DIR));
        out
    }

    /// The last backup's age and result, from the state file `matrix-provision backup` keeps.
    fn backup(&self, b: &ExpectedBackup) -> Check {
        let name = "backup";
        let unit = &b.unit;
        let now_hint = format!(
            "matrix-provision backup (or systemctl start {unit}); journalctl -u {unit} -n 50"
        );
        let bytes = match self.sys.read(&b.state_file) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Check::bad(
                    Level::Warn,
                    name,
                    format!("no backup has run yet (schedule: {})", b.schedule),
                    now_hint,
                )
            }
            Err(e) => return Check::fail(name, format!("{e:#}"), "run doctor as root"),
        };
        let state: crate::backup::State = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                return Check::fail(
                    name,
                    format!("{} is not a backup state file: {e}", b.state_file.display()),
                    now_hint,
                )
            }
        };
        let age = |t: i64| crate::backup::time::age(self.now - t);
        let last_ok = match state.last_success_unix {
            Some(t) => format!("last success {} ago", age(t)),
            None => "no successful backup yet".to_string(),
        };
        let overdue = state
            .last_success_unix
            .is_none_or(|t| self.now - t > b.max_age_seconds as i64);
        match state.result.as_str() {
            "running" => {
                let alive = matches!(
                    self.sys.stat(Path::new(&format!("/proc/{}", state.pid))),
                    Ok(Some(_))
                );
                if !alive {
                    Check::fail(
                        name,
                        format!(
                            "the backup started {} ago was interrupted (process {} is gone); {last_ok}",
                            age(state.started_unix),
                            state.pid
                        ),
                        now_hint,
                    )
                } else if overdue {
                    Check::bad(
                        Level::Warn,
                        name,
                        format!(
                            "running for {}; {last_ok}, overdue for schedule {}",
                            age(state.started_unix),
                            b.schedule
                        ),
                        format!("journalctl -u {unit} -f"),
                    )
                } else {
                    Check::ok(
                        name,
                        format!("running for {}; {last_ok}", age(state.started_unix)),
                    )
                }
            }
            "ok" if !overdue => Check::ok(
                name,
                format!(
                    "{last_ok} (snapshot {}, schedule {})",
                    state.snapshot.as_deref().unwrap_or("?"),
                    b.schedule
                ),
            ),
            "ok" => Check::fail(
                name,
                format!(
                    "{last_ok}: overdue for schedule {} (is {}.timer active?)",
                    b.schedule,
                    unit.trim_end_matches(".service")
                ),
                now_hint,
            ),
            _ => Check::fail(
                name,
                format!(
                    "the last backup ({} ago) failed: {}; {last_ok}",
                    age(state.finished_unix.unwrap_or(state.started_unix)),
                    crate::report::escape(&state.message)
                ),
                now_hint,
            ),
        }
    }

    fn service(&self, unit: &str) -> Check {
        let name = format!("service {unit}");
        let hint = format!(
            "systemctl status {unit}; journalctl -u {unit} -n 50; then systemctl start {unit}"
        );
        let state = match unit_state(self.sys, unit) {
            Ok(s) => s,
            Err(e) => return Check::fail(name, format!("{e:#}"), hint),
        };
        if state.load == "not-found" {
            return Check::fail(
                name,
                "not installed",
                "run `matrix-provision apply host.toml`",
            );
        }
        let (active, sub) = (state.active, state.sub);
        if active == "active" {
            Check::ok(name, format!("active ({sub})"))
        } else {
            Check::fail(name, format!("{active} ({sub})"), hint)
        }
    }

    /// The URL apply waits for after (re)starting the unit (Synapse's /health) answers.
    fn health(&self, unit: &ExpectedUnit, url: &str) -> Check {
        let u = &unit.unit;
        let name = format!("{u} health");
        match self.sys.http_get(url) {
            Ok(_) => Check::ok(name, format!("{url} answers")),
            Err(e) => Check::fail(
                name,
                format!("{e:#}"),
                format!("is {u} running? systemctl status {u}; journalctl -u {u} -n 100"),
            ),
        }
    }

    /// The command apply awaits after starting the unit (Redis: PING as Synapse's user) answers.
    fn probe(&self, unit: &str, probe: &crate::engine::ExpectedProbe) -> Check {
        let name = format!("{unit} answers");
        let Some((program, args)) = probe.argv.split_first() else {
            return Check::ok(name, "nothing to ask");
        };
        let cmd = Cmd::new(program).args(args.iter().cloned());
        let hint = format!("systemctl status {unit}; journalctl -u {unit} -n 50");
        match self.sys.run(&cmd) {
            Ok(out) if out.ok() && out.stdout.contains(&probe.expect) => {
                Check::ok(name, format!("`{}`: {}", cmd.display(), probe.expect))
            }
            Ok(out) => Check::fail(name, format!("`{}`: {}", cmd.display(), short(&out)), hint),
            Err(e) => Check::fail(name, format!("{e:#}"), hint),
        }
    }

    fn certificate(&self, cert: &ExpectedCert) -> Check {
        let host = &cert.name;
        let name = format!("TLS certificate {host}");
        let path = cert.cert.display().to_string();
        let renew = format!("certbot renew --cert-name {host}; systemctl status certbot.timer");
        if matches!(self.sys.stat(&cert.cert), Ok(None)) {
            return Check::fail(
                name,
                format!("no certificate at {path}"),
                "run `matrix-provision apply host.toml` (it requests missing certificates)",
            );
        }
        let cmd = Cmd::new("openssl").args(["x509", "-enddate", "-noout", "-in", &path]);
        let out = match self.sys.run(&cmd) {
            Ok(o) if o.ok() => o.stdout,
            Ok(o) => return Check::fail(name, format!("cannot read {path}: {}", short(&o)), renew),
            Err(e) => return Check::fail(name, format!("{e:#}"), "apt install openssl"),
        };
        let Some(end) = not_after(&out) else {
            return Check::fail(
                name,
                format!("unexpected openssl output: {}", out.trim()),
                renew,
            );
        };
        let days = (end - self.now).div_euclid(86_400);
        if end <= self.now {
            Check::fail(name, "expired", renew)
        } else if days < CERT_WARN_DAYS {
            Check::bad(Level::Warn, name, format!("{days} days left"), renew)
        } else {
            Check::ok(name, format!("{days} days left"))
        }
    }

    /// The certificate the port really presents for the name (over loopback, with SNI) against the one on
    /// disk: a renewal that nginx or coturn did not pick up leaves them serving the old one until it expires.
    fn served(&self, t: &ExpectedTls) -> Check {
        let name = format!("TLS served {}:{}", t.name, t.port);
        let path = t.cert.display();
        let disk = match self.sys.read(&t.cert) {
            Ok(Some(b)) => first_pem(&String::from_utf8_lossy(&b)),
            Ok(None) => None,
            Err(e) => return Check::fail(name, format!("{e:#}"), "run doctor as root (sudo)"),
        };
        let Some(disk) = disk else {
            return Check::fail(
                name,
                format!("no certificate at {path}"),
                "run `matrix-provision apply host.toml` (it requests missing certificates)",
            );
        };
        let served = match self.handshake(t) {
            Ok(pem) => pem,
            Err(e) => {
                return Check::fail(
                    name,
                    e,
                    format!("systemctl status {u}; journalctl -u {u} -n 50", u = t.unit),
                )
            }
        };
        let end = |pem: &str| self.end_date(pem).unwrap_or_else(|| "?".into());
        if served == disk {
            Check::ok(name, format!("{} presents {path}", t.unit))
        } else {
            Check::fail(
                name,
                format!(
                    "{} presents another certificate (valid until {}) than {path} (valid until {})",
                    t.unit,
                    end(&served),
                    end(&disk)
                ),
                format!(
                    "systemctl reload-or-restart {u} (it reads certificates only when it starts or \
                     reloads); after a renewal the certbot deploy hook does that: check \
                     {hooks}/ and journalctl -u {certbot}",
                    u = t.unit,
                    hooks = crate::layout::LETSENCRYPT_DEPLOY_HOOKS,
                    certbot = crate::layout::CERTBOT_UNIT,
                ),
            )
        }
    }

    /// The leaf certificate a TLS handshake with 127.0.0.1:port (SNI name) presents, as one PEM block.
    fn handshake(&self, t: &ExpectedTls) -> Result<String, String> {
        let connect = format!("{}:{}", crate::layout::LOOPBACK, t.port);
        let attempt = |extra: &[&str]| {
            // timeout: a listener that accepts but never answers must not hang the report.
            let cmd = Cmd::new("timeout")
                .args(["10", "openssl", "s_client", "-connect", &connect])
                .args(["-servername", t.name.as_str()])
                .args(extra.iter().copied())
                .stdin(Vec::new());
            self.sys.run(&cmd)
        };
        let mut why = String::new();
        // Some servers (coturn 4.6) fail a TLS 1.3 handshake yet serve TLS 1.2: the certificate is the same.
        for extra in [&[][..], &["-tls1_2"][..]] {
            match attempt(extra) {
                Ok(o) => match first_pem(&o.stdout) {
                    Some(pem) => return Ok(pem),
                    None => why = format!("no TLS handshake on {connect}: {}", short(&o)),
                },
                Err(e) => return Err(format!("{e:#}")),
            }
        }
        Err(why)
    }

    fn end_date(&self, pem: &str) -> Option<String> {
        let cmd = Cmd::new("openssl")
            .args(["x509", "-noout", "-enddate"])
            .stdin(pem_text(pem));
        let out = self.sys.run(&cmd).ok().filter(|o| o.ok())?;
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix("notAfter="))
            .map(|d| d.trim().to_string())
    }

    /// A GET as the world makes it: directly (nginx terminates TLS), or behind an edge through the edge
    /// when this host can reach it, else from nginx's own listener for the edge with the name as Host.
    /// Returns the body and, behind an edge, how it was reached.
    fn get_public(&self, url: &str, host: &str, path: &str) -> Result<(Vec<u8>, String), String> {
        let front = crate::listeners::Listeners::of(self.config);
        match self.sys.http_get(url) {
            Ok(body) if front.tls => Ok((body, String::new())),
            Ok(body) => Ok((body, " (through the edge)".into())),
            Err(e) if front.tls => Err(format!("{e:#}")),
            Err(edge_err) => {
                let local = format!("{}{path}", front.upstream);
                let opts = crate::http::Options {
                    host_header: Some(host.to_string()),
                    ..crate::http::Options::default()
                };
                let body = self.sys.http_fetch(&local, &opts).map_err(|e| {
                    format!("not through the edge ({edge_err:#}) nor from nginx's listener: {e:#}")
                })?;
                Ok((
                    body,
                    format!(
                        " (from nginx's listener {local}: the edge is not reachable from here)"
                    ),
                ))
            }
        }
    }

    /// The delegation documents as nginx serves them on server_name.
    fn well_known(&self) -> Vec<Check> {
        let c = self.config;
        let hint = &format!(
            "systemctl reload {}; check {}/{}-wellknown.conf",
            crate::layout::NGINX_UNIT,
            crate::layout::NGINX_SITES_ENABLED,
            crate::listeners::Listeners::of(c).site
        );
        let port = crate::listeners::Listeners::of(c).federation_port;
        let want_server = format!("{}:{port}", c.synapse.host);
        let want_client = format!("https://{}", c.synapse.host);
        let doc = |kind: &str| -> Result<(Value, String), String> {
            let path = format!("/.well-known/matrix/{kind}");
            let url = format!("https://{}{path}", c.server_name);
            let (body, via) = self.get_public(&url, &c.server_name, &path)?;
            let v = serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON ({e})"))?;
            Ok((v, via))
        };
        let judge = |kind: &str, key: &[&str], want: &str| {
            let name = format!(".well-known/matrix/{kind}");
            match doc(kind) {
                Err(e) => Check::fail(name, e, hint),
                Ok((v, via)) => {
                    let got = key.iter().fold(&v, |v, k| &v[*k]);
                    let got = got.as_str().unwrap_or("").trim_end_matches('/');
                    if got == want {
                        Check::ok(name, format!("points to {want}{via}"))
                    } else {
                        Check::fail(name, format!("says {got:?}, expected {want:?}"), hint)
                    }
                }
            }
        };
        vec![
            judge("server", &["m.server"], &want_server),
            judge("client", &["m.homeserver", "base_url"], &want_client),
        ]
    }

    fn federation_keys(&self) -> Check {
        let host = &self.config.synapse.host;
        let front = crate::listeners::Listeners::of(self.config);
        // Direct: nginx's 8448; behind an edge: where the edge takes federation.
        let port = if front.tls {
            crate::layout::FEDERATION_PORT
        } else {
            front.federation_port
        };
        let name = format!("federation keys on {port}");
        let path = "/_matrix/key/v2/server";
        let url = format!("https://{host}:{port}{path}");
        let hint = format!(
            "check that port {port} is open (ufw status{}) and reaches nginx; then test with \
             https://federationtester.matrix.org/#{}",
            if front.tls { "" } else { " on the edge" },
            self.config.server_name
        );
        match self.get_public(&url, host, path) {
            Ok((body, via)) => match serde_json::from_slice::<Value>(&body) {
                Ok(v) if v["server_name"] == self.config.server_name.as_str() => Check::ok(
                    name,
                    format!("{url} answers for {}{via}", self.config.server_name),
                ),
                Ok(v) => Check::fail(
                    name,
                    format!("{url} answers for {}", v["server_name"]),
                    hint,
                ),
                Err(_) => Check::fail(name, format!("{url}: not a key document"), hint),
            },
            Err(e) => Check::fail(name, e, hint),
        }
    }

    /// Synapse's TURN offer, then a relay allocation on coturn with exactly those credentials.
    fn turn(&self) -> Vec<Check> {
        let name = "TURN credentials from Synapse";
        let Some(ask) = self.turn_offer else {
            return vec![Check::bad(
                Level::Warn,
                name,
                "not checked: no admin credentials (or doctor is not running as root)",
                "set synapse.admin_user in host.toml, run apply, and run doctor as root",
            )];
        };
        let hint = &format!(
            "check turn_uris and turn_shared_secret_path in {}/mp-turn.yaml, then systemctl restart {}",
            crate::layout::SYNAPSE_CONF_D,
            crate::layout::SYNAPSE_UNIT
        );
        let host = &self.config.turn.host;
        let offer = match ask() {
            Ok(o) => o,
            Err(e) => return vec![Check::fail(name, format!("{e:#}"), hint)],
        };
        if offer.uris.is_empty() || offer.username.is_empty() {
            return vec![Check::fail(name, "Synapse offers no TURN server", hint)];
        }
        if !offer.uris.iter().all(|u| u.contains(host.as_str())) {
            return vec![Check::fail(
                name,
                format!("Synapse offers {}, not {host}", offer.uris.join(", ")),
                hint,
            )];
        }
        let mut out = vec![Check::ok(
            name,
            format!("{} URIs for {host}", offer.uris.len()),
        )];
        if let Some(relay) = self.turn_relay {
            let name = "TURN relay allocation";
            let creds = turn::TurnCredentials {
                username: offer.username.clone(),
                password: offer.password.expose().to_string(),
            };
            out.push(match relay(&creds) {
                Ok(addr) => Check::ok(name, format!("coturn relays via {addr}")),
                Err(e) => Check::fail(
                    name,
                    format!("{e:#}"),
                    "systemctl status coturn; journalctl -u coturn -n 50",
                ),
            });
        }
        out
    }

    /// ufw active and allowing every rule of the firewall step (SSH first among them).
    fn firewall(&self, want: &[String]) -> Check {
        let name = "firewall (ufw)";
        let hint = "run `matrix-provision apply host.toml` (it adds the rules and enables ufw)";
        let out = match self.sys.run(&Cmd::new("ufw").arg("status")) {
            Ok(o) if o.ok() => o.stdout,
            Ok(o) => return Check::fail(name, short(&o), "run doctor as root (sudo)"),
            Err(e) => return Check::fail(name, format!("{e:#}"), hint),
        };
        if !out.lines().any(|l| l.trim() == "Status: active") {
            return Check::fail(name, "ufw is not active", hint);
        }
        // "443/tcp  ALLOW  Anywhere" → "443/tcp"; "8080/tcp  ALLOW  10.0.0.2" → "8080/tcp from 10.0.0.2".
        let allowed: Vec<String> = out
            .lines()
            .filter(|l| l.contains("ALLOW") && !l.contains("(v6)"))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let to = *f.first()?;
                Some(
                    match f
                        .iter()
                        .position(|w| *w == "ALLOW")
                        .and_then(|i| f.get(i + 1))
                    {
                        Some(&from) if from != "Anywhere" => format!("{to} from {from}"),
                        _ => to.to_string(),
                    },
                )
            })
            .collect();
        let missing: Vec<&str> = want
            .iter()
            .map(String::as_str)
            .filter(|w| !allowed.iter().any(|a| a == w))
            .collect();
        if missing.is_empty() {
            Check::ok(name, format!("active; allows {}", want.join(", ")))
        } else {
            Check::fail(name, format!("missing: {}", missing.join(", ")), hint)
        }
    }

    /// Every file, directory and link of the playbooks as apply leaves it: present, owner, mode, and
    /// the contents apply writes (a rendered file edited by hand, a certificate copy gone stale).
    fn files(&self, files: &[ExpectedFile]) -> Check {
        let name = "files";
        let mut problems = Vec::new();
        for f in files {
            if let Err(p) = self.file(f) {
                problems.push(format!("{}: {p}", f.path.display()));
            }
        }
        if problems.is_empty() {
            return Check::ok(
                name,
                format!(
                    "{} files, directories and links as apply leaves them",
                    files.len()
                ),
            );
        }
        let shown = problems.len().min(5);
        let more = problems.len() - shown;
        Check::fail(
            name,
            format!(
                "{}{}",
                problems[..shown].join("; "),
                if more > 0 {
                    format!(" (and {more} more)")
                } else {
                    String::new()
                }
            ),
            "`matrix-provision plan host.toml` shows each difference; `apply` puts them back",
        )
    }

    fn file(&self, f: &ExpectedFile) -> Result<(), String> {
        let err = |e: anyhow::Error| format!("{e:#}");
        let stat = self
            .sys
            .stat(&f.path)
            .map_err(err)?
            .ok_or_else(|| "missing".to_string())?;
        let owner = match &f.kind {
            ExpectedKind::Symlink { target } => {
                let got = self.sys.read_link(&f.path).map_err(err)?;
                return match got {
                    Some(t) if &t == target => Ok(()),
                    Some(t) => Err(format!(
                        "points to {}, not {}",
                        t.display(),
                        target.display()
                    )),
                    None => Err("not a symlink".into()),
                };
            }
            ExpectedKind::Dir { owner } if stat.kind == FileKind::Dir => owner,
            ExpectedKind::Dir { .. } => return Err("not a directory".into()),
            ExpectedKind::File { owner, .. } if stat.kind == FileKind::File => owner,
            ExpectedKind::File { .. } => return Err("not a regular file".into()),
        };
        let uid = self.sys.uid(&owner.user).map_err(err)?;
        let gid = self.sys.gid(&owner.group).map_err(err)?;
        if (Some(stat.uid), Some(stat.gid), stat.mode) != (uid, gid, owner.mode) {
            return Err(format!(
                "owner/mode {}:{} {:04o}, not {}:{} {:04o}",
                stat.uid, stat.gid, stat.mode, owner.user, owner.group, owner.mode
            ));
        }
        let ExpectedKind::File { contents, .. } = &f.kind else {
            return Ok(());
        };
        let have = self.sys.read(&f.path).map_err(err)?.unwrap_or_default();
        match contents {
            None if have.trim_ascii().is_empty() => Err("empty".into()),
            None => Ok(()),
            Some(Contents::Bytes(want)) if &have == want => Ok(()),
            Some(Contents::Bytes(_)) => Err("differs from what apply writes".into()),
            Some(Contents::SameAs(src)) => match self.sys.read(src).map_err(err)? {
                Some(want) if want == have => Ok(()),
                Some(_) => Err(format!("differs from {}", src.display())),
                None => Err(format!("{} (its source) is missing", src.display())),
            },
        }
    }

    fn collation(&self, db: &str) -> Check {
        let name = format!("postgres database {db}");
        let cmd = psql(
            self.sys,
            &format!(
            "SELECT pg_encoding_to_char(encoding) || '|' || datcollate || '|' || datctype FROM pg_database WHERE datname = '{}';",
            db.replace('\'', "''")
        ));
        let out = match self.sys.run(&cmd) {
            Ok(o) if o.ok() => o.stdout,
            Ok(o) => {
                return Check::fail(
                    name,
                    short(&o),
                    format!(
                        "systemctl status {} (and run doctor as root)",
                        crate::release::Release::of_host(self.sys).postgres_unit()
                    ),
                )
            }
            Err(e) => return Check::fail(name, format!("{e:#}"), "apt install postgresql-client"),
        };
        match out.trim() {
            "" => Check::fail(
                name,
                format!("there is no database `{db}`"),
                "run `matrix-provision apply host.toml`",
            ),
            "UTF8|C|C" => Check::ok(name, format!("{db}: UTF8, C collation")),
            other => Check::fail(
                name,
                format!("{db} is {}; Synapse needs UTF8 with C collation and ctype", other.replace('|', ", ")),
                "dump the database, recreate it with ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0, restore",
            ),
        }
    }

    fn element(&self) -> Check {
        let name = "Element Web";
        let link = Path::new(crate::element::DEFAULT_ROOT).join("current");
        let installed = match self.sys.read_link(&link) {
            Ok(Some(target)) => target
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("element-"))
                .map(str::to_string),
            _ => None,
        };
        let Some(installed) = installed else {
            return Check::fail(
                name,
                format!("{} is missing or not a release link", link.display()),
                "run `matrix-provision apply host.toml`",
            );
        };
        let Some(latest) = self.latest_element else {
            return Check::ok(name, format!("{installed} installed"));
        };
        match latest() {
            Ok(l) if l == installed => Check::ok(name, format!("{installed} (the latest)")),
            Ok(l) if self.config.element.version != "latest" => {
                Check::ok(name, format!("{installed} (pinned; {l} is the latest)"))
            }
            Ok(l) => Check::bad(
                Level::Warn,
                name,
                format!("{installed} installed, {l} is the latest"),
                "matrix-provision element-update",
            ),
            Err(e) => Check::bad(
                Level::Warn,
                name,
                format!("{installed} installed; the latest release is unknown: {e:#}"),
                "check sources.element_releases_url and the network",
            ),
        }
    }

    fn disk(&self, name: &str, path: &str) -> Check {
        let out = match self.sys.run(&Cmd::new("df").args(["-P", "-m", path])) {
            Ok(o) if o.ok() => o.stdout,
            Ok(o) => return Check::fail(name, short(&o), format!("does {path} exist?")),
            Err(e) => return Check::fail(name, format!("{e:#}"), "apt install coreutils"),
        };
        // POSIX format: Filesystem 1M-blocks Used Available Capacity Mounted-on
        let Some(free) = out
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return Check::fail(
                name,
                format!("unexpected df output: {}", out.trim()),
                "df -P -m",
            );
        };
        let detail = format!("{} free for {path}", human_mb(free));
        let hint = format!(
            "free space on the filesystem of {path} (du -xsh {path}/*; old media: the admin API's purge_media_cache)"
        );
        if free < DISK_FAIL_MB {
            Check::fail(name, detail, hint)
        } else if free < DISK_WARN_MB {
            Check::bad(Level::Warn, name, detail, hint)
        } else {
            Check::ok(name, detail)
        }
    }
}

/// The first line of a command's complaint: details stay on one line.
fn short(o: &crate::system::CmdOutput) -> String {
    o.tail()
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no output")
        .to_string()
}

fn human_mb(mb: u64) -> String {
    if mb >= 10 * 1024 {
        format!("{} GB", mb / 1024)
    } else {
        format!("{mb} MB")
    }
}

/// `notAfter=` of `openssl x509 -enddate` as seconds since the epoch.
fn not_after(out: &str) -> Option<i64> {
    out.lines()
        .find_map(|l| l.strip_prefix("notAfter="))
        .and_then(parse_openssl_date)
}

/// The base64 body of the first certificate in PEM text (whitespace dropped), to compare certificates.
fn first_pem(text: &str) -> Option<String> {
    let start = text.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let len = text[start..].find("-----END CERTIFICATE-----")?;
    let body: String = text[start..start + len]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    (!body.is_empty()).then_some(body)
}

/// A [`first_pem`] body as PEM again, for openssl.
fn pem_text(body: &str) -> String {
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// "Nov 29 12:00:00 2026 GMT" (openssl's notAfter) as seconds since the epoch.
pub fn parse_openssl_date(s: &str) -> Option<i64> {
    let f: Vec<&str> = s.split_whitespace().collect();
    if f.len() < 4 {
        return None;
    }
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == f[0])? as i64
        + 1;
    let day: i64 = f[1].parse().ok()?;
    let hms: Vec<i64> = f[2]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let year: i64 = f[3].parse().ok()?;
    if hms.len() != 3 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
}

/// Days since 1970-01-01 (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// True when any check failed (warnings do not fail the report).
pub fn failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.level == Level::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Node;
    use crate::playbook::{self, Inputs};
    use crate::steps::firewall::FirewallStep;
    use crate::steps::service::{Served, ServiceStep};
    use crate::system::{FakeSystem, FileSpec};

    const NOW: i64 = 1_795_953_600 - 60 * 86_400; // 60 days before Nov 29 12:00:00 2026 GMT
    const NAMES: [&str; 4] = [
        "example.org",
        "matrix.example.org",
        "element.example.org",
        "turn.example.org",
    ];

    fn config() -> HostConfig {
        crate::config::parse(
            "server_name = \"example.org\"\n[acme]\nemail = \"a@example.org\"\n",
            "host.toml",
        )
        .unwrap()
    }

    /// The graph apply would run on this fake host, as doctor sees it.
    fn graph(sys: &FakeSystem) -> playbook::Graph {
        let inputs = Inputs {
            config_path: "/root/host.toml".into(),
            self_exe: "/root/matrix-provision".into(),
        };
        playbook::build(&config(), &inputs, sys, true).unwrap()
    }

    fn pem(body: &str) -> String {
        format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    }

    /// A certificate body per name and issue ("matrixexampleorg1").
    fn cert_body(name: &str, issue: u32) -> String {
        format!("{}{issue}", name.replace('.', ""))
    }

    /// Every file the graph expects, laid down as apply leaves it: the secrets first, so that the files
    /// rendered with them hold the stored values (as on a host apply converged).
    fn converge_files(sys: &FakeSystem) {
        let ids = (
            sys.uid("x").unwrap().unwrap(),
            sys.gid("x").unwrap().unwrap(),
        );
        for secrets_pass in [true, false] {
            for f in &graph(sys).expected_state().files {
                let real = sys.path(f.path.to_str().unwrap());
                std::fs::create_dir_all(real.parent().unwrap()).unwrap();
                let bytes = match &f.kind {
                    ExpectedKind::File { contents: None, .. } if secrets_pass => {
                        b"a-secret\n".to_vec()
                    }
                    _ if secrets_pass => continue,
                    ExpectedKind::File { contents: None, .. } => continue,
                    ExpectedKind::File {
                        contents: Some(Contents::Bytes(b)),
                        ..
                    } => b.clone(),
                    ExpectedKind::File {
                        contents: Some(Contents::SameAs(src)),
                        ..
                    } => sys.read(src).unwrap().unwrap(),
                    ExpectedKind::Dir { owner } => {
                        sys.mkdir(&f.path, ids, owner.mode).unwrap();
                        continue;
                    }
                    ExpectedKind::Symlink { target } => {
                        sys.symlink(target, &f.path).unwrap();
                        continue;
                    }
                };
                let ExpectedKind::File { owner, .. } = &f.kind else {
                    unreachable!()
                };
                let spec = FileSpec {
                    path: f.path.clone(),
                    uid: ids.0,
                    gid: ids.1,
                    mode: owner.mode,
                };
                sys.write(&spec, &bytes).unwrap();
            }
        }
    }

    /// A converged host: every unit active, certificates valid 60 days and served, all documents served,
    /// every file of the playbooks in place.
    fn healthy() -> FakeSystem {
        let sys = FakeSystem::new();
        sys.on_cmd(
            "systemctl show",
            0,
            "LoadState=loaded\nActiveState=active\nSubState=running\n",
        );
        sys.on_cmd("openssl x509", 0, "notAfter=Nov 29 12:00:00 2026 GMT\n");
        sys.on_cmd("sshd -T", 0, "port 22\n");
        sys.on_cmd(
            "ufw status",
            0,
            "Status: active\n\nTo                         Action      From\n--                         ------      ----\n\
             22/tcp                     ALLOW       Anywhere\n80/tcp                     ALLOW       Anywhere\n\
             443/tcp                    ALLOW       Anywhere\n8448/tcp                   ALLOW       Anywhere\n\
             3478/tcp                   ALLOW       Anywhere\n3478/udp                   ALLOW       Anywhere\n\
             5349/tcp                   ALLOW       Anywhere\n5349/udp                   ALLOW       Anywhere\n\
             49152:65535/udp            ALLOW       Anywhere\n80/tcp (v6)                ALLOW       Anywhere (v6)\n",
        );
        sys.on_cmd("setpriv --reuid=postgres", 0, "UTF8|C|C\n");
        sys.on_cmd(
            "df -P -m",
            0,
            "Filesystem     1048576-blocks  Used Available Capacity Mounted on\n/dev/vda1 30000 2000 28000 7% /\n",
        );
        let mut urls = sys.urls.lock().unwrap();
        urls.insert("http://127.0.0.1:8008/health".into(), b"OK".to_vec());
        urls.insert(
            "https://example.org/.well-known/matrix/server".into(),
            br#"{"m.server":"matrix.example.org:443"}"#.to_vec(),
        );
        urls.insert(
            "https://example.org/.well-known/matrix/client".into(),
            br#"{"m.homeserver":{"base_url":"https://matrix.example.org"}}"#.to_vec(),
        );
        urls.insert(
            "https://matrix.example.org:8448/_matrix/key/v2/server".into(),
            br#"{"server_name":"example.org","verify_keys":{}}"#.to_vec(),
        );
        drop(urls);
        for name in NAMES {
            let cert = pem(&cert_body(name, 1));
            sys.put(&format!("/etc/letsencrypt/live/{name}/cert.pem"), &cert);
            sys.put(
                &format!("/etc/letsencrypt/live/{name}/fullchain.pem"),
                &cert,
            );
            sys.put(&format!("/etc/letsencrypt/live/{name}/privkey.pem"), "KEY");
        }
        // nginx and coturn present what was on disk when they last (re)loaded: issue 1 of every name.
        sys.on(|c| {
            let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
            let ["10", "openssl", "s_client", "-connect", addr, "-servername", name, ..] = args[..]
            else {
                return None;
            };
            let port: u16 = addr.strip_prefix("127.0.0.1:")?.parse().ok()?;
            let listens = matches!((name, port), (_, 443) | ("matrix.example.org", 8448))
                || (name, port) == ("turn.example.org", 5349);
            Some(crate::system::CmdOutput {
                status: if listens { 0 } else { 1 },
                stdout: if listens {
                    format!(
                        "CONNECTED(00000003)\n---\nServer certificate\n{}",
                        pem(&cert_body(name, 1))
                    )
                } else {
                    String::new()
                },
                stderr: if listens {
                    String::new()
                } else {
                    "connect:errno=111".into()
                },
            })
        });
        sys.put("/root/host.toml", "server_name = \"example.org\"\n");
        sys.put("/root/matrix-provision", "binary");
        converge_files(&sys);
        std::fs::create_dir_all(sys.path("/var/www/element/archive/element-v1.11.90")).unwrap();
        std::os::unix::fs::symlink(
            "archive/element-v1.11.90",
            sys.path("/var/www/element/current"),
        )
        .unwrap();
        sys
    }

    fn run_with(
        sys: &FakeSystem,
        expected: &ExpectedState,
        latest: Option<&dyn Fn() -> anyhow::Result<String>>,
    ) -> Vec<Check> {
        let config = config();
        let offer = || {
            Ok(TurnOffer {
                uris: vec![
                    "turn:turn.example.org:3478?transport=udp".to_string(),
                    "turns:turn.example.org:5349?transport=tcp".to_string(),
                ],
                username: "1700000000:@admin:example.org".into(),
                password: crate::secrets::Secret::from_stored("pw"),
            })
        };
        // A marker file in the fake root plays "coturn is down".
        let relay = |c: &turn::TurnCredentials| {
            assert_eq!(
                c.password, "pw",
                "the relay is tried with Synapse's credentials"
            );
            if sys.get("/coturn-down").is_some() {
                anyhow::bail!("127.0.0.1:3478: no answer to a TURN request")
            }
            Ok("203.0.113.7:49160".parse().unwrap())
        };
        Doctor {
            config: &config,
            expected,
            sys,
            now: NOW,
            latest_element: latest,
            turn_offer: Some(&offer),
            turn_relay: Some(&relay),
            public: true,
        }
        .run()
    }

    fn run(sys: &FakeSystem, latest: Option<&dyn Fn() -> anyhow::Result<String>>) -> Vec<Check> {
        run_with(sys, &graph(sys).expected_state(), latest)
    }

    fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name}: {checks:#?}"))
    }

    /// Behind an edge: no certificate or TLS check (this host serves none), .well-known and federation
    /// through the edge when it answers, else from nginx's listener; ufw's rule for the edge's address.
    #[test]
    fn behind_an_edge_doctor_checks_through_it_or_the_local_listener() {
        let sys = healthy();
        sys.on_cmd(
            "ufw status",
            0,
            "Status: active\n\nTo                         Action      From\n--                         ------      ----\n\
             22/tcp                     ALLOW       Anywhere\n8080/tcp                   ALLOW       10.0.0.2\n",
        );
        let config = crate::config::parse(
            "server_name = \"example.org\"\n[turn]\nenabled = false\n[edge]\nmode = \"proxied\"\nlisten = \"10.0.0.5\"\ntrusted = [\"10.0.0.2\"]\n",
            "host.toml",
        )
        .unwrap();
        {
            let mut urls = sys.urls.lock().unwrap();
            // The edge does not answer this host for server_name, but nginx's listener does.
            urls.remove("https://example.org/.well-known/matrix/server");
            urls.remove("https://example.org/.well-known/matrix/client");
            urls.insert(
                "http://10.0.0.5:8080/.well-known/matrix/server".into(),
                br#"{"m.server":"matrix.example.org:443"}"#.to_vec(),
            );
            urls.insert(
                "http://10.0.0.5:8080/.well-known/matrix/client".into(),
                br#"{"m.homeserver":{"base_url":"https://matrix.example.org"}}"#.to_vec(),
            );
            urls.insert(
                "https://matrix.example.org:443/_matrix/key/v2/server".into(),
                br#"{"server_name":"example.org","verify_keys":{}}"#.to_vec(),
            );
        }
        let inputs = Inputs {
            config_path: "/root/host.toml".into(),
            self_exe: "/root/matrix-provision".into(),
        };
        let expected = playbook::build(&config, &inputs, &sys, true)
            .unwrap()
            .expected_state();
        assert!(
            expected.certificates.is_empty() && expected.tls.is_empty(),
            "{expected:?}"
        );
        let checks = Doctor {
            config: &config,
            expected: &expected,
            sys: &sys,
            now: NOW,
            latest_element: None,
            turn_offer: None,
            turn_relay: None,
            public: true,
        }
        .run();
        assert!(
            !checks.iter().any(|c| c.name.starts_with("TLS")),
            "{checks:#?}"
        );
        let wk = find(&checks, ".well-known/matrix/server");
        assert_eq!(wk.level, Level::Ok, "{wk:?}");
        assert!(
            wk.detail.contains("nginx's listener http://10.0.0.5:8080"),
            "{wk:?}"
        );
        let fed = find(&checks, "federation keys on 443");
        assert_eq!(fed.level, Level::Ok, "{fed:?}");
        assert!(fed.detail.contains("through the edge"), "{fed:?}");
        let fw = find(&checks, "firewall (ufw)");
        assert_eq!(fw.level, Level::Ok, "{fw:?}");
        assert!(fw.detail.contains("8080/tcp from 10.0.0.2"), "{fw:?}");
    }

    #[test]
    fn a_converged_host_is_all_green() {
        let sys = healthy();
        let latest = || Ok("v1.11.90".to_string());
        let checks = run(&sys, Some(&latest));
        let bad: Vec<_> = checks.iter().filter(|c| c.level != Level::Ok).collect();
        assert!(bad.is_empty(), "{bad:#?}");
        assert!(!failed(&checks));
        for name in [
            "service coturn",
            "service postgresql",
            &format!("service {}", crate::release::NEWEST.postgres_unit()),
            "service certbot.timer",
            "service matrix-element-update.timer",
            "matrix-synapse health",
            "TLS certificate matrix.example.org",
            "TLS certificate turn.example.org",
            "TLS served matrix.example.org:443",
            "TLS served matrix.example.org:8448",
            "TLS served example.org:443",
            "TLS served element.example.org:443",
            "TLS served turn.example.org:5349",
            ".well-known/matrix/server",
            "federation keys on 8448",
            "firewall (ufw)",
            "files",
            "postgres database synapse",
            "disk: media store",
            "TURN credentials from Synapse",
            "TURN relay allocation",
        ] {
            find(&checks, name);
        }
        assert_eq!(
            find(&checks, "TLS certificate element.example.org").detail,
            "60 days left"
        );
        assert_eq!(find(&checks, "Element Web").detail, "v1.11.90 (the latest)");
        assert!(
            find(&checks, "firewall (ufw)")
                .detail
                .starts_with("active; allows 22/tcp, 80/tcp"),
            "SSH is checked first, like apply opens it"
        );
        // Only the certificates the graph asks for, each once.
        let certs = checks
            .iter()
            .filter(|c| c.name.starts_with("TLS certificate"))
            .count();
        assert_eq!(certs, 4);
    }

    /// The point of deriving checks from the graph: a service, its TLS port and its firewall rule added
    /// to a playbook are checked with no change here.
    #[test]
    fn a_service_added_to_the_graph_is_checked() {
        let sys = healthy();
        let mut graph = graph(&sys);
        let before = run_with(&sys, &graph.expected_state(), None);
        assert!(!before.iter().any(|c| c.name.contains("worker")));
        graph.nodes.push(Node {
            id: "synapse-worker-service".into(),
            description: "a worker".into(),
            step: Box::new(ServiceStep {
                unit: "matrix-synapse-worker@generic1".into(),
                wait_http: Some("http://127.0.0.1:8083/health".into()),
                instance: None,
                tls: vec![Served {
                    name: "matrix.example.org".into(),
                    port: 8443,
                    cert: "/etc/letsencrypt/live/matrix.example.org/cert.pem".into(),
                }],
                probe: None,
            }),
            after: vec!["packages".into()],
            notify: Vec::new(),
            exclusive: Vec::new(),
            handler: false,
        });
        graph.nodes.push(Node {
            id: "worker-firewall".into(),
            description: "worker port".into(),
            step: Box::new(FirewallStep {
                ssh_ports: None,
                allow: vec!["8443/tcp".into()],
                managed_ports: Vec::new(),
            }),
            after: Vec::new(),
            notify: Vec::new(),
            exclusive: Vec::new(),
            handler: false,
        });
        let checks = run_with(&sys, &graph.expected_state(), None);
        assert_eq!(
            find(&checks, "service matrix-synapse-worker@generic1").level,
            Level::Ok
        );
        let health = find(&checks, "matrix-synapse-worker@generic1 health");
        assert!(
            health.level == Level::Fail && health.detail.contains("127.0.0.1:8083"),
            "{health:?}"
        );
        let served = find(&checks, "TLS served matrix.example.org:8443");
        assert_eq!(
            served.level,
            Level::Fail,
            "nothing listens there: {served:?}"
        );
        let fw = find(&checks, "firewall (ufw)");
        assert!(
            fw.level == Level::Fail && fw.detail == "missing: 8443/tcp",
            "{fw:?}"
        );
    }

    #[test]
    fn the_ssh_rule_of_the_firewall_step_is_checked() {
        let sys = healthy();
        // sshd listens on 2222: the firewall step opens that, so doctor expects it.
        sys.on_cmd("sshd -T", 0, "port 2222\nlistenaddress 0.0.0.0:2222\n");
        let checks = run(&sys, None);
        let fw = find(&checks, "firewall (ufw)");
        assert!(
            fw.level == Level::Fail && fw.detail == "missing: 2222/tcp",
            "{fw:?}"
        );
    }

    #[test]
    fn a_renewal_nginx_and_coturn_did_not_pick_up_fails_with_the_reload() {
        let sys = healthy();
        for name in ["matrix.example.org", "turn.example.org"] {
            let cert = pem(&cert_body(name, 2));
            sys.put(&format!("/etc/letsencrypt/live/{name}/cert.pem"), &cert);
            sys.put(
                &format!("/etc/letsencrypt/live/{name}/fullchain.pem"),
                &cert,
            );
        }
        let checks = run(&sys, None);
        for (name, unit) in [
            ("TLS served matrix.example.org:443", "nginx"),
            ("TLS served matrix.example.org:8448", "nginx"),
            ("TLS served turn.example.org:5349", "coturn"),
        ] {
            let c = find(&checks, name);
            assert!(
                c.level == Level::Fail && c.detail.starts_with(&format!("{unit} presents another")),
                "{c:?}"
            );
            assert!(
                c.hint
                    .as_deref()
                    .unwrap()
                    .starts_with(&format!("systemctl reload-or-restart {unit}")),
                "{c:?}"
            );
        }
        assert_eq!(
            find(&checks, "TLS served element.example.org:443").level,
            Level::Ok
        );
        // coturn's own copy is stale too (the deploy hook did not run): the file check says which.
        let files = find(&checks, "files");
        assert!(
            files.level == Level::Fail
                && files.detail.contains(
                    "/etc/coturn/certs/fullchain.pem: differs from /etc/letsencrypt/live/turn.example.org/fullchain.pem"
                ),
            "{files:?}"
        );
    }

    #[test]
    fn a_hand_edited_missing_or_loosened_file_fails() {
        let sys = healthy();
        sys.put(
            "/etc/matrix-synapse/conf.d/mp-presence.yaml",
            "presence:\n  enabled: maybe\n",
        );
        std::fs::remove_file(sys.path("/etc/nginx/sites-enabled/matrix-provision-element.conf"))
            .unwrap();
        let secret = sys.path("/var/lib/matrix-provision/secrets/postgres_password");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let checks = run(&sys, None);
        let files = find(&checks, "files");
        assert_eq!(files.level, Level::Fail);
        for part in [
            "/etc/matrix-synapse/conf.d/mp-presence.yaml: differs from what apply writes",
            "/etc/nginx/sites-enabled/matrix-provision-element.conf: missing",
            "/var/lib/matrix-provision/secrets/postgres_password: owner/mode",
        ] {
            assert!(files.detail.contains(part), "{part}: {files:?}");
        }
        assert!(!files.detail.contains("a-secret"), "never a secret's value");
        assert!(files.hint.as_deref().unwrap().contains("plan"));
    }

    #[test]
    fn a_stopped_coturn_fails_with_the_hint() {
        let sys = healthy();
        sys.on(|c| {
            (c.display()
                == "systemctl show -p LoadState -p ActiveState -p SubState -p UnitFileState coturn")
                .then(|| crate::system::CmdOutput {
                    status: 0,
                    stdout: "LoadState=loaded\nActiveState=inactive\nSubState=dead\n".into(),
                    stderr: String::new(),
                })
        });
        sys.put("/coturn-down", "");
        let checks = run(&sys, None);
        let relay = find(&checks, "TURN relay allocation");
        assert_eq!(relay.level, Level::Fail);
        assert!(relay
            .hint
            .as_deref()
            .unwrap()
            .contains("systemctl status coturn"));
        let c = find(&checks, "service coturn");
        assert_eq!(c.level, Level::Fail);
        assert_eq!(c.detail, "inactive (dead)");
        assert!(c
            .hint
            .as_deref()
            .unwrap()
            .contains("systemctl status coturn"));
        assert!(failed(&checks));
        assert_eq!(find(&checks, "service nginx").level, Level::Ok);
    }

    #[test]
    fn certificates_warn_under_14_days_and_fail_when_expired() {
        let sys = healthy();
        let config = config();
        let expected = ExpectedState::default();
        let cert = ExpectedCert {
            name: "matrix.example.org".into(),
            cert: "/etc/letsencrypt/live/matrix.example.org/cert.pem".into(),
        };
        let at = |now| {
            Doctor {
                config: &config,
                expected: &expected,
                sys: &sys,
                now,
                latest_element: None,
                turn_offer: None,
                turn_relay: None,
                public: false,
            }
            .certificate(&cert)
        };
        let end = 1_795_953_600;
        let soon = at(end - 10 * 86_400);
        assert_eq!(
            (soon.level, soon.detail.as_str()),
            (Level::Warn, "10 days left")
        );
        assert!(soon
            .hint
            .unwrap()
            .contains("certbot renew --cert-name matrix.example.org"));
        assert_eq!(at(end + 1).level, Level::Fail);
        assert_eq!(at(end - 30 * 86_400).level, Level::Ok);
        std::fs::remove_file(sys.path("/etc/letsencrypt/live/matrix.example.org/cert.pem"))
            .unwrap();
        let missing = at(end - 30 * 86_400);
        assert!(
            missing.level == Level::Fail && missing.detail.starts_with("no certificate at"),
            "{missing:?}"
        );
    }

    #[test]
    fn synapse_down_missing_rule_wrong_collation_and_full_disk_fail() {
        let sys = healthy();
        sys.urls
            .lock()
            .unwrap()
            .remove("http://127.0.0.1:8008/health");
        sys.on_cmd(
            "ufw status",
            0,
            "Status: active\n22/tcp ALLOW Anywhere\n80/tcp ALLOW Anywhere\n443/tcp ALLOW Anywhere\n",
        );
        sys.on_cmd(
            "setpriv --reuid=postgres",
            0,
            "UTF8|en_US.UTF-8|en_US.UTF-8\n",
        );
        sys.on_cmd("df -P -m /var/lib/postgresql", 0, "Filesystem 1M-blocks Used Available Capacity Mounted\n/dev/vdb 9000 8500 500 95% /var/lib/postgresql\n");
        let checks = run(&sys, None);
        let health = find(&checks, "matrix-synapse health");
        assert_eq!(health.level, Level::Fail);
        assert!(health
            .hint
            .as_deref()
            .unwrap()
            .contains("systemctl status matrix-synapse"));
        let fw = find(&checks, "firewall (ufw)");
        assert!(
            fw.level == Level::Fail
                && fw.detail.contains("8448/tcp")
                && fw.detail.contains("49152:65535/udp"),
            "{fw:?}"
        );
        let coll = find(&checks, "postgres database synapse");
        assert!(
            coll.level == Level::Fail && coll.detail.contains("en_US.UTF-8"),
            "{coll:?}"
        );
        assert_eq!(find(&checks, "disk: database").level, Level::Fail);
        assert_eq!(find(&checks, "disk: media store").level, Level::Ok);
    }

    #[test]
    fn an_outdated_element_is_a_warning_not_a_failure() {
        let sys = healthy();
        let latest = || Ok("v1.12.0".to_string());
        let checks = run(&sys, Some(&latest));
        let e = find(&checks, "Element Web");
        assert_eq!(e.level, Level::Warn);
        assert!(!failed(&checks));
    }

    #[test]
    fn pem_bodies_compare_without_line_breaks() {
        let a = "junk\n-----BEGIN CERTIFICATE-----\nMIIB\nabcd\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nCHAIN\n-----END CERTIFICATE-----\n";
        assert_eq!(first_pem(a).as_deref(), Some("MIIBabcd"));
        assert_eq!(first_pem("no certificate"), None);
        let long = "A".repeat(100);
        assert_eq!(first_pem(&pem_text(&long)).as_deref(), Some(long.as_str()));
    }

    #[test]
    fn openssl_dates() {
        assert_eq!(
            parse_openssl_date("Nov 29 12:00:00 2026 GMT"),
            Some(1_795_953_600)
        );
        assert_eq!(parse_openssl_date("Jan  1 00:00:00 1970 GMT"), Some(0));
        assert_eq!(
            parse_openssl_date("Feb 29 00:00:01 2024 GMT"),
            Some(1_709_164_801)
        );
        assert_eq!(parse_openssl_date("garbage"), None);
    }

    #[test]
    fn the_last_backup_is_checked_for_result_and_age() {
        let sys = FakeSystem::new();
        let expected = ExpectedState {
            backup: Some(ExpectedBackup {
                state_file: crate::backup::STATE_FILE.into(),
                unit: "matrix-backup.service".into(),
                schedule: "daily".into(),
                max_age_seconds: 30 * 3600,
            }),
            ..ExpectedState::default()
        };
        let check = |state: Option<serde_json::Value>| {
            if let Some(v) = state {
                sys.put(crate::backup::STATE_FILE, &v.to_string());
            }
            run_with(&sys, &expected, None)
                .into_iter()
                .find(|c| c.name == "backup")
                .unwrap()
        };
        let none = check(None);
        assert_eq!(none.level, Level::Warn, "{none:?}");
        assert!(none.hint.unwrap().contains("matrix-provision backup"));
        let state = |result: &str, last_ok: Option<i64>, pid: u32| {
            serde_json::json!({"format": 1, "result": result, "pid": pid, "started": "x",
                "started_unix": NOW - 600, "finished": null, "finished_unix": NOW - 300,
                "message": "pg_dump of database synapse failed (exit 1): connection refused",
                "snapshot": "5d44b0cf", "db_snapshot": "d57de83e", "bytes_added": 0,
                "last_success": null, "last_success_unix": last_ok, "schedule": "daily",
                "max_age_seconds": 108000, "a_key_from_a_newer_version": true})
        };
        let ok = check(Some(state("ok", Some(NOW - 3 * 3600), 1)));
        assert_eq!(
            (ok.level, ok.detail.as_str()),
            (
                Level::Ok,
                "last success 3 h ago (snapshot 5d44b0cf, schedule daily)"
            )
        );
        let old = check(Some(state("ok", Some(NOW - 2 * 86_400), 1)));
        assert!(
            old.level == Level::Fail && old.detail.contains("2 days ago: overdue"),
            "{old:?}"
        );
        let failed = check(Some(state("failed", Some(NOW - 3600), 1)));
        assert!(
            failed.level == Level::Fail
                && failed
                    .detail
                    .contains("failed: pg_dump of database synapse failed"),
            "{failed:?}"
        );
        assert!(failed
            .hint
            .unwrap()
            .contains("journalctl -u matrix-backup.service"));
        // Running: alive while its process exists, interrupted once it is gone.
        sys.put("/proc/4242/stat", "4242 (matrix-provision) S");
        let running = check(Some(state("running", Some(NOW - 3600), 4242)));
        assert_eq!(running.level, Level::Ok, "{running:?}");
        let killed = check(Some(state("running", Some(NOW - 3600), 4343)));
        assert!(
            killed.level == Level::Fail
                && killed.detail.contains("interrupted (process 4343 is gone)"),
            "{killed:?}"
        );
    }

    #[test]
    fn backups_on_in_host_toml_put_the_timer_and_the_state_into_the_graph() {
        let sys = FakeSystem::new();
        let mut config = config();
        config.backup.enabled = true;
        config.backup.repository = Some("/srv/restic".into());
        let inputs = Inputs {
            config_path: "/root/host.toml".into(),
            self_exe: "/root/matrix-provision".into(),
        };
        let graph = playbook::build(&config, &inputs, &sys, true).unwrap();
        let e = graph.expected_state();
        assert!(
            e.units.iter().any(|u| u.unit == "matrix-backup.timer"),
            "{:?}",
            e.units
        );
        assert_eq!(e.backup.unwrap().max_age_seconds, 30 * 3600);
        assert!(graph.secrets.get("restic_password").is_some());
        let ids: Vec<&str> = graph.nodes.iter().map(|n| n.id.as_str()).collect();
        assert!(
            ids.contains(&"backup-repository") && ids.contains(&"backup-password"),
            "{ids:?}"
        );
        let e = self::graph(&sys).expected_state();
        assert!(e.backup.is_none() && !e.units.iter().any(|u| u.unit.starts_with("matrix-backup")));
    }
}
