//! TLS certificates from an ACME CA through certbot's webroot (HTTP-01) plugin: nginx already serves the
//! challenge directory on port 80, so the first run works before any TLS vhost exists. certbot owns
//! issuance and renewal (its timer); we only ask for a lineage that is missing or bound to another CA.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::engine::{Change, Ctx, ExpectedCert, ExpectedState, Step};
use crate::system::Cmd;

pub struct CertificateStep {
    pub name: String,
    /// None: ACME is off and the admin provides the files at the certbot paths.
    pub acme: Option<Acme>,
}

pub struct Acme {
    pub email: String,
    pub directory_url: String,
    pub ca_bundle: Option<String>,
    pub webroot: PathBuf,
}

impl CertificateStep {
    fn live_dir(&self) -> PathBuf {
        Path::new(crate::layout::LETSENCRYPT_LIVE).join(&self.name)
    }
    fn live(&self, file: &str) -> PathBuf {
        self.live_dir().join(file)
    }
    fn renewal(&self) -> PathBuf {
        Path::new(crate::layout::LETSENCRYPT_RENEWAL).join(format!("{}.conf", self.name))
    }
    fn archive(&self) -> PathBuf {
        Path::new(crate::layout::LETSENCRYPT_ARCHIVE).join(&self.name)
    }
    /// What certbot keeps of the lineage: its renewal conf, live and archive directories.
    fn pieces(&self) -> [PathBuf; 3] {
        [self.renewal(), self.live_dir(), self.archive()]
    }
    /// The pieces of a lineage that is not whole: certbot killed while creating it leaves an empty
    /// renewal conf or a live directory without one. certbot itself then refuses the name or makes a
    /// second lineage `NAME-0001` beside it, so the broken pieces are moved aside before asking again.
    fn broken_pieces(&self, ctx: &Ctx) -> Result<Vec<PathBuf>> {
        let whole = ctx.sys.read(&self.live("fullchain.pem"))?.is_some()
            && ctx.sys.stat(&self.live("privkey.pem"))?.is_some()
            && ctx
                .sys
                .read(&self.renewal())?
                .is_some_and(|c| renewal_server(&String::from_utf8_lossy(&c)).is_some());
        if whole {
            return Ok(Vec::new());
        }
        let mut present = Vec::new();
        for piece in self.pieces() {
            if ctx.sys.stat(&piece)?.is_some() {
                present.push(piece);
            }
        }
        Ok(present)
    }
}

/// What certbot says when another instance holds one of its locks.
const CERTBOT_BUSY: &str = "Another instance of Certbot is already running";
/// certbot's own run (a renewal of a few names) takes seconds to a minute; ten minutes means it hangs.
const CERTBOT_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// `server = …` from a certbot renewal config.
fn renewal_server(conf: &str) -> Option<&str> {
    conf.lines()
        .find_map(|l| l.trim().strip_prefix("server"))
        .and_then(|rest| rest.trim_start().strip_prefix('='))
        .map(str::trim)
}

