//! The config files matrix-provision writes, rendered from minijinja templates compiled into the binary.
//!
//! The templates live in `templates/` and see exactly one context, [`RenderContext`]: the validated
//! host.toml, the host facts, the two secrets that must be inlined, and the fixed paths. Rendering is
//! strict: an unknown variable is an error, never an empty string in a config file.

use std::fmt;

use anyhow::{anyhow, Result};
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use serde::Serialize;

use crate::config::HostConfig;

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
        "systemd/matrix-synapse-jemalloc.conf.j2",
        include_str!("../templates/systemd/matrix-synapse-jemalloc.conf.j2"),
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
];

const PARTIALS: &[(&str, &str)] = &[(
    "nginx/_macros.j2",
    include_str!("../templates/nginx/_macros.j2"),
)];

/// Everything a template can see. The field names are the top-level template variables.
#[derive(Debug, Clone, Serialize)]
pub struct RenderContext {
    /// The whole validated host.toml.
    pub config: HostConfig,
    /// `synapse.host != server_name`: `.well-known` is served on server_name.
    pub delegated: bool,
    pub facts: Facts,
    pub secrets: Secrets,
    pub paths: Paths,
}

/// What preflight measured on the host.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// What the services get: the smaller of the host's totals and its cgroup's limits (`sizing`).
    pub ram_mb: u64,
    pub cpus: u32,
    /// The memory split between the OS, PostgreSQL and Synapse (crate::sizing).
    pub sizing: crate::sizing::Sizing,
    /// The PostgreSQL major version of the host's release (crate::release); part of the conf.d path.
    pub postgres_version: String,
    /// The host's Debian release: `release.codename` is the matrix.org apt suite.
    pub release: crate::release::Release,
    /// The addresses on the host's interfaces (coturn must never relay to the host itself).
    pub addresses: Vec<String>,
}

/// The only secrets a template inlines. Every Synapse secret is referenced by a `*_path` file instead.
#[derive(Clone, Serialize)]
pub struct Secrets {
    pub postgres_password: String,
    pub turn_shared_secret: String,
}

impl fmt::Debug for Secrets {
    // A context dumped into a log or an error must not carry the secrets along.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("postgres_password", &"[redacted]")
            .field("turn_shared_secret", &"[redacted]")
            .finish()
    }
}

/// Fixed locations on the host that several templates (and the playbook) must agree on.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Paths {
    /// One file per Synapse secret: registration_shared_secret, macaroon_secret_key, form_secret,
    /// turn_shared_secret.
    pub secrets_dir: String,
    /// certbot `--webroot-path`; nginx serves `/.well-known/acme-challenge/` from here on port 80.
    pub acme_webroot: String,
    /// Element releases live under here (the updater user's tree); `current` is the served release.
    pub element_root: String,
    /// Our own root-owned configuration directory (0755: nginx reads Element's config.json below it).
    pub config_dir: String,
    /// Root-owned directory holding our Element `config.json`, outside the updater-writable tree; nginx
    /// serves `/config.json` from it.
    pub element_config_dir: String,
    /// coturn's copy of the TURN certificate (turnserver cannot read /etc/letsencrypt/live).
    pub coturn_cert_dir: String,
    /// certbot's live directory: `<letsencrypt_live>/<host>/{fullchain,privkey}.pem`.
    pub letsencrypt_live: String,
    /// The copy of host.toml the Element update timer reads.
    pub host_config: String,
    /// The binary the update timer runs: the package's own when apply runs from it, else where apply
    /// installs a copy of itself.
    pub binary: String,
}

const CONFIG_DIR: &str = "/etc/matrix-provision";

/// Where the .deb installs the binary (Cargo.toml `[package.metadata.deb]`).
pub const PACKAGED_BINARY: &str = "/usr/sbin/matrix-provision";

impl Paths {
    /// The standard paths for a run of the binary at `self_exe`. Run from the package, the timer uses the
    /// package's binary itself: a copy in /usr/local/bin would go stale at the next package upgrade and,
    /// being first in PATH, shadow the upgraded one for the admin too.
    pub fn for_exe(self_exe: &std::path::Path) -> Paths {
        let mut paths = Paths::default();
        if self_exe == std::path::Path::new(PACKAGED_BINARY) {
            paths.binary = PACKAGED_BINARY.into();
        }
        paths
    }
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            secrets_dir: "/etc/matrix-synapse/secrets".into(),
            // Under /var/www, not the private state dir: nginx (www-data) must be able to read challenges.
            acme_webroot: "/var/www/letsencrypt".into(),
            element_root: "/var/www/element".into(),
            config_dir: CONFIG_DIR.into(),
            element_config_dir: format!("{CONFIG_DIR}/element"),
            coturn_cert_dir: "/etc/coturn/certs".into(),
            letsencrypt_live: "/etc/letsencrypt/live".into(),
            host_config: format!("{CONFIG_DIR}/host.toml"),
            binary: "/usr/local/bin/matrix-provision".into(),
        }
    }
}

impl RenderContext {
    /// The usual context: `delegated` derived from the config, the standard paths.
    pub fn new(config: HostConfig, facts: Facts, secrets: Secrets) -> RenderContext {
        RenderContext {
            delegated: config.delegated(),
            config,
            facts,
            secrets,
            paths: Paths::default(),
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
        env.set_formatter(plain_values_only);
        env.add_filter("shquote", shquote);
        env.add_function("raise", raise);
        for (name, source) in TEMPLATES.iter().chain(PARTIALS) {
            // The sources are compiled in and covered by the golden tests; a syntax error is a bug.
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("template {name} does not compile: {e:#}"));
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
    fn shquote_survives_single_quotes() {
        assert_eq!(
            shquote("turn.example.com".into()).as_str(),
            Some("'turn.example.com'")
        );
        assert_eq!(shquote("it's".into()).as_str(), Some(r"'it'\''s'"));
    }

    #[test]
    fn secrets_debug_is_redacted() {
        let s = Secrets {
            postgres_password: "hunter2".into(),
            turn_shared_secret: "swordfish".into(),
        };
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("swordfish"),
            "{dbg}"
        );
    }

    #[test]
    fn names_lists_renderable_templates_only() {
        let names = Renderer::new().names();
        assert_eq!(names.len(), TEMPLATES.len());
        assert!(names.iter().all(|n| !n.contains("/_")));
    }
}
