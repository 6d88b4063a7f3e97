//! Files, directories and symlinks: compare the host with the wanted state, write through the atomic writer.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::engine::{
    self, Change, Ctx, Detail, ExpectedFile, ExpectedKind, ExpectedState, FileOwner, Step,
};
use crate::system::{owner_ids, Cmd, FileKind, FileSpec};

/// Who owns a file: names, resolved to ids only when needed (the account may come with a package later).
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    pub user: String,
    pub group: String,
    pub mode: u32,
}

impl Owner {
    pub fn root(mode: u32) -> Owner {
        Owner {
            user: "root".into(),
            group: "root".into(),
            mode,
        }
    }
    /// "user:group" or "user" (group = user).
    pub fn parse(owner: &str, mode: &str) -> Result<Owner> {
        let (user, group) = owner.split_once(':').unwrap_or((owner, owner));
        let mode = u32::from_str_radix(mode.trim_start_matches("0o"), 8)
            .with_context(|| format!("mode `{mode}` is not octal (write e.g. \"0640\")"))?;
        Ok(Owner {
            user: user.into(),
            group: group.into(),
            mode,
        })
    }
    pub fn describe(&self) -> String {
        format!("{}:{} {:04o}", self.user, self.group, self.mode)
    }
    pub fn to_expected(&self) -> FileOwner {
        FileOwner {
            user: self.user.clone(),
            group: self.group.clone(),
            mode: self.mode,
        }
    }
}

/// A whole file whose contents we decide (rendered template or copied source).
pub struct FileStep {
    pub path: PathBuf,
    pub owner: Owner,
    pub contents: Contents,
    /// Never show a diff, even if no known secret appears in it (private keys, certificates' keys).
    pub sensitive: bool,
    /// The service's own config test, run with the new file in place; a rejection puts the old one back.
    pub validate: Option<Cmd>,
}

pub enum Contents {
    Fixed(Vec<u8>),
    /// Same bytes as another host file (e.g. a certificate copied for a service user).
    CopyOf(PathBuf),
}

impl FileStep {
    fn wanted(&self, ctx: &Ctx) -> Result<Vec<u8>> {
        match &self.contents {
            Contents::Fixed(b) => Ok(b.clone()),
            Contents::CopyOf(src) => ctx
                .sys
                .read(src)?
                .with_context(|| format!("{} does not exist yet", src.display())),
        }
    }
}

impl Step for FileStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        let wanted = self.wanted(ctx)?;
        let current = ctx.sys.read(&self.path)?;
        let path = self.path.display();
        let Some(current) = current else {
            let change = Change::create(format!("write {path} ({})", self.owner.describe()));
            return Ok(change.with_detail(self.diff(ctx, b"", &wanted)));
        };
        if current != wanted {
            let change = Change::modify(format!("update {path}"));
            return Ok(change.with_detail(self.diff(ctx, &current, &wanted)));
        }
        metadata_change(ctx, &self.path, &self.owner)
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        let ids = owner_ids(ctx.sys, &self.owner.user, &self.owner.group)?;
        let wanted = self.wanted(ctx)?;
        if ctx.sys.read(&self.path)?.as_deref() == Some(wanted.as_slice()) {
            // Only owner or mode drifted: keep the file, fix its metadata.
            return ctx.sys.chown_chmod(&self.path, ids, self.owner.mode);
        }
        let spec = FileSpec {
            path: self.path.clone(),
            uid: ids.0,
            gid: ids.1,
            mode: self.owner.mode,
        };
        let previous = self.previous(ctx)?;
        ctx.sys.write(&spec, &wanted)?;
        validate_or_restore(
            ctx,
            self.validate.as_ref(),
            &self.path,
            || match &previous {
                Some((spec, old)) => ctx.sys.write(spec, old).map(|()| PUT_BACK),
                None => ctx.sys.remove(&self.path).map(|()| REMOVED),
            },
        )
    }

    fn expect(&self, state: &mut ExpectedState) {
        state.files.push(ExpectedFile {
            path: self.path.clone(),
            kind: ExpectedKind::File {
                owner: self.owner.to_expected(),
                contents: Some(match &self.contents {
                    Contents::Fixed(b) => engine::Contents::Bytes(b.clone()),
                    Contents::CopyOf(src) => engine::Contents::SameAs(src.clone()),
                }),
            },
        });
    }
}

