//! host.toml validation: a corpus of bad files with their expected messages, and good files with their
//! derived defaults and normalisation.
//!
//! Each `tests/bad_configs/*.toml` starts with one or more `# expect: LINE: FRAGMENT` comments (LINE is a
//! 1-based line number, or `-` for an error without a line such as a missing key). The file must fail to
//! parse, every expectation must match an error line (`host.toml:LINE: …FRAGMENT…`), and every error must
//! be matched by some expectation, so a file also proves no spurious follow-on errors appear.

use matrix_provision::config::{self, HostConfig, Registration};
use std::fs;
use std::path::{Path, PathBuf};

const FILE: &str = "host.toml";

struct Expect {
    line: Option<usize>,
    fragment: String,
}

fn expectations(path: &Path, text: &str) -> Vec<Expect> {
    let expects: Vec<Expect> = text
        .lines()
        .map_while(|l| l.strip_prefix("# expect: "))
        .map(|rest| {
            let (line, fragment) = rest
                .split_once(": ")
                .unwrap_or_else(|| panic!("{}: bad expect line {rest:?}", path.display()));
            let line = match line {
                "-" => None,
                n => Some(
                    n.parse()
                        .unwrap_or_else(|_| panic!("{}: bad line number {n:?}", path.display())),
                ),
            };
            Expect {
                line,
                fragment: fragment.to_string(),
            }
        })
        .collect();
    assert!(
        !expects.is_empty(),
        "{}: no `# expect:` header",
        path.display()
    );
    expects
}

fn prefix(line: Option<usize>) -> String {
    match line {
        Some(n) => format!("{FILE}:{n}: "),
        None => format!("{FILE}: "),
    }
}

fn bad_config_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_configs");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn bad_configs_fail_with_their_messages() {
    let files = bad_config_files();
    assert!(files.len() >= 35, "corpus has only {} files", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let text = fs::read_to_string(path).unwrap();
        let expects = expectations(path, &text);
        let err = match config::parse(&text, FILE) {
            Ok(_) => {
                failures.push(format!("{}: parsed without error", path.display()));
                continue;
            }
            Err(e) => e,
        };
        let rendered = err.to_string();
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines.len(), err.errors().len(), "one line per error");
        let matches = |exp: &Expect, line: &str| {
            line.starts_with(&prefix(exp.line)) && line.contains(&exp.fragment)
        };
        for exp in &expects {
            if !lines.iter().any(|l| matches(exp, l)) {
                failures.push(format!(
                    "{}: no error `{}…{}` in:\n{rendered}",
                    path.display(),
                    prefix(exp.line),
                    exp.fragment
                ));
            }
        }
        for line in &lines {
            if !expects.iter().any(|exp| matches(exp, line)) {
                failures.push(format!("{}: unexpected error: {line}", path.display()));
            }
        }
        // Every error says what to write instead, and names the field unless it is about the whole file.
        for issue in err.errors() {
            if issue.hint.is_none() {
                failures.push(format!(
                    "{}: error without a hint: {issue:?}",
                    path.display()
                ));
            }
            if issue.field.is_empty() && !issue.message.starts_with("TOML syntax error") {
                failures.push(format!(
                    "{}: error without a field: {issue:?}",
                    path.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The structured list (for `--json`) carries the same line and field as the text.
#[test]
fn errors_are_structured_for_json() {
    let text = "server_name = \"example.com\"\n[acme]\nemail = \"a@example.com\"\n[synapse]\nmax_upload_size_mb = 0\npresense = true\n";
    let err = config::parse(text, FILE).unwrap_err();
    let errors = err.errors();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0].line, Some(5));
    assert_eq!(errors[0].field, "synapse.max_upload_size_mb");
    assert_eq!(errors[0].value.as_deref(), Some("0"));
    assert!(errors[0].message.contains("between 1 and 10240"));
    assert_eq!(errors[1].line, Some(6));
    assert_eq!(errors[1].field, "synapse.presense");
    let json = serde_json::to_value(&err).unwrap();
    assert_eq!(json["file"], FILE);
    assert_eq!(json["errors"][0]["line"], 5);
    assert_eq!(json["errors"][1]["hint"], "did you mean `presence`?");
    // std::error::Error, so `?` into anyhow works in the CLI.
    let any: anyhow::Error = err.into();
    assert!(any.to_string().starts_with("host.toml:5: "));
}

#[test]
fn load_names_the_path_and_reports_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let err = config::load(&missing).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}: cannot read: ", missing.display())),
        "{text}"
    );
    assert!(text.contains("check the path"), "{text}");

    let bad = dir.path().join("host.toml");
    fs::write(
        &bad,
        "server_name = \"example.com\"\n[acme]\nemail = \"x\"\n",
    )
    .unwrap();
    let text = config::load(&bad).unwrap_err().to_string();
    assert!(
        text.starts_with(&format!("{}:3: acme.email = \"x\": ", bad.display())),
        "{text}"
    );

    fs::write(
        &bad,
        "server_name = \"example.com\"\n[acme]\nemail = \"x@example.com\"\n",
    )
    .unwrap();
    assert_eq!(config::load(&bad).unwrap().server_name, "example.com");
}

