//! systemd units: "enabled and running" as a step, restart/reload as handlers. systemctl is the authority;
//! a reload is gated by the service's own config test, a restart of Synapse waits for `/health`.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::engine::{Change, Ctx, ExpectedState, ExpectedTls, Step};
use crate::system::{run_ok, unit_state, Cmd};

pub struct ServiceStep {
    pub unit: String,
    /// Poll this URL after starting until it answers (Synapse's /health).
    pub wait_http: Option<String>,
    /// The unit that really runs the service when `unit` is an umbrella that stays "active" without it
    /// (postgresql vs its cluster postgresql@N-main); doctor watches both.
    pub instance: Option<String>,
    /// What the service presents on its TLS ports once converged (doctor compares it with the disk).
    pub tls: Vec<Served>,
    /// A command whose stdout holds the string once the service answers (awaited after a start; doctor
    /// runs it too).
    pub probe: Option<(Cmd, String)>,
}

/// One TLS listener of a service: SNI `name` on `port` presents the certificate in `cert`.
pub struct Served {
    pub name: String,
    pub port: u16,
    pub cert: std::path::PathBuf,
}

/// A unit we once installed that host.toml now turns off (e.g. the Element update timer).
pub struct DisabledStep {
    pub unit: String,
    /// Only while this file exists (our drop-in): a unit the admin runs for themselves stays as it is.
    pub only_if: Option<std::path::PathBuf>,
}

impl Step for DisabledStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        if let Some(marker) = &self.only_if {
            if ctx.sys.stat(marker)?.is_none() {
                return Ok(Change::in_sync());
            }
        }
        let s = unit_state(ctx.sys, &self.unit)?;
        if s.load == "not-found" || (s.enabled != "enabled" && s.active != "active") {
            return Ok(Change::in_sync());
        }
        Ok(Change::run(format!("stop and disable {}", self.unit)))
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        run_ok(
            ctx.sys,
            &Cmd::new("systemctl").args(["disable", "--now", &self.unit]),
        )?;
        Ok(())
    }
}

impl Step for ServiceStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        let s = unit_state(ctx.sys, &self.unit)?;
        if s.load == "not-found" {
            bail!(
                "unit {} is not installed (its package should provide it)",
                self.unit
            );
        }
        let mut todo = Vec::new();
        if s.enabled != "enabled" {
            todo.push("enable");
        }
        if s.active != "active" {
            todo.push("start");
        }
        if todo.is_empty() {
            return Ok(Change::in_sync());
        }
        Ok(Change::run(format!("{} {}", todo.join(" and "), self.unit)))
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        run_ok(
            ctx.sys,
            &Cmd::new("systemctl").args(["enable", "--now", &self.unit]),
        )
        .map_err(|e| unit_failed(ctx, &self.unit, e))?;
        if let Some(url) = &self.wait_http {
            wait_http(ctx, &self.unit, url)?;
        }
        if let Some((cmd, want)) = &self.probe {
            wait_probe(ctx, &self.unit, cmd, want)?;
        }
        Ok(())
    }

    fn expect(&self, state: &mut ExpectedState) {
        state.unit(&self.unit, self.wait_http.as_deref());
        if let Some((cmd, want)) = &self.probe {
            let argv = std::iter::once(cmd.program.clone())
                .chain(cmd.args.iter().cloned())
                .collect();
            state.probe(&self.unit, argv, want);
        }
        if let Some(instance) = &self.instance {
            state.unit(instance, None);
        }
        state.tls.extend(self.tls.iter().map(|t| ExpectedTls {
            unit: self.unit.clone(),
            name: t.name.clone(),
            port: t.port,
            cert: t.cert.clone(),
        }));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Restart,
    Reload,
    DaemonReload,
}

/// A handler node: runs only when something it depends on changed (the engine decides).
pub struct HandlerStep {
    pub action: Action,
    pub unit: String,
    /// Run before restarting/reloading; a failure keeps the old process serving and the handler owed.
    pub validate: Option<Cmd>,
    pub wait_http: Option<String>,
}

impl Step for HandlerStep {
    fn check(&self, _ctx: &Ctx) -> Result<Change> {
        Ok(Change::run(format!("{:?} {}", self.action, self.unit)))
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        if let Some(v) = &self.validate {
            let out = ctx.sys.run(v)?;
            if !out.ok() {
                bail!(
                    "`{}` rejects the new configuration, so {} was not touched:\n{}",
                    v.display(),
                    self.unit,
                    ctx.secrets.redact(&out.tail())
                );
            }
        }
        let verb = match self.action {
            Action::Restart => "restart",
            // Starts it when it is not running, which a plain reload would refuse.
            Action::Reload => "reload-or-restart",
            Action::DaemonReload => "daemon-reload",
        };
        let cmd = if self.action == Action::DaemonReload {
            Cmd::new("systemctl").arg(verb)
        } else {
            Cmd::new("systemctl").args([verb, self.unit.as_str()])
        };
        run_ok(ctx.sys, &cmd).map_err(|e| unit_failed(ctx, &self.unit, e))?;
        if let Some(url) = &self.wait_http {
            wait_http(ctx, &self.unit, url)?;
        }
        Ok(())
    }
}