impl FileStep {
    /// The live file (owner, mode, bytes), to put back if the validator rejects its replacement.
    fn previous(&self, ctx: &Ctx) -> Result<Option<(FileSpec, Vec<u8>)>> {
        if self.validate.is_none() {
            return Ok(None);
        }
        let (Some(stat), Some(old)) = (ctx.sys.stat(&self.path)?, ctx.sys.read(&self.path)?) else {
            return Ok(None);
        };
        let spec = FileSpec {
            path: self.path.clone(),
            uid: stat.uid,
            gid: stat.gid,
            mode: stat.mode,
        };
        Ok(Some((spec, old)))
    }
}

const PUT_BACK: &str = "the previous version is back in place and still serving";
const REMOVED: &str = "it is removed again, as before this run";

/// Validate before activate. nginx and Synapse judge a whole configuration tree (includes, conf.d), so the
/// candidate is tested where it will live; nothing reloads in between (handlers run later, and apply holds
/// the run lock), and a rejected candidate is replaced by the previous state before the step fails.
fn validate_or_restore(
    ctx: &Ctx,
    validate: Option<&Cmd>,
    path: &Path,
    restore: impl FnOnce() -> Result<&'static str>,
) -> Result<()> {
    let Some(v) = validate else {
        return Ok(());
    };
    // Steps writing one service's config side by side share a check that sees all their files; a
    // rejection then fails (and puts back) each of them, the guilty one named in the validator's message.
    let out = ctx.sys.run_shared(v);
    let rejection = match &out {
        Ok(o) if o.ok() => return Ok(()),
        Ok(o) => format!(
            "exited with status {}:\n{}",
            o.status,
            ctx.secrets.redact(&o.tail())
        ),
        Err(e) => format!("could not run: {e:#}"),
    };
    let restored = match restore() {
        Ok(what) => what.to_string(),
        Err(e) => format!(
            "restoring the previous version failed too ({e:#}); see {}",
            crate::layout::BACKUP_DIR
        ),
    };
    bail!(
        "`{}` rejects the configuration with the new {} ({restored}); fix the input and run again. The validator {rejection}",
        v.display(),
        path.display()
    )
}

impl FileStep {
    fn diff(&self, ctx: &Ctx, old: &[u8], new: &[u8]) -> Detail {
        let is_binary = |b: &[u8]| b.contains(&0) || std::str::from_utf8(b).is_err();
        if is_binary(old) || is_binary(new) {
            return Detail::Items {
                items: vec![format!(
                    "binary file: {} bytes -> {} bytes",
                    old.len(),
                    new.len()
                )],
            };
        }
        let old = String::from_utf8_lossy(old);
        let new = String::from_utf8_lossy(new);
        let diff = similar::TextDiff::from_lines(old.as_ref(), new.as_ref());
        if self.sensitive || ctx.secrets.appears_in(&old) || ctx.secrets.appears_in(&new) {
            let lines_changed = diff
                .iter_all_changes()
                .filter(|c| c.tag() != similar::ChangeTag::Equal)
                .count();
            return Detail::Redacted { lines_changed };
        }
        let path = self.path.display().to_string();
        Detail::Diff {
            text: diff
                .unified_diff()
                .context_radius(3)
                .header(&path, &path)
                .to_string(),
        }
    }
}

