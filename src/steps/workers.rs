//! Scaling Synapse workers down: what the graph no longer has must leave the host. `workers_prune` stops,
//! disables and deletes the worker instances the layout dropped (found on the host: their YAML files, the
//! target's wants links, running instances); `absent` (steps::metrics, `only_managed`) deletes a file we
//! once wrote (workers turned off). Both remove only what carries our "Managed by matrix-provision" header: never an admin's own file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::engine::{Change, Ctx, Step};
use crate::layout::{SYNAPSE_TARGET, SYNAPSE_WORKER_UNIT as WORKER_UNIT, SYSTEMD_DIR};
use crate::system::{run_ok, Cmd, FileKind};

/// The first line of every file we render: what marks a file as ours to delete.
pub const MANAGED: &str = "Managed by matrix-provision";

/// Where `systemctl enable` links the target's workers.
fn target_wants() -> PathBuf {
    Path::new(SYSTEMD_DIR).join(format!("{SYNAPSE_TARGET}.wants"))
}

pub fn ours(ctx: &Ctx, path: &Path) -> Result<bool> {
    Ok(ctx
        .sys
        .read(path)?
        .is_some_and(|b| String::from_utf8_lossy(&b).contains(MANAGED)))
}

pub struct WorkersPruneStep {
    /// Where the workers' YAML lives (`<name>.yaml`).
    pub dir: PathBuf,
    /// The workers the layout has; every other instance goes.
    pub keep: Vec<String>,
    /// What auto chose and why, told at every plan and apply (mode = "auto" only).
    pub note: Option<String>,
}

impl WorkersPruneStep {
    /// Worker names present on the host but not in the layout, sorted.
    fn stale(&self, ctx: &Ctx) -> Result<Vec<String>> {
        let mut found = std::collections::BTreeSet::new();
        for (name, kind) in ctx.sys.list_dir(&self.dir)?.unwrap_or_default() {
            if let (Some(stem), FileKind::File) = (name.strip_suffix(".yaml"), kind) {
                found.insert(stem.to_string());
            }
        }
        for (name, _) in ctx.sys.list_dir(&target_wants())?.unwrap_or_default() {
            if let Some(w) = instance(&name) {
                found.insert(w.to_string());
            }
        }
        // Running instances whose files are already gone (an interrupted run, a hand-deleted file).
        let out = ctx.sys.run(&Cmd::new("systemctl").args([
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            &format!("{WORKER_UNIT}*"),
        ]))?;
        if out.ok() {
            for line in out.stdout.lines() {
                let mut cols = line.split_whitespace();
                let (Some(unit), Some(_load), Some(active)) =
                    (cols.next(), cols.next(), cols.next())
                else {
                    continue;
                };
                if active != "inactive" {
                    if let Some(w) = instance(unit) {
                        found.insert(w.to_string());
                    }
                }
            }
        }
        found.retain(|n| !self.keep.contains(n));
        Ok(found.into_iter().collect())
    }
}

/// `matrix-synapse-worker@sync1.service` → `sync1`.
fn instance(unit: &str) -> Option<&str> {
    let w = unit.strip_prefix(WORKER_UNIT)?.strip_suffix(".service")?;
    (!w.is_empty()).then_some(w)
}