impl Step for CertificateStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        let have_cert = ctx.sys.read(&self.live("fullchain.pem"))?.is_some()
            && ctx.sys.stat(&self.live("privkey.pem"))?.is_some();
        let Some(acme) = &self.acme else {
            if have_cert {
                return Ok(Change::in_sync());
            }
            bail!(
                "acme.enabled = false but {} is missing: install the certificate for {} there (fullchain.pem, privkey.pem) or set acme.enabled = true",
                self.live("fullchain.pem").display(),
                self.name
            );
        };
        let conf = ctx
            .sys
            .read(&self.renewal())?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let want = format!(
            "request certificate for {} from {} (HTTP-01, webroot)",
            self.name, acme.directory_url
        );
        let broken = self.broken_pieces(ctx)?;
        if !broken.is_empty() {
            let list: Vec<String> = broken.iter().map(|p| p.display().to_string()).collect();
            return Ok(Change::modify(format!(
                "{want}; an interrupted certbot left this lineage incomplete: {} moved aside (renamed *.mp-broken-TIME)",
                list.join(", ")
            )));
        }
        match conf {
            Some(c) if have_cert && autorenew_off(&c) => Ok(Change::modify(format!(
                "renew the certificate for {} again (take `{AUTORENEW_OFF}` out of {}, which an edge in front had put there; renewed now if due)",
                self.name,
                self.renewal().display()
            ))),
            Some(c) if have_cert => match renewal_server(&c) {
                Some(s) if s == acme.directory_url => Ok(Change::in_sync()),
                other => Ok(Change::modify(format!(
                    "{want}; the current one came from {}",
                    other.unwrap_or("an unknown CA")
                ))),
            },
            _ => Ok(Change::create(want)),
        }
    }

    fn apply(&self, ctx: &Ctx, change: &Change) -> Result<()> {
        let Some(acme) = &self.acme else {
            bail!("no ACME configured for {}", self.name);
        };
        let broken = self.broken_pieces(ctx)?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        for piece in &broken {
            // Same directory, a name certbot does not read (it loads renewal/*.conf only).
            let mut aside = piece.clone().into_os_string();
            aside.push(format!(".mp-broken-{stamp}"));
            ctx.sys.rename(piece, Path::new(&aside))?;
        }
        let mut renew_if_due = false;
        if let Some(conf) = ctx.sys.read(&self.renewal())? {
            let conf = String::from_utf8_lossy(&conf);
            if autorenew_off(&conf) {
                rewrite_renewal(ctx, &self.renewal(), &with_autorenew(&conf, false))?;
                renew_if_due = true;
            }
        }
        let mut cmd = Cmd::new("certbot").args([
            "certonly",
            "--non-interactive",
            "--agree-tos",
            "--no-eff-email",
            "--webroot",
            "-w",
        ]);
        cmd = cmd.arg(acme.webroot.display().to_string()).args([
            "-d",
            &self.name,
            "--cert-name",
            &self.name,
            "-m",
            &acme.email,
            "--server",
            &acme.directory_url,
        ]);
        if change.kind == crate::engine::ChangeKind::Modify && broken.is_empty() && !renew_if_due {
            // Another CA issued the current one (e.g. staging → production): replace it now.
            cmd = cmd.arg("--force-renewal");
        } else {
            cmd = cmd.arg("--keep-until-expiring");
        }
        if let Some(ca) = &acme.ca_bundle {
            cmd = cmd.env("REQUESTS_CA_BUNDLE", ca.clone());
        }
        // certbot runs one instance at a time: its timer's renewal, or the certbot of an apply that was
        // killed, may hold the lock. Wait for it (bounded) instead of failing the run.
        let start = std::time::Instant::now();
        let mut pause = super::service::backoff();
        loop {
            super::wait_for_locks(
                ctx,
                &crate::layout::CERTBOT_LOCKS,
                CERTBOT_WAIT.saturating_sub(start.elapsed()),
                "certbot",
            )?;
            let out = ctx.sys.run(&cmd)?;
            let busy = out.stderr.contains(CERTBOT_BUSY) || out.stdout.contains(CERTBOT_BUSY);
            if !out.ok() && busy && start.elapsed() < CERTBOT_WAIT {
                std::thread::sleep(pause.next().unwrap_or_default());
                continue;
            }
            if !out.ok() {
                bail!(
                    "`{}` exited with status {}:\n{}\ncertbot could not get a certificate for {}: check that its DNS points at this host and port 80 is reachable from the internet",
                    cmd.display(),
                    out.status,
                    out.tail(),
                    self.name
                );
            }
            return Ok(());
        }
    }

    fn expect(&self, state: &mut ExpectedState) {
        state.certificates.push(ExpectedCert {
            name: self.name.clone(),
            cert: self.live("cert.pem"),
        });
        if self.acme.is_some() {
            // certbot's own timer renews what this step requested.
            state.unit("certbot.timer", None);
        }
    }
}

/// A lineage a direct host had, on a host now behind an edge: nothing serves it and nothing would answer
/// certbot's HTTP-01 challenge, so `certbot renew` would fail on it twice a day. It stays on disk (a switch
/// back to direct mode needs no new issuance, and no rate limit can bite) with `autorenew = False` in its
/// renewal configuration, which `certbot renew` honours; [`CertificateStep`] takes that line out again.
pub struct UnusedCertificateStep {
    pub name: String,
}

const AUTORENEW_OFF: &str = "autorenew = False";

fn renewal_conf(name: &str) -> PathBuf {
    Path::new(crate::layout::LETSENCRYPT_RENEWAL).join(format!("{name}.conf"))
}

/// Whether a renewal configuration turns automatic renewal off (`autorenew = False` in [renewalparams]).
fn autorenew_off(conf: &str) -> bool {
    conf.lines().any(|l| {
        l.trim()
            .strip_prefix("autorenew")
            .and_then(|r| r.trim_start().strip_prefix('='))
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
    })
}