/// Owner and mode of an existing path; resolving names fails only if the account is truly missing.
fn metadata_change(ctx: &Ctx, path: &Path, owner: &Owner) -> Result<Change> {
    let stat = ctx
        .sys
        .stat(path)?
        .with_context(|| format!("{} vanished while checking", path.display()))?;
    let (uid, gid) = owner_ids(ctx.sys, &owner.user, &owner.group)?;
    if (stat.uid, stat.gid, stat.mode) == (uid, gid, owner.mode) {
        return Ok(Change::in_sync());
    }
    Ok(Change::modify(format!(
        "fix owner/mode of {} to {} (now {}:{} {:04o})",
        path.display(),
        owner.describe(),
        stat.uid,
        stat.gid,
        stat.mode
    )))
}

pub struct DirStep {
    pub path: PathBuf,
    pub owner: Owner,
}

impl Step for DirStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        match ctx.sys.stat(&self.path)? {
            None => Ok(Change::create(format!(
                "create directory {} ({})",
                self.path.display(),
                self.owner.describe()
            ))),
            Some(s) if s.kind != FileKind::Dir => anyhow::bail!(
                "{} exists but is not a directory; move it away and run again",
                self.path.display()
            ),
            Some(_) => metadata_change(ctx, &self.path, &self.owner),
        }
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        let ids = owner_ids(ctx.sys, &self.owner.user, &self.owner.group)?;
        ctx.sys.mkdir(&self.path, ids, self.owner.mode)
    }

    fn expect(&self, state: &mut ExpectedState) {
        state.files.push(ExpectedFile {
            path: self.path.clone(),
            kind: ExpectedKind::Dir {
                owner: self.owner.to_expected(),
            },
        });
    }
}

pub struct SymlinkStep {
    pub link: PathBuf,
    pub target: PathBuf,
    /// As for [`FileStep`]: enabling a vhost changes nginx's configuration as much as writing one.
    pub validate: Option<Cmd>,
}

impl Step for SymlinkStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        let summary = format!("link {} -> {}", self.link.display(), self.target.display());
        match ctx.sys.stat(&self.link)? {
            None => Ok(Change::create(summary)),
            Some(s) if s.kind == FileKind::Symlink => {
                if ctx.sys.read_link(&self.link)?.as_deref() == Some(self.target.as_path()) {
                    Ok(Change::in_sync())
                } else {
                    Ok(Change::modify(summary))
                }
            }
            Some(_) => anyhow::bail!(
                "{} exists and is not a symlink; move it away (we never overwrite an admin's file)",
                self.link.display()
            ),
        }
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        let previous = match self.validate {
            Some(_) => ctx.sys.read_link(&self.link)?,
            None => None,
        };
        ctx.sys.symlink(&self.target, &self.link)?;
        validate_or_restore(
            ctx,
            self.validate.as_ref(),
            &self.link,
            || match &previous {
                Some(old) => ctx.sys.symlink(old, &self.link).map(|()| PUT_BACK),
                None => ctx.sys.remove(&self.link).map(|()| REMOVED),
            },
        )
    }

    fn expect(&self, state: &mut ExpectedState) {
        state.files.push(ExpectedFile {
            path: self.link.clone(),
            kind: ExpectedKind::Symlink {
                target: self.target.clone(),
            },
        });
    }
}

/// A symlink that must not exist, such as a package's site enabled by default. Only a link pointing
/// where the package put it is removed (the Debian way to disable a site: the file it points to, a
/// conffile, stays untouched); anything else there is the admin's and stops the run.
pub struct UnlinkStep {
    pub link: PathBuf,
    pub target: PathBuf,
}

