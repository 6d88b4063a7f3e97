//! What `[metrics]` needs beyond files and units: an htpasswd file holding only a hash of a secret, the
//! PostgreSQL role the exporter logs in as, and removing what we installed once metrics are turned off.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::file::Owner;
use crate::engine::{Change, Ctx, Step};
use crate::system::{owner_ids, psql, run_ok, FileKind, FileSpec};

/// `user:$6$salt$hash`, one line, for nginx's auth_basic_user_file (glibc's crypt(3) checks SHA-512 crypt).
/// The hash is made once with a random salt; a file whose hash still matches the secret is left alone,
/// so reruns change nothing and the secret itself never reaches the disk here.
pub struct HtpasswdStep {
    pub path: PathBuf,
    pub user: String,
    pub secret: String,
    pub owner: Owner,
}

impl HtpasswdStep {
    fn matches(&self, ctx: &Ctx, current: &[u8]) -> Result<bool> {
        let password = ctx
            .secrets
            .get(&self.secret)
            .with_context(|| format!("secret `{}` was not loaded", self.secret))?;
        let text = String::from_utf8_lossy(current);
        let mut lines = text.lines();
        let (Some(line), None) = (lines.next(), lines.next()) else {
            return Ok(false);
        };
        Ok(line.split_once(':').is_some_and(|(u, hash)| {
            u == self.user && sha_crypt::sha512_check(password.expose(), hash).is_ok()
        }))
    }
}

impl Step for HtpasswdStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        let path = self.path.display();
        match ctx.sys.read(&self.path)? {
            None => Ok(Change::create(format!(
                "write {path} (user {}, hash of secret `{}`)",
                self.user, self.secret
            ))),
            Some(b) if !self.matches(ctx, &b)? => Ok(Change::modify(format!(
                "rewrite {path}: its hash is not of secret `{}`",
                self.secret
            ))),
            Some(_) => {
                let stat = ctx
                    .sys
                    .stat(&self.path)?
                    .context("vanished while checking")?;
                let ids = owner_ids(ctx.sys, &self.owner.user, &self.owner.group)?;
                if (stat.uid, stat.gid, stat.mode) == (ids.0, ids.1, self.owner.mode) {
                    Ok(Change::in_sync())
                } else {
                    Ok(Change::modify(format!(
                        "fix owner/mode of {path} to {}",
                        self.owner.describe()
                    )))
                }
            }
        }
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        let ids = owner_ids(ctx.sys, &self.owner.user, &self.owner.group)?;
        if let Some(b) = ctx.sys.read(&self.path)? {
            if self.matches(ctx, &b)? {
                return ctx.sys.chown_chmod(&self.path, ids, self.owner.mode);
            }
        }
        let password = ctx
            .secrets
            .get(&self.secret)
            .with_context(|| format!("secret `{}` was not loaded", self.secret))?;
        let params = sha_crypt::Sha512Params::new(sha_crypt::ROUNDS_DEFAULT)
            .map_err(|e| anyhow::anyhow!("sha512-crypt parameters: {e:?}"))?;
        let hash = sha_crypt::sha512_simple(password.expose(), &params)
            .map_err(|e| anyhow::anyhow!("hashing secret `{}`: {e:?}", self.secret))?;
        let spec = FileSpec {
            path: self.path.clone(),
            uid: ids.0,
            gid: ids.1,
            mode: self.owner.mode,
        };
        ctx.sys
            .write(&spec, format!("{}:{hash}\n", self.user).as_bytes())
    }
}

/// A PostgreSQL role that logs in without a password (peer authentication over the local socket maps
/// the OS user of the same name to it) and is a member of `member_of`, e.g. the exporter's role in
/// pg_monitor. `present = false` drops it again (it owns nothing), but only while `marker` (a file of
/// ours that came with it) exists: a role of that name the admin made is theirs.
pub struct PostgresRoleStep {
    pub role: String,
    pub member_of: Vec<String>,
    pub present: bool,
    pub marker: Option<PathBuf>,
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl Step for PostgresRoleStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        if let (false, Some(m)) = (self.present, &self.marker) {
            if ctx.sys.stat(m)?.is_none() {
                return Ok(Change::in_sync());
            }
        }
        let mut sql = format!(
            "SELECT 'role|' || rolcanlogin FROM pg_roles WHERE rolname = {};\n",
            literal(&self.role)
        );
        for group in &self.member_of {
            sql.push_str(&format!(
                "SELECT 'member|' || {g} FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid WHERE r.rolname = {r} AND g.rolname = {g};\n",
                r = literal(&self.role),
                g = literal(group)
            ));
        }
        let out = run_ok(ctx.sys, &psql(ctx.sys, &sql))?;
        let lines: Vec<&str> = out.stdout.lines().collect();
        let exists = lines.iter().any(|l| l.starts_with("role|"));
        if !self.present {
            return Ok(if exists {
                Change::run(format!("drop role {}", self.role))
            } else {
                Change::in_sync()
            });
        }
        let mut todo = Vec::new();
        if !exists {
            todo.push(format!("create role {} (login, no password)", self.role));
        } else if !lines.contains(&"role|true") {
            todo.push(format!("let role {} log in", self.role));
        }
        for g in &self.member_of {
            if !lines.contains(&format!("member|{g}").as_str()) {
                todo.push(format!("grant {g} to {}", self.role));
            }
        }
        if todo.is_empty() {
            return Ok(Change::in_sync());
        }
        Ok(Change::run(todo.join(", ")))
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        let role = ident(&self.role);
        let sql = if self.present {
            let mut sql = format!(
                "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {}) THEN CREATE ROLE {role} LOGIN; END IF; END$$;\nALTER ROLE {role} LOGIN;\n",
                literal(&self.role)
            );
            for g in &self.member_of {
                sql.push_str(&format!("GRANT {} TO {role};\n", ident(g)));
            }
            sql
        } else {
            format!("DROP ROLE IF EXISTS {role};\n")
        };
        run_ok(ctx.sys, &psql(ctx.sys, &sql))?;
        Ok(())
    }
}

