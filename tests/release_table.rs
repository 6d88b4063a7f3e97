//! What differs between Debian releases lives in src/release.rs only: no codename, PostgreSQL major version,
//! cluster unit or Synapse Python anywhere else in src/, playbooks/ or templates/ (issue 11). A new release
//! is then one line in that table.

mod support;

use std::fs;
use std::path::Path;

use support::files;

use matrix_provision::release::SUPPORTED;

/// Every release-specific spelling the table holds, in the forms code and config would use.
fn forbidden() -> Vec<String> {
    let mut words = Vec::new();
    for r in SUPPORTED {
        words.push(r.codename.to_string());
        words.push(r.python.to_string());
        for form in [
            "postgresql@{}",
            "postgresql/{}/",
            "postgresql-{}",
            "PostgreSQL {}",
            "postgres_version: \"{}\"",
        ] {
            words.push(form.replace("{}", r.postgres));
        }
    }
    words
}

#[test]
fn release_facts_are_named_only_in_the_release_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let table = root.join("src/release.rs");
    let mut all = Vec::new();
    for dir in ["src", "playbooks", "templates"] {
        files(&root.join(dir), &mut all);
    }
    assert!(
        all.contains(&table),
        "the table itself is where it should be"
    );
    let words = forbidden();
    let mut found = Vec::new();
    for path in all.iter().filter(|p| **p != table) {
        let Ok(text) = fs::read_to_string(path) else {
            continue; // binary (a key): names nothing
        };
        for (n, line) in text.lines().enumerate() {
            for w in &words {
                if line.contains(w.as_str()) {
                    found.push(format!(
                        "{}:{}: `{w}`: {}",
                        path.strip_prefix(root).unwrap().display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "release facts outside src/release.rs (use crate::release / facts.release):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_would_see_a_constant() {
    // The test above only means something if its words are what a hard-coded release looks like.
    let words = forbidden();
    for sample in [
        "Suites: bookworm",
        "postgresql@15-main",
        "/etc/postgresql/17/main/conf.d",
        "python3.13",
    ] {
        assert!(
            words.iter().any(|w| sample.contains(w.as_str())),
            "{sample}"
        );
    }
}
