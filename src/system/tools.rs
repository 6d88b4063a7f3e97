//! Questions to the host's own tools that steps and `doctor` both ask, through the seam.

use std::collections::BTreeSet;

use anyhow::Result;

use super::{run_ok, Cmd, System};

/// `systemctl show` properties of one unit.
pub struct UnitState {
    pub load: String,
    pub active: String,
    pub sub: String,
    pub enabled: String,
}

/// The `systemctl show` that [`unit_state`] runs, for one unit or (RealSystem's batch) several.
pub fn unit_state_cmd<S: AsRef<str>>(units: &[S]) -> Cmd {
    Cmd::new("systemctl")
        .args([
            "show",
            "-p",
            "LoadState",
            "-p",
            "ActiveState",
            "-p",
            "SubState",
            "-p",
            "UnitFileState",
        ])
        .args(units.iter().map(|u| u.as_ref().to_string()))
}

pub fn unit_state(sys: &dyn System, unit: &str) -> Result<UnitState> {
    let out = run_ok(sys, &unit_state_cmd(&[unit]))?;
    let get = |key: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or("")
            .to_string()
    };
    Ok(UnitState {
        load: get("LoadState"),
        active: get("ActiveState"),
        sub: get("SubState"),
        enabled: get("UnitFileState"),
    })
}

/// `TOOL ARGS` as the postgres superuser over the local socket (peer authentication). setpriv, not
/// runuser: no PAM session (100-300 ms less per call), and it works inside the sandboxed timer units with
/// only setuid/setgid.
pub fn as_postgres(tool: &str, args: &[&str]) -> Cmd {
    Cmd::new("setpriv")
        .args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--reset-env",
            "--",
            tool,
        ])
        .args(args.iter().copied())
}

/// psql as the postgres superuser on the `postgres` database; see [`psql_in`].
pub fn psql(sys: &dyn System, sql: &str) -> Cmd {
    psql_in(sys, "postgres", sql)
}

/// psql as the postgres superuser on `database`, unaligned tuples only, stopping at the first error; the
/// SQL goes on stdin (never in argv). It runs the release's own psql directly rather than
/// postgresql-common's Perl wrapper: the two are most of a converged run's critical path otherwise. A host
/// without that version's client (mid-upgrade, still on the old release's PostgreSQL) gets the wrapper.
pub fn psql_in(sys: &dyn System, database: &str, sql: &str) -> Cmd {
    let own = crate::layout::postgres_psql(crate::release::Release::of_host(sys).postgres);
    let program = match sys.stat(std::path::Path::new(&own)) {
        Ok(Some(_)) => own,
        _ => "psql".to_string(),
    };
    as_postgres(
        &program,
        &[
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            database,
        ],
    )
    .stdin(sql.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::FakeSystem;

    #[test]
    fn psql_is_the_releases_own_client_as_postgres_or_the_wrapper_without_it() {
        let sys = FakeSystem::new();
        let release = crate::release::Release::of_host(&sys);
        let cmd = psql(&sys, "SELECT 1;");
        assert_eq!(cmd.program, "setpriv");
        assert!(cmd.args.starts_with(&["--reuid=postgres".to_string()]));
        assert_eq!(
            cmd.args[cmd.args.iter().position(|a| a == "--").unwrap() + 1],
            "psql"
        );
        assert_eq!(cmd.stdin.as_deref(), Some(&b"SELECT 1;"[..]));
        let own = crate::layout::postgres_psql(release.postgres);
        sys.put(&own, "");
        let cmd = psql(&sys, "SELECT 1;");
        assert!(
            cmd.display().contains(&format!("-- {own} -X")),
            "{}",
            cmd.display()
        );
    }
}
