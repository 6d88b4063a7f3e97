//! The one template environment: the playbooks (`playbooks/*.toml`, rendered to the step graph) and the
//! config files matrix-provision writes (`templates/`), all compiled into the binary.
//!
//! Both see exactly one context, [`RenderContext`]: the validated host.toml, the host facts, the layout
//! (`paths`), this run's inputs and, for templates only, the secrets the playbooks declare. Rendering is
//! strict: an unknown variable is an error, never an empty string in a config file. Only the formatter
//! differs: a playbook's `{{ … }}` sits in a TOML string, a template's in a config file.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{anyhow, Result};
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use serde::Serialize;

use crate::config::HostConfig;
use crate::layout::Layout;
use crate::secrets::{Secret, SecretStore};

/// Templates that render to a file, in the order a reader would meet them.
/// Names starting with `_` (below) are partials: imported by others, never rendered alone.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "apt/matrix-org.sources.j2",
        include_str!("../templates/apt/matrix-org.sources.j2"),
    ),
    (
        "synapse/mp-server.yaml.j2",
        include_str!("../templates/synapse/mp-server.yaml.j2"),
    ),
    (
        "synapse/mp-database.yaml.j2",
        include_str!("../templates/synapse/mp-database.yaml.j2"),
    ),
    (
        "synapse/mp-secrets.yaml.j2",
        include_str!("../templates/synapse/mp-secrets.yaml.j2"),
    ),
    (
        "synapse/mp-registration.yaml.j2",
        include_str!("../templates/synapse/mp-registration.yaml.j2"),
    ),
    (
        "synapse/mp-presence.yaml.j2",
        include_str!("../templates/synapse/mp-presence.yaml.j2"),
    ),
    (
        "synapse/mp-turn.yaml.j2",
        include_str!("../templates/synapse/mp-turn.yaml.j2"),
    ),
    (
        "synapse/mp-caches.yaml.j2",
        include_str!("../templates/synapse/mp-caches.yaml.j2"),
    ),
    (
        "synapse/mp-media.yaml.j2",
        include_str!("../templates/synapse/mp-media.yaml.j2"),
    ),
    (
        "systemd/matrix-synapse-hardening.conf.j2",
        include_str!("../templates/systemd/matrix-synapse-hardening.conf.j2"),
    ),
    (
        "postgres/matrix-provision.conf.j2",
        include_str!("../templates/postgres/matrix-provision.conf.j2"),
    ),
    (
        "systemd/postgresql-hardening.conf.j2",
        include_str!("../templates/systemd/postgresql-hardening.conf.j2"),
    ),
    (
        "coturn/turnserver.conf.j2",
        include_str!("../templates/coturn/turnserver.conf.j2"),
    ),
    (
        "coturn/override.conf.j2",
        include_str!("../templates/coturn/override.conf.j2"),
    ),
    (
        "systemd/coturn-hardening.conf.j2",
        include_str!("../templates/systemd/coturn-hardening.conf.j2"),
    ),
    (
        "nginx/matrix-provision-global.conf.j2",
        include_str!("../templates/nginx/matrix-provision-global.conf.j2"),
    ),
    (
        "nginx/tls-params.conf.j2",
        include_str!("../templates/nginx/tls-params.conf.j2"),
    ),
    (
        "nginx/matrix-provision-default.conf.j2",
        include_str!("../templates/nginx/matrix-provision-default.conf.j2"),
    ),
    (
        "nginx/matrix-provision-http.conf.j2",
        include_str!("../templates/nginx/matrix-provision-http.conf.j2"),
    ),
    (
        "systemd/nginx-hardening.conf.j2",
        include_str!("../templates/systemd/nginx-hardening.conf.j2"),
    ),
    (
        "nginx/matrix-provision-synapse.conf.j2",
        include_str!("../templates/nginx/matrix-provision-synapse.conf.j2"),
    ),
    (
        "nginx/matrix-provision-element.conf.j2",
        include_str!("../templates/nginx/matrix-provision-element.conf.j2"),
    ),
    (
        "nginx/matrix-provision-wellknown.conf.j2",
        include_str!("../templates/nginx/matrix-provision-wellknown.conf.j2"),
    ),
    (
        "element/config.json.j2",
        include_str!("../templates/element/config.json.j2"),
    ),
    (
        "certbot/deploy-hook.sh.j2",
        include_str!("../templates/certbot/deploy-hook.sh.j2"),
    ),
    (
        "certbot/certbot-service.conf.j2",
        include_str!("../templates/certbot/certbot-service.conf.j2"),
    ),
    (
        "systemd/matrix-element-update.service.j2",
        include_str!("../templates/systemd/matrix-element-update.service.j2"),
    ),
    (
        "systemd/matrix-element-update.timer.j2",
        include_str!("../templates/systemd/matrix-element-update.timer.j2"),
    ),
    (
        "systemd/matrix-backup.service.j2",
        include_str!("../templates/systemd/matrix-backup.service.j2"),
    ),
    (
        "systemd/matrix-backup.timer.j2",
        include_str!("../templates/systemd/matrix-backup.timer.j2"),
    ),
    (
        "systemd/matrix-maintenance.service.j2",
        include_str!("../templates/systemd/matrix-maintenance.service.j2"),
    ),
    (
        "systemd/matrix-maintenance.timer.j2",
        include_str!("../templates/systemd/matrix-maintenance.timer.j2"),
    ),
    (
        "metrics/prometheus.yml.j2",
        include_str!("../templates/metrics/prometheus.yml.j2"),
    ),
    (
        "metrics/recording.rules.yml.j2",
        include_str!("../templates/metrics/recording.rules.yml.j2"),
    ),
    (
        "metrics/alert.rules.yml.j2",
        include_str!("../templates/metrics/alert.rules.yml.j2"),
    ),
    (
        "metrics/prometheus-dropin.conf.j2",
        include_str!("../templates/metrics/prometheus-dropin.conf.j2"),
    ),
    (
        "metrics/node-exporter-dropin.conf.j2",
        include_str!("../templates/metrics/node-exporter-dropin.conf.j2"),
    ),
    (
        "metrics/postgres-exporter-dropin.conf.j2",
        include_str!("../templates/metrics/postgres-exporter-dropin.conf.j2"),
    ),
    (
        "metrics/cert-expiry-textfile.sh.j2",
        include_str!("../templates/metrics/cert-expiry-textfile.sh.j2"),
    ),
    (
        "metrics/cert-expiry.service.j2",
        include_str!("../templates/metrics/cert-expiry.service.j2"),
    ),
    (
        "metrics/cert-expiry.timer.j2",
        include_str!("../templates/metrics/cert-expiry.timer.j2"),
    ),
    (
        "metrics/nginx-prometheus.conf.j2",
        include_str!("../templates/metrics/nginx-prometheus.conf.j2"),
    ),
    // Synapse workers (playbooks/25-workers.toml).
    (
        "synapse/mp-workers.yaml.j2",
        include_str!("../templates/synapse/mp-workers.yaml.j2"),
    ),
    (
        "synapse/worker.yaml.j2",
        include_str!("../templates/synapse/worker.yaml.j2"),
    ),
    (
        "systemd/matrix-synapse-worker@.service.j2",
        include_str!("../templates/systemd/matrix-synapse-worker@.service.j2"),
    ),
    (
        "systemd/matrix-synapse.target.j2",
        include_str!("../templates/systemd/matrix-synapse.target.j2"),
    ),
    (
        "systemd/matrix-synapse-workers.conf.j2",
        include_str!("../templates/systemd/matrix-synapse-workers.conf.j2"),
    ),
    (
        "redis/redis.conf.j2",
        include_str!("../templates/redis/redis.conf.j2"),
    ),
    (
        "systemd/redis-server.conf.j2",
        include_str!("../templates/systemd/redis-server.conf.j2"),
    ),
    (
        "redis/tmpfiles.conf.j2",
        include_str!("../templates/redis/tmpfiles.conf.j2"),
    ),
];