fn minimal(server_name: &str) -> HostConfig {
    let text =
        format!("server_name = \"{server_name}\"\n[acme]\nemail = \"admin@{server_name}\"\n");
    config::parse(&text, FILE).unwrap()
}

#[test]
fn minimal_file_gets_every_default() {
    let c = minimal("example.org");
    assert_eq!(c.server_name, "example.org");
    assert!(c.acme.enabled);
    assert_eq!(c.acme.email.as_deref(), Some("admin@example.org"));

    assert_eq!(c.synapse.host, "matrix.example.org");
    assert_eq!(c.synapse.registration, Registration::Token);
    assert!(c.synapse.federation);
    assert!(c.synapse.presence);
    // A template-only key: validated by its schema line, read by templates only.
    assert_eq!(
        c.template_only["synapse.max_upload_size_mb"],
        toml::Value::Integer(50)
    );
    assert!(!c.synapse.report_stats);
    assert!(!c.synapse.expose_admin_api);
    assert_eq!(c.synapse.admin_user, None);

    assert!(c.element.enabled);
    assert_eq!(c.element.host, "element.example.org");
    assert_eq!(c.element.version, "latest");
    assert!(c.element.auto_update);
    assert_eq!(c.element.keep_releases, 3);

    assert!(c.turn.enabled);
    assert_eq!(c.turn.host, "turn.example.org");
    assert_eq!((c.turn.min_port, c.turn.max_port), (49152, 65535));
    assert_eq!((c.turn.user_quota, c.turn.total_quota), (12, 1200));
    assert_eq!(c.turn.external_ip, None);

    assert!(c.firewall.enabled);
    assert!(c.firewall.extra_allowed_ports.is_empty());

    assert_eq!(c.sources.matrix_repo_url, config::MATRIX_REPO_URL);
    assert_eq!(c.sources.matrix_keyring_url, config::MATRIX_KEYRING_URL);
    assert_eq!(
        c.sources.matrix_key_fingerprint,
        config::MATRIX_KEY_FINGERPRINT
    );
    assert_eq!(c.sources.acme_directory_url, config::ACME_DIRECTORY_URL);
    assert_eq!(c.sources.acme_ca_bundle, None);
    assert_eq!(c.sources.element_releases_url, config::ELEMENT_RELEASES_URL);
    assert_eq!(c.sources.element_signing_key, None);
    assert!(c.delegated());
}

#[test]
fn acme_disabled_needs_no_email() {
    let c = config::parse(
        "server_name = \"example.com\"\n[acme]\nenabled = false\n",
        FILE,
    )
    .unwrap();
    assert!(!c.acme.enabled);
    assert_eq!(c.acme.email, None);
}

