//! Debian packages: dpkg is the authority on what is installed, apt-get installs what is missing in one
//! non-interactive transaction that keeps the admin's conffiles (`--force-confold`).

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::engine::{Change, Ctx, Step};
use crate::system::{owner_ids, run_ok, Cmd, FileSpec};

pub struct PackagesStep {
    pub names: Vec<String>,
    /// Services whose packages would start them on install, only for this run to restart them moments
    /// later with its own configuration (Synapse on SQLite first, PostgreSQL before its tuning): their
    /// maintainer scripts' start is held back with a policy-rc.d for the one transaction, and the
    /// handler that follows starts each once.
    pub defer_start: Vec<String>,
    /// Packages that only a configured repository provides: apt must have a candidate for each before
    /// the transaction starts, or nothing is installed.
    pub require_candidate: Vec<Candidate>,
}

/// Debian's hook that invoke-rc.d and deb-systemd-invoke ask before starting anything (exit 101: don't).
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
const POLICY_MARK: &str =
    "# matrix-provision: holds back service starts during its apt-get install";

/// Denies starts of `units` only while the run `pid` is alive, so one killed mid-install leaves a file
/// that allows everything (and the next run removes it).
fn policy_script(pid: u32, units: &[String]) -> String {
    format!(
        "#!/bin/sh\n{POLICY_MARK} (pid {pid})\n\
         grep -q matrix-provision /proc/{pid}/cmdline 2>/dev/null || exit 0\n\
         while [ \"${{1#--}}\" != \"$1\" ]; do shift; done\n\
         case \"${{1%.service}}\" in\n  {}) ;;\n  *) exit 0 ;;\nesac\n\
         case \"$2\" in\n  start|restart|reload|force-reload|try-restart) exit 101 ;;\nesac\n\
         exit 0\n",
        units.join("|")
    )
}

/// Ours, left by a run that was killed during its transaction.
fn stale_policy(ctx: &Ctx) -> Result<bool> {
    Ok(ctx
        .sys
        .read(Path::new(POLICY_RC_D))?
        .is_some_and(|b| String::from_utf8_lossy(&b).contains(POLICY_MARK)))
}

/// `package` must come from the apt source `repo` (suite `suite`) for the host's `release`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    pub package: String,
    pub repo: String,
    pub suite: String,
    pub release: String,
}

impl Candidate {
    fn missing(&self, detail: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{pkg}: the apt repository {repo} offers no {pkg} for {release} (suite `{suite}`): {detail}. \
             Nothing was installed. Check that {repo}/dists/{suite}/ exists and lists {pkg} for amd64 \
             (the repository publishes one suite per Debian release), point sources.matrix_repo_url at \
             a repository that does, or install a Debian release it supports; then run apply again",
            pkg = self.package,
            repo = self.repo.trim_end_matches('/'),
            release = self.release,
            suite = self.suite,
        )
    }
}

/// How long to wait for another apt/dpkg (unattended-upgrades, or the orphan of a killed run) to finish.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(600);
const DPKG_LOCKS: [&str; 2] = ["/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock"];

fn wait_for_dpkg(ctx: &Ctx, limit: std::time::Duration) -> Result<()> {
    super::wait_for_locks(ctx, &DPKG_LOCKS, limit, "package manager")
}

/// Packages of `names` that dpkg does not report as installed ("ii").
pub fn missing(ctx: &Ctx, names: &[String]) -> Result<Vec<String>> {
    let out = ctx.sys.run(
        &Cmd::new("dpkg-query")
            .arg("-W")
            .arg("-f=${Package} ${db:Status-Abbrev}\n")
            .args(names.iter().cloned()),
    )?;
    // dpkg-query exits 1 when some package is unknown; the installed ones are still listed.
    let installed: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, status)| status.starts_with("ii"))
        .map(|(name, _)| name)
        .collect();
    Ok(names
        .iter()
        .filter(|n| !installed.contains(&n.as_str()))
        .cloned()
        .collect())
}