const PARTIALS: &[(&str, &str)] = &[
    (
        "nginx/_macros.j2",
        include_str!("../templates/nginx/_macros.j2"),
    ),
    (
        "nginx/_workers.j2",
        include_str!("../templates/nginx/_workers.j2"),
    ),
];

/// Everything a template can see. The field names are the top-level template variables.
#[derive(Debug, Clone, Serialize)]
pub struct RenderContext {
    /// The whole validated host.toml, the schema's template-only keys included.
    #[serde(serialize_with = "config_for_templates")]
    pub config: HostConfig,
    /// `synapse.host != server_name`: `.well-known` is served on server_name.
    pub delegated: bool,
    /// What faces the clients: nginx's sockets, TLS or not, firewall rules (crate::listeners).
    pub listeners: crate::listeners::Listeners,
    pub facts: Facts,
    /// Empty while the playbooks render (they declare the secrets): only templates inline them.
    pub secrets: Secrets,
    /// Every host path, port and unit (crate::layout), as `paths`.
    pub paths: Layout,
    /// Every name that needs a certificate (playbook::cert_names).
    pub cert_names: Vec<String>,
    /// This run's host.toml, copied for the update timer.
    pub config_path: String,
    /// The running binary (copied for the update timer unless it is the package's).
    pub self_exe: String,
    /// The filesystems holding Synapse's media and the database, for the disk alerts.
    pub disks: Vec<Disk>,
    /// `[synapse.workers]` resolved for this host (issue 13): the workers, routes and pool sizes.
    pub workers: crate::workers::Layout,
}