impl Step for WorkersPruneStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        if let Some(note) = &self.note {
            ctx.warn(format!("synapse.workers: {note}"));
        }
        let stale = self.stale(ctx)?;
        if stale.is_empty() {
            return Ok(Change::in_sync());
        }
        let mut items = Vec::new();
        for w in &stale {
            items.push(format!("stop and disable {WORKER_UNIT}{w}"));
            let file = self.dir.join(format!("{w}.yaml"));
            if ctx.sys.stat(&file)?.is_some() {
                if !ours(ctx, &file)? {
                    bail!(
                        "{} is not a worker matrix-provision wrote (no \"{MANAGED}\" line); remove it and its unit yourself, or add the worker to [synapse.workers]",
                        file.display()
                    );
                }
                items.push(format!("remove {}", file.display()));
            }
        }
        Ok(Change::run(format!("remove Synapse workers {}", stale.join(", "))).with_items(items))
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        for w in self.stale(ctx)? {
            run_ok(
                ctx.sys,
                &Cmd::new("systemctl").args(["disable", "--now", &format!("{WORKER_UNIT}{w}")]),
            )?;
            let file = self.dir.join(format!("{w}.yaml"));
            if ctx.sys.stat(&file)?.is_some() {
                ctx.sys.remove(&file)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Detail;
    use crate::secrets::SecretStore;
    use crate::system::{FakeSystem, System};

    const DIR: &str = "/etc/matrix-synapse/workers";

    fn prune(keep: &[&str]) -> WorkersPruneStep {
        WorkersPruneStep {
            dir: DIR.into(),
            keep: keep.iter().map(|s| s.to_string()).collect(),
            note: None,
        }
    }

    #[test]
    fn removes_exactly_the_workers_the_layout_dropped() {
        let sys = FakeSystem::new();
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        sys.on_cmd("systemctl list-units", 0, "");
        assert!(
            prune(&[]).check(&ctx).unwrap().is_in_sync(),
            "nothing there"
        );
        for w in ["sync1", "sync2", "media1"] {
            sys.put(
                &format!("{DIR}/{w}.yaml"),
                &format!("# {MANAGED}\nworker_name: {w}\n"),
            );
        }
        // sync3's file is gone but its unit still runs; client1 is only enabled.
        sys.on_cmd(
            "systemctl list-units",
            0,
            "matrix-synapse-worker@sync3.service loaded active running Synapse sync3\n\
             matrix-synapse-worker@old.service loaded inactive dead Synapse old\n",
        );
        sys.put(
            &format!(
                "{}/matrix-synapse-worker@client1.service",
                target_wants().display()
            ),
            "",
        );
        sys.on_cmd("systemctl disable", 0, "");
        let step = prune(&["sync1", "media1"]);
        let c = step.check(&ctx).unwrap();
        assert_eq!(c.summary, "remove Synapse workers client1, sync2, sync3");
        let Detail::Items { items } = &c.detail else {
            panic!("{c:?}")
        };
        assert!(
            items.contains(&format!("remove {DIR}/sync2.yaml")),
            "{items:?}"
        );
        assert!(items.contains(&"stop and disable matrix-synapse-worker@sync3".to_string()));
        step.apply(&ctx, &c).unwrap();
        let cmds = sys.commands();
        for w in ["client1", "sync2", "sync3"] {
            let want = format!("systemctl disable --now matrix-synapse-worker@{w}");
            assert!(cmds.contains(&want), "{cmds:?}");
        }
        assert!(!cmds
            .iter()
            .any(|c| c.contains("@sync1") || c.contains("@media1")));
        assert!(sys.get(&format!("{DIR}/sync2.yaml")).is_none());
        assert!(sys.get(&format!("{DIR}/sync1.yaml")).is_some());
    }

    #[test]
    fn an_admins_worker_file_is_never_deleted() {
        let sys = FakeSystem::new();
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        sys.on_cmd("systemctl list-units", 0, "");
        sys.put(&format!("{DIR}/mine.yaml"), "worker_name: mine\n");
        let err = prune(&[]).check(&ctx).unwrap_err().to_string();
        assert!(err.contains("not a worker matrix-provision wrote"), "{err}");
    }

    #[test]
    fn absent_removes_only_our_file() {
        let sys = FakeSystem::new();
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let step = crate::steps::metrics::AbsentStep {
            path: "/etc/systemd/system/matrix-synapse.target".into(),
            prune_dir: false,
            only_managed: true,
        };
        assert!(step.check(&ctx).unwrap().is_in_sync());
        sys.put(
            "/etc/systemd/system/matrix-synapse.target",
            &format!("# {MANAGED}\n[Unit]\n"),
        );
        let c = step.check(&ctx).unwrap();
        assert_eq!(
            c.summary,
            "remove /etc/systemd/system/matrix-synapse.target"
        );
        step.apply(&ctx, &c).unwrap();
        assert!(step.check(&ctx).unwrap().is_in_sync());
        sys.put("/etc/systemd/system/matrix-synapse.target", "[Unit]\n");
        assert!(step.check(&ctx).is_err());
        assert!(sys.stat(&step.path).unwrap().is_some());
    }
}