/// The configuration with `autorenew` set as wanted: the line added under `[renewalparams]`, or removed.
fn with_autorenew(conf: &str, off: bool) -> String {
    let mut out = String::with_capacity(conf.len() + 20);
    for line in conf.lines() {
        if line.trim().starts_with("autorenew") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if off && line.trim() == "[renewalparams]" {
            out.push_str(AUTORENEW_OFF);
            out.push('\n');
        }
    }
    out
}

/// Rewrite a renewal configuration in place, keeping its owner and mode (certbot's 0644 root).
fn rewrite_renewal(ctx: &Ctx, path: &Path, text: &str) -> Result<()> {
    let stat = ctx
        .sys
        .stat(path)?
        .ok_or_else(|| anyhow::anyhow!("{} disappeared", path.display()))?;
    let spec = crate::system::FileSpec {
        path: path.to_path_buf(),
        uid: stat.uid,
        gid: stat.gid,
        mode: stat.mode,
    };
    ctx.sys.write(&spec, text.as_bytes())
}

impl Step for UnusedCertificateStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        let Some(conf) = ctx.sys.read(&renewal_conf(&self.name))? else {
            return Ok(Change::in_sync());
        };
        let conf = String::from_utf8_lossy(&conf);
        if autorenew_off(&conf) || !conf.lines().any(|l| l.trim() == "[renewalparams]") {
            return Ok(Change::in_sync());
        }
        Ok(Change::modify(format!(
            "stop renewing the unused certificate {} ({AUTORENEW_OFF} in {}; the lineage stays for a switch back)",
            self.name,
            renewal_conf(&self.name).display()
        )))
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        let path = renewal_conf(&self.name);
        let Some(conf) = ctx.sys.read(&path)? else {
            return Ok(());
        };
        rewrite_renewal(
            ctx,
            &path,
            &with_autorenew(&String::from_utf8_lossy(&conf), true),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step() -> CertificateStep {
        CertificateStep {
            name: "matrix.example.test".into(),
            acme: Some(Acme {
                email: "admin@example.test".into(),
                directory_url: "https://acme.example.test/dir".into(),
                ca_bundle: None,
                webroot: "/var/www/letsencrypt".into(),
            }),
        }
    }

    #[test]
    fn waits_for_another_certbot_then_runs() {
        use crate::secrets::SecretStore;
        use crate::system::{CmdOutput, FakeSystem};
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let sys = FakeSystem::new();
        // The orphaned certbot of a killed run holds a lock for two probes, then the next certbot
        // started in between still finds one running once.
        sys.locks.lock().unwrap().insert(
            "/var/lib/letsencrypt/.certbot.lock".into(),
            vec![4242, 4242],
        );
        let runs = Arc::new(AtomicUsize::new(0));
        let seen = runs.clone();
        sys.on(move |c| {
            (c.program == "certbot").then(|| {
                let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
                CmdOutput {
                    status: if first { 1 } else { 0 },
                    stdout: String::new(),
                    stderr: if first {
                        format!("{CERTBOT_BUSY}.\n")
                    } else {
                        String::new()
                    },
                }
            })
        });
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        step().apply(&ctx, &Change::create("certificate")).unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert!(sys.locks.lock().unwrap().values().all(|h| h.is_empty()));
    }

    #[test]
    fn other_certbot_failures_are_not_retried() {
        use crate::secrets::SecretStore;
        use crate::system::FakeSystem;
        let sys = FakeSystem::new();
        sys.on_cmd(
            "certbot",
            1,
            "Challenge failed for domain matrix.example.test",
        );
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let err = step()
            .apply(&ctx, &Change::create("certificate"))
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("Challenge failed"), "{msg}");
        assert!(msg.contains("port 80 is reachable"), "{msg}");
        assert_eq!(
            sys.commands()
                .iter()
                .filter(|c| c.starts_with("certbot"))
                .count(),
            1
        );
    }

    #[test]
    fn a_lineage_left_half_made_is_moved_aside_and_requested_anew() {
        use crate::secrets::SecretStore;
        use crate::system::FakeSystem;
        let sys = FakeSystem::new();
        // certbot killed after creating the renewal conf (empty) and the live links.
        sys.put("/etc/letsencrypt/renewal/matrix.example.test.conf", "");
        sys.put(
            "/etc/letsencrypt/live/matrix.example.test/fullchain.pem",
            "cert",
        );
        sys.put(
            "/etc/letsencrypt/live/matrix.example.test/privkey.pem",
            "key",
        );
        sys.put(
            "/etc/letsencrypt/archive/matrix.example.test/fullchain1.pem",
            "cert",
        );
        sys.on_cmd("certbot", 0, "");
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let change = step().check(&ctx).unwrap();
        assert!(change.summary.contains("incomplete"), "{}", change.summary);
        step().apply(&ctx, &change).unwrap();
        assert_eq!(
            sys.get("/etc/letsencrypt/renewal/matrix.example.test.conf"),
            None
        );
        assert_eq!(
            sys.get("/etc/letsencrypt/live/matrix.example.test/fullchain.pem"),
            None
        );
        assert_eq!(
            sys.get("/etc/letsencrypt/archive/matrix.example.test/fullchain1.pem"),
            None
        );
        let runs = sys.commands();
        let certbot = runs.iter().find(|c| c.starts_with("certbot")).unwrap();
        // A fresh request, not a forced renewal of the broken lineage.
        assert!(certbot.contains("--keep-until-expiring"), "{certbot}");
        // A whole lineage from this CA is left alone.
        sys.put(
            "/etc/letsencrypt/renewal/matrix.example.test.conf",
            "[renewalparams]\nserver = https://acme.example.test/dir\n",
        );
        sys.put(
            "/etc/letsencrypt/live/matrix.example.test/fullchain.pem",
            "cert",
        );
        sys.put(
            "/etc/letsencrypt/live/matrix.example.test/privkey.pem",
            "key",
        );
        assert!(step().check(&ctx).unwrap().kind == crate::engine::ChangeKind::InSync);
    }

    #[test]
    fn reads_the_server_of_a_renewal_conf() {
        let conf = "version = 2.1.0\narchive_dir = /etc/letsencrypt/archive/x\n[renewalparams]\naccount = abc\nserver = https://localhost:14000/dir\nauthenticator = webroot\n";
        assert_eq!(renewal_server(conf), Some("https://localhost:14000/dir"));
        assert_eq!(renewal_server("version = 1\n"), None);
    }

    const CONF: &str = "version = 2.1.0\narchive_dir = /etc/letsencrypt/archive/x\n[renewalparams]\naccount = abc\nserver = https://localhost:14000/dir\nauthenticator = webroot\n";

    #[test]
    fn autorenew_goes_in_and_out_under_renewalparams() {
        let off = with_autorenew(CONF, true);
        assert!(
            off.contains("[renewalparams]\nautorenew = False\naccount = abc\n"),
            "{off}"
        );
        assert!(autorenew_off(&off) && !autorenew_off(CONF));
        assert_eq!(with_autorenew(&off, false), CONF);
        assert_eq!(renewal_server(&off), Some("https://localhost:14000/dir"));
    }

    /// Behind an edge the lineage stays but is not renewed; back in direct mode it is renewed again.
    #[test]
    fn an_unused_lineage_stops_renewing_and_a_direct_host_takes_it_back() {
        use crate::secrets::SecretStore;
        use crate::system::FakeSystem;
        let sys = FakeSystem::new();
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let unused = UnusedCertificateStep {
            name: "matrix.example.com".into(),
        };
        assert!(
            unused.check(&ctx).unwrap().is_in_sync(),
            "no lineage: nothing to do"
        );
        sys.put("/etc/letsencrypt/renewal/matrix.example.com.conf", CONF);
        sys.put(
            "/etc/letsencrypt/live/matrix.example.com/fullchain.pem",
            "x",
        );
        sys.put("/etc/letsencrypt/live/matrix.example.com/privkey.pem", "x");
        let change = unused.check(&ctx).unwrap();
        assert!(change.summary.contains("stop renewing"), "{change:?}");
        unused.apply(&ctx, &change).unwrap();
        assert!(unused.check(&ctx).unwrap().is_in_sync());
        assert!(sys
            .get("/etc/letsencrypt/live/matrix.example.com/privkey.pem")
            .is_some());

        sys.on_cmd("certbot certonly", 0, "Certificate not yet due for renewal");
        let direct = CertificateStep {
            name: "matrix.example.com".into(),
            acme: Some(Acme {
                email: "a@example.com".into(),
                directory_url: "https://localhost:14000/dir".into(),
                ca_bundle: None,
                webroot: "/var/www/letsencrypt".into(),
            }),
        };
        let change = direct.check(&ctx).unwrap();
        assert!(change.summary.contains("again"), "{change:?}");
        direct.apply(&ctx, &change).unwrap();
        let ran = sys.commands();
        assert!(
            ran.iter()
                .any(|c| c.contains("--keep-until-expiring") && !c.contains("--force-renewal")),
            "{ran:?}"
        );
        assert_eq!(
            sys.get("/etc/letsencrypt/renewal/matrix.example.com.conf")
                .unwrap(),
            CONF
        );
        assert!(direct.check(&ctx).unwrap().is_in_sync());
    }
}
