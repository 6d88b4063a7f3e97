//! `backup [HOST_TOML]` (what matrix-backup.timer runs), `backup list [HOST_TOML]` and
//! `restore --snapshot ID HOST_TOML`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};

use crate::backup::{self, restore, Restic};
use crate::report::Verbosity;
use crate::system::{Cmd, RealSystem, System};

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub action: Option<Action>,
    #[command(flatten)]
    pub host_toml: super::HostToml,
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// The backups of this server in the repository: id (for restore), time, age, size, complete or not.
    List {
        #[command(flatten)]
        host_toml: super::HostToml,
        /// One JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The backup to restore: an id from `backup list`, or `latest` (the newest complete one).
    #[arg(long, value_name = "ID")]
    pub snapshot: String,
    /// host.toml of this server: the same server_name as the backup's.
    pub file: PathBuf,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn execute(args: &Args) -> Result<u8> {
    let sys = RealSystem::new("/");
    match &args.action {
        None => {
            let config = args.host_toml.load()?;
            let o = backup::run(&sys, &config, &now)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&o)?);
            } else {
                println!(
                    "backup {} done (database snapshot {}): {} new in the repository, {} old snapshots removed",
                    o.snapshot,
                    o.db_snapshot,
                    backup::human_bytes(o.bytes_added),
                    o.forgotten
                );
            }
            Ok(0)
        }
        Some(Action::List { host_toml, json }) => {
            let config = host_toml.load()?;
            if !config.backup.enabled {
                bail!(
                    "backups are off in {} ([backup] enabled = false)",
                    host_toml.path().display()
                );
            }
            let list = backup::list(&sys, &config, now())?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(0);
            }
            if list.is_empty() {
                println!(
                    "no backups of {} in {} yet",
                    config.server_name,
                    config.backup.repository.as_deref().unwrap_or("")
                );
                return Ok(0);
            }
            println!(
                "{:<10} {:<21} {:>9} {:>10}  state",
                "ID", "TIME (UTC)", "AGE", "SIZE"
            );
            for b in &list {
                println!(
                    "{:<10} {:<21} {:>9} {:>10}  {}",
                    b.id,
                    b.time,
                    backup::time::age(b.age_seconds),
                    backup::human_bytes(b.bytes),
                    if b.complete {
                        "complete"
                    } else {
                        "INCOMPLETE (not restorable)"
                    }
                );
            }
            Ok(0)
        }
    }
}

pub fn restore(args: &RestoreArgs, verbosity: Verbosity) -> Result<u8> {
    let config = crate::config::load(&args.file).map_err(|e| anyhow!("{e}"))?;
    if !config.backup.enabled {
        bail!(
            "[backup] is off in {}: restore reads the repository named by backup.repository (with the \
             password in {}); set enabled = true and repository = … as on the old host",
            args.file.display(),
            backup::PASSWORD_FILE
        );
    }
    let converge = || -> Result<()> {
        match super::converge::apply_file(&args.file, verbosity)? {
            0 => Ok(()),
            _ => Err(anyhow!("apply {} failed (see above)", args.file.display())),
        }
    };
    let sys = RealSystem::new("/");
    // Where restic and the password are already there, a backup of another server or an incomplete one is
    // refused before apply runs with this host.toml.
    let ready = sys
        .run(&Cmd::new("restic").arg("version"))
        .is_ok_and(|o| o.ok())
        && sys.stat(Path::new(backup::PASSWORD_FILE))?.is_some();
    if ready {
        restore::choose(&Restic::new(&sys, &config.backup)?, &config, &args.snapshot)?;
        // No database yet (apply has not run) is fine here; restore asks again after apply.
        if let Ok(Some(data)) = restore::existing_data(&sys, &config) {
            bail!(
                "the database {} on this host already holds data ({data}); restore replaces the whole \
                 database, so it goes only onto a fresh host. Nothing was changed.",
                backup::DATABASE
            );
        }
    }
    // On a fresh host apply installs restic and PostgreSQL, and opens the repository with the password
    // that was put in place: the restore needs all of it. On a converged host it changes nothing.
    eprintln!(
        "apply {} first (it installs what the restore needs; on a converged host it changes nothing)",
        args.file.display()
    );
    converge()?;
    let restic = Restic::new(&sys, &config.backup)?;
    let chosen = restore::choose(&restic, &config, &args.snapshot)?;
    eprintln!(
        "restoring backup {} of {} (taken {})",
        chosen.set.files.short_id, config.server_name, chosen.manifest.created
    );
    let say = |m: &str| eprintln!("restore: {m}");
    restore::restore(&sys, &restic, &config, &chosen, &converge, &say)?;
    println!(
        "restored backup {} of {}: Synapse answers on /health",
        chosen.set.files.short_id, config.server_name
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("matrix-provision").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    #[test]
    fn backup_list_and_restore_parse_as_documented() {
        match parse(&["backup"]) {
            Command::Backup(a) => {
                assert!(a.action.is_none());
                assert_eq!(
                    a.host_toml.path(),
                    PathBuf::from(crate::layout::HOST_CONFIG)
                );
            }
            _ => panic!("not backup"),
        }
        match parse(&["backup", "h.toml", "--json"]) {
            Command::Backup(a) => assert!(a.json && a.host_toml.path() == Path::new("h.toml")),
            _ => panic!("not backup"),
        }
        match parse(&["backup", "list", "h.toml", "--json"]) {
            Command::Backup(Args {
                action: Some(Action::List { host_toml, json }),
                ..
            }) => assert!(json && host_toml.path() == Path::new("h.toml")),
            _ => panic!("not backup list"),
        }
        match parse(&["restore", "--snapshot", "5d44b0cf", "h.toml"]) {
            Command::Restore(r) => {
                assert_eq!(
                    (r.snapshot.as_str(), r.file.as_path()),
                    ("5d44b0cf", Path::new("h.toml"))
                )
            }
            _ => panic!("not restore"),
        }
        // restore needs both: which backup, and this server's host.toml.
        assert!(Cli::try_parse_from(["matrix-provision", "restore", "h.toml"]).is_err());
        assert!(
            Cli::try_parse_from(["matrix-provision", "restore", "--snapshot", "latest"]).is_err()
        );
    }
}
