//! host.toml's keys, each declared once: path, type, default, bounds, an example value and what it means.
//! The reader (known keys, types, did-you-mean, "belongs in [section]"), the validator (defaults and
//! bounds of plain keys), the hints and the tests over `examples/host.toml` and `HostConfig` all come
//! from [`KEYS`]. A key with its own check (host names, URLs, modes) is validated by named code in
//! `validate`, which reads its default here too; cross-field rules stay there as named, tested code.
//!
//! Adding a key only templates read (a Bool, a bounded Int or a plain Str): its line here, and the
//! template using `{{ config.section.key }}`; validate checks it by this line and keeps it in
//! `HostConfig::template_only`. A key Rust code reads, or one with its own check, also gets its field in
//! `HostConfig` (mod.rs) and its line in `validate` (a test fails if the struct and this table disagree,
//! and another if examples/host.toml does not show the key).

use std::ops::RangeInclusive;

use super::read::Kind;
use super::{
    ACME_DIRECTORY_URL, ELEMENT_RELEASES_URL, MATRIX_KEYRING_URL, MATRIX_KEY_FINGERPRINT,
    MATRIX_REPO_URL,
};

/// What a key is when host.toml leaves it out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum DefaultValue {
    Bool(bool),
    Int(i64),
    Str(&'static str),
    /// Required (server_name), derived from other keys (hosts), or unset (an optional feature).
    None,
}

