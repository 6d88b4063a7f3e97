//! Host paths, ports, unit names and loopback URLs live in src/layout.rs only (issue 10): no other file in
//! src/, playbooks/ or templates/ spells them out. Playbooks and templates use `paths.…`, code uses
//! `crate::layout`. Tests (a file's `#[cfg(test)]` module, test doubles) and comments may name them.

mod support;

use std::fs;
use std::path::Path;

use support::files;

/// Substrings that are a layout literal wherever they appear.
const PATHS: &[&str] = &[
    "/var/lib/matrix-provision",
    "/etc/matrix-provision",
    "/run/matrix-provision",
    "/usr/sbin/matrix-provision",
    "/usr/local/bin/matrix-provision",
    "/var/www/",
    "/etc/letsencrypt",
    "/etc/matrix-synapse",
    "/var/lib/matrix-synapse",
    "/var/log/matrix-synapse",
    "/opt/venvs/matrix-synapse",
    "/etc/nginx/",
    "/var/lib/nginx",
    "/var/log/nginx",
    "/etc/coturn",
    "/var/lib/turn",
    "/usr/bin/turnserver",
    "/etc/systemd/system",
    "/etc/postgresql",
    "/var/lib/postgresql",
    "/var/log/postgresql",
    "/run/postgresql",
    "/usr/share/keyrings/matrix-org",
    "/etc/apt/sources.list.d/matrix-org",
    "postgresql@",
    "127.0.0.1",
];

/// Port numbers, matched as whole numbers (not inside 18008 or a hex fingerprint).
const PORTS: &[&str] = &["8008", "8448", "3478", "5349"];

/// Files that may name them: the layout itself and test doubles.
const ALLOWED: &[&str] = &[
    "src/layout.rs",
    "src/system/fake.rs",
    "src/admin/fake.rs",
    "src/element/tests.rs",
];

/// Single lines that may: (file, literal, why).
const ALLOWED_LINES: &[(&str, &str, &str)] = &[(
    "src/config/schema.rs",
    "/etc/matrix-provision",
    "an example value of element_signing_key shown to the user, not a path the product uses",
)];

fn is_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("//") || t.starts_with('#') || t.starts_with("{#") || t.starts_with("*")
}

fn whole_number_in(line: &str, n: &str) -> bool {
    line.match_indices(n).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + n.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

/// `file:line: literal: text` for every layout literal in `text` outside comments and test code.
fn literals_in(name: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_block_comment = false;
    for (n, line) in text.lines().enumerate() {
        // A Rust file's test module comes last: nothing after it is product code.
        if name.ends_with(".rs") && line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        // minijinja `{# … #}` comments may span lines.
        if in_block_comment {
            in_block_comment = !line.contains("#}");
            continue;
        }
        if line.trim_start().starts_with("{#") && !line.contains("#}") {
            in_block_comment = true;
            continue;
        }
        if is_comment(line) {
            continue;
        }
        let code = line.split(" // ").next().unwrap_or(line);
        let hits = PATHS
            .iter()
            .filter(|p| code.contains(*p))
            .chain(PORTS.iter().filter(|p| whole_number_in(code, p)));
        for hit in hits {
            found.push(format!("{name}:{}: `{hit}`: {}", n + 1, line.trim()));
        }
    }
    found
}

#[test]
fn no_layout_literals_elsewhere() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    for dir in ["src", "playbooks", "templates"] {
        files(&root.join(dir), &mut all);
    }
    assert!(all.contains(&root.join("src/layout.rs")));
    let mut found = Vec::new();
    for path in &all {
        let name = path.strip_prefix(root).unwrap().display().to_string();
        if ALLOWED.contains(&name.as_str()) {
            continue;
        }
        let Ok(text) = fs::read_to_string(path) else {
            continue; // binary (a key): names nothing
        };
        found.extend(literals_in(&name, &text).into_iter().filter(|hit| {
            !ALLOWED_LINES
                .iter()
                .any(|(file, literal, _)| *file == name && hit.contains(&format!("`{literal}`")))
        }));
    }
    assert!(
        found.is_empty(),
        "host paths/ports/units outside src/layout.rs (use crate::layout, or `paths.…` in playbooks and \
         templates):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_would_see_a_literal() {
    // The test above only means something if it catches what a hard-coded layout looks like.
    for sample in [
        "wait_http = \"http://127.0.0.1:8008/health\"",
        "    listen 8448 ssl;",
        "dest = \"/etc/nginx/sites-available/x.conf\"",
        "instance = \"postgresql@15-main\"",
        "tls = [{ name = \"t\", port = 5349 }]",
        "let p = Path::new(\"/var/lib/matrix-provision/admin.json\");",
    ] {
        assert!(!literals_in("x.toml", sample).is_empty(), "{sample}");
    }
    for sample in [
        "# comment naming /etc/nginx/",
        "port = 18008",
        "fingerprint = \"A3478F\"",
        "dest = \"{{ paths.nginx_sites_available }}/x.conf\"",
    ] {
        assert!(literals_in("x.toml", sample).is_empty(), "{sample}");
    }
    let rust = "fn a() {}\n#[cfg(test)]\nmod tests { const P: &str = \"/etc/nginx/x\"; }\n";
    assert!(literals_in("x.rs", rust).is_empty());
}
