//! `matrix-provision restore --snapshot ID host.toml`: a backup onto a host apply has converged (the CLI
//! runs apply first). Every refusal comes before anything is touched: a backup of another server_name, an
//! incomplete backup, a target database that already holds data. Then: stop Synapse, files back, the
//! database dropped, recreated and restored in one transaction, apply again (it re-renders the config from
//! the restored secrets and gives the role the restored password), start, /health. A failure after the
//! stop leaves Synapse stopped and says what is restored and what to run: nothing half-restored serves.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{
    group, BackupSet, Manifest, Restic, DATABASE, DB_FILENAME, HOST_TOML, MANIFEST, MEDIA_STORE,
    SIGNING_KEY,
};
use crate::config::HostConfig;
use crate::system::{owner_ids, psql, run_ok, Cmd, System};

use crate::layout::{SYNAPSE_HEALTH_URL as HEALTH, SYNAPSE_UNIT as SYNAPSE};

/// The backup to restore, checked complete and ours.
#[derive(Debug)]
pub struct Chosen {
    pub set: BackupSet,
    pub manifest: Manifest,
}

/// Find backup `id` (a file or database snapshot id, or `latest`) of `config`'s server, and prove it
/// complete: both snapshots, its manifest naming the same database snapshot and server_name, the key.
pub fn choose(restic: &Restic, config: &HostConfig, id: &str) -> Result<Chosen> {
    let host = &config.server_name;
    let snapshots = restic.snapshots()?;
    let (sets, _) = group(&snapshots, host);
    let set = if id == "latest" {
        sets.iter().rev().find(|s| s.db.is_some()).cloned()
    } else {
        sets.iter()
            .find(|s| s.files.matches(id) || s.db.as_ref().is_some_and(|d| d.matches(id)))
            .cloned()
    };
    let Some(set) = set else {
        if let Some(other) = snapshots.iter().find(|s| s.matches(id)) {
            if other.hostname != *host {
                bail!(
                    "snapshot {id} is a backup of {}, but host.toml says server_name = \"{host}\": a Matrix \
                     server cannot change its name (every user and room ID holds it); restore it with that \
                     server's host.toml",
                    crate::report::escape(&other.hostname)
                );
            }
            // Ours, but only a database snapshot no file snapshot refers to: a backup that never finished.
            bail!(
                "snapshot {id} is incomplete: it holds the database dump of a backup that did not finish \
                 (no media, keys or secrets); pick a complete one from `matrix-provision backup list`"
            );
        }
        let mut others: Vec<&str> = snapshots
            .iter()
            .filter(|s| s.tags.iter().any(|t| t == super::TAG) && s.hostname != *host)
            .map(|s| s.hostname.as_str())
            .collect();
        others.sort_unstable();
        others.dedup();
        if sets.is_empty() && !others.is_empty() {
            bail!(
                "no backup {id} of {host} in {}: it holds backups of {}, and host.toml says server_name = \
                 \"{host}\"; a Matrix server cannot change its name: restore with that server's host.toml",
                restic.repository(),
                crate::report::escape(&others.join(", "))
            );
        }
        bail!(
            "no backup {id} of {host} in {}; `matrix-provision backup list` shows them",
            restic.repository()
        );
    };
    let sid = &set.files.short_id;
    let Some(db) = &set.db else {
        bail!(
            "backup {sid} is incomplete: its database snapshot {} is missing from the repository; \
             pick another from `matrix-provision backup list`",
            set.files.db_ref().unwrap_or("(none named)")
        );
    };
    let Some(text) = restic.dump(&set.files.id, MANIFEST)? else {
        bail!("backup {sid} is incomplete: it holds no {MANIFEST}");
    };
    let manifest: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("backup {sid}: {MANIFEST} is not a manifest"))?;
    if manifest.server_name != *host {
        bail!(
            "backup {sid} is of server_name \"{}\", host.toml says \"{host}\"; restore it with that \
             server's host.toml",
            crate::report::escape(&manifest.server_name)
        );
    }
    if !db.matches(&manifest.db_snapshot) {
        bail!(
            "backup {sid} is incomplete: its manifest names database snapshot {}, the snapshot tag {}",
            crate::report::escape(&manifest.db_snapshot),
            db.short_id
        );
    }
    if restic
        .dump(&set.files.id, SIGNING_KEY)?
        .is_none_or(|k| k.trim().is_empty())
    {
        bail!("backup {sid} is incomplete: it holds no signing key ({SIGNING_KEY})");
    }
    Ok(Chosen { set, manifest })
}

