//! ufw: the SSH ports first, then the Matrix ports, default deny incoming, enable. ufw's own rules files
//! (`/etc/ufw/user.rules`, `user6.rules`) are read for the check; changes go through the ufw command.
//!
//! The firewall must never lock the admin out, so the SSH ports are every port sshd can be reached on:
//! the `port` and `listenaddress` lines of `sshd -T`, the sockets sshd listens on (`ss`), the sockets of
//! a socket-activated `ssh.socket`, the port of the session apply runs in (`$SSH_CONNECTION`) and
//! `firewall.ssh_ports` from host.toml. When none of them names a port it refuses to go on, rather than
//! guess 22 and enable. It never enables before the SSH rules are in place, and refuses `IPV6=no` in
//! `/etc/default/ufw` (a conffile, so the admin's to change): ufw would then leave IPv6 unfiltered.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Result};

use crate::engine::{Change, Ctx, Step};
use crate::system::{run_ok, Cmd, System};

pub struct FirewallStep {
    /// `firewall.ssh_ports` from host.toml: allowed on top of the detected ones; Some([]) also vouches
    /// that none is needed when detection finds nothing.
    pub ssh_ports: Option<Vec<u16>>,
    /// The other ufw rule specs such as "443/tcp" or "49152:65535/udp", in the order to add them.
    pub allow: Vec<String>,
}

/// What each source said about the SSH ports (for the error when none did).
#[derive(Debug, Default)]
pub struct SshPorts {
    pub ports: BTreeSet<u16>,
    /// Why a source gave nothing, e.g. "`sshd -T` failed: …".
    pub notes: Vec<String>,
}

fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':')?.1.parse().ok()
}

/// Every port sshd or its socket unit listens on, and the port of the current SSH session.
pub fn detect_ssh_ports(sys: &dyn System) -> SshPorts {
    let mut found = SshPorts::default();
    match sys.run(&Cmd::new("sshd").arg("-T")) {
        Ok(o) if o.ok() => {
            for line in o.stdout.lines() {
                let mut f = line.split_whitespace();
                match (f.next(), f.next()) {
                    (Some("port"), Some(p)) => found.ports.extend(p.parse::<u16>().ok()),
                    (Some("listenaddress"), Some(a)) => found.ports.extend(port_of(a)),
                    _ => {}
                }
            }
        }
        Ok(o) => found.notes.push(format!(
            "`sshd -T` exited with status {}: {}",
            o.status,
            crate::report::escape(o.tail().lines().last().unwrap_or(""))
        )),
        Err(e) => found.notes.push(format!("`sshd -T` failed: {e:#}")),
    }
    match sys.run(&Cmd::new("ss").args(["-H", "-l", "-t", "-n", "-p"])) {
        Ok(o) if o.ok() => {
            for line in o.stdout.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() >= 4 && line.contains("((\"sshd\",") {
                    found.ports.extend(port_of(f[3]));
                }
            }
        }
        Ok(_) | Err(_) => found
            .notes
            .push("`ss` could not list the listening sockets".into()),
    }
    let socket = Cmd::new("systemctl").args([
        "show",
        "ssh.socket",
        "--property=Listen,ActiveState,UnitFileState",
    ]);
    // Exits 0 with empty values when the unit does not exist.
    if let Ok(o) = sys.run(&socket).map(|o| o.stdout) {
        let used = o.lines().any(|l| {
            l == "ActiveState=active"
                || l == "UnitFileState=enabled"
                || l == "ActiveState=listening"
        });
        if used {
            for line in o.lines().filter_map(|l| l.strip_prefix("Listen=")) {
                // "[::]:2200 (Stream)"; a bare port is how systemd prints ListenStream=2200 too.
                let addr = line.split(" (").next().unwrap_or(line).trim();
                if line.contains("(Stream)") {
                    found
                        .ports
                        .extend(port_of(addr).or_else(|| addr.parse().ok()));
                }
            }
        }
    }
    if let Some(conn) = sys.env_var("SSH_CONNECTION") {
        // "client_ip client_port server_ip server_port"
        found.ports.extend(
            conn.split_whitespace()
                .nth(3)
                .and_then(|p| p.parse::<u16>().ok()),
        );
    }
    found.ports.remove(&0);
    found
}

