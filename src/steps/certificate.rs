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
        Path::new(crate::layout::LETSENCRYPT_LIVE)
            .join(&self.name)
            .join(file)
    }
    fn renewal(&self) -> PathBuf {
        Path::new(crate::layout::LETSENCRYPT_RENEWAL).join(format!("{}.conf", self.name))
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
        if change.kind == crate::engine::ChangeKind::Modify {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_server_of_a_renewal_conf() {
        let conf = "version = 2.1.0\narchive_dir = /etc/letsencrypt/archive/x\n[renewalparams]\naccount = abc\nserver = https://localhost:14000/dir\nauthenticator = webroot\n";
        assert_eq!(renewal_server(conf), Some("https://localhost:14000/dir"));
        assert_eq!(renewal_server("version = 1\n"), None);
    }
}