/// Add the unit's last journal lines, which usually say why it would not start.
fn unit_failed(ctx: &Ctx, unit: &str, e: anyhow::Error) -> anyhow::Error {
    let journal = ctx
        .sys
        .run(&Cmd::new("journalctl").args(["-u", unit, "-n", "15", "--no-pager", "-o", "cat"]))
        .map(|o| o.stdout)
        .unwrap_or_default();
    anyhow::anyhow!(
        "{e:#}\nlast log lines of {unit} (see `journalctl -u {unit}`):\n{}",
        ctx.secrets.redact(journal.trim_end())
    )
}

pub const WAIT_LIMIT: Duration = Duration::from_secs(300);

/// Poll intervals for a wait: 20 ms, doubling to at most 500 ms, so an answer a moment away costs no
/// idle time and a slow one no busy loop.
pub fn backoff() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(Duration::from_millis(20)), |d| {
        Some((*d * 2).min(Duration::from_millis(500)))
    })
}

/// Run `cmd` until its stdout holds `want` (a service that answers on a socket, not HTTP).
fn wait_probe(ctx: &Ctx, unit: &str, cmd: &Cmd, want: &str) -> Result<()> {
    let start = Instant::now();
    let mut pause = backoff();
    loop {
        let out = ctx.sys.run(cmd)?;
        if out.ok() && out.stdout.contains(want) {
            return Ok(());
        }
        if start.elapsed() >= Duration::from_secs(60) {
            return Err(unit_failed(
                ctx,
                unit,
                anyhow::anyhow!(
                    "`{}` did not answer {want} within 60s: {}",
                    cmd.display(),
                    out.tail()
                ),
            ));
        }
        std::thread::sleep(pause.next().unwrap_or(Duration::from_millis(500)));
    }
}

fn wait_http(ctx: &Ctx, unit: &str, url: &str) -> Result<()> {
    let start = Instant::now();
    let mut pause = backoff();
    loop {
        match ctx.sys.http_get(url) {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() >= WAIT_LIMIT => {
                return Err(unit_failed(
                    ctx,
                    unit,
                    anyhow::anyhow!(
                        "{unit} did not answer {url} within {}s: {e:#}",
                        WAIT_LIMIT.as_secs()
                    ),
                ))
            }
            Err(_) => std::thread::sleep(pause.next().unwrap_or(Duration::from_millis(500))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretStore;
    use crate::system::FakeSystem;

    #[test]
    fn enabled_and_active_is_in_sync_otherwise_enable_now() {
        let sys = FakeSystem::new();
        sys.on_cmd(
            "systemctl show",
            0,
            "LoadState=loaded\nActiveState=inactive\nUnitFileState=enabled\n",
        );
        sys.on_cmd("systemctl enable --now nginx", 0, "");
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let step = ServiceStep {
            unit: "nginx".into(),
            wait_http: None,
            instance: None,
            tls: Vec::new(),
            probe: None,
        };
        let c = step.check(&ctx).unwrap();
        assert_eq!(c.summary, "start nginx");
        step.apply(&ctx, &c).unwrap();
        sys.on_cmd(
            "systemctl show",
            0,
            "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\n",
        );
        assert!(step.check(&ctx).unwrap().is_in_sync());
    }

    #[test]
    fn waits_start_short_and_back_off_to_half_a_second() {
        let steps: Vec<u64> = backoff().take(7).map(|d| d.as_millis() as u64).collect();
        assert_eq!(steps, [20, 40, 80, 160, 320, 500, 500]);
    }

    #[test]
    fn a_restart_polls_health_until_it_answers() {
        let sys = FakeSystem::new();
        sys.on_cmd("systemctl restart matrix-synapse", 0, "");
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let h = HandlerStep {
            action: Action::Restart,
            unit: "matrix-synapse".into(),
            validate: None,
            wait_http: Some("http://127.0.0.1:8008/health".into()),
        };
        // Synapse answers 150 ms after the restart: the wait returns soon after, not a fixed sleep later.
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(150));
                sys.urls
                    .lock()
                    .unwrap()
                    .insert("http://127.0.0.1:8008/health".into(), b"OK".to_vec());
            });
            let start = Instant::now();
            h.apply(&ctx, &Change::run("x")).unwrap();
            let took = start.elapsed();
            assert!(took >= Duration::from_millis(150), "{took:?}");
            assert!(took < Duration::from_millis(1500), "{took:?}");
        });
    }

    #[test]
    fn a_failed_validation_never_reloads() {
        let sys = FakeSystem::new();
        sys.on_cmd("nginx -t", 1, "");
        sys.on(|c| {
            (c.program == "nginx").then(|| crate::system::CmdOutput {
                status: 1,
                stdout: String::new(),
                stderr: "nginx: [emerg] unknown directive \"bogus\"".into(),
            })
        });
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let h = HandlerStep {
            action: Action::Reload,
            unit: "nginx".into(),
            validate: Some(Cmd::new("nginx").arg("-t")),
            wait_http: None,
        };
        let err = h.apply(&ctx, &Change::run("x")).unwrap_err().to_string();
        assert!(
            err.contains("bogus") && err.contains("not touched"),
            "{err}"
        );
        assert!(!sys.commands().iter().any(|c| c.starts_with("systemctl")));
    }
}