impl Step for PackagesStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        let missing = missing(ctx, &self.names)?;
        if missing.is_empty() {
            if stale_policy(ctx)? {
                return Ok(Change::run(format!(
                    "remove the {POLICY_RC_D} an interrupted run left"
                )));
            }
            return Ok(Change::in_sync());
        }
        Ok(Change::run(format!("apt-get install {}", missing.join(" "))).with_items(missing))
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        if stale_policy(ctx)? {
            ctx.sys.remove(Path::new(POLICY_RC_D))?;
        }
        if missing(ctx, &self.names)?.is_empty() {
            return Ok(());
        }
        wait_for_dpkg(ctx, LOCK_WAIT)?;
        // A run killed during dpkg leaves packages half-configured, and apt refuses to work until they are
        // finished. `dpkg --audit` (read-only) says whether that is the case.
        let audit = run_ok(ctx.sys, &Cmd::new("dpkg").arg("--audit"))?;
        if !audit.stdout.trim().is_empty() {
            run_ok(
                ctx.sys,
                &Cmd::new("dpkg")
                    .args(["--configure", "-a", "--force-confold", "--force-confdef"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )
            .context("finishing an interrupted dpkg run (dpkg --configure -a)")?;
        }
        let missing = missing(ctx, &self.names)?;
        // Wait for unattended-upgrades or an admin's apt instead of failing on the lock.
        let update = ctx.sys.run(&Cmd::new("apt-get").args([
            "update",
            "-q",
            "-o",
            "DPkg::Lock::Timeout=300",
        ]))?;
        // apt-get update exits 0 on some fetch and signature problems; its W:/E: lines tell the truth.
        let problems: Vec<&str> = update
            .stdout
            .lines()
            .chain(update.stderr.lines())
            .filter(|l| {
                l.starts_with("E:")
                    || l.starts_with("W: GPG")
                    || l.contains("NO_PUBKEY")
                    || l.starts_with("Err:")
            })
            .collect();
        if !update.ok() || !problems.is_empty() {
            // A suite the repository does not publish fails here already ("does not have a Release file"
            // or a 404 for its InRelease); a signature problem is not that and keeps apt's own words.
            let no_suite = |c: &Candidate, l: &str| {
                l.contains(c.repo.trim_end_matches('/'))
                    && (l.contains("does not have a Release file") || l.contains("404"))
            };
            for c in &self.require_candidate {
                if let Some(line) = problems.iter().find(|l| no_suite(c, l)) {
                    return Err(c.missing(&format!("apt-get update says `{}`", line.trim())));
                }
            }
            bail!(
                "apt-get update failed: {}\nfix the repository (network, sources.matrix_repo_url, keyring) and run again",
                if problems.is_empty() { update.tail() } else { problems.join("\n") }
            );
        }
        for c in self
            .require_candidate
            .iter()
            .filter(|c| missing.contains(&c.package))
        {
            let policy = run_ok(
                ctx.sys,
                &Cmd::new("apt-cache").args(["policy", c.package.as_str()]),
            )?;
            let candidate = policy
                .stdout
                .lines()
                .find_map(|l| l.trim().strip_prefix("Candidate:"))
                .map(str::trim);
            if matches!(candidate, None | Some("(none)")) {
                return Err(c.missing("apt-cache policy shows no candidate"));
            }
        }
        // An admin's own policy-rc.d (containers have one) is theirs: then the packages start as usual.
        let hold = !self.defer_start.is_empty() && ctx.sys.stat(Path::new(POLICY_RC_D))?.is_none();
        if hold {
            let (uid, gid) = owner_ids(ctx.sys, "root", "root")?;
            let spec = FileSpec {
                path: POLICY_RC_D.into(),
                uid,
                gid,
                mode: 0o755,
            };
            ctx.sys.write(
                &spec,
                policy_script(std::process::id(), &self.defer_start).as_bytes(),
            )?;
        }
        let installed = run_ok(
            ctx.sys,
            &Cmd::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-q",
                    "-o",
                    "Dpkg::Options::=--force-confold",
                    "-o",
                    "Dpkg::Options::=--force-confdef",
                ])
                .args(missing)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .env("NEEDRESTART_MODE", "l"),
        );
        if hold {
            ctx.sys.remove(Path::new(POLICY_RC_D))?;
        }
        installed.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::NEWEST;
    use crate::secrets::SecretStore;
    use crate::system::FakeSystem;

    fn synapse() -> Candidate {
        Candidate {
            package: "matrix-synapse-py3".into(),
            repo: "http://repo".into(),
            suite: NEWEST.codename.into(),
            release: format!("Debian {} ({})", NEWEST.version, NEWEST.codename),
        }
    }

    fn no_synapse_for_this_release(update: &str, policy: &str) -> String {
        let sys = FakeSystem::new();
        sys.on_cmd("dpkg-query", 1, "nginx un \n");
        sys.on_cmd("dpkg --audit", 0, "");
        sys.on_cmd("apt-get update", 0, update);
        sys.on_cmd("apt-cache policy matrix-synapse-py3", 0, policy);
        sys.on_cmd("apt-get install", 0, "");
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let step = PackagesStep {
            names: vec!["nginx".into(), "matrix-synapse-py3".into()],
            defer_start: vec![],
            require_candidate: vec![synapse()],
        };
        let err = step.apply(&ctx, &Change::run("x")).unwrap_err().to_string();
        assert!(
            !sys.commands()
                .iter()
                .any(|c| c.starts_with("apt-get install")),
            "nothing may be installed"
        );
        let release = synapse().release;
        for what in [
            "http://repo",
            &release,
            "sources.matrix_repo_url",
            "Nothing was installed",
        ] {
            assert!(err.contains(what), "{what}: {err}");
        }
        err
    }

    #[test]
    fn a_repository_without_the_release_stops_before_installing() {
        // The suite exists but lists no matrix-synapse-py3 (apt-cache policy: no candidate).
        let err = no_synapse_for_this_release(
            &format!("Hit:1 http://repo {} InRelease\n", NEWEST.codename),
            "matrix-synapse-py3:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n",
        );
        assert!(err.contains("no candidate"), "{err}");
        // apt does not know the package at all: empty output.
        no_synapse_for_this_release("", "");
        // No dists/<codename> at all: apt-get update already fails for that source.
        let err = no_synapse_for_this_release(
            &format!("Err:2 http://repo {c} Release\n  404  Not Found [IP: 127.0.0.1 8099]\nE: The repository 'http://repo {c} Release' does not have a Release file.\n", c = NEWEST.codename),
            "",
        );
        assert!(err.contains("does not have a Release file"), "{err}");
    }

    #[test]
    fn only_missing_packages_are_installed_in_one_transaction() {
        let sys = FakeSystem::new();
        sys.on_cmd("dpkg-query", 1, "nginx ii \ncoturn un \n");
        sys.on_cmd(
            "apt-get update",
            0,
            "Hit:1 http://deb.debian.org/debian stable InRelease\n",
        );
        sys.on_cmd("apt-get install", 0, "");
        sys.on_cmd("dpkg --audit", 0, "");
        sys.on_cmd(
            "apt-cache policy",
            2,
            "must not run: matrix-synapse-py3 is not missing",
        );
        // An apt of someone else's holds the lock for two looks, then finishes.
        sys.locks
            .lock()
            .unwrap()
            .insert("/var/lib/dpkg/lock-frontend".into(), vec![4242, 4242]);
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let step = PackagesStep {
            names: vec!["nginx".into(), "coturn".into(), "ufw".into()],
            defer_start: vec![],
            require_candidate: vec![synapse()],
        };
        let c = step.check(&ctx).unwrap();
        assert_eq!(c.summary, "apt-get install coturn ufw");
        step.apply(&ctx, &c).unwrap();
        let install: Vec<String> = sys
            .commands()
            .into_iter()
            .filter(|c| c.starts_with("apt-get install"))
            .collect();
        assert_eq!(install.len(), 1);
        assert!(
            !sys.commands()
                .iter()
                .any(|c| c.starts_with("dpkg --configure")),
            "nothing was interrupted"
        );
        assert!(
            sys.locks.lock().unwrap()[std::path::Path::new("/var/lib/dpkg/lock-frontend")]
                .is_empty(),
            "waited for the other apt"
        );
        assert!(
            install[0].ends_with("--force-confold -o Dpkg::Options::=--force-confdef coturn ufw"),
            "{}",
            install[0]
        );
    }

    #[test]
    fn a_signature_problem_in_apt_update_stops_before_install() {
        let sys = FakeSystem::new();
        sys.on_cmd("dpkg-query", 1, "");
        // A killed run left a half-configured package: it is finished before apt runs.
        sys.on_cmd(
            "dpkg --audit",
            0,
            "The following packages are only half configured:\n nginx\n",
        );
        sys.on_cmd("dpkg --configure -a", 0, "");
        sys.on_cmd(
            "apt-get update",
            0,
            "W: GPG error: http://repo stable InRelease: The following signatures were invalid: BADSIG\n",
        );
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let step = PackagesStep {
            names: vec!["matrix-synapse-py3".into()],
            defer_start: vec![],
            require_candidate: vec![synapse()],
        };
        let err = step.apply(&ctx, &Change::run("x")).unwrap_err().to_string();
        assert!(
            err.contains("BADSIG") && err.contains("sources.matrix_repo_url"),
            "{err}"
        );
        assert!(!sys
            .commands()
            .iter()
            .any(|c| c.starts_with("apt-get install")));
    }

    #[test]
    fn service_starts_are_held_back_for_the_transaction_only() {
        let sys = std::sync::Arc::new(FakeSystem::new());
        sys.on_cmd("dpkg-query", 1, "");
        sys.on_cmd("dpkg --audit", 0, "");
        sys.on_cmd("apt-get update", 0, "");
        // While apt runs, the hook is in place and names the deferred units.
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let (probe, hook) = (std::sync::Arc::downgrade(&sys), seen.clone());
        sys.on(move |c| {
            (c.program == "apt-get" && c.args[0] == "install").then(|| {
                *hook.lock().unwrap() = probe.upgrade().and_then(|s| s.get(POLICY_RC_D));
                crate::system::CmdOutput::default()
            })
        });
        let secrets = SecretStore::new();
        let ctx = Ctx::new(sys.as_ref(), &secrets);
        let step = PackagesStep {
            names: vec!["matrix-synapse-py3".into(), "postgresql".into()],
            defer_start: vec!["matrix-synapse".into(), "postgresql".into()],
            require_candidate: vec![],
        };
        step.apply(&ctx, &Change::run("x")).unwrap();
        let script = seen
            .lock()
            .unwrap()
            .clone()
            .expect("policy-rc.d during install");
        assert!(script.contains("matrix-synapse|postgresql) ;;"), "{script}");
        assert!(script.contains(&format!("/proc/{}/cmdline", std::process::id())));
        assert!(sys.get(POLICY_RC_D).is_none(), "removed after the install");
    }

    #[test]
    fn a_policy_rc_d_left_by_a_killed_run_is_removed_and_an_admins_own_is_kept() {
        let sys = FakeSystem::new();
        sys.on_cmd("dpkg-query", 0, "nginx ii \n");
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let step = PackagesStep {
            names: vec!["nginx".into()],
            defer_start: vec!["nginx".into()],
            require_candidate: vec![],
        };
        sys.put(POLICY_RC_D, "#!/bin/sh\nexit 101\n");
        assert!(step.check(&ctx).unwrap().is_in_sync(), "the admin's own");
        sys.put(POLICY_RC_D, &policy_script(1, &["nginx".into()]));
        let c = step.check(&ctx).unwrap();
        assert!(c.summary.contains("interrupted run"), "{}", c.summary);
        step.apply(&ctx, &c).unwrap();
        assert!(sys.get(POLICY_RC_D).is_none());
        assert!(step.check(&ctx).unwrap().is_in_sync());
    }
}
