//! Questions to the host's own tools that steps and `doctor` both ask, through the seam.

use anyhow::Result;

use super::{run_ok, Cmd, System};

/// `systemctl show` properties of one unit.
pub struct UnitState {
    pub load: String,
    pub active: String,
    pub sub: String,
    pub enabled: String,
}

pub fn unit_state(sys: &dyn System, unit: &str) -> Result<UnitState> {
    let out = run_ok(
        sys,
        &Cmd::new("systemctl").args([
            "show",
            "-p",
            "LoadState",
            "-p",
            "ActiveState",
            "-p",
            "SubState",
            "-p",
            "UnitFileState",
            unit,
        ]),
    )?;
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

/// psql as the postgres superuser over the local socket; the SQL goes on stdin (never in argv).
pub fn psql(sql: &str) -> Cmd {
    Cmd::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            "psql",
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            "postgres",
        ])
        .stdin(sql.to_string())
}