/// What the target database already holds beyond a fresh Synapse's schema and the admin apply created:
/// None when it is safe to replace.
pub fn existing_data(sys: &dyn System, config: &HostConfig) -> Result<Option<String>> {
    let tables = run_ok(
        sys,
        &crate::system::psql_in(sys, DATABASE,
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace \
             AND relname IN ('events', 'rooms', 'users');\n",
        ),
    )
    .context("looking into the database synapse (has apply run on this host?)")?;
    let have: Vec<&str> = tables.stdout.lines().map(str::trim).collect();
    let admin = config
        .synapse
        .admin_user
        .as_deref()
        .map(|a| crate::admin::user_id(a, &config.server_name))
        .unwrap_or_default();
    let mut sql = String::new();
    for (table, query) in [
        (
            "rooms",
            "SELECT 'rooms|' || count(*) FROM rooms;".to_string(),
        ),
        (
            "events",
            "SELECT 'events|' || count(*) FROM events;".to_string(),
        ),
        (
            "users",
            format!(
                "SELECT 'users|' || count(*) FROM users WHERE name <> '{}';",
                admin.replace('\'', "''")
            ),
        ),
    ] {
        if have.contains(&table) {
            sql.push_str(&query);
            sql.push('\n');
        }
    }
    if sql.is_empty() {
        return Ok(None);
    }
    let out = run_ok(sys, &crate::system::psql_in(sys, DATABASE, &sql))?;
    let found: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once('|'))
        .filter(|(_, n)| n.trim() != "0")
        .map(|(what, n)| format!("{} {what}", n.trim()))
        .collect();
    Ok((!found.is_empty()).then(|| found.join(", ")))
}

/// Restore `chosen` (checked by [`choose`]); `converge` is apply with the given host.toml.
pub fn restore(
    sys: &dyn System,
    restic: &Restic,
    config: &HostConfig,
    chosen: &Chosen,
    converge: &dyn Fn() -> Result<()>,
    say: &dyn Fn(&str),
) -> Result<()> {
    if let Some(data) = existing_data(sys, config)? {
        bail!(
            "the database {DATABASE} on this host already holds data ({data}); restore replaces the \
             whole database, so it goes only onto a fresh host. Nothing was changed."
        );
    }
    let _lock = sys.lock_exclusive(Path::new(super::LOCK)).map_err(|e| {
        anyhow::anyhow!(
            "a backup is running (lock {}: {e:#}); wait for it",
            super::LOCK
        )
    })?;
    let files = &chosen.set.files;
    let db = chosen.set.db.as_ref().context("incomplete backup")?;
    say(&format!("stopping {SYNAPSE}"));
    run_ok(sys, &Cmd::new("systemctl").args(["stop", SYNAPSE]))?;
    let stage = std::cell::Cell::new("nothing is restored yet");
    let result = (|| -> Result<()> {
        say(&format!(
            "restoring files of snapshot {} (media, keys, secrets, {})",
            files.short_id,
            super::SYNAPSE_CONFIG
        ));
        // The given host.toml is the one in force; the saved copy was only compared (server_name).
        run_ok(
            sys,
            &restic
                .cmd([
                    "restore",
                    files.id.as_str(),
                    "--target",
                    "/",
                    "--exclude",
                    HOST_TOML,
                ])
                .timeout(Duration::from_secs(12 * 3600)),
        )?;
        stage.set("the files are restored, the database is not");
        // restic restores numeric owners; this host's matrix-synapse may have another uid.
        let (uid, gid) = owner_ids(sys, "matrix-synapse", "matrix-synapse")?;
        if let Some(st) = sys.stat(Path::new(SIGNING_KEY))? {
            sys.chown_chmod(Path::new(SIGNING_KEY), (uid, gid), st.mode)?;
        }
        if sys.stat(Path::new(MEDIA_STORE))?.is_some() {
            run_ok(
                sys,
                &Cmd::new("chown").args(["-R", "matrix-synapse:matrix-synapse", MEDIA_STORE]),
            )?;
        }
        say(&format!(
            "restoring database {DATABASE} from snapshot {}",
            db.short_id
        ));
        run_ok(
            sys,
            &psql(
                sys,
                &format!(
                "DROP DATABASE IF EXISTS {DATABASE};\n\
                 CREATE DATABASE {DATABASE} OWNER synapse ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;\n"
                ),
            ),
        )?;
        stage.set("the files are restored; the database is empty");
        let long = Duration::from_secs(12 * 3600);
        let outs = sys.run_pipeline(&[
            restic
                .cmd(["dump", db.id.as_str(), &format!("/{DB_FILENAME}")])
                .timeout(long),
            crate::system::as_postgres(
                "pg_restore",
                &["--exit-on-error", "--single-transaction", "-d", DATABASE],
            )
            .timeout(long),
        ])?;
        if !outs[0].ok() {
            bail!(
                "`restic dump` of the database failed (exit {}): {}",
                outs[0].status,
                crate::report::escape(&outs[0].tail())
            );
        }
        if !outs[1].ok() {
            bail!(
                "pg_restore failed (exit {}; one transaction: nothing of it was kept): {}",
                outs[1].status,
                crate::report::escape(&outs[1].tail())
            );
        }
        stage.set("files and database are restored");
        say("apply again: config from the restored secrets, then Synapse starts");
        converge()?;
        wait_healthy(sys)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = sys.run(&Cmd::new("systemctl").args(["stop", SYNAPSE]));
        let next = match stage.get() {
            "files and database are restored" => {
                "fix the cause, then `matrix-provision apply host.toml` finishes it"
            }
            _ => "fix the cause, then run the same restore again",
        };
        return Err(e.context(format!(
            "restore of backup {} failed: {}; {SYNAPSE} is left stopped; {next}",
            files.short_id,
            stage.get()
        )));
    }
    Ok(())
}

fn wait_healthy(sys: &dyn System) -> Result<()> {
    let mut last = None;
    for _ in 0..120 {
        match sys.http_get(HEALTH) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(last
        .unwrap_or_else(|| anyhow::anyhow!("no answer"))
        .context(format!(
            "{HEALTH} did not answer within 120 s after the restore"
        )))
}