#[derive(Debug)]
pub(super) struct Key {
    /// Dotted: `section.key`, or `key` at the top level.
    pub path: &'static str,
    pub kind: Kind,
    pub default: DefaultValue,
    /// Integers: the accepted range and how "must be …" reads.
    pub bounds: Option<(RangeInclusive<i64>, &'static str)>,
    /// A value as TOML, for hints ("write key = …").
    pub example: &'static str,
    /// What the key means, in a few words (its full story is in examples/host.toml).
    #[cfg_attr(not(test), allow(dead_code))]
    pub doc: &'static str,
}

const fn key(
    path: &'static str,
    kind: Kind,
    default: DefaultValue,
    example: &'static str,
    doc: &'static str,
) -> Key {
    Key {
        path,
        kind,
        default,
        bounds: None,
        example,
        doc,
    }
}

const fn int(
    path: &'static str,
    default: i64,
    bounds: RangeInclusive<i64>,
    what: &'static str,
    example: &'static str,
    doc: &'static str,
) -> Key {
    Key {
        path,
        kind: Kind::Int,
        default: DefaultValue::Int(default),
        bounds: Some((bounds, what)),
        example,
        doc,
    }
}

use DefaultValue as D;
use Kind::{Bool, IntList, Str, StrList};

pub(super) const DEFAULT_MAX_UPLOAD_SIZE_MB: u32 = 50;
pub(super) const DEFAULT_KEEP_RELEASES: u32 = 3;
/// coturn's own default relay range (the IANA dynamic port range).
pub(super) const DEFAULT_MIN_PORT: u16 = 49152;
pub(super) const DEFAULT_MAX_PORT: u16 = 65535;
pub(super) const DEFAULT_USER_QUOTA: u32 = 12;
pub(super) const DEFAULT_TOTAL_QUOTA: u32 = 1200;
const U32: i64 = u32::MAX as i64;
const PORT_RANGE: &str = "between 1024 and 65535 (below 1024 are privileged service ports)";
const QUOTA: &str = "at least 1 (coturn reads 0 as unlimited)";

/// Every key host.toml accepts, section by section (a section's first key opens it, in this order).
#[rustfmt::skip]
pub(super) const KEYS: &[Key] = &[
    key("server_name", Str, D::None, "\"example.com\"", "the Matrix server name: the part after `:` in @alice:example.com"),
    key("acme.enabled", Bool, D::Bool(true), "true", "request and renew certificates with certbot; false: bring your own"),
    key("acme.email", Str, D::None, "\"admin@example.com\"", "contact for expiry notices; required while acme.enabled"),
    key("synapse.host", Str, D::None, "\"matrix.example.com\"", "public name of the Synapse vhost; default matrix.<server_name>"),
    key("synapse.registration", Str, D::Str("token"), "\"token\"", "who may create accounts: closed, token or open"),
    key("synapse.federation", Bool, D::Bool(true), "true", "talk to other Matrix servers"),
    key("synapse.presence", Bool, D::Bool(true), "true", "online/offline status"),
    int("synapse.max_upload_size_mb", DEFAULT_MAX_UPLOAD_SIZE_MB as i64, 1..=10240, "between 1 and 10240 (megabytes)", "50", "largest upload, for Synapse and nginx"),
    key("synapse.report_stats", Bool, D::Bool(false), "false", "send anonymous usage statistics to matrix.org"),
    key("synapse.expose_admin_api", Bool, D::Bool(false), "false", "serve /_synapse/admin through nginx (else loopback only)"),
    key("synapse.admin_user", Str, D::None, "\"admin\"", "localpart of the first admin, created once; unset: none"),
    key("synapse.workers.mode", Str, D::Str("off"), "\"auto\"", "\"off\" (one process) or \"auto\" (sized from CPUs and RAM)"),
    // One count per row of crate::workers::ROLES (bounds there); unset: what auto picks.
    key("synapse.workers.media", Kind::Int, D::None, "1", "the media repository (0 or 1)"),
    key("synapse.workers.stream_writer", Kind::Int, D::None, "1", "typing, to-device, account data, receipts, presence, push rules (0 or 1)"),
    key("synapse.workers.sync", Kind::Int, D::None, "2", "/sync workers, one user always on the same one"),
    key("synapse.workers.federation", Kind::Int, D::None, "1", "inbound federation workers"),
    key("synapse.workers.client", Kind::Int, D::None, "2", "the rest of the client API"),
    key("synapse.workers.federation_sender", Kind::Int, D::None, "1", "outbound federation workers"),
    key("synapse.workers.pusher", Kind::Int, D::None, "1", "push notification workers"),
    key("synapse.workers.background", Kind::Int, D::None, "1", "the background tasks worker (0 or 1)"),
    key("synapse.workers.event_persister", Kind::Int, D::None, "2", "event writers, sharded by room"),
    key("element.enabled", Bool, D::Bool(true), "true", "serve Element Web"),
    key("element.host", Str, D::None, "\"element.example.com\"", "Element's own vhost; default element.<server_name>"),
    key("element.version", Str, D::Str("latest"), "\"latest\"", "\"latest\" or a pinned tag such as \"v1.11.85\""),
    key("element.auto_update", Bool, D::Bool(true), "true", "install the daily update timer"),
    int("element.keep_releases", DEFAULT_KEEP_RELEASES as i64, 1..=U32, "at least 1 (the release being served counts)", "3", "releases kept for rollback"),
    key("turn.enabled", Bool, D::Bool(true), "true", "run coturn for voice and video calls"),
    key("turn.host", Str, D::None, "\"turn.example.com\"", "TURN's name (needs a certificate); default turn.<server_name>"),
    int("turn.min_port", DEFAULT_MIN_PORT as i64, 1024..=65535, PORT_RANGE, "49152", "lowest relay port"),
    int("turn.max_port", DEFAULT_MAX_PORT as i64, 1024..=65535, PORT_RANGE, "65535", "highest relay port"),
    int("turn.user_quota", DEFAULT_USER_QUOTA as i64, 1..=U32, QUOTA, "12", "relays one user may hold"),
    int("turn.total_quota", DEFAULT_TOTAL_QUOTA as i64, 1..=U32, QUOTA, "1200", "relays all users together may hold"),
    key("turn.external_ip", Str, D::None, "\"203.0.113.7\"", "public address when the host is behind NAT"),
    key("firewall.enabled", Bool, D::Bool(true), "true", "manage ufw"),
    key("firewall.ssh_ports", IntList, D::None, "[22]", "SSH ports to keep open besides those found on the host"),
    key("firewall.extra_allowed_ports", StrList, D::None, "[\"2222/tcp\"]", "further PORT/PROTO or LOW:HIGH/PROTO to allow"),
    key("backup.enabled", Bool, D::Bool(false), "true", "restic backups of database, media, keys and secrets"),
    key("backup.repository", Str, D::None, "\"sftp:backup@backup.example.net:/srv/restic/matrix\"", "the restic repository, outside this host"),
    key("backup.schedule", Str, D::Str("daily"), "\"daily\"", "hourly, daily, weekly or HH:MM"),
    int("backup.keep_daily", 7, 0..=10_000, "between 0 and 10000", "7", "daily backups kept"),
    int("backup.keep_weekly", 4, 0..=10_000, "between 0 and 10000", "4", "weekly backups kept"),
    int("backup.keep_monthly", 6, 0..=10_000, "between 0 and 10000", "6", "monthly backups kept"),
    Key { path: "media.local_media_lifetime_days", kind: Kind::Int, default: D::Int(365), bounds: Some((1..=36_500, "a number of days, at least 1")), example: "365", doc: "Synapse deletes local media unused this long" },
    Key { path: "media.remote_media_lifetime_days", kind: Kind::Int, default: D::Int(30), bounds: Some((1..=36_500, "a number of days, at least 1")), example: "30", doc: "Synapse deletes cached remote media unused this long" },
    Key { path: "media.purge_remote_media_days", kind: Kind::Int, default: D::Int(30), bounds: Some((1..=36_500, "a number of days, at least 1")), example: "30", doc: "the maintenance timer purges cached remote media older than this" },
    key("edge.mode", Str, D::Str("direct"), "\"proxied\"", "who terminates TLS: nginx here (direct) or an edge in front (proxied)"),
    key("edge.listen", Str, D::Str(crate::layout::LOOPBACK), "\"10.0.0.5\"", "behind an edge: the address nginx listens on for it"),
    int("edge.port", 8080, 1..=65535, "a TCP port (1 to 65535)", "8080", "behind an edge: nginx's plain-HTTP port for it"),
    key("edge.trusted", StrList, D::None, "[\"10.0.0.2\"]", "the edge's addresses, the only ones believed in X-Forwarded-For"),
    int("edge.federation_port", crate::layout::HTTPS_PORT as i64, crate::layout::HTTPS_PORT as i64..=crate::layout::FEDERATION_PORT as i64, "one of the two Matrix federation ports", "443", "where the edge takes federation"),
    key("metrics.enabled", Bool, D::Bool(false), "true", "Prometheus, exporters and alerts, all on loopback"),
    key("metrics.expose_ui", Bool, D::Bool(false), "false", "also serve Prometheus at https://<synapse.host>/prometheus/ behind basic auth"),
    key("metrics.scrape_interval", Str, D::Str("30s"), "\"30s\"", "how often Prometheus scrapes (a Prometheus duration)"),
    key("metrics.evaluation_interval", Str, D::Str("30s"), "\"30s\"", "how often rules are evaluated"),
    key("metrics.down_for", Str, D::Str("5m"), "\"5m\"", "how long a process is down before its alert fires"),
    key("metrics.backup_max_age", Str, D::Str("26h"), "\"26h\"", "age of the last good backup before its alert fires"),
    key("sources.matrix_repo_url", Str, D::Str(MATRIX_REPO_URL), "\"https://packages.matrix.org/debian/\"", "the matrix.org apt repository (or a mirror)"),
    key("sources.matrix_keyring_url", Str, D::Str(MATRIX_KEYRING_URL), "\"https://packages.matrix.org/debian/matrix-org-archive-keyring.gpg\"", "its signing keyring"),
    key("sources.matrix_key_fingerprint", Str, D::Str(MATRIX_KEY_FINGERPRINT), "\"AAF9AE843A7584B5A3E4CD2BCF45A512DE2DA058\"", "the fingerprint that keyring must have"),
    key("sources.acme_directory_url", Str, D::Str(ACME_DIRECTORY_URL), "\"https://acme-staging-v02.api.letsencrypt.org/directory\"", "the ACME server"),
    key("sources.acme_ca_bundle", Str, D::None, "\"/etc/ssl/private-ca.pem\"", "PEM bundle of a private ACME server's CA"),
    key("sources.element_releases_url", Str, D::Str(ELEMENT_RELEASES_URL), "\"https://mirror.example.net/element/releases\"", "GitHub-style releases API of Element Web"),
    key("sources.element_signing_key", Str, D::None, "\"/etc/matrix-provision/element.gpg\"", "keyring that signs Element releases; unset: the built-in key"),
];

/// The declared default of a plain key, for the `Default` of a section a document may leave out. A
/// typo or a key of another type is a programming error, caught by the tests that build every Default.
pub(super) fn default_str(path: &str) -> &'static str {
    match get(path).map(|k| k.default) {
        Some(D::Str(s)) => s,
        other => panic!("{path}: no string default ({other:?})"),
    }
}

