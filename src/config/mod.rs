//! `host.toml`: the one file an admin writes. This module owns its schema, its defaults and its validation.
//! Everything else reads the validated [`HostConfig`]; nothing touches the host before it exists.
//!
//! [`parse`]/[`load`] run two passes and report every problem at once, each with file, line, field and
//! a fix: `read` (TOML syntax, known keys with did-you-mean, types; keeps spans) and `validate` (defaults,
//! ranges, cross-field rules), using the pure checks in `check`. Every key is declared once, in `schema`
//! (type, default, bounds, example, doc); `examples/host.toml` shows every option (a test checks it).
//!
//! Decisions the rules encode (each tested in `tests/config_errors.rs`):
//! - Host names are rejected, not rewritten, when not lowercase RFC 1123 names with at least one dot:
//!   no scheme, port, path, trailing dot, IP address or non-ASCII (punycode is fine). The error quotes the
//!   corrected name when it is clear. server_name lives in every user ID, so the file must say it exactly.
//! - element.host must differ from synapse.host and server_name (each is its own nginx vhost); checked only
//!   while Element is enabled. turn.host may equal any other name: coturn needs a certificate, not a vhost.
//! - TURN ports are 1024..=65535 with min_port < max_port. While TURN is enabled the relay range must not
//!   contain 22, 80, 443, 3478, 5349 or 8448, nor overlap any extra_allowed_ports entry (any protocol:
//!   coturn also allocates TCP relays). Extra ports equal to the built-in ones are allowed (ufw ignores
//!   duplicates).
//! - extra_allowed_ports entries are exactly `PORT/tcp|udp` or `LOW:HIGH/tcp|udp` (LOW < HIGH), as ufw
//!   takes them; a missing protocol, `-` ranges and uppercase protocols are errors with the fix quoted.
//! - external_ip must be a public address: private, loopback, link-local, CGNAT, ULA and unspecified are
//!   errors (coturn would advertise an unreachable relay address). Documentation ranges are accepted so
//!   examples and tests can use them. Stored in canonical text form.
//! - The fingerprint accepts spaces and lowercase (as gpg prints it) and is stored as 40 uppercase hex.
//! - URLs are http:// or https:// with a host; credentials in them are refused and never echoed.
//! - Paths (acme_ca_bundle, element_signing_key) must be absolute; `~` is not expanded.
//! - element.version is "latest" or `vX.Y.Z`, optionally `-rc.N`/`-rcN`.
//! - admin_user defaults to None (no account); a valid localpart, no leading `_`, not all digits.
//! - The ACME email is required only while acme.enabled; its format is checked whenever it is written.
//! - Quotas are at least 1 (0 means unlimited to coturn) with user_quota <= total_quota; keep_releases >= 1;
//!   max_upload_size_mb is 1..=10240.
//! - metrics durations are one Prometheus unit each (`30s`, `5m`, `26h`, `7d`), at least 1.

use serde::{Deserialize, Serialize};
use std::path::Path;

mod check;
mod error;
mod read;
mod schema;
mod validate;

pub use error::{ConfigError, ConfigIssue};

/// Production sources. Every one has an override in `[sources]` so mirrors and tests can stand in.
pub const MATRIX_REPO_URL: &str = "https://packages.matrix.org/debian/";
pub const MATRIX_KEYRING_URL: &str =
    "https://packages.matrix.org/debian/matrix-org-archive-keyring.gpg";
pub const MATRIX_KEY_FINGERPRINT: &str = "AAF9AE843A7584B5A3E4CD2BCF45A512DE2DA058";
pub const ACME_DIRECTORY_URL: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const ELEMENT_RELEASES_URL: &str =
    "https://api.github.com/repos/element-hq/element-web/releases";

/// The validated host description. Field names are the host.toml keys (and the template variables).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// The Matrix server name: the part after the colon in `@alice:example.com`.
    pub server_name: String,
    pub acme: Acme,
    pub synapse: Synapse,
    pub element: Element,
    pub turn: Turn,
    pub firewall: Firewall,
    pub sources: Sources,
    /// Absent in a serialised config of an older version: off, as in host.toml.
    #[serde(default)]
    pub backup: Backup,
    #[serde(default)]
    pub media: Media,
    /// Default (direct) for documents written before [edge] existed.
    #[serde(default)]
    pub edge: Edge,
    /// Absent from older host.toml files and from hand-built configs: off.
    #[serde(default)]
    pub metrics: Metrics,
    /// Keys the schema declares that no Rust code reads, only templates (`synapse.max_upload_size_mb`):
    /// validated by their declaration alone and seen by templates at their dotted path under `config`
    /// (render.rs merges them in). Adding such a key is its schema line and the template that uses it.
    #[serde(skip)]
    pub template_only: std::collections::BTreeMap<&'static str, toml::Value>,
}