/// A file or symlink matrix-provision once wrote that host.toml no longer wants (a drop-in, a rule file).
/// Only these paths, each named in a playbook, are removed; a directory there is the admin's and stops
/// the run. The last contents stay under the backup directory, like every file we replace.
pub struct AbsentStep {
    pub path: PathBuf,
    /// Also remove its directory once empty (a drop-in's `<unit>.d/`, which only we made).
    pub prune_dir: bool,
    /// Remove only a file that carries our "Managed by matrix-provision" header (a rendered config;
    /// another one at that path is the admin's and stays, with an error saying so).
    pub only_managed: bool,
}

impl AbsentStep {
    fn ours(&self, ctx: &Ctx) -> Result<bool> {
        crate::steps::workers::ours(ctx, &self.path)
    }
    /// The parent directory when it is to go: pruning asked for and nothing else left in it.
    fn empty_dir(&self, ctx: &Ctx) -> Result<Option<PathBuf>> {
        let Some(dir) = self.path.parent().filter(|_| self.prune_dir) else {
            return Ok(None);
        };
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        Ok(match ctx.sys.list_dir(dir)? {
            Some(entries) if entries.iter().all(|(n, _)| Some(n) == name.as_ref()) => {
                Some(dir.to_path_buf())
            }
            _ => None,
        })
    }
}