/// `config` as templates see it (HostConfig::for_templates).
fn config_for_templates<S: serde::Serializer>(
    config: &HostConfig,
    ser: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&config.for_templates(), ser)
}

/// A mount point and what of ours lives on it ("media", "database", or both).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Disk {
    pub mountpoint: String,
    pub holds: String,
}

/// Which mount holds each data directory: the longest mount point that is a prefix of its path.
pub fn disks(mounts: &[String]) -> Vec<Disk> {
    let mut out: Vec<Disk> = Vec::new();
    for (what, path) in [
        ("media", crate::layout::SYNAPSE_MEDIA_DIR),
        ("database", crate::layout::POSTGRES_DATA_DIR),
    ] {
        let mount = mounts
            .iter()
            .filter(|m| {
                let m = m.trim_end_matches('/');
                path == m || path.starts_with(&format!("{m}/"))
            })
            .max_by_key(|m| m.len())
            .cloned()
            .unwrap_or_else(|| "/".into());
        match out.iter_mut().find(|d| d.mountpoint == mount) {
            Some(d) => d.holds.push_str(&format!(" and {what}")),
            None => out.push(Disk {
                mountpoint: mount,
                holds: what.into(),
            }),
        }
    }
    out
}

/// Mount points from /proc/self/mountinfo (field 5, octal escapes such as `\040` decoded).
pub fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| {
            let mut out = String::new();
            let mut rest = m;
            while let Some(i) = rest.find('\\') {
                out.push_str(&rest[..i]);
                let code = rest
                    .get(i + 1..i + 4)
                    .and_then(|c| u8::from_str_radix(c, 8).ok());
                match code {
                    Some(b) => {
                        out.push(b as char);
                        rest = &rest[i + 4..];
                    }
                    None => {
                        out.push('\\');
                        rest = &rest[i + 1..];
                    }
                }
            }
            out.push_str(rest);
            out
        })
        .collect()
}

/// What preflight measured on the host.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// What the services get: the smaller of the host's totals and its cgroup's limits (`sizing`).
    pub ram_mb: u64,
    pub cpus: u32,
    /// The memory split between the OS, PostgreSQL and Synapse (crate::sizing).
    pub sizing: crate::sizing::Sizing,
    /// The host's Debian release: `release.codename` is the matrix.org apt suite.
    pub release: crate::release::Release,
    /// The addresses on the host's interfaces (coturn must never relay to the host itself).
    pub addresses: Vec<String>,
    /// Mount points (/proc/self/mountinfo): which filesystem the disk alerts watch.
    pub mounts: Vec<String>,
}

/// The secrets the playbooks' `secret` steps declare, by step name: a template inlines one as
/// `secrets.<name>` (every Synapse secret is referenced by a `*_path` file instead). A name no step
/// declares is undefined, so rendering fails on it (strict mode): renaming a secret in a playbook without
/// its template is a render error, never an empty password in a config file.
#[derive(Clone, Default)]
pub struct Secrets(BTreeMap<String, Secret>);

