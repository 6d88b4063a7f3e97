//! Debian packages: dpkg is the authority on what is installed, apt-get installs what is missing in one
//! non-interactive transaction that keeps the admin's conffiles (`--force-confold`).

use anyhow::{bail, Context, Result};

use crate::engine::{Change, Ctx, Step};
use crate::system::{run_ok, Cmd};

pub struct PackagesStep {
    pub names: Vec<String>,
    /// Packages that only a configured repository provides: apt must have a candidate for each before
    /// the transaction starts, or nothing is installed.
    pub require_candidate: Vec<Candidate>,
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
    let start = std::time::Instant::now();
    loop {
        let mut holder = None;
        for lock in DPKG_LOCKS {
            holder = holder.or(ctx.sys.lock_holder(std::path::Path::new(lock))?);
        }
        match holder {
            None => return Ok(()),
            Some(pid) if start.elapsed() >= limit => bail!(
                "another package manager (pid {pid}) has held the dpkg lock for {} s; let it finish (see `ps -p {pid}`) and run again",
                limit.as_secs()
            ),
            Some(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    }
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
            return Ok(Change::in_sync());
        }
        Ok(Change::run(format!("apt-get install {}", missing.join(" "))).with_items(missing))
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
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
        run_ok(
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
        )?;
        Ok(())
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
            .borrow_mut()
            .insert("/var/lib/dpkg/lock-frontend".into(), vec![4242, 4242]);
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let step = PackagesStep {
            names: vec!["nginx".into(), "coturn".into(), "ufw".into()],
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
            sys.locks.borrow()[std::path::Path::new("/var/lib/dpkg/lock-frontend")].is_empty(),
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
}