impl Step for AbsentStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        match ctx.sys.stat(&self.path)? {
            None => Ok(match self.empty_dir(ctx)? {
                Some(dir) => Change::modify(format!("remove empty directory {}", dir.display())),
                None => Change::in_sync(),
            }),
            Some(s) if s.kind == FileKind::File && self.only_managed && !self.ours(ctx)? => bail!(
                "{} is not a file matrix-provision wrote (no \"{}\" line); remove it yourself if it should go",
                self.path.display(),
                crate::steps::workers::MANAGED
            ),
            Some(s) if s.kind == FileKind::File || s.kind == FileKind::Symlink => {
                Ok(Change::modify(format!("remove {}", self.path.display())))
            }
            Some(_) => bail!(
                "{} is not a file; remove it yourself if it should go (we never remove an admin's directory)",
                self.path.display()
            ),
        }
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        if let (Some(stat), Some(old)) = (ctx.sys.stat(&self.path)?, ctx.sys.read(&self.path)?) {
            if stat.kind == FileKind::File {
                let name = self.path.display().to_string();
                let backup = ctx
                    .sys
                    .backup_dir()
                    .join(format!("{}.removed", name.trim_start_matches('/')));
                if let Some(dir) = backup.parent() {
                    ctx.sys.mkdir(dir, (0, 0), 0o700)?;
                }
                let spec = FileSpec {
                    path: backup,
                    uid: 0,
                    gid: 0,
                    mode: 0o600,
                };
                ctx.sys.write(&spec, &old)?;
            }
        }
        if ctx.sys.stat(&self.path)?.is_some() {
            ctx.sys.remove(&self.path)?;
        }
        match self.empty_dir(ctx)? {
            Some(dir) => ctx.sys.remove_tree(&dir),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretStore;
    use crate::system::{FakeSystem, System};

    fn htpasswd() -> HtpasswdStep {
        HtpasswdStep {
            path: "/etc/nginx/p.htpasswd".into(),
            user: "metrics".into(),
            secret: "ui".into(),
            owner: Owner::root(0o640),
        }
    }

    #[test]
    fn htpasswd_holds_a_hash_that_verifies_and_stays() {
        let sys = FakeSystem::new();
        let mut secrets = SecretStore::new();
        sys.put("/s/ui", "s3cret-password");
        secrets.load(&sys, "ui", "/s/ui".as_ref()).unwrap();
        let ctx = Ctx::new(&sys, &secrets);
        let step = htpasswd();
        let c = step.check(&ctx).unwrap();
        assert!(c.summary.starts_with("write"), "{c:?}");
        step.apply(&ctx, &c).unwrap();
        let text = String::from_utf8(sys.read(&step.path).unwrap().unwrap()).unwrap();
        assert!(text.starts_with("metrics:$6$"), "{text}");
        assert!(!text.contains("s3cret-password"));
        assert!(step.check(&ctx).unwrap().is_in_sync());
        // Another password (the secret was replaced): the file is rewritten.
        let mut other = SecretStore::new();
        sys.put("/s/ui", "another-password");
        other.load(&sys, "ui", "/s/ui".as_ref()).unwrap();
        let ctx = Ctx::new(&sys, &other);
        assert!(step.check(&ctx).unwrap().summary.starts_with("rewrite"));
    }

    #[test]
    fn absent_removes_a_file_keeps_a_copy_and_refuses_a_directory() {
        let sys = FakeSystem::new();
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let step = AbsentStep {
            path: "/etc/x/drop.conf".into(),
            prune_dir: false,
            only_managed: false,
        };
        assert!(step.check(&ctx).unwrap().is_in_sync());
        sys.put("/etc/x/drop.conf", "old");
        let c = step.check(&ctx).unwrap();
        step.apply(&ctx, &c).unwrap();
        assert!(sys.read(&step.path).unwrap().is_none());
        let kept = sys.backup_dir().join("etc/x/drop.conf.removed");
        assert_eq!(sys.read(&kept).unwrap().unwrap(), b"old");
        assert!(step.check(&ctx).unwrap().is_in_sync());
        sys.mkdir(&step.path, (0, 0), 0o755).unwrap();
        assert!(step.check(&ctx).is_err());
    }

    #[test]
    fn absent_drop_in_takes_its_empty_directory_along_but_not_a_shared_one() {
        let sys = FakeSystem::new();
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let step = AbsentStep {
            path: "/etc/systemd/system/p.service.d/matrix-provision.conf".into(),
            prune_dir: true,
            only_managed: false,
        };
        sys.put("/etc/systemd/system/p.service.d/matrix-provision.conf", "x");
        sys.put("/etc/systemd/system/p.service.d/admin.conf", "mine");
        let c = step.check(&ctx).unwrap();
        step.apply(&ctx, &c).unwrap();
        assert!(sys
            .get("/etc/systemd/system/p.service.d/admin.conf")
            .is_some());
        assert!(step.check(&ctx).unwrap().is_in_sync());
        sys.remove("/etc/systemd/system/p.service.d/admin.conf".as_ref())
            .unwrap();
        // Only our empty directory left (a run killed after the file went): removed next time.
        let c = step.check(&ctx).unwrap();
        assert_eq!(
            c.summary,
            "remove empty directory /etc/systemd/system/p.service.d"
        );
        step.apply(&ctx, &c).unwrap();
        assert!(sys
            .stat("/etc/systemd/system/p.service.d".as_ref())
            .unwrap()
            .is_none());
        assert!(step.check(&ctx).unwrap().is_in_sync());
    }

    #[test]
    fn unit_off_only_while_our_marker_exists() {
        let sys = FakeSystem::new();
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        sys.on_cmd(
            "systemctl show",
            0,
            "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\n",
        );
        let marker = "/etc/systemd/system/prometheus.service.d/matrix-provision.conf";
        let step = crate::steps::service::DisabledStep {
            unit: "prometheus".into(),
            only_if: Some(marker.into()),
        };
        // The admin's own Prometheus (no drop-in of ours): left running.
        assert!(step.check(&ctx).unwrap().is_in_sync());
        sys.put(marker, "x");
        assert_eq!(
            step.check(&ctx).unwrap().summary,
            "stop and disable prometheus"
        );
    }

    #[test]
    fn role_is_created_granted_and_dropped() {
        let sys = FakeSystem::new();
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        sys.on_cmd("setpriv --reuid=postgres", 0, "");
        let step = PostgresRoleStep {
            role: "prometheus".into(),
            member_of: vec!["pg_monitor".into()],
            present: true,
            marker: Some("/etc/mine".into()),
        };
        let c = step.check(&ctx).unwrap();
        assert_eq!(
            c.summary,
            "create role prometheus (login, no password), grant pg_monitor to prometheus"
        );
        sys.on_cmd(
            "setpriv --reuid=postgres",
            0,
            "role|true\nmember|pg_monitor\n",
        );
        assert!(step.check(&ctx).unwrap().is_in_sync());
        let gone = PostgresRoleStep {
            present: false,
            ..step
        };
        // Without our marker the role is not ours to drop.
        assert!(gone.check(&ctx).unwrap().is_in_sync());
        sys.put("/etc/mine", "x");
        assert_eq!(gone.check(&ctx).unwrap().summary, "drop role prometheus");
    }
}