impl Secrets {
    /// Every secret `store` loaded (one per secret step).
    pub fn from_store(store: &SecretStore) -> Secrets {
        Secrets(
            store
                .named()
                .map(|(name, secret)| (name.to_string(), secret.clone()))
                .collect(),
        )
    }
}

impl<const N: usize> From<[(&str, Secret); N]> for Secrets {
    fn from(entries: [(&str, Secret); N]) -> Secrets {
        Secrets(
            entries
                .into_iter()
                .map(|(name, secret)| (name.to_string(), secret))
                .collect(),
        )
    }
}

impl Serialize for Secrets {
    // The values reach the template engine only; Debug (below) is what logs and errors see.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, s)| (name, s.expose())))
    }
}

impl fmt::Debug for Secrets {
    // A context dumped into a log or an error must not carry the secrets along.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl RenderContext {
    /// The context of a run with `inputs` on a host with `facts`; no secrets yet (playbook::build adds
    /// those its playbooks declare).
    pub fn new(
        config: HostConfig,
        facts: Facts,
        inputs: &crate::playbook::Inputs,
    ) -> RenderContext {
        RenderContext {
            delegated: config.delegated(),
            listeners: crate::listeners::Listeners::of(&config),
            paths: Layout::new(&config, &facts.release, &inputs.self_exe),
            cert_names: crate::playbook::cert_names(&config),
            config_path: inputs.config_path.display().to_string(),
            self_exe: inputs.self_exe.display().to_string(),
            disks: disks(&facts.mounts),
            workers: crate::workers::Layout::resolve(
                &config.synapse.workers,
                facts.cpus,
                facts.ram_mb,
                config.synapse.federation,
            ),
            config,
            facts,
            secrets: Secrets::default(),
        }
    }

    /// The context as the value [`Renderer::render`] takes.
    pub fn to_value(&self) -> Value {
        Value::from_serialize(self)
    }
}

/// The template environment. Build it once; rendering is cheap.
pub struct Renderer {
    env: Environment<'static>,
}

impl Default for Renderer {
    fn default() -> Self {
        Renderer::new()
    }
}

impl Renderer {
    pub fn new() -> Renderer {
        let mut env = Environment::new();
        // A typo in a template must fail the run, not write an empty value into a config file.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Config files end with a newline; block tags must not leave blank lines behind.
        env.set_keep_trailing_newline(true);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // These are config files, not HTML: nothing is HTML-escaped, but no value may carry syntax. A
        // custom mode (not None) makes minijinja mark macro output, already checked inside, as safe.
        env.set_auto_escape_callback(|_| AutoEscape::Custom("config"));
        env.set_formatter(formatter);
        env.add_filter("shquote", shquote);
        env.add_filter("toml", toml_inline);
        env.add_filter("seconds", seconds);
        env.add_filter("tojson", tojson_defined);
        env.add_function("raise", raise);
        for (name, source) in TEMPLATES
            .iter()
            .chain(PARTIALS)
            .chain(crate::edge_config::TEMPLATES)
        {
            // The sources are compiled in and covered by the golden tests; a syntax error is a bug.
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("template {name} does not compile: {e:#}"));
        }
        for (name, source) in crate::playbook::PLAYBOOKS {
            env.add_template_owned(format!("{PLAYBOOK_DIR}{name}"), *source)
                .unwrap_or_else(|e| panic!("playbook {name} does not compile: {e:#}"));
        }
        Renderer { env }
    }

    /// Render one template, e.g. `"synapse/mp-server.yaml.j2"`, with a context that serialises like
    /// [`RenderContext`] (see [`RenderContext::to_value`]).
    pub fn render(&self, name: &str, ctx: &Value) -> Result<String> {
        let template = self
            .env
            .get_template(name)
            .map_err(|e| anyhow!("template {name}: {}", describe(&e)))?;
        template
            .render(ctx)
            .map_err(|e| anyhow!("rendering template {name}: {}", describe(&e)))
    }

    /// Every template that renders to a file (partials excluded).
    pub fn names(&self) -> Vec<&'static str> {
        TEMPLATES.iter().map(|(name, _)| *name).collect()
    }
}

