//! Second pass: defaults, value checks and cross-field rules, turning [`Raw`] into a [`HostConfig`].
//! Every check runs even after others failed, so one `validate` run lists every mistake.

use super::check::{self, Bad, PortSpec};
use super::read::{Issues, Raw, Val};
use super::*;
use crate::layout;

use super::schema::{
    self, DEFAULT_MAX_PORT, DEFAULT_MIN_PORT, DEFAULT_TOTAL_QUOTA, DEFAULT_USER_QUOTA,
};

/// Ports matrix-provision itself listens on or opens; the TURN relay range must stay clear of them.
const RESERVED_PORTS: &[(u16, &str)] = &[
    (layout::SSH_PORT, "SSH"),
    (layout::HTTP_PORT, "HTTP, ACME challenges"),
    (layout::HTTPS_PORT, "HTTPS"),
    (layout::TURN_PORT, "TURN"),
    (layout::TURNS_PORT, "TURN over TLS"),
    (layout::FEDERATION_PORT, "Matrix federation"),
];

/// A string as written, with the checked value when the check passed.
struct Checked<T> {
    raw: Val<String>,
    result: Option<T>,
}

/// A value after checking: the value to use (the default when absent or invalid), whether it is valid,
/// and where it was written (None: defaulted).
struct Got<T> {
    value: T,
    ok: bool,
    line: Option<usize>,
}

impl<T> Got<T> {
    fn default(value: T) -> Self {
        Got {
            value,
            ok: true,
            line: None,
        }
    }
    fn written(&self) -> bool {
        self.line.is_some()
    }
}

struct Validator<'a, 's> {
    raw: &'a Raw,
    issues: &'a mut Issues<'s>,
}

fn leaf(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

fn example(path: &str) -> &'static str {
    schema::get(path).map_or("…", |k| k.example)
}

/// The declaration of `path`; validate only asks for keys in schema::KEYS.
fn declared(path: &str) -> &'static schema::Key {
    schema::get(path).unwrap_or_else(|| panic!("{path} is not declared in config::schema::KEYS"))
}

impl Validator<'_, '_> {
    fn fail<T>(&mut self, path: &str, at: &Val<T>, message: impl Into<String>, hint: String) {
        self.issues
            .push(at.line, path, Some(&at.src), message, Some(hint));
    }

