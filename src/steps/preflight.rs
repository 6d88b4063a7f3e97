//! Preflight: facts that must hold before anything is touched. A failure here skips every other step.
//! DNS problems are warnings (the admin may be about to switch DNS); the rest are errors.

use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::engine::{Change, Ctx, Step};
use crate::release::{postgres_upgrade_procedure, Release};
use crate::system::{Cmd, FileKind};

pub struct PreflightStep {
    pub server_name: String,
    pub names: Vec<String>,
    /// TCP ports nginx must be free to take (80, 443, 8448).
    pub ports: Vec<u16>,
    pub dry_run: bool,
}

impl PreflightStep {
    fn os_and_root(&self, ctx: &Ctx) -> Result<()> {
        let f = ctx.sys.facts();
        if let Err(why) = Release::of(&f) {
            bail!(why);
        }
        if !f.is_root && !self.dry_run {
            bail!("apply must run as root (sudo matrix-provision apply …)");
        }
        if f.var_free_mb < 2048 {
            ctx.warn(format!(
                "only {} MB free under /var: Synapse's media and database need room to grow",
                f.var_free_mb
            ));
        }
        if f.ram_mb < 1024 {
            ctx.warn(format!(
                "only {} MB of RAM: Synapse with PostgreSQL wants at least 1 GB",
                f.ram_mb
            ));
        }
        Ok(())
    }