/// Who terminates TLS for the public names: nginx itself (`direct`, with certbot) or an edge in front
/// (`proxied`: a tunnel, a load balancer, another web server), which forwards plain HTTP to our nginx.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EdgeMode {
    #[default]
    Direct,
    Proxied,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    pub mode: EdgeMode,
    /// The address our nginx listens on for the edge (proxied): loopback when the edge runs on this host.
    pub listen: String,
    /// Its port (plain HTTP).
    pub port: u16,
    /// Addresses (or CIDR ranges) of the edge, the only peers whose X-Forwarded-For nginx believes.
    pub trusted: Vec<String>,
    /// Where federation arrives at the edge: 443 (delegated with `m.server` ending `:443`) or 8448.
    pub federation_port: u16,
}

impl Default for Edge {
    fn default() -> Edge {
        let listen = schema::default_str("edge.listen");
        Edge {
            mode: EdgeMode::Direct,
            listen: listen.into(),
            port: schema::default_int("edge.port"),
            // validate's default too: the edge runs on this host unless told otherwise.
            trusted: vec![listen.into()],
            federation_port: schema::default_int("edge.federation_port"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Acme {
    /// false: certificates are the admin's business (they must exist at the certbot paths).
    pub enabled: bool,
    /// Contact for Let's Encrypt expiry notices. Required when enabled.
    pub email: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    Closed,
    Token,
    Open,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Synapse {
    /// Public host name of the Synapse vhost (client + federation). Default `matrix.<server_name>`.
    pub host: String,
    pub registration: Registration,
    pub federation: bool,
    pub presence: bool,
    pub report_stats: bool,
    /// Expose `/_synapse/admin` through nginx. Off by default: the admin API stays on loopback.
    pub expose_admin_api: bool,
    /// Localpart of the first admin account that apply creates once (issue 5). None: no admin is created.
    pub admin_user: Option<String>,
    /// `[synapse.workers]` (issue 13): off, or auto-sized with explicit counts overriding.
    #[serde(default)]
    pub workers: Workers,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum WorkersMode {
    #[default]
    Off,
    Auto,
}

/// `[synapse.workers]`: `mode` and the counts host.toml fixes, by role key (`crate::workers::ROLES`);
/// a role not written gets what auto picks. Resolved against the host's facts by `workers::Layout`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Workers {
    pub mode: WorkersMode,
    #[serde(flatten)]
    pub counts: std::collections::BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Element {
    pub enabled: bool,
    /// Default `element.<server_name>`.
    pub host: String,
    /// "latest" or a pinned tag such as "v1.11.85".
    pub version: String,
    /// Install the daily update timer.
    pub auto_update: bool,
    /// How many releases to keep under /var/www/element/archive.
    pub keep_releases: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    pub enabled: bool,
    /// Default `turn.<server_name>`.
    pub host: String,
    pub min_port: u16,
    pub max_port: u16,
    pub user_quota: u32,
    pub total_quota: u32,
    /// Public IPv4/IPv6 when the host is behind NAT.
    pub external_ip: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Firewall {
    pub enabled: bool,
    /// TCP ports SSH must stay reachable on, on top of those found on the host (sshd -T, its listening
    /// sockets, ssh.socket, $SSH_CONNECTION). None: detection alone, which must then find one.
    pub ssh_ports: Option<Vec<u16>>,
    /// Extra ports to allow, as "PORT/PROTO" or "LOW:HIGH/PROTO" (proto tcp|udp).
    pub extra_allowed_ports: Vec<String>,
}

/// `[metrics]`: Prometheus, node and PostgreSQL exporters and Synapse's metrics, all on loopback.
/// Durations are Prometheus durations (`30s`, `5m`, `26h`, `7d`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub enabled: bool,
    /// Also serve Prometheus under `https://<synapse.host>/prometheus/`, behind basic auth.
    pub expose_ui: bool,
    pub scrape_interval: String,
    pub evaluation_interval: String,
    /// How long a process must be down before its alert fires.
    pub down_for: String,
    /// The last successful backup may be this old before its alert fires (the schedule plus slack).
    pub backup_max_age: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            enabled: schema::default_bool("metrics.enabled"),
            expose_ui: schema::default_bool("metrics.expose_ui"),
            scrape_interval: schema::default_str("metrics.scrape_interval").into(),
            evaluation_interval: schema::default_str("metrics.evaluation_interval").into(),
            down_for: schema::default_str("metrics.down_for").into(),
            backup_max_age: schema::default_str("metrics.backup_max_age").into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    pub matrix_repo_url: String,
    pub matrix_keyring_url: String,
    /// 40 hex digits, no spaces.
    pub matrix_key_fingerprint: String,
    pub acme_directory_url: String,
    /// PEM bundle that signs the ACME server's TLS certificate (only for private ACME servers).
    pub acme_ca_bundle: Option<String>,
    pub element_releases_url: String,
    /// OpenPGP keyring (binary or armored) that signs Element release tarballs; None = the built-in Element key.
    pub element_signing_key: Option<String>,
}

/// `[backup]`: restic snapshots of the database, media, keys and secrets (issue 14). Off by default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    pub enabled: bool,
    /// A restic repository: an absolute path (a mounted disk), or `sftp:`, `rest:`, `s3:`, `b2:`,
    /// `azure:`, `gs:`, `swift:`, `rclone:` as restic spells them. Required when enabled.
    pub repository: Option<String>,
    /// `hourly`, `daily`, `weekly` or `HH:MM` (every day at that time).
    pub schedule: String,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
}

impl Default for Backup {
    /// What an absent `[backup]` means (`validate` fills the same values).
    fn default() -> Backup {
        Backup {
            enabled: schema::default_bool("backup.enabled"),
            repository: None,
            schedule: schema::default_str("backup.schedule").into(),
            keep_daily: schema::default_int("backup.keep_daily"),
            keep_weekly: schema::default_int("backup.keep_weekly"),
            keep_monthly: schema::default_int("backup.keep_monthly"),
        }
    }
}

impl Backup {
    /// The longest a healthy host goes between two successful backups: the schedule's period plus the
    /// timer's randomized delay and time for a long run. An older last success is overdue.
    pub fn max_age_secs(&self) -> u64 {
        let hour = 3600;
        match self.schedule.as_str() {
            "hourly" => 2 * hour,
            "weekly" => 7 * 24 * hour + 6 * hour,
            _ => 24 * hour + 6 * hour,
        }
    }
}

/// `[media]`: how long Synapse keeps media (its own `media_retention`) and the remote-media purge timer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// Synapse deletes local uploads not accessed for this many days. None: kept forever.
    pub local_media_lifetime_days: Option<u32>,
    /// Synapse deletes cached copies of remote media not accessed for this many days. None: kept.
    pub remote_media_lifetime_days: Option<u32>,
    /// A daily timer (`matrix-provision maintenance`) purges cached remote media older than this many
    /// days through the admin API. None: no timer. Needs synapse.admin_user.
    pub purge_remote_media_days: Option<u32>,
}

impl HostConfig {
    /// What templates see as `config`: the fields, plus each template-only key at its dotted path.
    /// Every template context takes `config` from here (render's RenderContext, edge-config).
    pub fn for_templates(&self) -> serde_json::Value {
        let mut tree = serde_json::to_value(self).expect("HostConfig serializes");
        for (path, value) in &self.template_only {
            let (sections, leaf) = path.rsplit_once('.').unwrap_or(("", path));
            let mut at = &mut tree;
            for part in sections.split('.').filter(|p| !p.is_empty()) {
                at = &mut at[part];
                if !at.is_object() {
                    *at = serde_json::Value::Object(Default::default());
                }
            }
            let value = serde_json::to_value(value).expect("a TOML scalar is JSON");
            at[leaf] = value;
        }
        tree
    }

    /// Synapse serves under a different name than server_name: `.well-known` delegation is needed.
    pub fn delegated(&self) -> bool {
        self.synapse.host != self.server_name
    }

    /// An edge in front terminates TLS (`edge.mode = "proxied"`).
    pub fn proxied(&self) -> bool {
        self.edge.mode == EdgeMode::Proxied
    }
}

/// Parse and validate host.toml text. `file_name` prefixes every error line (`host.toml:7: …`).
/// On error, every problem found is in the returned [`ConfigError`], not just the first.
pub fn parse(text: &str, file_name: &str) -> Result<HostConfig, ConfigError> {
    let mut issues = read::Issues::new(text);
    let Some(raw) = read::read(text, &mut issues) else {
        return Err(ConfigError::new(file_name, issues.list));
    };
    let config = validate::validate(&raw, &mut issues);
    if issues.list.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::new(file_name, issues.list))
    }
}

/// Read and validate a host.toml file. Errors name the path as given.
pub fn load(path: &Path) -> Result<HostConfig, ConfigError> {
    let file_name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &file_name),
        Err(e) => Err(ConfigError::new(
            &file_name,
            vec![ConfigIssue {
                line: None,
                field: String::new(),
                value: None,
                message: format!("cannot read: {e}"),
                hint: Some(match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        "check the path; examples/host.toml is a starting point".to_string()
                    }
                    std::io::ErrorKind::InvalidData => "save the file as UTF-8".to_string(),
                    _ => "check the path and its permissions".to_string(),
                }),
            }],
        )),
    }
}
