//! Element Web as a step: apply installs a verified release when none is live (or the pinned one is not);
//! keeping "latest" current is the update timer's job, so the check stays offline and instant.

use anyhow::Result;

use crate::config::HostConfig;
use crate::element::{self, ElementSource, Installation, Wanted};
use crate::engine::{Change, Ctx, Step};
use crate::system::{run_ok, Cmd};

pub struct ElementStep {
    inst: Installation,
    source: ElementSource,
    version: String,
}

impl ElementStep {
    pub fn from_config(config: &HostConfig) -> ElementStep {
        ElementStep {
            inst: Installation::from_config(config),
            source: ElementSource::from_config(config),
            version: config.element.version.clone(),
        }
    }
}

impl Step for ElementStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        let installed = element::installed_version(ctx.sys, &self.inst)?;
        let from = &self.source.releases_url;
        match (installed, self.version.as_str()) {
            (None, wanted) => Ok(Change::create(format!(
                "download Element {wanted} from {from}, verify its signature, install it"
            ))),
            (Some(_), "latest") => Ok(Change::in_sync()),
            (Some(v), pinned) if v == pinned => Ok(Change::in_sync()),
            (Some(v), pinned) => Ok(Change::modify(format!(
                "switch Element {v} to the pinned {pinned}"
            ))),
        }
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        let wanted = Wanted::parse(&self.version)?;
        // Run as root on the updater's tree, this hands the work to that user (element::update).
        element::update(ctx.sys, &self.inst, &self.source, &wanted)?;
        Ok(())
    }
}

/// A system account for a service that must own nothing but its own tree.
pub struct SystemUserStep {
    pub name: String,
    pub home: String,
}

impl Step for SystemUserStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        if ctx.sys.uid(&self.name)?.is_some() {
            return Ok(Change::in_sync());
        }
        Ok(Change::create(format!("create system user {}", self.name)))
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        run_ok(
            ctx.sys,
            &Cmd::new("adduser").args([
                "--system",
                "--group",
                "--no-create-home",
                "--home",
                &self.home,
                "--disabled-login",
                &self.name,
            ]),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretStore;
    use crate::system::{CmdOutput, FakeSystem};

    fn step(version: &str) -> ElementStep {
        ElementStep {
            inst: Installation::new(element::DEFAULT_ROOT, 3),
            source: ElementSource {
                releases_url: "http://releases.test/r".into(),
                ..ElementSource::default()
            },
            version: version.into(),
        }
    }

    /// The step sees the host only through ctx.sys: the fake's tree, and as root on the updater's tree the
    /// work goes to that user (setpriv), never done by the step itself.
    #[test]
    fn check_and_apply_go_through_the_system_seam() {
        let mut sys = FakeSystem::new();
        sys.facts.is_root = true;
        let root = element::DEFAULT_ROOT;
        std::fs::create_dir_all(sys.path(&format!("{root}/archive/element-v1.0.0"))).unwrap();
        std::os::unix::fs::symlink(
            "archive/element-v1.0.0",
            sys.path(&format!("{root}/current")),
        )
        .unwrap();
        sys.owners.borrow_mut().insert(root.into(), (998, 998));
        // This program, where the fake host can see it and anyone may run it.
        let exe = std::env::current_exe().unwrap();
        let at = sys.path(exe.to_str().unwrap());
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(&at, b"me").unwrap();
        for p in [at.as_path(), sys.root.path()] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        assert_eq!(step("latest").check(&ctx).unwrap(), Change::in_sync());
        assert_eq!(step("v1.0.0").check(&ctx).unwrap(), Change::in_sync());
        let change = step("v1.1.0").check(&ctx).unwrap();
        assert_ne!(change, Change::in_sync());

        sys.on(|c| {
            (c.program == "setpriv").then(|| CmdOutput {
                status: 0,
                stdout: r#"{"Outcome":{"action":"Installed","version":"v1.1.0","previous":"v1.0.0","pruned":[],"warnings":[]}}"#.into(),
                stderr: String::new(),
            })
        });
        let before = sys.snapshot();
        step("v1.1.0").apply(&ctx, &change).unwrap();
        assert_eq!(sys.snapshot(), before);
        let cmds = sys.commands();
        assert_eq!(cmds.len(), 1, "{cmds:?}");
        assert!(
            cmds[0].starts_with("setpriv --reuid=998 --regid=998"),
            "{cmds:?}"
        );
    }
}