impl Step for UnlinkStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        match ctx.sys.stat(&self.link)? {
            None => Ok(Change::in_sync()),
            Some(s)
                if s.kind == FileKind::Symlink
                    && ctx.sys.read_link(&self.link)?.as_deref() == Some(self.target.as_path()) =>
            {
                Ok(Change::modify(format!(
                    "remove link {} -> {}",
                    self.link.display(),
                    self.target.display()
                )))
            }
            Some(_) => anyhow::bail!(
                "{} is not the package's link to {}; remove it yourself if it should go (we never remove an admin's file)",
                self.link.display(),
                self.target.display()
            ),
        }
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        ctx.sys.remove(&self.link)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretStore;
    use crate::system::FakeSystem;
    use crate::system::System;

    fn step(path: &str, text: &str) -> FileStep {
        FileStep {
            path: path.into(),
            owner: Owner::root(0o644),
            contents: Contents::Fixed(text.as_bytes().to_vec()),
            sensitive: false,
            validate: None,
        }
    }

    #[test]
    fn unlink_removes_only_the_packages_link() {
        let sys = FakeSystem::new();
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let s = UnlinkStep {
            link: "/etc/nginx/sites-enabled/default".into(),
            target: "/etc/nginx/sites-available/default".into(),
        };
        assert!(
            s.check(&ctx).unwrap().is_in_sync(),
            "no link: nothing to do"
        );
        let me = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        sys.mkdir(Path::new("/etc/nginx/sites-enabled"), me, 0o755)
            .unwrap();
        sys.symlink(Path::new("/etc/nginx/sites-available/default"), &s.link)
            .unwrap();
        let c = s.check(&ctx).unwrap();
        assert_eq!(c.kind, crate::engine::ChangeKind::Modify);
        s.apply(&ctx, &c).unwrap();
        assert!(s.check(&ctx).unwrap().is_in_sync());
        assert!(sys.stat(&s.link).unwrap().is_none());

        // The admin's own link or file stays, and the step says why it stops.
        sys.symlink(Path::new("/etc/nginx/sites-available/mine"), &s.link)
            .unwrap();
        let err = s.check(&ctx).unwrap_err().to_string();
        assert!(err.contains("not the package's link"), "{err}");
        sys.remove(&s.link).unwrap();
        sys.put("/etc/nginx/sites-enabled/default", "server {}\n");
        assert!(s.check(&ctx).is_err());
    }

    #[test]
    fn create_then_in_sync_and_diff_on_modify() {
        let sys = FakeSystem::new();
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let s = step("/etc/x.conf", "a\nb\n");
        let c = s.check(&ctx).unwrap();
        assert_eq!(c.kind, crate::engine::ChangeKind::Create);
        s.apply(&ctx, &c).unwrap();
        assert!(s.check(&ctx).unwrap().is_in_sync());
        let s2 = step("/etc/x.conf", "a\nc\n");
        let c2 = s2.check(&ctx).unwrap();
        assert_eq!(c2.kind, crate::engine::ChangeKind::Modify);
        match c2.detail {
            Detail::Diff { text } => {
                assert!(text.contains("-b\n") && text.contains("+c\n"), "{text}")
            }
            other => panic!("expected a diff, got {other:?}"),
        }
    }

    #[test]
    fn mode_drift_is_fixed_without_rewriting() {
        let sys = FakeSystem::new();
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let s = step("/etc/x.conf", "a\n");
        s.apply(&ctx, &s.check(&ctx).unwrap()).unwrap();
        sys.chown_chmod(
            Path::new("/etc/x.conf"),
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            ),
            0o666,
        )
        .unwrap();
        let c = s.check(&ctx).unwrap();
        assert!(c.summary.starts_with("fix owner"), "{}", c.summary);
        s.apply(&ctx, &c).unwrap();
        assert!(s.check(&ctx).unwrap().is_in_sync());
    }

    #[test]
    fn files_holding_a_secret_are_redacted() {
        let sys = FakeSystem::new();
        let mut secrets = SecretStore::new();
        secrets.load(&sys, "db", Path::new("/s/db")).unwrap();
        let value = secrets.get("db").unwrap().expose().to_string();
        let ctx = Ctx::new(&sys, &secrets);
        let s = step("/etc/db.yaml", &format!("password: {value}\n"));
        let c = s.check(&ctx).unwrap();
        assert_eq!(c.detail, Detail::Redacted { lines_changed: 1 });
        assert!(!serde_json::to_string(&c).unwrap().contains(&value));
    }

    #[test]
    fn symlink_is_created_and_never_replaces_a_real_file() {
        let sys = FakeSystem::new();
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let s = SymlinkStep {
            link: "/etc/nginx/sites-enabled/a".into(),
            target: "/etc/nginx/sites-available/a".into(),
            validate: None,
        };
        sys.put("/etc/nginx/sites-enabled/.keep", "");
        s.apply(&ctx, &s.check(&ctx).unwrap()).unwrap();
        assert!(s.check(&ctx).unwrap().is_in_sync());
        sys.put("/etc/nginx/sites-enabled/b", "admin's own");
        let b = SymlinkStep {
            link: "/etc/nginx/sites-enabled/b".into(),
            target: "/x".into(),
            validate: None,
        };
        assert!(b.check(&ctx).is_err());
    }

    fn nginx_rejects(sys: &FakeSystem, bad: &'static str) {
        // Like nginx -t: only what nginx.conf includes counts (conf.d, sites-enabled), not sites-available.
        let included = [
            sys.path("/etc/nginx/conf.d"),
            sys.path("/etc/nginx/sites-enabled"),
        ];
        sys.on(move |c| {
            (c.program == "nginx").then(|| {
                let found = included
                    .iter()
                    .flat_map(|d| walk(d))
                    .any(|t| t.contains(bad));
                crate::system::CmdOutput {
                    status: i32::from(found),
                    stdout: String::new(),
                    stderr: if found {
                        format!("nginx: [emerg] unknown directive \"{bad}\"")
                    } else {
                        String::new()
                    },
                }
            })
        });
    }

    fn walk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else if let Ok(t) = std::fs::read_to_string(&p) {
                out.push(t);
            }
        }
        out
    }

    fn validated(path: &str, text: &str) -> FileStep {
        FileStep {
            validate: Some(Cmd::new("nginx").args(["-t", "-q"])),
            ..step(path, text)
        }
    }

    #[test]
    fn a_rejected_file_is_rolled_back_and_the_step_names_the_validator() {
        let sys = FakeSystem::new();
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        nginx_rejects(&sys, "bogus");
        let path = "/etc/nginx/conf.d/a.conf";
        let good = validated(path, "server { listen 80; }\n");
        good.apply(&ctx, &good.check(&ctx).unwrap()).unwrap();
        sys.chown_chmod(
            Path::new(path),
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            ),
            0o640,
        )
        .unwrap();

        let bad = validated(path, "server { bogus; }\n");
        let c = bad.check(&ctx).unwrap();
        let err = format!("{:#}", bad.apply(&ctx, &c).unwrap_err());
        assert!(
            err.contains("nginx -t -q") && err.contains("unknown directive \"bogus\""),
            "{err}"
        );
        assert!(err.contains("previous version is back"), "{err}");
        assert_eq!(sys.get(path).unwrap(), "server { listen 80; }\n");
        let mode = sys.stat(Path::new(path)).unwrap().unwrap().mode;
        assert_eq!(mode, 0o640, "the old file's mode comes back with it");
    }

    #[test]
    fn a_rejected_new_file_is_removed_and_an_accepted_one_stays() {
        let sys = FakeSystem::new();
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        nginx_rejects(&sys, "bogus");
        let bad = validated("/etc/nginx/conf.d/new.conf", "bogus;\n");
        let err = format!(
            "{:#}",
            bad.apply(&ctx, &bad.check(&ctx).unwrap()).unwrap_err()
        );
        assert!(err.contains("removed again"), "{err}");
        assert_eq!(sys.get("/etc/nginx/conf.d/new.conf"), None);
        let ok = validated("/etc/nginx/conf.d/new.conf", "gzip on;\n");
        ok.apply(&ctx, &ok.check(&ctx).unwrap()).unwrap();
        assert!(ok.check(&ctx).unwrap().is_in_sync());
        assert!(sys.commands().iter().any(|c| c == "nginx -t -q"));
    }

    #[test]
    fn enabling_a_rejected_vhost_is_undone() {
        let sys = FakeSystem::new();
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        nginx_rejects(&sys, "bogus");
        sys.put("/etc/nginx/sites-available/old.conf", "server {}\n");
        sys.put("/etc/nginx/sites-available/new.conf", "bogus;\n");
        sys.put("/etc/nginx/sites-enabled/.keep", "");
        let link = |target: &str| SymlinkStep {
            link: "/etc/nginx/sites-enabled/x.conf".into(),
            target: target.into(),
            validate: Some(Cmd::new("nginx").args(["-t", "-q"])),
        };
        let old = link("../sites-available/old.conf");
        old.apply(&ctx, &old.check(&ctx).unwrap()).unwrap();
        let new = link("../sites-available/new.conf");
        let c = new.check(&ctx).unwrap();
        let err = format!("{:#}", new.apply(&ctx, &c).unwrap_err());
        assert!(err.contains("bogus"), "{err}");
        assert_eq!(
            sys.read_link(Path::new("/etc/nginx/sites-enabled/x.conf"))
                .unwrap()
                .unwrap(),
            PathBuf::from("../sites-available/old.conf")
        );
    }

    /// Fragments written at once (no exclusive resource between them) are judged by shared validator runs:
    /// fewer runs than files, each run started after the writes it answers for.
    #[test]
    fn fragments_written_side_by_side_share_validator_runs_and_a_rejection_puts_back_all_that_shared_it(
    ) {
        let sys = FakeSystem::new();
        let secrets = SecretStore::new();
        nginx_rejects(&sys, "bogus");
        // Slow, like Synapse's check: the other writers arrive while the first run is under way.
        sys.on(|c| {
            (c.program == "nginx" && c.args == ["-t", "-q", "slow"]).then(|| {
                std::thread::sleep(std::time::Duration::from_millis(150));
                crate::system::CmdOutput::default()
            })
        });
        let slow = |path: &str, text: &str| FileStep {
            validate: Some(Cmd::new("nginx").args(["-t", "-q", "slow"])),
            ..step(path, text)
        };
        let steps: Vec<FileStep> = (0..6)
            .map(|k| slow(&format!("/etc/nginx/conf.d/{k}.conf"), "gzip on;\n"))
            .collect();
        std::thread::scope(|s| {
            for st in &steps {
                let ctx = Ctx::new(&sys, &secrets);
                s.spawn(move || st.apply(&ctx, &st.check(&ctx).unwrap()).unwrap());
            }
        });
        let runs = sys
            .commands()
            .iter()
            .filter(|c| *c == "nginx -t -q slow")
            .count();
        // One check each would be 6; sharing makes it 2 unless the machine stalls a writer for a whole run.
        assert!(runs < 6, "{runs} validator runs for 6 files");
        let ctx = Ctx::new(&sys, &secrets);
        assert!(steps.iter().all(|st| st.check(&ctx).unwrap().is_in_sync()));

        // The same validator (nginx -t -q, quick) judging a bad file and good ones at once.
        let sys = FakeSystem::new();
        nginx_rejects(&sys, "bogus");
        let texts = ["gzip on;\n", "bogus;\n", "gzip off;\n"];
        let steps: Vec<FileStep> = texts
            .iter()
            .enumerate()
            .map(|(k, t)| validated(&format!("/etc/nginx/conf.d/{k}.conf"), t))
            .collect();
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let running: Vec<_> = steps
                .iter()
                .map(|st| {
                    let ctx = Ctx::new(&sys, &secrets);
                    s.spawn(move || st.apply(&ctx, &st.check(&ctx).unwrap()))
                })
                .collect();
            running.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // The bad one never stays, whoever shared its run; a good one stays only if a run passed with it.
        assert!(results[1].is_err());
        assert_eq!(sys.get("/etc/nginx/conf.d/1.conf"), None);
        for k in [0, 2] {
            assert_eq!(
                results[k].is_ok(),
                sys.get(&format!("/etc/nginx/conf.d/{k}.conf")).is_some()
            );
        }
    }
}
