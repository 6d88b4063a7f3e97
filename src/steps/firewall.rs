//! ufw: the SSH ports first, then the Matrix ports, default deny incoming, enable. ufw's own rules files
//! (`/etc/ufw/user.rules`, `user6.rules`) are read for the check; changes go through the ufw command.
//!
//! The firewall must never lock the admin out, so the SSH ports are every port sshd can be reached on:
//! the `port` and `listenaddress` lines of `sshd -T`, the sockets sshd listens on (`ss`), the sockets of
//! a socket-activated `ssh.socket`, the port of the session apply runs in (`$SSH_CONNECTION`) and
//! `firewall.ssh_ports` from host.toml. When none of them names a port it refuses to go on, rather than
//! guess 22 and enable. It never enables before the SSH rules are in place, and refuses `IPV6=no` in
//! `/etc/default/ufw` (a conffile, so the admin's to change): ufw would then leave IPv6 unfiltered.

use std::path::Path;

use anyhow::{bail, Result};

use crate::engine::{Change, Ctx, ExpectedState, Step};
use crate::system::{detect_ssh_ports, run_ok, Cmd, System};

pub struct FirewallStep {
    /// `firewall.ssh_ports` from host.toml: allowed on top of the detected ones; Some([]) also vouches
    /// that none is needed when detection finds nothing.
    pub ssh_ports: Option<Vec<u16>>,
    /// The other ufw rule specs such as "443/tcp", "49152:65535/udp" or "8080/tcp from 10.0.0.2" (only
    /// from that address), in the order to add them.
    pub allow: Vec<String>,
    /// Ports whose allow rules this step owns: a rule on one of them that is not wanted is deleted (the
    /// web ports after a switch to an edge in front, the edge's port after a switch back).
    pub managed_ports: Vec<u16>,
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

/// "allow tcp 443 0.0.0.0/0 any 0.0.0.0/0 in" → "443/tcp"; with a source address other than "anywhere"
/// ("allow tcp 8080 0.0.0.0/0 any 10.0.0.2 in") → "8080/tcp from 10.0.0.2".
fn rules_in(user_rules: &str) -> Vec<String> {
    user_rules
        .lines()
        .filter_map(|l| l.strip_prefix("### tuple ### allow "))
        .filter_map(|t| {
            // proto dport dst sport src direction
            let f: Vec<&str> = t.split_whitespace().collect();
            if f.len() < 3 || f.last() != Some(&"in") {
                return None;
            }
            let rule = format!("{}/{}", f[1], f[0]);
            Some(match f.get(4) {
                Some(src) if f.len() == 6 && *src != "0.0.0.0/0" && *src != "::/0" => {
                    format!("{rule} from {src}")
                }
                _ => rule,
            })
        })
        .collect()
}

/// A rule spec as ufw's arguments after `allow` (or `delete allow`).
fn ufw_args(rule: &str) -> Vec<String> {
    match rule.split_once(" from ") {
        Some((port_proto, src)) => {
            let (port, proto) = port_proto.split_once('/').unwrap_or((port_proto, "tcp"));
            ["from", src, "to", "any", "port", port, "proto", proto]
                .map(String::from)
                .to_vec()
        }
        None => vec![rule.to_string()],
    }
}

/// The single port a rule spec opens ("443/tcp" → 443); None for ranges.
fn rule_port(rule: &str) -> Option<u16> {
    rule.split('/').next()?.parse().ok()
}

/// Which of ufw's two rules files a rule lives in: a source address says; otherwise both (IPV6=yes).
fn family(rule: &str) -> Option<bool> {
    rule.split_once(" from ").map(|(_, src)| src.contains(':'))
}

struct State {
    missing: Vec<String>,
    /// Allow rules on a managed port that this host does not want.
    unwanted: Vec<String>,
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
        let mut unwanted: Vec<String> = Vec::new();
        for r in v4.iter().chain(&v6) {
            let managed = rule_port(r).is_some_and(|p| self.managed_ports.contains(&p));
            if managed && !rules.contains(r) && !unwanted.contains(r) {
                unwanted.push(r.clone());
            }
        }
        Ok(State {
            missing: rules
                .iter()
                .filter(|r| match family(r) {
                    Some(false) => !v4.contains(r),
                    Some(true) => have_v6 && !v6.contains(r),
                    None => !v4.contains(r) || (have_v6 && !v6.contains(r)),
                })
                .cloned()
                .collect(),
            unwanted,
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
        let mut items: Vec<String> = s
            .missing
            .iter()
            .map(|r| format!("ufw allow {}", ufw_args(r).join(" ")))
            .collect();
        items.extend(
            s.unwanted
                .iter()
                .map(|r| format!("ufw delete allow {}", ufw_args(r).join(" "))),
        );
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
            run_ok(ctx.sys, &Cmd::new("ufw").arg("allow").args(ufw_args(rule)))?;
        }
        for rule in &s.unwanted {
            run_ok(
                ctx.sys,
                &Cmd::new("ufw")
                    .args(["delete", "allow"])
                    .args(ufw_args(rule)),
            )?;
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

    fn expect(&self, state: &mut ExpectedState) {
        // The SSH ports are found on the live host when doctor runs, as apply finds them.
        state.firewall_ssh = Some(self.ssh_ports.clone().unwrap_or_default());
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
        let from = "### tuple ### allow tcp 8080 0.0.0.0/0 any 10.0.0.2 in\n### tuple ### allow tcp 80 ::/0 any ::/0 in\n";
        assert_eq!(rules_in(from), vec!["8080/tcp from 10.0.0.2", "80/tcp"]);
        assert_eq!(
            ufw_args("8080/tcp from 10.0.0.2").join(" "),
            "from 10.0.0.2 to any port 8080 proto tcp"
        );
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
            let delete = c.args[0] == "delete";
            let a = &c.args[usize::from(delete)..];
            (c.program == "ufw" && a[0] == "allow").then(|| {
                // `allow PORT/PROTO` or `allow from SRC to any port PORT proto PROTO`.
                let (port, proto, src) = match a[1].as_str() {
                    "from" => (a[6].as_str(), a[8].as_str(), Some(a[2].as_str())),
                    spec => {
                        let (p, q) = spec.split_once('/').unwrap();
                        (p, q, None)
                    }
                };
                for (i, f) in files.iter().enumerate() {
                    let v6 = i == 1;
                    let any = if v6 { "::/0" } else { "0.0.0.0/0" };
                    if src.is_some_and(|s| s.contains(':') != v6) {
                        continue;
                    }
                    let line = format!(
                        "### tuple ### allow {proto} {port} {any} any {} in\n",
                        src.unwrap_or(any)
                    );
                    let mut text = std::fs::read_to_string(f).unwrap();
                    if delete {
                        text = text.replace(&line, "");
                    } else {
                        text.push_str(&line);
                    }
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
            managed_ports: vec![80, 443, 8448, 8080],
        }
    }

    /// Direct → proxied → direct: the web ports go and only the edge may reach its listener, then back.
    #[test]
    fn switching_to_an_edge_and_back_converges_the_web_ports() {
        let sys = host(Some("port 22\n"));
        let direct = FirewallStep {
            ssh_ports: None,
            allow: vec!["80/tcp".into(), "443/tcp".into(), "8448/tcp".into()],
            managed_ports: vec![80, 443, 8448, 8080],
        };
        converge(&sys, &direct).unwrap();
        // What `ufw default deny incoming` and `ufw --force enable` leave behind (the fake does not).
        sys.put("/etc/ufw/ufw.conf", "ENABLED=yes\n");
        sys.put(
            "/etc/default/ufw",
            "IPV6=yes\nDEFAULT_INPUT_POLICY=\"DROP\"\n",
        );
        let proxied = FirewallStep {
            allow: vec![
                "8080/tcp from 10.0.0.2".into(),
                "8080/tcp from fd00::2".into(),
            ],
            ..direct
        };
        sys.ran.lock().unwrap().clear();
        let ufw = converge(&sys, &proxied).unwrap();
        assert_eq!(
            ufw,
            vec![
                "ufw allow from 10.0.0.2 to any port 8080 proto tcp",
                "ufw allow from fd00::2 to any port 8080 proto tcp",
                "ufw delete allow 80/tcp",
                "ufw delete allow 443/tcp",
                "ufw delete allow 8448/tcp",
            ]
        );
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        assert!(
            proxied.check(&ctx).unwrap().is_in_sync(),
            "{:?}",
            sys.get("/etc/ufw/user.rules").unwrap_or_default()
        );
        let v4 = sys.get("/etc/ufw/user.rules").unwrap_or_default();
        assert!(
            v4.contains("allow tcp 22 ") && !v4.contains("allow tcp 443 "),
            "{v4}"
        );
        let back = FirewallStep {
            allow: vec!["80/tcp".into(), "443/tcp".into(), "8448/tcp".into()],
            ..proxied
        };
        sys.ran.lock().unwrap().clear();
        let ufw = converge(&sys, &back).unwrap();
        assert_eq!(
            ufw[..3],
            [
                "ufw allow 80/tcp",
                "ufw allow 443/tcp",
                "ufw allow 8448/tcp"
            ]
        );
        assert!(
            ufw.contains(&"ufw delete allow from 10.0.0.2 to any port 8080 proto tcp".to_string()),
            "{ufw:?}"
        );
        assert!(back.check(&ctx).unwrap().is_in_sync());
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
        sys.env.lock().unwrap().insert(
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