    /// Who listens on our ports? Anything but nginx there means nginx could never bind them.
    fn ports_free(&self, ctx: &Ctx) -> Result<()> {
        let out = ctx
            .sys
            .run(&Cmd::new("ss").args(["-H", "-l", "-t", "-n", "-p"]))?;
        for line in out.stdout.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let Some(local) = f.get(3) else { continue };
            let Some(port) = local.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            if !self.ports.contains(&port) {
                continue;
            }
            let process = f.get(5).copied().unwrap_or("");
            if !process.contains("\"nginx\"") {
                let who = process.split('"').nth(1).unwrap_or("an unknown process");
                bail!("port {port} is taken by {who}; nginx needs it for Matrix. Stop and disable {who} (or move it), then run again");
            }
        }
        Ok(())
    }

    /// Changing server_name after Synapse made its signing key and database would orphan every account.
    fn server_name_guard(&self, ctx: &Ctx) -> Result<()> {
        let Some(current) = ctx
            .sys
            .read(Path::new(crate::layout::SYNAPSE_SERVER_NAME_YAML))?
        else {
            return Ok(());
        };
        let current = String::from_utf8_lossy(&current);
        let Some(name) = current
            .lines()
            .find_map(|l| l.strip_prefix("server_name:"))
            .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        else {
            return Ok(());
        };
        if name == self.server_name {
            return Ok(());
        }
        let has_key = ctx
            .sys
            .stat(Path::new(crate::layout::SYNAPSE_SIGNING_KEY))?
            .is_some();
        let has_db = ctx
            .sys
            .stat(Path::new(crate::layout::SYNAPSE_SQLITE_DB))?
            .is_some()
            || ctx
                .sys
                .run(&crate::system::psql(
                    ctx.sys,
                    "SELECT 1 FROM pg_database WHERE datname = 'synapse';",
                ))
                .map(|o| o.stdout.trim() == "1")
                .unwrap_or(false);
        if has_key && has_db {
            bail!(
                "server_name: this host's Synapse already serves `{name}` (it has a signing key and a database); \
                 a Matrix server name can never change. Write server_name = \"{name}\" in host.toml, \
                 or wipe Synapse's data first if you really mean to start over"
            );
        }
        Ok(())
    }

    /// A host upgraded in place (12 → 13) still serves Synapse's data from the old release's cluster while
    /// the new PostgreSQL is installed beside it (with no cluster, or an empty one an admin made). Going on would
    /// tune the wrong cluster and, once the old one is gone, start Synapse on an empty database: stop and
    /// say exactly how to move the data (postgresql-common's pg_upgradecluster). An old cluster that no
    /// longer holds the default port (pg_upgradecluster moved it aside) is only a reminder.
    fn postgres_upgrade_guard(&self, ctx: &Ctx) -> Result<()> {
        if ctx.sys.stat(Path::new("/usr/bin/pg_lsclusters"))?.is_none() {
            return Ok(());
        }
        let release = Release::of_host(ctx.sys);
        // pg_lsclusters (Perl, the slowest look of a converged run) finds clusters in POSTGRES_CONFIG_DIR/<version>/:
        // with no version there but this release's, there is no old cluster to find.
        let versions = ctx
            .sys
            .list_dir(Path::new(crate::layout::POSTGRES_CONFIG_DIR))?
            .unwrap_or_default();
        if !versions.iter().any(|(v, kind)| {
            v != release.postgres && matches!(kind, FileKind::Dir | FileKind::Symlink)
        }) {
            return Ok(());
        }
        let out = ctx.sys.run(&Cmd::new("pg_lsclusters").arg("--no-header"))?;
        if !out.ok() {
            bail!("pg_lsclusters failed: {}", out.tail());
        }
        // Ver Cluster Port Status Owner Data-directory Log-file
        let clusters: Vec<(String, String, String)> = out
            .stdout
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3).then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string()))
            })
            .collect();
        let new_exists = clusters
            .iter()
            .any(|(v, c, _)| v == release.postgres && c == "main");
        for (version, cluster, port) in &clusters {
            if version == release.postgres {
                continue;
            }
            if port == "5432" {
                bail!(
                    "PostgreSQL {version}/{cluster} (port 5432, where Synapse's database is) is from an older \
                     Debian release: this host was upgraded in place and Debian {} uses PostgreSQL {} ({}). \
                     apply stops here so it neither tunes the wrong cluster nor starts Synapse on an empty \
                     database. Move the data with postgresql-common (as root), then run apply again:\n{}",
                    release.version,
                    release.postgres,
                    release.postgres_cluster(),
                    postgres_upgrade_procedure(version, &release, new_exists)
                );
            }
            ctx.warn(format!(
                "PostgreSQL {version}/{cluster} (port {port}) is still there beside {}: once Synapse works, \
                 `pg_dropcluster {version} {cluster}` and `apt purge postgresql-{version}`",
                release.postgres_cluster()
            ));
        }
        Ok(())
    }

    /// Resolve every name, all at once, giving up after two seconds: a warning, never an error.
    fn dns(&self, ctx: &Ctx) {
        let (tx, rx) = mpsc::channel();
        for name in &self.names {
            let (tx, name) = (tx.clone(), name.clone());
            std::thread::spawn(move || {
                let ok = (name.as_str(), 443)
                    .to_socket_addrs()
                    .map(|mut a| a.next().is_some())
                    .unwrap_or(false);
                let _ = tx.send((name, ok));
            });
        }
        drop(tx);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut answered = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok((name, ok)) => {
                    if !ok {
                        ctx.warn(format!("DNS: {name} does not resolve; certificates and federation need it to point at this host"));
                    }
                    answered.push(name);
                }
                Err(_) => break,
            }
        }
        for name in self.names.iter().filter(|n| !answered.contains(n)) {
            ctx.warn(format!("DNS: no answer for {name} within 2 s"));
        }
    }
}