#[test]
fn written_values_win_and_are_normalised() {
    let text = r#"
server_name = "example.net"
[acme]
email = "Ops+LE@Example.NET"     # mail addresses keep their case
[synapse]
host = "example.net"             # no delegation
registration = "closed"
federation = false
max_upload_size_mb = 10240
admin_user = "ops.admin"
[element]
enabled = false
host = "example.net"             # the same name is fine while Element is off
version = "v1.11.86-rc.0"
keep_releases = 1
[turn]
host = "example.net"             # TURN may share a name: it needs a certificate, not a vhost
min_port = 10000
max_port = 20000
user_quota = 5
total_quota = 5
external_ip = "2001:db8:0:0::7"
[firewall]
extra_allowed_ports = ["2222/tcp", "9000:9100/udp"]
[sources]
matrix_key_fingerprint = "aaf9 ae84 3a75 84b5 a3e4  cd2b cf45 a512 de2d a058"
acme_directory_url = "https://acme-staging-v02.api.letsencrypt.org/directory"
acme_ca_bundle = "/usr/local/share/ca-certificates/lab.pem"
matrix_repo_url = "http://127.0.0.1:8080/debian/"
element_signing_key = "/etc/matrix-provision/element.asc"
"#;
    let c = config::parse(text, FILE).unwrap();
    assert_eq!(c.synapse.host, "example.net");
    assert!(!c.delegated());
    assert_eq!(c.acme.email.as_deref(), Some("Ops+LE@Example.NET"));
    assert_eq!(c.synapse.registration, Registration::Closed);
    assert!(!c.synapse.federation);
    assert_eq!(
        c.template_only["synapse.max_upload_size_mb"],
        toml::Value::Integer(10240)
    );
    assert_eq!(c.synapse.admin_user.as_deref(), Some("ops.admin"));
    assert!(!c.element.enabled);
    assert_eq!(c.element.version, "v1.11.86-rc.0");
    assert_eq!(c.element.keep_releases, 1);
    assert_eq!(c.turn.host, "example.net");
    assert_eq!((c.turn.min_port, c.turn.max_port), (10000, 20000));
    // Canonical text form of the address.
    assert_eq!(c.turn.external_ip.as_deref(), Some("2001:db8::7"));
    assert_eq!(
        c.firewall.extra_allowed_ports,
        ["2222/tcp", "9000:9100/udp"]
    );
    // Spaces dropped and uppercased: the form apt and gpg compare.
    assert_eq!(
        c.sources.matrix_key_fingerprint,
        "AAF9AE843A7584B5A3E4CD2BCF45A512DE2DA058"
    );
    assert_eq!(c.sources.matrix_repo_url, "http://127.0.0.1:8080/debian/");
    assert_eq!(
        c.sources.acme_ca_bundle.as_deref(),
        Some("/usr/local/share/ca-certificates/lab.pem")
    );
}

#[test]
fn turn_disabled_skips_relay_range_conflicts() {
    // The relay range only matters when coturn runs; the ports themselves are still range-checked.
    let text = "server_name = \"example.com\"\n[acme]\nemail = \"a@example.com\"\n\
                [turn]\nenabled = false\nmin_port = 3000\n[firewall]\nextra_allowed_ports = [\"50000/udp\"]\n";
    assert!(config::parse(text, FILE).is_ok());
    let text = text.replace("min_port = 3000", "min_port = 80");
    assert!(config::parse(&text, FILE).is_err());
}

#[test]
fn inline_tables_and_dotted_keys_are_accepted() {
    let text = "server_name = \"example.com\"\nacme = { email = \"a@example.com\" }\nturn.enabled = false\n";
    let c = config::parse(text, FILE).unwrap();
    assert_eq!(c.acme.email.as_deref(), Some("a@example.com"));
    assert!(!c.turn.enabled);
}

fn example_text() -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/host.toml")).unwrap()
}

#[test]
fn example_file_parses_to_the_defaults() {
    let c =
        config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/host.toml")).unwrap();
    assert_eq!(c, minimal("example.com"));
}