/// Playbooks are registered under this prefix; their output is TOML, not a config file.
const PLAYBOOK_DIR: &str = "playbooks/";

/// A playbook's values go into TOML strings, a template's into config files.
fn formatter(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &Value,
) -> Result<(), minijinja::Error> {
    if state.name().starts_with(PLAYBOOK_DIR) {
        toml_string_formatter(out, state, value)
    } else {
        plain_values_only(out, state, value)
    }
}

/// minijinja's error with its location (`name:line`) and cause chain on one line.
fn describe(err: &minijinja::Error) -> String {
    let mut msg = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        msg.push_str(": ");
        msg.push_str(&cause.to_string());
        source = cause.source();
    }
    msg
}

/// `{{ raise("message") }}`: a template's own assertion, e.g. for an enum value it does not know.
fn raise(message: String) -> Result<String, minijinja::Error> {
    Err(minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        message,
    ))
}

/// minijinja's `tojson`, but an undefined value (a misspelt key, a secret no step declares) is an error
/// instead of `null`: strict mode alone lets undefined through filters.
fn tojson_defined(
    value: &Value,
    indent: Option<Value>,
    args: minijinja::value::Kwargs,
) -> Result<Value, minijinja::Error> {
    if value.is_undefined() {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::UndefinedError,
            "tojson of an undefined value",
        ));
    }
    minijinja::filters::tojson(value, indent, args)
}

/// `{{ "26h"|seconds }}` → 93600: a validated Prometheus duration (config::check) in seconds, for PromQL
/// arithmetic (`time() - x > 93600`), which takes no duration literals.
fn seconds(value: String) -> Result<u64, minijinja::Error> {
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = value.split_at(digits);
    let unit_s = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 604800,
        _ => 0,
    };
    match n.parse::<u64>() {
        Ok(n) if unit_s > 0 => Ok(n * unit_s),
        _ => Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("`{value}` is not a duration in whole seconds (s, m, h, d, w)"),
        )),
    }
}

/// POSIX shell single quoting: `it's` → `'it'\''s'`. Quoted output is safe to write anywhere.
fn shquote(value: String) -> Value {
    Value::from_safe_string(format!("'{}'", value.replace('\'', r"'\''")))
}

/// Characters a value may carry into a config file unquoted: none of them is syntax in nginx, YAML
/// (mid-line), coturn, systemd units, deb822 or shell, and each is in a host name, URL, path, IP
/// address, version or generated secret. Validated host.toml values never hold anything else; a value
/// that does fails the render instead of ending a directive or opening a new one.
pub fn plain_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._:/@+=,%~-[]".contains(c)
}

/// The formatter of every `{{ … }}` in a file template. Strings must be plain (see [`plain_char`]);
/// output of `tojson` and `shquote`, which quote for their syntax, passes as it is.
fn plain_values_only(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &Value,
) -> Result<(), minijinja::Error> {
    let _ = state;
    let fmt_err = |_| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "write failed");
    if value.is_undefined() || value.is_none() {
        return Ok(());
    }
    if let (Some(s), false) = (value.as_str(), value.is_safe()) {
        if let Some(c) = s.chars().find(|c| !plain_char(*c)) {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!(
                    "value \"{}\" holds {}, which is syntax in a config file; refusing to write it",
                    crate::report::escape(s),
                    crate::report::escape(&format!("`{c}`"))
                ),
            ));
        }
    }
    match value.as_str() {
        Some(s) => out.write_str(s).map_err(fmt_err),
        None => write!(out, "{value}").map_err(fmt_err),
    }
}

/// Writes strings escaped for a TOML basic string (`"` `\\` and control characters), other values (and
/// the output of the `toml` filter, already TOML) as is.
fn toml_string_formatter(
    out: &mut minijinja::Output<'_>,
    _state: &minijinja::State<'_, '_>,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    let text = match value.as_str() {
        Some(s) if value.is_safe() => s.to_string(),
        Some(s) => toml_escape(s),
        None if value.is_none() || value.is_undefined() => String::new(),
        None => value.to_string(),
    };
    out.write_str(&text)
        .map_err(|_| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "write failed"))
}