pub(super) fn default_int<T: TryFrom<i64>>(path: &str) -> T {
    match get(path).map(|k| k.default) {
        Some(D::Int(i)) => {
            T::try_from(i).unwrap_or_else(|_| panic!("{path}: default {i} out of range"))
        }
        other => panic!("{path}: no integer default ({other:?})"),
    }
}

pub(super) fn default_bool(path: &str) -> bool {
    match get(path).map(|k| k.default) {
        Some(D::Bool(b)) => b,
        other => panic!("{path}: no boolean default ({other:?})"),
    }
}

/// The declaration of `path` (`section.key`).
pub(super) fn get(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path == path)
}

impl Key {
    pub fn section(&self) -> &'static str {
        self.path.rsplit_once('.').map_or("", |(s, _)| s)
    }
    pub fn name(&self) -> &'static str {
        self.path.rsplit_once('.').map_or(self.path, |(_, k)| k)
    }
}

/// The sections, in declaration order (without the top level).
pub(super) fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for k in KEYS {
        let s = k.section();
        if !s.is_empty() && !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// The keys of `section` ("" = the top level).
pub(super) fn keys_of(section: &str) -> impl Iterator<Item = &'static Key> + '_ {
    KEYS.iter().filter(move |k| k.section() == section)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_declared_once_with_a_usable_declaration() {
        for (i, k) in KEYS.iter().enumerate() {
            assert!(
                KEYS[..i].iter().all(|o| o.path != k.path),
                "{} twice",
                k.path
            );
            assert!(!k.doc.is_empty(), "{}: no doc", k.path);
            let parsed: Result<toml::Value, _> = toml::from_str(&format!("v = {}", k.example));
            assert!(parsed.is_ok(), "{}: example is not TOML", k.path);
            match (k.kind, k.default, &k.bounds) {
                (Kind::Bool, D::Bool(_), None)
                | (_, D::None, None)
                | (Kind::Str, D::Str(_), None) => {}
                (Kind::Int, D::Int(d), Some((range, _))) => {
                    assert!(range.contains(&d), "{}: default out of bounds", k.path)
                }
                other => panic!("{}: kind, default and bounds disagree: {other:?}", k.path),
            }
        }
        // A section's keys are declared together (the reader and the example list them in this order).
        let order: Vec<&str> = KEYS.iter().map(|k| k.section()).collect();
        let mut seen: Vec<&str> = Vec::new();
        for s in order {
            if seen.last() != Some(&s) {
                assert!(!seen.contains(&s), "[{s}] split in two");
                seen.push(s);
            }
        }
    }

    /// examples/host.toml shows every declared key, each in its own section, and a key shown commented
    /// out (`# key = value`, as the example does for defaults) shows the declared default.
    #[test]
    fn the_example_shows_every_key_with_its_declared_default() {
        let text = include_str!("../../examples/host.toml");
        let mut section = "";
        let mut shown = std::collections::BTreeMap::new();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name;
                continue;
            }
            // Indented under a comment: an option listed with its example (the worker roles).
            let line = line.strip_prefix("# ").unwrap_or(line).trim_start();
            let Some((k, v)) = line.split_once(" = ") else {
                continue;
            };
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                continue;
            }
            let path = if section.is_empty() {
                k.to_string()
            } else {
                format!("{section}.{k}")
            };
            shown
                .entry(path)
                .or_insert(v.split(" #").next().unwrap().trim().to_string());
        }
        for k in KEYS {
            let value = shown
                .get(k.path)
                .unwrap_or_else(|| panic!("examples/host.toml does not show {}", k.path));
            let want = match k.default {
                D::Bool(b) => b.to_string(),
                D::Int(n) => n.to_string(),
                D::Str(s) => format!("\"{s}\""),
                D::None => continue,
            };
            assert_eq!(
                value, &want,
                "examples/host.toml shows {} with another default",
                k.path
            );
        }
    }
}
