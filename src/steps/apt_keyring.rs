//! The matrix.org archive keyring: downloaded once, trusted only if it holds exactly the pinned key.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::openpgp::{binary, fingerprints};
use crate::engine::{Change, Ctx, Step};
use crate::system::{owner_ids, FileSpec};

pub struct AptKeyringStep {
    pub url: String,
    pub fingerprint: String,
    pub path: PathBuf,
}

impl AptKeyringStep {
    fn verify(&self, bytes: &[u8], origin: &str) -> Result<()> {
        let found =
            fingerprints(bytes).with_context(|| format!("{origin} is not an OpenPGP keyring"))?;
        if found != [self.fingerprint.clone()] {
            bail!(
                "{origin} holds key(s) {} but sources.matrix_key_fingerprint pins {}; refusing to trust it \
                 (check the URL, or update the pin only if matrix.org announced a new key)",
                found.join(", "),
                self.fingerprint
            );
        }
        Ok(())
    }
}

impl Step for AptKeyringStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        let summary = format!("download {} and pin key {}", self.url, self.fingerprint);
        match ctx.sys.read(&self.path)? {
            None => Ok(Change::create(summary)),
            Some(b) if self.verify(&b, "").is_ok() => Ok(Change::in_sync()),
            Some(_) => Ok(Change::modify(format!(
                "{} holds another key: {summary}",
                self.path.display()
            ))),
        }
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        let bytes = ctx.sys.http_get(&self.url).with_context(|| {
            "downloading the matrix.org keyring (sources.matrix_keyring_url)".to_string()
        })?;
        self.verify(&bytes, &self.url)?;
        let (uid, gid) = owner_ids(ctx.sys, "root", "root")?;
        let spec = FileSpec {
            path: self.path.clone(),
            uid,
            gid,
            mode: 0o644,
        };
        ctx.sys.write(&spec, &binary(&bytes)?)
    }
}
