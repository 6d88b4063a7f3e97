//! The Debian releases matrix-provision supports, and everything that differs between them. This is the
//! one place that names a codename, a PostgreSQL major version or the Python of the Synapse package:
//! templates and playbooks read them as `facts.*`, steps and doctor through [`Release`]
//! (tests/release_table.rs keeps it that way).

use serde::Serialize;

use crate::system::{Facts, System};

/// One supported Debian release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Release {
    /// `VERSION_ID` in /etc/os-release: "12", "13".
    pub version: &'static str,
    /// `VERSION_CODENAME`: the suite of the matrix.org apt source.
    pub codename: &'static str,
    /// The major version the release's `postgresql` package depends on; its cluster is `<N>/main`.
    pub postgres: &'static str,
    /// The interpreter matrix.org builds this release's matrix-synapse-py3 virtualenv with.
    pub python: &'static str,
    /// nginx has the `http2 on;` directive (1.25.1+, Debian 13's 1.26), where `listen … http2` is deprecated
    /// and warns at every `nginx -t`; Debian 12's 1.22 only knows the `listen` flag.
    pub nginx_http2_directive: bool,
}

/// Oldest first. A new Debian release is one more line here (and a guest in tests/vm).
pub const SUPPORTED: &[Release] = &[
    Release {
        version: "12",
        codename: "bookworm",
        postgres: "15",
        python: "python3.11",
        nginx_http2_directive: false,
    },
    Release {
        version: "13",
        codename: "trixie",
        postgres: "17",
        python: "python3.13",
        nginx_http2_directive: true,
    },
];

/// The release a new server comes with; what a render for an unknown host assumes (preflight refuses it).
pub const NEWEST: Release = SUPPORTED[SUPPORTED.len() - 1];

impl Release {
    /// The supported release the host's os-release names, or why it is not one.
    pub fn of(facts: &Facts) -> Result<Release, String> {
        let found = SUPPORTED.iter().find(|r| {
            facts.os_id == "debian"
                && (facts.os_version_id == r.version
                    || (facts.os_version_id.is_empty() && facts.os_codename == r.codename))
        });
        found.copied().ok_or_else(|| {
            let name = match (facts.os_id.as_str(), facts.os_version_id.as_str()) {
                ("", _) => "an unknown system (no ID in /etc/os-release)".to_string(),
                // Debian testing/sid has a codename but no VERSION_ID.
                (id, "") => format!("{id} {}", facts.os_codename),
                (id, v) => format!("{id} {v}"),
            };
            format!(
                "this host runs {name}; matrix-provision supports {}. Install one of those (a new \
                 server: Debian {})",
                supported_list(),
                NEWEST.version
            )
        })
    }

    /// The host's release; [`NEWEST`] when it is unsupported, so a plan still renders and preflight can say why.
    pub fn of_host(sys: &dyn System) -> Release {
        Release::of(&sys.facts()).unwrap_or(NEWEST)
    }

    /// The cluster Synapse's database lives in, as postgresql-common names it.
    pub fn postgres_cluster(&self) -> String {
        format!("{}/main", self.postgres)
    }

    /// systemd's unit for that cluster (postgresql.service only fans out to it).
    pub fn postgres_unit(&self) -> String {
        crate::layout::postgres_cluster_unit(self)
    }
}

/// "Debian 12 (bookworm) and Debian 13 (trixie)".
pub fn supported_list() -> String {
    let names: Vec<String> = SUPPORTED
        .iter()
        .map(|r| format!("Debian {} ({})", r.version, r.codename))
        .collect();
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The exact procedure for a host upgraded in place whose Synapse data is still in an older cluster.
/// `new_exists` says whether the release's own N/main exists already (postgresql-common creates none on a
/// host that has a cluster, but an admin may have made one): it has to go first, or pg_upgradecluster refuses.
pub fn postgres_upgrade_procedure(old: &str, new: &Release, new_exists: bool) -> String {
    let mut steps = Vec::new();
    if new_exists {
        steps.push(format!(
            "pg_dropcluster --stop {} main   # the EMPTY cluster the upgrade created; check first: \
             sudo -u postgres psql -p <its port> -l lists no synapse database",
            new.postgres
        ));
    }
    steps.push(format!(
        "pg_upgradecluster {old} main   # copies {old}/main into a new {}/main on {old}'s port",
        new.postgres
    ));
    steps.push(format!(
        "pg_dropcluster {old} main   # only after Synapse works on {}",
        new.postgres
    ));
    steps.push(format!(
        "apt purge postgresql-{old}   # its binaries; Debian {} no longer updates them",
        new.version
    ));
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| format!("  {}. sudo {s}", i + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(id: &str, version: &str, codename: &str) -> Facts {
        Facts {
            ram_mb: 4096,
            cpus: 2,
            var_free_mb: 50_000,
            os_id: id.into(),
            os_version_id: version.into(),
            os_codename: codename.into(),
            is_root: true,
            addresses: Vec::new(),
        }
    }

    #[test]
    fn both_releases_come_from_os_release() {
        let r12 = Release::of(&facts("debian", "12", "bookworm")).unwrap();
        assert_eq!(
            (r12.codename, r12.postgres_unit().as_str()),
            ("bookworm", "postgresql@15-main")
        );
        let r13 = Release::of(&facts("debian", "13", "trixie")).unwrap();
        assert_eq!(r13.postgres_cluster(), "17/main");
        assert_eq!(r13.python, "python3.13");
        assert_eq!(NEWEST, r13);
    }

    #[test]
    fn other_systems_are_refused_naming_the_supported_ones() {
        for (id, v, c, shown) in [
            ("debian", "11", "bullseye", "debian 11"),
            ("debian", "", "forky", "debian forky"),
            ("ubuntu", "24.04", "noble", "ubuntu 24.04"),
            ("", "", "", "unknown system"),
        ] {
            let err = Release::of(&facts(id, v, c)).unwrap_err();
            assert!(err.contains(shown), "{err}");
            assert!(
                err.contains("Debian 12 (bookworm) and Debian 13 (trixie)"),
                "{err}"
            );
        }
    }

    #[test]
    fn upgrade_procedure_drops_the_empty_cluster_first() {
        let p = postgres_upgrade_procedure("15", &NEWEST, true);
        let lines: Vec<&str> = p.lines().collect();
        assert!(lines[0].contains("pg_dropcluster --stop 17 main"), "{p}");
        assert!(lines[1].contains("pg_upgradecluster 15 main"), "{p}");
        assert!(lines[2].contains("pg_dropcluster 15 main"), "{p}");
        let p = postgres_upgrade_procedure("15", &NEWEST, false);
        assert!(p
            .lines()
            .next()
            .unwrap()
            .contains("pg_upgradecluster 15 main"));
    }
}