impl FirewallStep {
    /// The SSH rules, then the others, and how many of them are SSH's (all of which must be in place
    /// before ufw may be enabled).
    fn rules(&self, sys: &dyn System) -> Result<(Vec<String>, usize)> {
        let detected = detect_ssh_ports(sys);
        let mut ports = detected.ports.clone();
        if detected.ports.is_empty() && self.ssh_ports.is_none() {
            let why = if detected.notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", detected.notes.join("; "))
            };
            bail!(
                "cannot tell which port SSH listens on{why}, so enabling the firewall could lock you out; \
                 not enabling it. Set firewall.ssh_ports in host.toml to the port(s) you log in on, \
                 e.g. ssh_ports = [22] under [firewall]"
            );
        }
        ports.extend(self.ssh_ports.iter().flatten());
        let mut rules: Vec<String> = ports.iter().map(|p| format!("{p}/tcp")).collect();
        let ssh = rules.len();
        for r in &self.allow {
            if !rules.contains(r) {
                rules.push(r.clone());
            }
        }
        Ok((rules, ssh))
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
    fn state(&self, ctx: &Ctx, rules: &[String]) -> Result<State> {
        let read = |p: &str| -> Result<Option<String>> {
            Ok(ctx
                .sys
                .read(Path::new(p))?
                .map(|b| String::from_utf8_lossy(&b).into_owned()))
        };
        let Some(conf) = read("/etc/ufw/ufw.conf")? else {
            bail!("ufw is not installed (/etc/ufw/ufw.conf is missing)");
        };
        let defaults = read("/etc/default/ufw")?.unwrap_or_default();
        let setting = |key: &str| {
            defaults.lines().find_map(|l| {
                l.trim()
                    .strip_prefix(key)?
                    .strip_prefix('=')
                    .map(|v| v.trim().trim_matches('"').to_string())
            })
        };
        let ipv6 = setting("IPV6").is_none_or(|v| v.eq_ignore_ascii_case("yes"));
        if !ipv6 {
            bail!(
                "/etc/default/ufw says IPV6=no: ufw would filter IPv4 only and leave every IPv6 port open; \
                 set IPV6=yes there (the package default; the file is a conffile, so matrix-provision does \
                 not edit it) and run apply again"
            );
        }
        let v4 = rules_in(&read("/etc/ufw/user.rules")?.unwrap_or_default());
        let v6 = rules_in(&read("/etc/ufw/user6.rules")?.unwrap_or_default());
        // With IPV6=yes, `ufw allow` writes both files; a rule in only one (IPv6 turned on later) is
        // added again, and ufw adds just the missing half.
        let have_v6 = read("/etc/ufw/user6.rules")?.is_some();
        Ok(State {
            missing: rules
                .iter()
                .filter(|r| !v4.contains(r) || (have_v6 && !v6.contains(r)))
                .cloned()
                .collect(),
            enabled: conf.lines().any(|l| l.trim() == "ENABLED=yes"),
            deny_incoming: matches!(
                setting("DEFAULT_INPUT_POLICY").as_deref(),
                Some("DROP" | "REJECT")
            ),
        })
    }
}