/// `{{ value|toml }}`: a value as an inline TOML value (`tls = {{ paths.nginx_tls|toml }}`).
fn toml_inline(value: minijinja::Value) -> Result<minijinja::Value, minijinja::Error> {
    fn write(v: &serde_json::Value, out: &mut String) -> Result<(), String> {
        match v {
            serde_json::Value::String(s) => out.push_str(&format!("\"{}\"", toml_escape(s))),
            serde_json::Value::Number(n) => out.push_str(&n.to_string()),
            serde_json::Value::Bool(b) => out.push_str(&b.to_string()),
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    out.push_str(if i == 0 { "" } else { ", " });
                    write(item, out)?;
                }
                out.push(']');
            }
            serde_json::Value::Object(fields) => {
                out.push_str("{ ");
                for (i, (k, item)) in fields.iter().enumerate() {
                    out.push_str(if i == 0 { "" } else { ", " });
                    out.push_str(&format!("\"{}\" = ", toml_escape(k)));
                    write(item, out)?;
                }
                out.push_str(" }");
            }
            serde_json::Value::Null => return Err("null has no TOML form".into()),
        }
        Ok(())
    }
    let json = serde_json::to_value(&value).map_err(|e| {
        minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
    })?;
    let mut out = String::new();
    write(&json, &mut out)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e))?;
    Ok(minijinja::Value::from_safe_string(out))
}