    /// One of `choices` (as written, what it means): the chosen one, else the schema's default after
    /// reporting the value with the nearest choice as the fix (`otherwise` when none is near).
    fn choice<T: Copy>(
        &mut self,
        path: &str,
        choices: &[(&'static str, T)],
        otherwise: &str,
        message: &str,
    ) -> T {
        let find = |text: &str| choices.iter().find(|(n, _)| *n == text).map(|(_, t)| *t);
        let default = find(schema::default_str(path))
            .unwrap_or_else(|| panic!("{path}: the schema's default is none of the choices"));
        let Some(val) = self.raw.str(path) else {
            return default;
        };
        if let Some(t) = find(&val.value) {
            return t;
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let lower = val.value.trim().to_ascii_lowercase();
        let fix = names
            .iter()
            .find(|n| **n == lower)
            .copied()
            .or_else(|| check::closest(&lower, names.iter().copied()))
            .unwrap_or(otherwise);
        let hint = format!("write {} = \"{fix}\"", leaf(path));
        self.fail(path, &val, message, hint);
        default
    }

    /// A plain bool key, its default from the schema.
    fn boolean(&mut self, path: &str) -> bool {
        let default = schema::default_bool(path);
        self.raw.bool(path).map_or(default, |v| v.value)
    }

    /// A bounded integer key: default and bounds (`what` completes "must be …") from the schema; the
    /// default is suggested instead of a value out of bounds.
    fn int(&mut self, path: &str) -> Got<i64> {
        let key = declared(path);
        let (schema::DefaultValue::Int(default), Some((range, what))) = (key.default, &key.bounds)
        else {
            panic!("{path} has no int default and bounds in the schema");
        };
        let Some(v) = self.raw.int(path) else {
            return Got::default(default);
        };
        if range.contains(&v.value) {
            return Got {
                value: v.value,
                ok: true,
                line: v.line,
            };
        }
        let hint = format!("write e.g. {} = {default}", leaf(path));
        self.fail(path, &v, format!("must be {what}"), hint);
        Got {
            value: default,
            ok: false,
            line: v.line,
        }
    }

    /// A string checked by `check`: None when absent; `result` None when invalid (already reported). The
    /// hint writes the check's fix when it has one, else `example` (TOML text).
    fn string<T>(
        &mut self,
        path: &str,
        check: impl Fn(&str) -> Result<T, Bad>,
        example: &str,
    ) -> Option<Checked<T>> {
        let raw = self.raw.str(path)?;
        let result = match check(&raw.value) {
            Ok(value) => Some(value),
            Err(bad) => {
                // A suggested fix must itself pass: otherwise the admin is told to write another mistake.
                let fix = bad.fix.filter(|f| f != &raw.value && check(f).is_ok());
                let hint = match (fix, bad.advice) {
                    (Some(fix), _) => format!("write {} = \"{fix}\"", leaf(path)),
                    (None, Some(advice)) => advice,
                    (None, None) => format!("write e.g. {} = {example}", leaf(path)),
                };
                let shown = bad.redacted.unwrap_or_else(|| raw.src.clone());
                self.issues
                    .push(raw.line, path, Some(&shown), bad.message, Some(hint));
                None
            }
        };
        Some(Checked { raw, result })
    }

    /// A string checked by `check`, its default from the schema ("" when it has none: required, or
    /// derived by code).
    fn plain(&mut self, path: &str, check: fn(&str) -> Result<(), Bad>) -> Got<String> {
        let default = match declared(path).default {
            schema::DefaultValue::Str(s) => s,
            _ => "",
        };
        match self.string(path, check, example(path)) {
            Some(c) => Got {
                ok: c.result.is_some(),
                line: c.raw.line,
                value: c.raw.value,
            },
            None => Got::default(default.to_string()),
        }
    }

    /// An optional string that only needs `check`: Some (the checked value) only when written and valid.
    fn optional<T>(&mut self, path: &str, check: impl Fn(&str) -> Result<T, Bad>) -> Option<T> {
        self.string(path, check, example(path))?.result
    }

    /// Like `optional` for checks that only accept or reject: the string as written.
    fn optional_str(&mut self, path: &str, check: fn(&str) -> Result<(), Bad>) -> Option<String> {
        let checked = self.string(path, check, example(path))?;
        checked.result.map(|()| checked.raw.value)
    }

    /// A host name: written and checked, or derived as `<prefix>.<server_name>`.
    fn host(&mut self, path: &str, prefix: &str, server_name: &Got<String>) -> Got<String> {
        let derived = format!("{prefix}.{}", server_name.value);
        let example = if server_name.ok {
            format!("\"{derived}\"")
        } else {
            self::example(path).to_string()
        };
        match self.string(path, check::domain, &example) {
            Some(c) => Got {
                ok: c.result.is_some(),
                line: c.raw.line,
                value: c.raw.value,
            },
            None => Got {
                // A derived name is checked too (see `derived_issues`): a long server_name can push it
                // past 253 characters.
                ok: server_name.ok && check::domain(&derived).is_ok(),
                value: derived,
                line: None,
            },
        }
    }

    /// A name derived from server_name (`matrix.`/`element.`/`turn.` + server_name) that is no valid
    /// DNS name, reported on server_name's line, since that is what made it.
    fn derived_issue(&mut self, path: &str, host: &Got<String>, server_name: &Got<String>) {
        if host.written() || !server_name.ok {
            return;
        }
        if let Err(bad) = check::domain(&host.value) {
            let section = path.split('.').next().unwrap_or(path);
            let prefix = host.value.split('.').next().unwrap_or("");
            let shown = match server_name.value.char_indices().nth(40) {
                Some((i, _)) => format!("\"{}…", &server_name.value[..i]),
                None => format!("\"{}\"", server_name.value),
            };
            self.issues.push(
                server_name.line,
                "server_name",
                Some(&shown),
                format!(
                    "makes the derived {path} ({prefix}.<server_name>) invalid: it {}",
                    bad.message
                ),
                Some(format!(
                    "set host = \"…\" under [{section}] to a shorter name, or use a shorter server_name"
                )),
            );
        }
    }

    fn missing(&mut self, line: Option<usize>, path: &str, message: &str, hint: String) {
        self.issues
            .push(line, path, None, format!("missing: {message}"), Some(hint));
    }
}

pub(super) fn validate(raw: &Raw, issues: &mut Issues<'_>) -> HostConfig {
    let mut v = Validator { raw, issues };

    // server_name: the only key without a possible default.
    let server_name = match v.raw.str("server_name") {
        None => {
            if !v.raw.present("server_name") {
                v.missing(
                    None,
                    "server_name",
                    "the Matrix server name (the part after `:` in @alice:example.com) is required",
                    "add server_name = \"example.com\" at the top of the file".to_string(),
                );
            }
            Got {
                value: "example.com".to_string(),
                ok: false,
                line: None,
            }
        }
        Some(_) => v.plain("server_name", check::domain),
    };

    let edge = edge(&mut v);
    let acme = Acme {
        enabled: v.boolean("acme.enabled"),
        email: v.optional_str("acme.email", check::email),
    };
    // Behind an edge nobody asks Let's Encrypt for anything: the edge holds the certificates.
    if acme.enabled && edge.mode == EdgeMode::Direct && !raw.present("acme.email") {
        let domain = if server_name.ok {
            server_name.value.as_str()
        } else {
            "example.com"
        };
        let hint = format!(
            "add email = \"admin@{domain}\" under [acme] (or set enabled = false there to bring your own certificates, or mode = \"proxied\" under [edge] when a tunnel or proxy in front holds them)"
        );
        v.missing(
            raw.section_line("acme"),
            "acme.email",
            "Let's Encrypt needs a contact address while acme.enabled = true",
            hint,
        );
    }

    let synapse_host = v.host("synapse.host", "matrix", &server_name);
    let registration = registration(&mut v);
    let admin_user = admin_user(&mut v, &server_name);
    let federation = v.boolean("synapse.federation");
    let workers = workers(&mut v, federation);
    let synapse = Synapse {
        host: synapse_host.value.clone(),
        registration,
        federation,
        presence: v.boolean("synapse.presence"),
        report_stats: v.boolean("synapse.report_stats"),
        expose_admin_api: v.boolean("synapse.expose_admin_api"),
        admin_user,
        workers,
    };

    let element_host = v.host("element.host", "element", &server_name);
    let keep = v.int("element.keep_releases");
    let element = Element {
        enabled: v.boolean("element.enabled"),
        host: element_host.value.clone(),
        version: v.plain("element.version", check::element_version).value,
        auto_update: v.boolean("element.auto_update"),
        keep_releases: keep.value as u32,
    };

    let turn_host = v.host("turn.host", "turn", &server_name);
    let min_port = v.int("turn.min_port");
    let max_port = v.int("turn.max_port");
    let user_quota = v.int("turn.user_quota");
    let total_quota = v.int("turn.total_quota");
    let external_ip = v
        .optional("turn.external_ip", check::external_ip)
        .map(|ip| ip.to_string());
    let turn = Turn {
        enabled: v.boolean("turn.enabled"),
        host: turn_host.value.clone(),
        min_port: min_port.value as u16,
        max_port: max_port.value as u16,
        user_quota: user_quota.value as u32,
        total_quota: total_quota.value as u32,
        external_ip,
    };

    let extra_ports = extra_ports(&mut v);
    let firewall = Firewall {
        enabled: v.boolean("firewall.enabled"),
        ssh_ports: ssh_ports(&mut v),
        extra_allowed_ports: extra_ports
            .iter()
            .map(|(_, p, _)| p.value.clone())
            .collect(),
    };

    let sources = sources(&mut v);
    let backup = backup(&mut v);
    let media = media(&mut v, synapse.admin_user.is_some());

    let mut duration = |key: &str| {
        v.plain(&format!("metrics.{key}"), check::prom_duration)
            .value
    };
    let metrics = Metrics {
        scrape_interval: duration("scrape_interval"),
        evaluation_interval: duration("evaluation_interval"),
        down_for: duration("down_for"),
        backup_max_age: duration("backup_max_age"),
        enabled: v.boolean("metrics.enabled"),
        expose_ui: v.boolean("metrics.expose_ui"),
    };

    v.derived_issue("synapse.host", &synapse_host, &server_name);
    if element.enabled {
        v.derived_issue("element.host", &element_host, &server_name);
    }
    if turn.enabled {
        v.derived_issue("turn.host", &turn_host, &server_name);
    }

    // Cross-field rules, each only over values that passed their own checks.
    if element.enabled && element_host.ok {
        let clash = if synapse_host.ok && element_host.value == synapse_host.value {
            Some("synapse.host")
        } else if server_name.ok && element_host.value == server_name.value {
            Some("server_name")
        } else {
            None
        };
        if let Some(other) = clash {
            let derived = format!("element.{}", server_name.value);
            let hint = if server_name.ok && derived != element_host.value {
                format!("write host = \"{derived}\" under [element]")
            } else {
                "give Element a name of its own, e.g. host = \"element.example.com\" under [element]".to_string()
            };
            // Blame the line that made them equal: the written one (element's when both are).
            let (path, line) = if element_host.written() || !synapse_host.written() {
                ("element.host", element_host.line)
            } else {
                ("synapse.host", synapse_host.line)
            };
            v.issues.push(
                line,
                path,
                Some(&format!("\"{}\"", element_host.value)),
                format!("is the same name as {other}; Element needs its own nginx vhost"),
                Some(hint),
            );
        }
    }

    if min_port.ok && max_port.ok && min_port.value >= max_port.value {
        let (path, line) = if min_port.written() {
            ("turn.min_port", min_port.line)
        } else {
            ("turn.max_port", max_port.line)
        };
        let value = if path == "turn.min_port" {
            min_port.value
        } else {
            max_port.value
        };
        v.issues.push(
            line,
            path,
            Some(&value.to_string()),
            format!(
                "relay range {}:{} is empty: min_port must be below max_port",
                min_port.value, max_port.value
            ),
            Some(format!(
                "write e.g. min_port = {DEFAULT_MIN_PORT} and max_port = {DEFAULT_MAX_PORT}"
            )),
        );
    } else if turn.enabled && min_port.ok && max_port.ok {
        let relay = min_port.value as u16..=max_port.value as u16;
        let inside: Vec<&(u16, &str)> = RESERVED_PORTS
            .iter()
            .filter(|(p, _)| relay.contains(p))
            .collect();
        if let Some(&&(highest, _)) = inside.last() {
            let names: Vec<String> = inside
                .iter()
                .map(|(p, name)| format!("{p} ({name})"))
                .collect();
            let (path, got) = if min_port.written() || !max_port.written() {
                ("turn.min_port", &min_port)
            } else {
                ("turn.max_port", &max_port)
            };
            let hint = if highest < DEFAULT_MIN_PORT && turn.max_port > DEFAULT_MIN_PORT {
                format!("start the range above {highest}, e.g. min_port = {DEFAULT_MIN_PORT}")
            } else {
                format!("move the range above {highest}, e.g. min_port = {DEFAULT_MIN_PORT} and max_port = {DEFAULT_MAX_PORT}")
            };
            v.issues.push(
                got.line,
                path,
                Some(&got.value.to_string()),
                format!(
                    "TURN relay range {}:{} contains {} {} that matrix-provision serves itself",
                    relay.start(),
                    relay.end(),
                    if names.len() == 1 { "port" } else { "ports" },
                    names.join(", ")
                ),
                Some(hint),
            );
        }
        for (i, written, spec) in &extra_ports {
            if spec.low <= *relay.end() && *relay.start() <= spec.high {
                v.issues.push(
                    written.line,
                    &format!("firewall.extra_allowed_ports[{i}]"),
                    Some(&written.src),
                    format!(
                        "overlaps the TURN relay range {}:{}, where coturn allocates relay ports",
                        relay.start(),
                        relay.end()
                    ),
                    Some(format!(
                        "move the service below {} or narrow turn.min_port/max_port",
                        relay.start()
                    )),
                );
            }
        }
    }

    if user_quota.ok && total_quota.ok && user_quota.value > total_quota.value {
        let (path, got) = if user_quota.written() {
            ("turn.user_quota", &user_quota)
        } else {
            ("turn.total_quota", &total_quota)
        };
        v.issues.push(
            got.line,
            path,
            Some(&got.value.to_string()),
            format!(
                "user_quota ({}) exceeds total_quota ({}): one user could never get that many relays",
                user_quota.value, total_quota.value
            ),
            Some(format!(
                "write e.g. user_quota = {DEFAULT_USER_QUOTA} and total_quota = {DEFAULT_TOTAL_QUOTA}"
            )),
        );
    }

    // The edge forwards HTTP(S), not TURN: coturn must be reachable on an address of its own.
    if edge.mode == EdgeMode::Proxied && turn.enabled && turn.external_ip.is_none() {
        let line = raw
            .bool("turn.enabled")
            .and_then(|t| t.line)
            .or(raw.section_line("turn"))
            .or(raw.section_line("edge"));
        v.missing(
            line,
            "turn.external_ip",
            &format!("behind an edge (edge.mode = \"proxied\") calls cannot be relayed through it: coturn needs an address clients reach directly (UDP {} and the relay range)", crate::layout::TURN_PORT),
            "set external_ip = \"<public address of this host or its NAT>\" under [turn] and point turn.host's DNS at it, or set enabled = false under [turn]".to_string(),
        );
    }
    if edge.mode == EdgeMode::Proxied && turn.enabled && edge.port == crate::layout::TURN_PORT {
        v.issues.push(
            raw.int("edge.port").and_then(|p| p.line),
            "edge.port",
            Some(&edge.port.to_string()),
            "is coturn's port",
            Some("write e.g. port = 8080 under [edge]".to_string()),
        );
    }

    let mut config = HostConfig {
        server_name: server_name.value,
        acme,
        synapse,
        element,
        turn,
        firewall,
        sources,
        backup,
        media,
        metrics,
        edge,
        template_only: Default::default(),
    };
    config.template_only = template_only(&mut v, &config);
    config
}

/// The keys of the schema that `HostConfig` has a field for, dotted (`synapse.workers.<role>` from the
/// role table: the counts are one map).
pub(super) fn struct_keys(config: &HostConfig) -> std::collections::BTreeSet<String> {
    let json = serde_json::to_value(config).expect("HostConfig serializes");
    let mut keys = std::collections::BTreeSet::new();
    for (key, value) in json.as_object().into_iter().flatten() {
        let Some(section) = value.as_object() else {
            keys.insert(key.clone());
            continue;
        };
        for (k, v) in section {
            match v.as_object() {
                Some(sub) => {
                    keys.extend(sub.keys().map(|s| format!("{key}.{k}.{s}")));
                    keys.extend(
                        crate::workers::ROLES
                            .iter()
                            .map(|r| format!("{key}.{k}.{}", r.key)),
                    );
                }
                None => {
                    keys.insert(format!("{key}.{k}"));
                }
            }
        }
    }
    keys
}

/// Every declared key without a field: checked by its declaration (type by the reader; default and
/// bounds here) and kept for the templates. Only plain kinds can be template-only: a key whose value
/// needs its own check or a list has code that reads it, so a field.
fn template_only(
    v: &mut Validator<'_, '_>,
    config: &HostConfig,
) -> std::collections::BTreeMap<&'static str, toml::Value> {
    let fields = struct_keys(config);
    let mut out = std::collections::BTreeMap::new();
    for key in schema::KEYS.iter().filter(|k| !fields.contains(k.path)) {
        let value = match key.kind {
            super::read::Kind::Bool => toml::Value::Boolean(v.boolean(key.path)),
            super::read::Kind::Int => toml::Value::Integer(v.int(key.path).value),
            super::read::Kind::Str => toml::Value::String(v.plain(key.path, |_| Ok(())).value),
            other => panic!(
                "{}: a {other:?} key needs a HostConfig field and code that reads it",
                key.path
            ),
        };
        out.insert(key.path, value);
    }
    out
}

fn edge(v: &mut Validator<'_, '_>) -> Edge {
    let defaults = Edge::default();
    let mode = v.choice(
        "edge.mode",
        &[("direct", EdgeMode::Direct), ("proxied", EdgeMode::Proxied)],
        "proxied",
        "must be \"direct\" (nginx faces the internet and gets certificates) or \"proxied\" (a tunnel or reverse proxy in front terminates TLS)",
    );
    let listen = v
        .optional("edge.listen", check::listen_address)
        .unwrap_or(defaults.listen);
    let port = v.int("edge.port");
    if port.ok && port.value == i64::from(crate::layout::SYNAPSE_PORT) {
        if let Some(val) = v.raw.int("edge.port") {
            v.fail(
                "edge.port",
                &val,
                format!(
                    "is Synapse's own listener ({}); nginx needs a port of its own",
                    crate::layout::SYNAPSE_ADDR
                ),
                "write e.g. port = 8080".to_string(),
            );
        }
    }
    let (https, federation) = (
        i64::from(crate::layout::HTTPS_PORT),
        i64::from(crate::layout::FEDERATION_PORT),
    );
    let fed = v.int("edge.federation_port");
    if fed.ok && fed.value != https && fed.value != federation {
        if let Some(val) = v.raw.int("edge.federation_port") {
            v.fail(
                "edge.federation_port",
                &val,
                format!("must be {https} (delegated with m.server ending :{https}) or {federation} (Matrix's default port)"),
                format!("write federation_port = {https}"),
            );
        }
    }
    let trusted = match v.raw.str_list("edge.trusted") {
        Some(list) => {
            let mut ok = Vec::new();
            for (i, entry) in &list {
                match check::trusted_address(&entry.value) {
                    Ok(a) => ok.push(a),
                    Err(bad) => {
                        let hint = bad
                            .advice
                            .unwrap_or_else(|| "write e.g. \"10.0.0.2\" or \"10.0.0.0/24\"".into());
                        v.fail(&format!("edge.trusted[{i}]"), entry, bad.message, hint);
                    }
                }
            }
            if list.is_empty() && mode == EdgeMode::Proxied {
                v.issues.push(
                    v.raw.section_line("edge"),
                    "edge.trusted",
                    Some("[]"),
                    "is empty: nginx would take every client's address to be the edge's",
                    Some("list the edge's addresses, e.g. trusted = [\"10.0.0.2\"]".into()),
                );
            }
            ok
        }
        // The edge on this host (loopback) is the one peer; an edge elsewhere must be named.
        None if check::is_loopback(&listen) => vec![listen.trim_matches(['[', ']']).to_string()],
        None => {
            if mode == EdgeMode::Proxied {
                v.missing(
                    v.raw.section_line("edge"),
                    "edge.trusted",
                    &format!("nginx listens on {listen}, not loopback, so the edge's addresses must be listed (only they may say who the client is)"),
                    "add trusted = [\"<the edge's address>\"] under [edge]".to_string(),
                );
            }
            Vec::new()
        }
    };
    Edge {
        mode,
        listen,
        port: port.value as u16,
        trusted,
        federation_port: fed.value as u16,
    }
}

fn backup(v: &mut Validator<'_, '_>) -> Backup {
    let enabled = v.boolean("backup.enabled");
    let repository = v.optional_str("backup.repository", check::restic_repository);
    if enabled && !v.raw.present("backup.repository") {
        v.missing(
            v.raw.section_line("backup"),
            "backup.repository",
            "backups need a restic repository outside this host",
            "add e.g. repository = \"sftp:backup@backup.example.net:/srv/restic/matrix\" under [backup] \
             (or a path on a mounted disk: \"/mnt/backup/matrix\")"
                .to_string(),
        );
    }
    let schedule = v.plain("backup.schedule", check::backup_schedule).value;
    // Defaults and bounds from the schema.
    let keep = |v: &mut Validator<'_, '_>, key: &str| v.int(key).value as u32;
    let keep_daily = keep(v, "backup.keep_daily");
    let keep_weekly = keep(v, "backup.keep_weekly");
    let keep_monthly = keep(v, "backup.keep_monthly");
    if enabled && keep_daily + keep_weekly + keep_monthly == 0 {
        let at = v.raw.int("backup.keep_daily");
        v.issues.push(
            at.as_ref().and_then(|a| a.line).or(v.raw.section_line("backup")),
            "backup.keep_daily",
            at.as_ref().map(|a| a.src.as_str()),
            "keep_daily, keep_weekly and keep_monthly are all 0: every backup would be deleted right after it is made",
            Some(format!(
                "write e.g. keep_daily = {}",
                super::schema::default_int::<u32>("backup.keep_daily")
            )),
        );
    }
    Backup {
        enabled,
        repository,
        schedule,
        keep_daily,
        keep_weekly,
        keep_monthly,
    }
}

fn media(v: &mut Validator<'_, '_>, has_admin: bool) -> Media {
    // Unset stays unset; bounds from the schema.
    let days = |v: &mut Validator<'_, '_>, key: &str| -> Option<u32> {
        v.raw.int(key)?;
        let got = v.int(key);
        got.ok.then_some(got.value as u32)
    };
    let media = Media {
        local_media_lifetime_days: days(v, "media.local_media_lifetime_days"),
        remote_media_lifetime_days: days(v, "media.remote_media_lifetime_days"),
        purge_remote_media_days: days(v, "media.purge_remote_media_days"),
    };
    if media.purge_remote_media_days.is_some() && !has_admin {
        let at = v.raw.int("media.purge_remote_media_days");
        v.issues.push(
            at.as_ref().and_then(|a| a.line),
            "media.purge_remote_media_days",
            at.as_ref().map(|a| a.src.as_str()),
            "the purge goes through Synapse's admin API, which needs the admin account apply creates",
            Some("set admin_user = \"admin\" under [synapse] (or remove purge_remote_media_days)".to_string()),
        );
    }
    media
}

fn registration(v: &mut Validator<'_, '_>) -> Registration {
    v.choice(
        "synapse.registration",
        &[
            ("closed", Registration::Closed),
            ("token", Registration::Token),
            ("open", Registration::Open),
        ],
        "token",
        "must be \"closed\" (admins create accounts), \"token\" (invite tokens) or \"open\"",
    )
}

fn admin_user(v: &mut Validator<'_, '_>, server_name: &Got<String>) -> Option<String> {
    let name = v.optional_str("synapse.admin_user", check::localpart)?;
    // The spec caps a whole user ID (`@local:server`) at 255 bytes.
    if server_name.ok && name.len() + server_name.value.len() + 2 > 255 {
        let val = v.raw.str("synapse.admin_user")?;
        v.fail(
            "synapse.admin_user",
            &val,
            "makes the user ID longer than 255 characters",
            "write a shorter name, e.g. admin_user = \"admin\"".to_string(),
        );
        return None;
    }
    Some(name)
}

/// `[synapse.workers]`: the mode, and each written count within its role's limit. Counts under
/// mode = "off", and federation roles while federation is off, are mistakes: they would do nothing.
fn workers(v: &mut Validator<'_, '_>, federation: bool) -> Workers {
    // A misspelt mode is reported once; the counts are then checked as if it said "auto".
    let mut mode_ok = true;
    let mode = match v.raw.str("synapse.workers.mode") {
        None => WorkersMode::Off,
        Some(val) => match val.value.as_str() {
            "off" => WorkersMode::Off,
            "auto" => WorkersMode::Auto,
            _ => {
                let lower = val.value.trim().to_ascii_lowercase();
                let fix = if lower == "auto" || lower == "on" || lower == "true" {
                    "auto"
                } else {
                    check::closest(&lower, ["off", "auto"]).unwrap_or("auto")
                };
                v.fail(
                    "synapse.workers.mode",
                    &val,
                    "must be \"off\" (one Synapse process) or \"auto\" (sized from CPUs and RAM; counts written below override it)",
                    format!("write mode = \"{fix}\""),
                );
                mode_ok = false;
                WorkersMode::Off
            }
        },
    };
    let mut counts = std::collections::BTreeMap::new();
    for role in crate::workers::ROLES {
        let path = format!("synapse.workers.{}", role.key);
        let Some(val) = v.raw.int(&path) else {
            continue;
        };
        if !(0..=i64::from(role.max)).contains(&val.value) {
            let what = if role.max == 1 {
                format!("0 or 1 (Synapse runs one {} worker at most)", role.key)
            } else {
                format!("between 0 and {}", role.max)
            };
            let fix = val.value.clamp(0, i64::from(role.max));
            v.fail(
                &path,
                &val,
                format!("must be {what}"),
                format!("write {} = {fix}", role.key),
            );
            continue;
        }
        if mode == WorkersMode::Off && mode_ok {
            v.fail(
                &path,
                &val,
                "sets a worker count while workers are off",
                "add mode = \"auto\" under [synapse.workers] (the counts written override what auto picks), or remove the count".to_string(),
            );
            continue;
        }
        if role.federation_only && !federation && val.value > 0 {
            v.fail(
                &path,
                &val,
                format!("asks for {} workers while synapse.federation = false: there is no federation traffic for them", role.key),
                format!("write {} = 0, or set federation = true under [synapse]", role.key),
            );
            continue;
        }
        counts.insert(role.key.to_string(), val.value as u32);
    }
    Workers { mode, counts }
}

/// Each entry checked on its own; returns the valid ones as (index, entry as written, parsed range).
fn extra_ports(v: &mut Validator<'_, '_>) -> Vec<(usize, Val<String>, PortSpec)> {
    let Some(list) = v.raw.str_list("firewall.extra_allowed_ports") else {
        return Vec::new();
    };
    let mut ok = Vec::new();
    for (i, entry) in &list {
        let path = format!("firewall.extra_allowed_ports[{i}]");
        match check::port_spec(&entry.value) {
            Ok(spec) => ok.push((*i, entry.clone(), spec)),
            Err(bad) => {
                let fix = bad.fix.filter(|f| check::port_spec(f).is_ok());
                let hint = match fix {
                    Some(fix) => format!("write \"{fix}\""),
                    None => "write e.g. \"2222/tcp\" or \"60000:60100/udp\"".to_string(),
                };
                v.fail(&path, entry, bad.message, hint);
            }
        }
    }
    ok
}

/// TCP ports, each 1..=65535; None when the key is absent (an empty list is a choice: "detect only, and
/// I vouch that SSH needs nothing else").
fn ssh_ports(v: &mut Validator<'_, '_>) -> Option<Vec<u16>> {
    let list = v.raw.int_list("firewall.ssh_ports")?;
    let mut ports = Vec::new();
    for (i, entry) in &list {
        match u16::try_from(entry.value) {
            Ok(p) if p > 0 => ports.push(p),
            _ => v.fail(
                &format!("firewall.ssh_ports[{i}]"),
                entry,
                "is not a TCP port (1 to 65535)",
                "write the port sshd listens on, e.g. 22".to_string(),
            ),
        }
    }
    Some(ports)
}

fn sources(v: &mut Validator<'_, '_>) -> Sources {
    let fingerprint = v
        .optional("sources.matrix_key_fingerprint", check::fingerprint)
        .unwrap_or_else(|| schema::default_str("sources.matrix_key_fingerprint").to_string());
    let path = |v: &mut Validator<'_, '_>, key: &str| v.optional_str(key, check::absolute_file);
    Sources {
        matrix_repo_url: v.plain("sources.matrix_repo_url", check::repo_url).value,
        matrix_keyring_url: v.plain("sources.matrix_keyring_url", check::url).value,
        matrix_key_fingerprint: fingerprint,
        acme_directory_url: v.plain("sources.acme_directory_url", check::url).value,
        acme_ca_bundle: path(v, "sources.acme_ca_bundle"),
        element_releases_url: v.plain("sources.element_releases_url", check::url).value,
        element_signing_key: path(v, "sources.element_signing_key"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::schema::KEYS;
    use std::collections::BTreeSet;

    /// A section left out of host.toml means its `Default`, which reads the schema's defaults: the two
    /// ways to get an absent section agree (serde's, for stored copies, and validate's).
    #[test]
    fn absent_sections_are_their_defaults() {
        let config = parse(
            "server_name = \"example.com\"\n[acme]\nemail = \"a@example.com\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(config.edge, super::Edge::default());
        assert_eq!(config.metrics, super::Metrics::default());
        assert_eq!(config.backup, super::Backup::default());
        assert_eq!(config.media, super::Media::default());
    }

    /// The schema's keys and the serde field names of `HostConfig` must name the same keys, or a key added
    /// to the struct would be rejected as unknown (or a declared key silently ignored).
    #[test]
    fn schema_matches_host_config_fields() {
        let config = parse(
            "server_name = \"example.com\"\n[acme]\nemail = \"a@example.com\"\n",
            "t",
        )
        .unwrap();
        let mut from_struct = super::struct_keys(&config);
        from_struct.extend(config.template_only.keys().map(|k| k.to_string()));
        let from_schema: BTreeSet<String> = KEYS.iter().map(|k| k.path.to_string()).collect();
        assert_eq!(from_struct, from_schema);
    }
}
