//! A secret file: generated once (by the SecretStore), stored with tight permissions, never rewritten.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::file::Owner;
use crate::engine::{Change, Ctx, ExpectedFile, ExpectedKind, ExpectedState, Step};
use crate::system::{owner_ids, FileSpec};

pub struct SecretStep {
    pub name: String,
    pub path: PathBuf,
    pub owner: Owner,
}

impl Step for SecretStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        let stored = ctx
            .sys
            .read(&self.path)?
            .is_some_and(|b| !b.trim_ascii().is_empty());
        if !stored {
            return Ok(Change::create(format!(
                "generate secret `{}` into {} ({})",
                self.name,
                self.path.display(),
                self.owner.describe()
            )));
        }
        let stat = ctx
            .sys
            .stat(&self.path)?
            .context("secret vanished while checking")?;
        let (uid, gid) = owner_ids(ctx.sys, &self.owner.user, &self.owner.group)?;
        if (stat.uid, stat.gid, stat.mode) != (uid, gid, self.owner.mode) {
            return Ok(Change::modify(format!(
                "fix owner/mode of {} to {}",
                self.path.display(),
                self.owner.describe()
            )));
        }
        Ok(Change::in_sync())
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        let (uid, gid) = owner_ids(ctx.sys, &self.owner.user, &self.owner.group)?;
        if ctx.sys.read(&self.path)?.is_some_and(|b| !b.is_empty()) {
            // The value is sacred once stored: only its permissions are ours to fix.
            return ctx.sys.chown_chmod(&self.path, (uid, gid), self.owner.mode);
        }
        let secret = ctx
            .secrets
            .get(&self.name)
            .with_context(|| format!("secret `{}` was not loaded", self.name))?;
        let spec = FileSpec {
            path: self.path.clone(),
            uid,
            gid,
            mode: self.owner.mode,
        };
        ctx.sys
            .write(&spec, format!("{}\n", secret.expose()).as_bytes())
    }

    fn expect(&self, state: &mut ExpectedState) {
        state.files.push(ExpectedFile {
            path: self.path.clone(),
            kind: ExpectedKind::File {
                owner: self.owner.to_expected(),
                contents: None,
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretStore;
    use crate::system::FakeSystem;
    use std::path::Path;

    #[test]
    fn generated_once_and_kept_across_runs() {
        let sys = FakeSystem::new();
        let mut secrets = SecretStore::new();
        secrets
            .load(&sys, "turn", Path::new("/etc/s/turn"))
            .unwrap();
        let first = secrets.get("turn").unwrap().expose().to_string();
        let step = SecretStep {
            name: "turn".into(),
            path: "/etc/s/turn".into(),
            owner: Owner::root(0o600),
        };
        let ctx = Ctx::new(&sys, &secrets);
        let c = step.check(&ctx).unwrap();
        assert!(!c.summary.contains(&first));
        step.apply(&ctx, &c).unwrap();
        // The engine re-checks with the same store right after apply: it must see the stored file.
        assert!(step.check(&ctx).unwrap().is_in_sync());
        // A second run loads the stored value instead of generating a new one.
        let mut again = SecretStore::new();
        again.load(&sys, "turn", Path::new("/etc/s/turn")).unwrap();
        assert_eq!(again.get("turn").unwrap().expose(), first);
        assert!(step.check(&Ctx::new(&sys, &again)).unwrap().is_in_sync());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(sys.path("/etc/s/turn"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