/// The body of a TOML basic string holding `s`.
pub fn toml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_variable_is_an_error_naming_the_template() {
        let mut r = Renderer::new();
        r.env
            .add_template("t/typo.j2", "listen {{ config.synapse.hots }};\n")
            .unwrap();
        let ctx = Value::from_serialize(serde_json::json!({"config": {"synapse": {"host": "x"}}}));
        let err = r.render("t/typo.j2", &ctx).unwrap_err().to_string();
        assert!(err.contains("t/typo.j2"), "{err}");
        assert!(err.contains("undefined"), "{err}");
    }

    #[test]
    fn unknown_template_is_an_error_naming_it() {
        let err = Renderer::new()
            .render("nope/missing.j2", &Value::UNDEFINED)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope/missing.j2"), "{err}");
    }

    #[test]
    fn no_html_escaping_and_trailing_newline_kept() {
        let mut r = Renderer::new();
        r.env
            .add_template("t/raw.j2", "{{ v }} {{ n }} {{ q|tojson }}\n")
            .unwrap();
        let out = r
            .render(
                "t/raw.j2",
                &Value::from_serialize(serde_json::json!({"v": "a/b:c@d", "n": 5, "q": "a \"b\""})),
            )
            .unwrap();
        assert_eq!(out, "a/b:c@d 5 \"a \\\"b\\\"\"\n");
    }

    /// A value with syntax in it (a quote, `;`, `{`, a space, a newline, ESC) never reaches a config file:
    /// the render fails and says so, with the value escaped.
    #[test]
    fn values_with_config_syntax_are_refused() {
        let mut r = Renderer::new();
        r.env
            .add_template("t/nginx.j2", "server_name {{ v }};\n")
            .unwrap();
        for bad in [
            "a;b",
            "a b",
            "x\"y",
            "x}y",
            "line\nreturn 301",
            "\u{1b}[2J",
            "a#b",
            "a'b",
            "$x",
        ] {
            let ctx = Value::from_serialize(serde_json::json!({ "v": bad }));
            let err = r.render("t/nginx.j2", &ctx).unwrap_err().to_string();
            assert!(err.contains("syntax in a config file"), "{bad:?}: {err}");
            assert!(
                !err.contains('\u{1b}') && !err.contains("\nreturn"),
                "{err}"
            );
        }
    }

    #[test]
    fn raise_fails_the_render_with_its_message() {
        let mut r = Renderer::new();
        r.env
            .add_template("t/raise.j2", "{{ raise('unknown mode ' ~ m) }}")
            .unwrap();
        let ctx = Value::from_serialize(serde_json::json!({"m": "weird"}));
        let err = r.render("t/raise.j2", &ctx).unwrap_err().to_string();
        assert!(err.contains("unknown mode weird"), "{err}");
        assert!(err.contains("t/raise.j2"), "{err}");
    }

    #[test]
    fn disks_name_the_mount_holding_each_directory() {
        let mounts: Vec<String> = ["/", "/var/lib/postgresql", "/var/lib/matrix", "/boot"]
            .map(String::from)
            .into();
        let d = disks(&mounts);
        assert_eq!(d[0].mountpoint, "/");
        assert_eq!(d[0].holds, "media");
        assert_eq!(d[1].mountpoint, "/var/lib/postgresql");
        assert_eq!(d[1].holds, "database");
        let one = disks(&["/".to_string()]);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].holds, "media and database");
        assert_eq!(disks(&[])[0].mountpoint, "/");
        let info = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n23 22 8:2 / /srv/my\\040disk rw - ext4 /dev/sda2 rw\n";
        assert_eq!(mount_points(info), ["/", "/srv/my disk"]);
    }

    #[test]
    fn seconds_of_durations() {
        assert_eq!(seconds("26h".into()).unwrap(), 93600);
        assert_eq!(seconds("5m".into()).unwrap(), 300);
        assert!(seconds("500ms".into()).is_err());
    }

    #[test]
    fn shquote_survives_single_quotes() {
        assert_eq!(
            shquote("turn.example.com".into()).as_str(),
            Some("'turn.example.com'")
        );
        assert_eq!(shquote("it's".into()).as_str(), Some(r"'it'\''s'"));
    }

    #[test]
    fn secrets_debug_is_redacted() {
        let s = Secrets::from([
            ("postgres_password", Secret::from_stored("hunter2")),
            ("turn_shared_secret", Secret::from_stored("swordfish")),
        ]);
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("hunter2")
                && !dbg.contains("swordfish")
                && dbg.contains("postgres_password"),
            "{dbg}"
        );
    }

    /// A template naming a secret no secret step declares (renamed in the playbook only) does not render.
    #[test]
    fn an_undeclared_secret_is_a_render_error() {
        let mut r = Renderer::new();
        r.env
            .add_template(
                "t/db.j2",
                "password: {{ secrets.postgres_password|tojson }}\nsecret={{ secrets.turn_shared_secret }}\n",
            )
            .unwrap();
        let ctx = |s: Secrets| Value::from_serialize(serde_json::json!({ "secrets": s }));
        let both = Secrets::from([
            ("postgres_password", Secret::from_stored("pw")),
            ("turn_shared_secret", Secret::from_stored("ts")),
        ]);
        assert_eq!(
            r.render("t/db.j2", &ctx(both)).unwrap(),
            "password: \"pw\"\nsecret=ts\n"
        );
        for (name, other) in [
            ("pg_password", "turn_shared_secret"),
            ("postgres_password", "turn_secret"),
        ] {
            let renamed = Secrets::from([
                (name, Secret::from_stored("pw")),
                (other, Secret::from_stored("ts")),
            ]);
            let err = r.render("t/db.j2", &ctx(renamed)).unwrap_err().to_string();
            assert!(
                err.contains("t/db.j2") && err.contains("undefined"),
                "{err}"
            );
        }
    }

    /// `|toml` writes inline TOML that parses back to the same value, whatever the strings hold; plain
    /// `{{ }}` in a playbook stays escaped for its TOML string.
    #[test]
    fn toml_filter_round_trips_hostile_strings() {
        let mut r = Renderer::new();
        r.env
            .add_template("playbooks/t.toml", "x = {{ v|toml }}\ny = \"{{ s }}\"\n")
            .unwrap();
        let hostile = "a\"b\\c\n[[step]]\u{1b}#";
        let v =
            serde_json::json!([{ "name": hostile, "port": 5349, "on": true }, { "k\"ey": [1, 2] }]);
        let ctx = Value::from_serialize(serde_json::json!({ "v": v, "s": hostile }));
        let text = r.render("playbooks/t.toml", &ctx).unwrap();
        let parsed: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(serde_json::to_value(&parsed["x"]).unwrap(), v);
        assert_eq!(parsed["y"].as_str(), Some(hostile));
    }

    #[test]
    fn names_lists_renderable_templates_only() {
        let names = Renderer::new().names();
        assert_eq!(names.len(), TEMPLATES.len());
        assert!(names.iter().all(|n| !n.contains("/_")));
    }
}
