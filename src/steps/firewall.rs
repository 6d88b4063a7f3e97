//! ufw: the SSH port first (read from sshd's effective config), then the Matrix ports, default deny
//! incoming, enable. ufw's own rules file (`/etc/ufw/user.rules`) is read for the check; changes go through
//! the ufw command. It never enables the firewall before the SSH rule is in place.

use std::path::Path;

use anyhow::{bail, Result};

use crate::engine::{Change, Ctx, ExpectedState, Step};
use crate::system::{run_ok, Cmd, System};

pub struct FirewallStep {
    /// ufw rule specs such as "443/tcp" or "49152:65535/udp", in the order to add them (SSH first).
    pub allow: Vec<String>,
}

/// SSH ports from `sshd -T` (the effective config, includes and Match defaults resolved).
pub fn ssh_ports(sys: &dyn System) -> Vec<u16> {
    let ports: Vec<u16> = sys
        .run(&Cmd::new("sshd").arg("-T"))
        .ok()
        .filter(|o| o.ok())
        .map(|o| {
            o.stdout
                .lines()
                .filter_map(|l| l.strip_prefix("port "))
                .filter_map(|p| p.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    if ports.is_empty() {
        // No readable sshd config: keep 22 open rather than risk locking the admin out.
        vec![22]
    } else {
        ports
    }
}

/// "allow tcp 443 0.0.0.0/0 any 0.0.0.0/0 in" → "443/tcp".
fn rules_in(user_rules: &str) -> Vec<String> {
    user_rules
        .lines()
        .filter_map(|l| l.strip_prefix("### tuple ### allow "))
        .filter_map(|t| {
            let f: Vec<&str> = t.split_whitespace().collect();
            (f.len() >= 3 && f.last() == Some(&"in")).then(|| format!("{}/{}", f[1], f[0]))
        })
        .collect()
}

struct State {
    missing: Vec<String>,
    enabled: bool,
    deny_incoming: bool,
}

impl FirewallStep {
    fn state(&self, ctx: &Ctx) -> Result<State> {
        let read = |p: &str| -> Result<Option<String>> {
            Ok(ctx
                .sys
                .read(Path::new(p))?
                .map(|b| String::from_utf8_lossy(&b).into_owned()))
        };
        let Some(conf) = read("/etc/ufw/ufw.conf")? else {
            bail!("ufw is not installed (/etc/ufw/ufw.conf is missing)");
        };
        let present = rules_in(&read("/etc/ufw/user.rules")?.unwrap_or_default());
        let defaults = read("/etc/default/ufw")?.unwrap_or_default();
        Ok(State {
            missing: self
                .allow
                .iter()
                .filter(|r| !present.contains(r))
                .cloned()
                .collect(),
            enabled: conf.lines().any(|l| l.trim() == "ENABLED=yes"),
            deny_incoming: defaults.lines().any(|l| {
                let l = l.trim();
                l == "DEFAULT_INPUT_POLICY=\"DROP\"" || l == "DEFAULT_INPUT_POLICY=\"REJECT\""
            }),
        })
    }
}

impl Step for FirewallStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        let s = self.state(ctx)?;
        let mut items: Vec<String> = s.missing.iter().map(|r| format!("ufw allow {r}")).collect();
        if !s.deny_incoming {
            items.push("ufw default deny incoming".into());
        }
        if !s.enabled {
            items.push("ufw --force enable".into());
        }
        if items.is_empty() {
            return Ok(Change::in_sync());
        }
        Ok(Change::run("configure the firewall (ufw)").with_items(items))
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        let s = self.state(ctx)?;
        for rule in &s.missing {
            run_ok(ctx.sys, &Cmd::new("ufw").args(["allow", rule]))?;
        }
        if !s.deny_incoming {
            run_ok(
                ctx.sys,
                &Cmd::new("ufw").args(["default", "deny", "incoming"]),
            )?;
        }
        if !s.enabled {
            // Re-read: enable only when the SSH rule is really there.
            let after = self.state(ctx)?;
            if let Some(first) = self.allow.first().filter(|r| after.missing.contains(r)) {
                bail!("the SSH rule {first} is not in ufw's rules; not enabling the firewall");
            }
            run_ok(ctx.sys, &Cmd::new("ufw").args(["--force", "enable"]))?;
        }
        Ok(())
    }

    fn expect(&self, state: &mut ExpectedState) {
        state.allow(&self.allow);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ufw_tuples() {
        let rules = "*filter\n### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n-A ufw-user-input -p tcp --dport 22 -j ACCEPT\n### tuple ### allow udp 49152:65535 0.0.0.0/0 any 0.0.0.0/0 in\n### tuple ### deny tcp 25 0.0.0.0/0 any 0.0.0.0/0 in\n";
        assert_eq!(rules_in(rules), vec!["22/tcp", "49152:65535/udp"]);
    }
}

#[cfg(test)]
mod apply_tests {
    use super::*;
    use crate::secrets::SecretStore;
    use crate::system::FakeSystem;

    #[test]
    fn ssh_is_allowed_before_anything_and_enable_comes_last() {
        let sys = FakeSystem::new();
        sys.put("/etc/ufw/ufw.conf", "ENABLED=no\n");
        sys.put("/etc/default/ufw", "DEFAULT_INPUT_POLICY=\"ACCEPT\"\n");
        sys.put(
            "/etc/ufw/user.rules",
            "### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in\n",
        );
        // ufw records each rule in user.rules; the fake does the same so the re-read sees it.
        let rules = sys.path("/etc/ufw/user.rules");
        sys.on(move |c| {
            (c.program == "ufw" && c.args[0] == "allow").then(|| {
                let (port, proto) = c.args[1].split_once('/').unwrap();
                let mut text = std::fs::read_to_string(&rules).unwrap();
                text.push_str(&format!(
                    "### tuple ### allow {proto} {port} 0.0.0.0/0 any 0.0.0.0/0 in\n"
                ));
                std::fs::write(&rules, text).unwrap();
                crate::system::CmdOutput::default()
            })
        });
        sys.on_cmd("ufw default", 0, "");
        sys.on_cmd("ufw --force enable", 0, "");
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let step = FirewallStep {
            allow: vec!["2222/tcp".into(), "80/tcp".into(), "49152:65535/udp".into()],
        };
        let change = step.check(&ctx).unwrap();
        step.apply(&ctx, &change).unwrap();
        let ufw: Vec<String> = sys
            .commands()
            .into_iter()
            .filter(|c| c.starts_with("ufw"))
            .collect();
        assert_eq!(
            ufw,
            vec![
                "ufw allow 2222/tcp",
                "ufw allow 49152:65535/udp",
                "ufw default deny incoming",
                "ufw --force enable"
            ]
        );
    }

    #[test]
    fn never_enables_when_the_ssh_rule_did_not_stick() {
        let sys = FakeSystem::new();
        sys.put("/etc/ufw/ufw.conf", "ENABLED=no\n");
        sys.put("/etc/default/ufw", "DEFAULT_INPUT_POLICY=\"DROP\"\n");
        sys.put("/etc/ufw/user.rules", "");
        sys.on_cmd("ufw allow", 0, ""); // claims success but records nothing
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let step = FirewallStep {
            allow: vec!["22/tcp".into()],
        };
        let err = step
            .apply(&ctx, &step.check(&ctx).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not enabling"), "{err}");
        assert!(!sys.commands().iter().any(|c| c.contains("enable")));
    }
}
