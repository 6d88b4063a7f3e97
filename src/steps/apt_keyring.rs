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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretStore;
    use crate::system::FakeSystem;

    /// A keyring with one hand-made v4 primary key, and its fingerprint.
    fn keyring() -> (Vec<u8>, String) {
        let body: Vec<u8> = vec![4, 0x5e, 0, 0, 0, 22, 1, 2, 3];
        let mut data = vec![0x99, 0x00, body.len() as u8];
        data.extend(&body);
        let fpr = fingerprints(&data).unwrap().remove(0);
        (data, fpr)
    }

    #[test]
    fn a_keyring_with_the_pinned_key_is_installed_and_then_in_sync() {
        let (data, fpr) = keyring();
        let sys = FakeSystem::new();
        sys.urls
            .lock()
            .unwrap()
            .insert("http://repo/key.gpg".into(), data.clone());
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let step = AptKeyringStep {
            url: "http://repo/key.gpg".into(),
            fingerprint: fpr,
            path: "/usr/share/keyrings/m.gpg".into(),
        };
        step.apply(&ctx, &step.check(&ctx).unwrap()).unwrap();
        assert!(step.check(&ctx).unwrap().is_in_sync());
    }

    #[test]
    fn a_keyring_with_another_key_is_refused_and_nothing_is_written() {
        let (data, _) = keyring();
        let sys = FakeSystem::new();
        sys.urls
            .lock()
            .unwrap()
            .insert("http://repo/key.gpg".into(), data);
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let pin = "AAF9AE843A7584B5A3E4CD2BCF45A512DE2DA058".to_string();
        let step = AptKeyringStep {
            url: "http://repo/key.gpg".into(),
            fingerprint: pin.clone(),
            path: "/usr/share/keyrings/m.gpg".into(),
        };
        let err = step
            .apply(&ctx, &step.check(&ctx).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refusing to trust") && err.contains(&pin),
            "{err}"
        );
        assert!(sys.get("/usr/share/keyrings/m.gpg").is_none());
        // An unreachable URL names the host.toml key to fix.
        let down = AptKeyringStep {
            url: "http://down/key.gpg".into(),
            fingerprint: pin,
            path: "/k.gpg".into(),
        };
        let err = format!("{:#}", down.apply(&ctx, &Change::create("x")).unwrap_err());
        assert!(err.contains("sources.matrix_keyring_url"), "{err}");
    }
}
