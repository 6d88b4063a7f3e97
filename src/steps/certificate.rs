//! TLS certificates from an ACME CA through certbot's webroot (HTTP-01) plugin: nginx already serves the
//! challenge directory on port 80, so the first run works before any TLS vhost exists. certbot owns
//! issuance and renewal (its timer); we only ask for a lineage that is missing or bound to another CA.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::engine::{Change, Ctx, ExpectedCert, ExpectedState, Step};
use crate::system::{run_ok, Cmd};

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
    fn live(&self, file: &str) -> PathBuf {
        Path::new("/etc/letsencrypt/live")
            .join(&self.name)
            .join(file)
    }
    fn renewal(&self) -> PathBuf {
        Path::new("/etc/letsencrypt/renewal").join(format!("{}.conf", self.name))
    }
}

/// `server = …` from a certbot renewal config.
fn renewal_server(conf: &str) -> Option<&str> {
    conf.lines()
        .find_map(|l| l.trim().strip_prefix("server"))
        .and_then(|rest| rest.trim_start().strip_prefix('='))
        .map(str::trim)
}

impl Step for CertificateStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        let have_cert = ctx.sys.stat(&self.live("fullchain.pem"))?.is_some()
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
        if change.kind == crate::engine::ChangeKind::Modify && !renew_if_due {
            // Another CA issued the current one (e.g. staging → production): replace it now.
            cmd = cmd.arg("--force-renewal");
        } else {
            cmd = cmd.arg("--keep-until-expiring");
        }
        if let Some(ca) = &acme.ca_bundle {
            cmd = cmd.env("REQUESTS_CA_BUNDLE", ca.clone());
        }
        run_ok(ctx.sys, &cmd).map_err(|e| {
            anyhow::anyhow!(
                "{e:#}\ncertbot could not get a certificate for {}: check that its DNS points at this host and port 80 is reachable from the internet",
                self.name
            )
        })?;
        Ok(())
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
    Path::new("/etc/letsencrypt/renewal").join(format!("{name}.conf"))
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