impl Step for PreflightStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        self.os_and_root(ctx)?;
        self.ports_free(ctx)?;
        self.server_name_guard(ctx)?;
        self.postgres_upgrade_guard(ctx)?;
        self.dns(ctx);
        Ok(Change::in_sync())
    }

    fn apply(&self, _ctx: &Ctx, _change: &Change) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretStore;
    use crate::system::FakeSystem;

    fn step() -> PreflightStep {
        PreflightStep {
            server_name: "example.com".into(),
            names: vec![],
            ports: vec![80, 443, 8448],
            dry_run: false,
        }
    }

    #[test]
    fn apache_on_port_80_is_named() {
        let sys = FakeSystem::new();
        sys.on_cmd("ss", 0, "LISTEN 0 511 0.0.0.0:80 0.0.0.0:* users:((\"apache2\",pid=812,fd=4))\nLISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:((\"sshd\",pid=1,fd=3))\n");
        let secrets = SecretStore::new();
        let err = step()
            .check(&Ctx::new(&sys, &secrets))
            .unwrap_err()
            .to_string();
        assert!(err.contains("port 80 is taken by apache2"), "{err}");
    }

    #[test]
    fn nginx_on_its_ports_and_other_distros() {
        let mut sys = FakeSystem::new();
        sys.on_cmd(
            "ss",
            0,
            "LISTEN 0 511 0.0.0.0:443 0.0.0.0:* users:((\"nginx\",pid=9,fd=6))\n",
        );
        let secrets = SecretStore::new();
        assert!(step()
            .check(&Ctx::new(&sys, &secrets))
            .unwrap()
            .is_in_sync());
        for version in crate::release::SUPPORTED.iter().map(|r| r.version) {
            sys.facts.os_version_id = version.into();
            assert!(step()
                .check(&Ctx::new(&sys, &secrets))
                .unwrap()
                .is_in_sync());
        }
        sys.facts.os_version_id = "11".into();
        let err = step()
            .check(&Ctx::new(&sys, &secrets))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("debian 11") && err.contains(&crate::release::supported_list()),
            "{err}"
        );
    }

    /// The old cluster on 5432 with the data and an empty new one beside it (the procedure drops that first).
    #[test]
    fn upgraded_host_stops_with_the_pg_upgradecluster_procedure() {
        let sys = FakeSystem::new();
        let (old, new) = (crate::release::SUPPORTED[0], crate::release::NEWEST);
        sys.on_cmd("ss", 0, "");
        sys.put("/usr/bin/pg_lsclusters", "");
        sys.put(
            &format!("/etc/postgresql/{}/main/postgresql.conf", old.postgres),
            "",
        );
        sys.put(
            &format!("/etc/postgresql/{}/main/postgresql.conf", new.postgres),
            "",
        );
        sys.on_cmd(
            "pg_lsclusters",
            0,
            &format!(
                "{o} main 5432 online postgres /var/lib/postgresql/{o}/main /var/log/postgresql/postgresql-{o}-main.log\n\
                 {n} main 5433 online postgres /var/lib/postgresql/{n}/main /var/log/postgresql/postgresql-{n}-main.log\n",
                o = old.postgres,
                n = new.postgres
            ),
        );
        let secrets = SecretStore::new();
        let err = step()
            .check(&Ctx::new(&sys, &secrets))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&postgres_upgrade_procedure(old.postgres, &new, true)),
            "{err}"
        );
        assert!(err.contains("upgraded in place"), "{err}");

        // After pg_upgradecluster the old cluster moved aside: a reminder, not an error.
        sys.on_cmd(
            "pg_lsclusters",
            0,
            &format!(
                "{o} main 5433 down postgres /var/lib/postgresql/{o}/main x\n{n} main 5432 online postgres /var/lib/postgresql/{n}/main x\n",
                o = old.postgres,
                n = new.postgres
            ),
        );
        let ctx = Ctx::new(&sys, &secrets);
        assert!(step().check(&ctx).unwrap().is_in_sync());
    }

    /// Only this release's PostgreSQL under /etc/postgresql: no old cluster can exist, so no Perl runs.
    #[test]
    fn a_host_with_only_this_releases_postgresql_skips_pg_lsclusters() {
        let sys = FakeSystem::new();
        let new = crate::release::NEWEST;
        sys.on_cmd("ss", 0, "");
        sys.put("/usr/bin/pg_lsclusters", "");
        sys.put(
            &format!("/etc/postgresql/{}/main/postgresql.conf", new.postgres),
            "",
        );
        sys.on_cmd("pg_lsclusters", 0, "11 main 5432 online postgres /x /y\n");
        let secrets = SecretStore::new();
        assert!(step()
            .check(&Ctx::new(&sys, &secrets))
            .unwrap()
            .is_in_sync());
        assert!(!sys
            .commands()
            .iter()
            .any(|c| c.starts_with("pg_lsclusters")));
    }

    #[test]
    fn server_name_cannot_change_once_synapse_has_key_and_database() {
        let sys = FakeSystem::new();
        sys.on_cmd("ss", 0, "");
        sys.on_cmd("setpriv --reuid=postgres", 0, "1\n");
        sys.put(
            "/etc/matrix-synapse/conf.d/server_name.yaml",
            "# debconf\nserver_name: old.example\n",
        );
        let secrets = SecretStore::new();
        sys.put(
            "/etc/matrix-synapse/homeserver.signing.key",
            "ed25519 a_x y",
        );
        let err = step()
            .check(&Ctx::new(&sys, &secrets))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("old.example") && err.contains("never change"),
            "{err}"
        );
    }
}