impl Step for FirewallStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        let (rules, ssh) = self.rules(ctx.sys)?;
        let s = self.state(ctx, &rules)?;
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
        let ssh: Vec<&str> = rules[..ssh]
            .iter()
            .map(|r| r.trim_end_matches("/tcp"))
            .collect();
        Ok(Change::run(format!(
            "configure the firewall (ufw), SSH on {}",
            ssh.join(", ")
        ))
        .with_items(items))
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        let (rules, ssh) = self.rules(ctx.sys)?;
        let s = self.state(ctx, &rules)?;
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
            // Re-read: enable only when every SSH rule is really there.
            let after = self.state(ctx, &rules)?;
            if let Some(r) = rules[..ssh].iter().find(|r| after.missing.contains(r)) {
                bail!("the SSH rule {r} is not in ufw's rules; not enabling the firewall");
            }
            run_ok(ctx.sys, &Cmd::new("ufw").args(["--force", "enable"]))?;
        }
        Ok(())
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

    /// A host with ufw installed and disabled; `ufw allow` records its rule in both rules files, as ufw
    /// does with IPV6=yes. sshd -T answers `sshd_t` (None: it fails); ss and ssh.socket show nothing.
    fn host(sshd_t: Option<&str>) -> FakeSystem {
        let sys = FakeSystem::new();
        sys.put("/etc/ufw/ufw.conf", "ENABLED=no\n");
        sys.put(
            "/etc/default/ufw",
            "IPV6=yes\nDEFAULT_INPUT_POLICY=\"ACCEPT\"\n",
        );
        sys.put("/etc/ufw/user.rules", "");
        sys.put("/etc/ufw/user6.rules", "");
        let files = [
            sys.path("/etc/ufw/user.rules"),
            sys.path("/etc/ufw/user6.rules"),
        ];
        sys.on(move |c| {
            (c.program == "ufw" && c.args[0] == "allow").then(|| {
                let (port, proto) = c.args[1].split_once('/').unwrap();
                for f in &files {
                    let mut text = std::fs::read_to_string(f).unwrap();
                    text.push_str(&format!(
                        "### tuple ### allow {proto} {port} 0.0.0.0/0 any 0.0.0.0/0 in\n"
                    ));
                    std::fs::write(f, text).unwrap();
                }
                crate::system::CmdOutput::default()
            })
        });
        sys.on_cmd("ufw default", 0, "");
        sys.on_cmd("ufw --force enable", 0, "");
        sys.on_cmd("ss -H", 0, "");
        sys.on_cmd(
            "systemctl show ssh.socket",
            0,
            "Listen=\nActiveState=inactive\nUnitFileState=\n",
        );
        match sshd_t {
            Some(out) => sys.on_cmd("sshd -T", 0, out),
            None => sys.on(|c| {
                (c.program == "sshd").then(|| crate::system::CmdOutput {
                    status: 255,
                    stdout: String::new(),
                    stderr: "sshd: no hostkeys available -- exiting.".into(),
                })
            }),
        }
        sys
    }

    fn step(ssh_ports: Option<Vec<u16>>) -> FirewallStep {
        FirewallStep {
            ssh_ports,
            allow: vec!["80/tcp".into(), "49152:65535/udp".into()],
        }
    }

    /// Check and apply; the ufw command lines run, or the error.
    fn converge(sys: &FakeSystem, step: &FirewallStep) -> Result<Vec<String>, String> {
        let secrets = SecretStore::new();
        let ctx = Ctx::new(sys, &secrets);
        let change = step.check(&ctx).map_err(|e| e.to_string())?;
        step.apply(&ctx, &change).map_err(|e| e.to_string())?;
        Ok(sys
            .commands()
            .into_iter()
            .filter(|c| c.starts_with("ufw"))
            .collect())
    }

    #[test]
    fn ssh_is_allowed_before_anything_and_enable_comes_last() {
        let sys = host(Some("port 22\nlistenaddress 0.0.0.0:22\n"));
        sys.put(
            "/etc/ufw/user.rules",
            "### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in\n",
        );
        sys.put(
            "/etc/ufw/user6.rules",
            "### tuple ### allow tcp 80 ::/0 any ::/0 in\n",
        );
        assert_eq!(
            converge(&sys, &step(None)).unwrap(),
            vec![
                "ufw allow 22/tcp",
                "ufw allow 49152:65535/udp",
                "ufw default deny incoming",
                "ufw --force enable"
            ]
        );
    }

    #[test]
    fn every_listenaddress_port_is_allowed_not_only_the_first_port_line() {
        let sys = host(Some(
            "port 22\naddressfamily any\nlistenaddress 0.0.0.0:2222\nlistenaddress [::]:2200\n",
        ));
        let ufw = converge(&sys, &step(None)).unwrap();
        assert_eq!(
            &ufw[..3],
            [
                "ufw allow 22/tcp",
                "ufw allow 2200/tcp",
                "ufw allow 2222/tcp"
            ]
        );
    }

    #[test]
    fn a_socket_activated_sshd_and_the_listening_sockets_count() {
        let sys = host(Some("port 22\n"));
        sys.on_cmd(
            "systemctl show ssh.socket",
            0,
            "Listen=[::]:2022 (Stream)\nActiveState=active\nUnitFileState=enabled\n",
        );
        sys.on_cmd(
            "ss -H",
            0,
            "LISTEN 0 128 0.0.0.0:8022 0.0.0.0:* users:((\"sshd\",pid=41,fd=3))\n\
             LISTEN 0 511 0.0.0.0:9000 0.0.0.0:* users:((\"nginx\",pid=7,fd=6))\n",
        );
        let ufw = converge(&sys, &step(None)).unwrap();
        assert_eq!(
            &ufw[..4],
            [
                "ufw allow 22/tcp",
                "ufw allow 2022/tcp",
                "ufw allow 8022/tcp",
                "ufw allow 80/tcp"
            ]
        );
        assert!(!ufw.iter().any(|c| c.contains("9000")), "{ufw:?}");
    }

    #[test]
    fn the_port_of_the_current_ssh_session_is_allowed() {
        let sys = host(Some("port 22\n"));
        sys.env.borrow_mut().insert(
            "SSH_CONNECTION".into(),
            "198.51.100.4 50122 203.0.113.9 4422".into(),
        );
        let ufw = converge(&sys, &step(None)).unwrap();
        assert_eq!(&ufw[..2], ["ufw allow 22/tcp", "ufw allow 4422/tcp"]);
    }

    #[test]
    fn unknown_ssh_ports_refuse_to_enable_and_name_the_option() {
        let sys = host(None);
        let err = converge(&sys, &step(None)).unwrap_err();
        assert!(err.contains("firewall.ssh_ports"), "{err}");
        assert!(err.contains("no hostkeys"), "{err}");
        assert!(
            !sys.commands().iter().any(|c| c.starts_with("ufw")),
            "{:?}",
            sys.commands()
        );
    }

    #[test]
    fn configured_ssh_ports_are_allowed_when_detection_finds_nothing() {
        let sys = host(None);
        let ufw = converge(&sys, &step(Some(vec![2345]))).unwrap();
        assert_eq!(ufw[0], "ufw allow 2345/tcp");
        assert_eq!(ufw.last().unwrap(), "ufw --force enable");
    }

    #[test]
    fn ipv6_left_unfiltered_is_refused() {
        let sys = host(Some("port 22\n"));
        sys.put(
            "/etc/default/ufw",
            "IPV6=no\nDEFAULT_INPUT_POLICY=\"DROP\"\n",
        );
        let err = converge(&sys, &step(None)).unwrap_err();
        assert!(err.contains("IPV6=no") && err.contains("IPV6=yes"), "{err}");
        assert!(!sys.commands().iter().any(|c| c.starts_with("ufw")));
    }

    #[test]
    fn a_rule_missing_only_for_ipv6_is_added_again() {
        let sys = host(Some("port 22\n"));
        sys.put("/etc/ufw/ufw.conf", "ENABLED=yes\n");
        sys.put("/etc/default/ufw", "DEFAULT_INPUT_POLICY=\"DROP\"\n");
        let all = "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n\
                   ### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in\n\
                   ### tuple ### allow udp 49152:65535 0.0.0.0/0 any 0.0.0.0/0 in\n";
        sys.put("/etc/ufw/user.rules", all);
        sys.put(
            "/etc/ufw/user6.rules",
            "### tuple ### allow tcp 22 ::/0 any ::/0 in\n",
        );
        let ufw = converge(&sys, &step(None)).unwrap();
        assert_eq!(ufw, ["ufw allow 80/tcp", "ufw allow 49152:65535/udp"]);
    }

    #[test]
    fn never_enables_when_the_ssh_rule_did_not_stick() {
        let sys = host(Some("port 22\n"));
        sys.on_cmd("ufw allow", 0, ""); // claims success but records nothing
        let err = converge(&sys, &step(None)).unwrap_err();
        assert!(err.contains("not enabling"), "{err}");
        assert!(!sys.commands().iter().any(|c| c.contains("enable")));
    }
}