/// Uncommenting every `# key = value` line of the example must change nothing but the options whose
/// default is "unset" (shown with an example value): the documented defaults are the real ones, and every
/// option the schema has appears in the example.
#[test]
fn example_file_documents_the_real_defaults_and_every_option() {
    let mut uncommented = Vec::new();
    let text: String = example_text()
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                }) =>
            {
                uncommented.push(rest.split_once(" = ").unwrap().0.to_string());
                format!("{rest}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect();
    let got = config::parse(&text, FILE).unwrap_or_else(|e| panic!("{e}"));

    let mut want = minimal("example.com");
    want.synapse.admin_user = Some("admin".into());
    want.turn.external_ip = Some("203.0.113.7".into());
    want.firewall.ssh_ports = Some(vec![22]);
    want.sources.acme_ca_bundle =
        Some("/usr/local/share/ca-certificates/private-acme-ca.pem".into());
    want.sources.element_signing_key = Some("/etc/matrix-provision/element-release-key.asc".into());
    want.backup.repository = Some("sftp:backup@backup.example.net:/srv/restic/matrix".into());
    want.media.local_media_lifetime_days = Some(365);
    want.media.remote_media_lifetime_days = Some(30);
    want.media.purge_remote_media_days = Some(30);
    assert_eq!(got, want);

    // Every field of HostConfig, by its serde name, appears as an uncommented (or live) key.
    let json = serde_json::to_value(&got).unwrap();
    for (section, value) in json.as_object().unwrap() {
        let keys: Vec<&String> = match value.as_object() {
            // A nested table ([synapse.workers]) shows its own keys.
            Some(fields) => fields
                .iter()
                .flat_map(|(k, v)| match v.as_object() {
                    Some(sub) => sub.keys().collect::<Vec<_>>(),
                    None => vec![k],
                })
                .collect(),
            None => vec![section],
        };
        for key in keys {
            let live = ["server_name", "email"].contains(&key.as_str());
            assert!(
                live || uncommented.contains(key),
                "examples/host.toml does not show `{section}.{key}`"
            );
        }
    }
}

/// A URL with a password is refused without repeating the password, in the text and in the JSON.
#[test]
fn credentials_in_urls_are_not_echoed() {
    let text = "server_name = \"example.com\"\n[acme]\nemail = \"a@example.com\"\n\
                [sources]\nmatrix_repo_url = \"https://mirror:hunter2@apt.example.net/matrix/\"\n";
    let err = config::parse(text, FILE).unwrap_err();
    assert!(err.to_string().contains("matrix_repo_url"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!serde_json::to_string(&err).unwrap().contains("hunter2"));
}

/// Extra ports that repeat the built-in ones are harmless (ufw skips duplicate rules) and accepted.
#[test]
fn extra_ports_may_repeat_builtin_ports() {
    let text = "server_name = \"example.com\"\n[acme]\nemail = \"a@example.com\"\n\
                [firewall]\nextra_allowed_ports = [\"22/tcp\", \"443/tcp\", \"3478/udp\"]\n";
    let c = config::parse(text, FILE).unwrap();
    assert_eq!(
        c.firewall.extra_allowed_ports,
        ["22/tcp", "443/tcp", "3478/udp"]
    );
}

/// Behind an edge no ACME email is needed, and TURN with an address of its own is fine.
#[test]
fn a_proxied_host_needs_no_acme_email() {
    let c = config::parse(
        "server_name = \"example.com\"\n[turn]\nexternal_ip = \"203.0.113.7\"\n[edge]\nmode = \"proxied\"\nlisten = \"::1\"\n",
        FILE,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.proxied());
    assert_eq!(c.edge.listen, "[::1]");
    assert_eq!(
        c.edge.trusted,
        vec!["::1"],
        "loopback: the edge is this host"
    );
    assert_eq!((c.edge.port, c.edge.federation_port), (8080, 443));
}
