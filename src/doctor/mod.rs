//! `doctor`: a read-only health report of a converged host. One [`Check`] per question, each ✓, ! (warning)
//! or ✗ with the command that fixes or explains it. Everything goes through [`System`]: commands
//! (`systemctl show`, `openssl`, `ufw`, `psql`, `df`) and HTTP GETs, so every check is unit-tested.

pub mod turn;

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::admin::TurnOffer;
use crate::config::HostConfig;
use crate::system::{Cmd, System};

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

/// Answers that need the outside world (the Element releases API); tests stand in for them.
pub struct Doctor<'a> {
    pub config: &'a HostConfig,
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
        let c = self.config;
        let mut out = Vec::new();
        for unit in self.units() {
            out.push(self.service(&unit));
        }
        out.push(self.synapse_health());
        for name in crate::playbook::cert_names(c) {
            out.push(self.certificate(&name));
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
        if c.firewall.enabled {
            out.push(self.firewall());
        }
        out.push(self.collation());
        if c.element.enabled {
            out.push(self.element());
        }
        out.push(self.disk("disk: media store", "/var/lib/matrix-synapse"));
        out.push(self.disk("disk: database", "/var/lib/postgresql"));
        out
    }

    fn units(&self) -> Vec<String> {
        let c = self.config;
        let mut units: Vec<String> = vec![
            "matrix-synapse".into(),
            // The cluster itself: `postgresql` is only an umbrella unit that is "active" even when
            // the cluster is down.
            crate::release::Release::of_host(self.sys).postgres_unit(),
            "nginx".into(),
        ];
        if c.turn.enabled {
            units.push("coturn".into());
        }
        if c.acme.enabled {
            units.push("certbot.timer".into());
        }
        if c.element.enabled && c.element.auto_update {
            units.push("matrix-element-update.timer".into());
        }
        units
    }

    fn service(&self, unit: &str) -> Check {
        let name = format!("service {unit}");
        let hint = format!(
            "systemctl status {unit}; journalctl -u {unit} -n 50; then systemctl start {unit}"
        );
        let state = match crate::steps::service::unit_state(self.sys, unit) {
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

    fn synapse_health(&self) -> Check {
        let name = "synapse /health";
        match self.sys.http_get("http://127.0.0.1:8008/health") {
            Ok(body) if String::from_utf8_lossy(&body).trim() == "OK" => {
                Check::ok(name, "OK on 127.0.0.1:8008")
            }
            Ok(body) => Check::fail(
                name,
                format!("answered {:?}", String::from_utf8_lossy(&body)),
                "journalctl -u matrix-synapse -n 100",
            ),
            Err(e) => Check::fail(
                name,
                format!("{e:#}"),
                "is matrix-synapse running? systemctl status matrix-synapse",
            ),
        }
    }

    fn certificate(&self, host: &str) -> Check {
        let name = format!("TLS certificate {host}");
        let path = format!("/etc/letsencrypt/live/{host}/cert.pem");
        let renew = format!("certbot renew --cert-name {host}; systemctl status certbot.timer");
        if matches!(self.sys.stat(Path::new(&path)), Ok(None)) {
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
        let Some(end) = out
            .lines()
            .find_map(|l| l.strip_prefix("notAfter="))
            .and_then(parse_openssl_date)
        else {
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

    /// The delegation documents as nginx serves them on server_name.
    fn well_known(&self) -> Vec<Check> {
        let c = self.config;
        let hint = "systemctl reload nginx; check /etc/nginx/sites-enabled/matrix-provision-wellknown.conf";
        let want_server = format!("{}:443", c.synapse.host);
        let want_client = format!("https://{}", c.synapse.host);
        let doc = |kind: &str| -> Result<Value, String> {
            let url = format!("https://{}/.well-known/matrix/{kind}", c.server_name);
            let body = self.sys.http_get(&url).map_err(|e| format!("{e:#}"))?;
            serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON ({e})"))
        };
        let judge = |kind: &str, key: &[&str], want: &str| {
            let name = format!(".well-known/matrix/{kind}");
            match doc(kind) {
                Err(e) => Check::fail(name, e, hint),
                Ok(v) => {
                    let got = key.iter().fold(&v, |v, k| &v[*k]);
                    let got = got.as_str().unwrap_or("").trim_end_matches('/');
                    if got == want {
                        Check::ok(name, format!("points to {want}"))
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
        let name = "federation keys on 8448";
        let url = format!("https://{host}:8448/_matrix/key/v2/server");
        let hint = format!(
            "check that port 8448 is open (ufw status) and nginx listens on it; then test with \
             https://federationtester.matrix.org/#{}",
            self.config.server_name
        );
        match self.sys.http_get(&url) {
            Ok(body) => match serde_json::from_slice::<Value>(&body) {
                Ok(v) if v["server_name"] == self.config.server_name.as_str() => Check::ok(
                    name,
                    format!("{url} answers for {}", self.config.server_name),
                ),
                Ok(v) => Check::fail(
                    name,
                    format!("{url} answers for {}", v["server_name"]),
                    hint,
                ),
                Err(_) => Check::fail(name, format!("{url}: not a key document"), hint),
            },
            Err(e) => Check::fail(name, format!("{e:#}"), hint),
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
        let hint = "check turn_uris and turn_shared_secret_path in /etc/matrix-synapse/conf.d/mp-turn.yaml, then systemctl restart matrix-synapse";
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

    fn firewall(&self) -> Check {
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
        let allowed: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("ALLOW") && !l.contains("(v6)"))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let c = self.config;
        let mut want = vec!["80/tcp".to_string(), "443/tcp".to_string()];
        if c.synapse.federation {
            want.push("8448/tcp".into());
        }
        if c.turn.enabled {
            want.extend(["3478/udp".into(), "5349/tcp".into()]);
            want.push(format!("{}:{}/udp", c.turn.min_port, c.turn.max_port));
        }
        want.extend(c.firewall.extra_allowed_ports.iter().cloned());
        let missing: Vec<String> = want
            .into_iter()
            .filter(|w| !allowed.contains(&w.as_str()))
            .collect();
        if missing.is_empty() {
            Check::ok(name, format!("active; allows {}", allowed.join(", ")))
        } else {
            Check::fail(name, format!("missing: {}", missing.join(", ")), hint)
        }
    }

    fn collation(&self) -> Check {
        let name = "postgres database collation";
        let cmd = crate::steps::postgres::psql(
            "SELECT pg_encoding_to_char(encoding) || '|' || datcollate || '|' || datctype FROM pg_database WHERE datname = 'synapse';",
        );
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
                "there is no database `synapse`",
                "run `matrix-provision apply host.toml`",
            ),
            "UTF8|C|C" => Check::ok(name, "synapse: UTF8, C collation"),
            other => Check::fail(
                name,
                format!("synapse is {}; Synapse needs UTF8 with C collation and ctype", other.replace('|', ", ")),
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
                "matrix-provision element-update --config /etc/matrix-provision/host.toml",
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
    use crate::system::FakeSystem;

    const NOW: i64 = 1_795_953_600 - 60 * 86_400; // 60 days before Nov 29 12:00:00 2026 GMT

    fn config() -> HostConfig {
        crate::config::parse(
            "server_name = \"example.org\"\n[acme]\nemail = \"a@example.org\"\n",
            "host.toml",
        )
        .unwrap()
    }

    /// A converged host: every unit active, certificates valid 60 days, all documents served.
    fn healthy() -> FakeSystem {
        let sys = FakeSystem::new();
        sys.on_cmd(
            "systemctl show",
            0,
            "LoadState=loaded\nActiveState=active\nSubState=running\n",
        );
        sys.on_cmd("openssl x509", 0, "notAfter=Nov 29 12:00:00 2026 GMT\n");
        sys.on_cmd(
            "ufw status",
            0,
            "Status: active\n\nTo                         Action      From\n--                         ------      ----\n\
             22/tcp                     ALLOW       Anywhere\n80/tcp                     ALLOW       Anywhere\n\
             443/tcp                    ALLOW       Anywhere\n8448/tcp                   ALLOW       Anywhere\n\
             3478/udp                   ALLOW       Anywhere\n5349/tcp                   ALLOW       Anywhere\n\
             49152:65535/udp            ALLOW       Anywhere\n80/tcp (v6)                ALLOW       Anywhere (v6)\n",
        );
        sys.on_cmd("runuser -u postgres", 0, "UTF8|C|C\n");
        sys.on_cmd(
            "df -P -m",
            0,
            "Filesystem     1048576-blocks  Used Available Capacity Mounted on\n/dev/vda1 30000 2000 28000 7% /\n",
        );
        let mut urls = sys.urls.borrow_mut();
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
        for name in [
            "example.org",
            "matrix.example.org",
            "element.example.org",
            "turn.example.org",
        ] {
            sys.put(&format!("/etc/letsencrypt/live/{name}/cert.pem"), "PEM");
        }
        std::fs::create_dir_all(sys.path("/var/www/element/archive/element-v1.11.90")).unwrap();
        std::os::unix::fs::symlink(
            "archive/element-v1.11.90",
            sys.path("/var/www/element/current"),
        )
        .unwrap();
        sys
    }

    fn run(sys: &FakeSystem, latest: Option<&dyn Fn() -> anyhow::Result<String>>) -> Vec<Check> {
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
            sys,
            now: NOW,
            latest_element: latest,
            turn_offer: Some(&offer),
            turn_relay: Some(&relay),
            public: true,
        }
        .run()
    }

    fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name}: {checks:#?}"))
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
            &format!("service {}", crate::release::NEWEST.postgres_unit()),
            "TLS certificate matrix.example.org",
            "TLS certificate turn.example.org",
            ".well-known/matrix/server",
            "federation keys on 8448",
            "firewall (ufw)",
            "postgres database collation",
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
        let at = |now| {
            Doctor {
                config: &config,
                sys: &sys,
                now,
                latest_element: None,
                turn_offer: None,
                turn_relay: None,
                public: false,
            }
            .certificate("matrix.example.org")
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
        sys.urls.borrow_mut().remove("http://127.0.0.1:8008/health");
        sys.on_cmd(
            "ufw status",
            0,
            "Status: active\n80/tcp ALLOW Anywhere\n443/tcp ALLOW Anywhere\n",
        );
        sys.on_cmd("runuser -u postgres", 0, "UTF8|en_US.UTF-8|en_US.UTF-8\n");
        sys.on_cmd("df -P -m /var/lib/postgresql", 0, "Filesystem 1M-blocks Used Available Capacity Mounted\n/dev/vdb 9000 8500 500 95% /var/lib/postgresql\n");
        let checks = run(&sys, None);
        let health = find(&checks, "synapse /health");
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
        let coll = find(&checks, "postgres database collation");
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
}
