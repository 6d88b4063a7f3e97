//! Backups with restic (issue 14): what `matrix-provision backup` (the timer's command), `backup list` and
//! `restore` do, all through [`System`].
//!
//! Why restic (and not borg): Debian packages it as one static binary with no server side, and it speaks
//! local, SFTP, S3-compatible and REST repositories itself (borg needs borg installed on an SSH server and
//! has no object storage); its repositories are encrypted and deduplicated like borg's, take a stream on
//! stdin (`backup --stdin`, so the database dump never touches the disk), and are checked with
//! `restic check`.
//!
//! One backup is two restic snapshots with host = server_name (so a server moved to a new machine keeps
//! its series):
//! - the database: `pg_dump -Fc -Z0` (one transaction: a consistent view; uncompressed so restic can
//!   deduplicate it) piped into `restic backup --stdin`, tagged [`TAG_DB`];
//! - the files, taken after the dump (media uploaded meanwhile are extra, never missing): the media store,
//!   `/etc/matrix-synapse` (signing key, secrets, config), our secrets, the admin's credentials, host.toml
//!   and a [`Manifest`] naming the database snapshot; tagged [`TAG_FILES`] and `mp-db=<its id>`.
//!
//! A backup is complete when both exist and the manifest agrees; only complete ones are listed as
//! restorable. A run killed between the two leaves a database snapshot nothing refers to: the next run
//! forgets it (under the backup lock), and prunes. Retention applies to the file snapshots; a database
//! snapshot goes with the last file snapshot referring to it.

pub mod restore;
pub mod time;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::{Backup, HostConfig};
use crate::layout;
use crate::system::{owner_ids, run_ok, Cmd, CmdOutput, FileSpec, System};

/// The repository password (a secret generated once by apply, 0600 root). Not in any backup: whoever
/// restores must bring it, so it has to be stored off the host.
pub const PASSWORD_FILE: &str = layout::RESTIC_PASSWORD;
/// The admin's optional `KEY=VALUE` lines for restic's backend (AWS_ACCESS_KEY_ID=…, RESTIC_REST_PASSWORD=…).
pub const ENV_FILE: &str = layout::RESTIC_ENV;
/// restic's local cache of repository metadata.
pub const CACHE_DIR: &str = layout::RESTIC_CACHE_DIR;
/// The last backup's time and result, for `doctor`, metrics and anyone else: see [`State`] (the path
/// comes from the layout: `/var/lib/matrix-provision/last-backup.json`).
pub const STATE_FILE: &str = layout::BACKUP_STATE;
/// Written before the file snapshot and part of it: what the backup holds.
pub const MANIFEST: &str = layout::BACKUP_MANIFEST;
/// One backup (or restore) at a time. In the state directory: the service may write there (and not in /run).
pub const LOCK: &str = layout::BACKUP_LOCK;

/// The database snapshot's one file.
pub const DB_FILENAME: &str = "synapse.pgdump";
pub const DATABASE: &str = "synapse";
pub const SIGNING_KEY: &str = layout::SYNAPSE_SIGNING_KEY;
pub const MEDIA_STORE: &str = layout::SYNAPSE_MEDIA_STORE;
pub const SYNAPSE_CONFIG: &str = layout::SYNAPSE_CONFIG_DIR;
pub const PROVISION_SECRETS: &str = layout::PROVISIONER_SECRETS_DIR;
pub const ADMIN_CREDENTIALS: &str = layout::ADMIN_CREDENTIALS;
pub const HOST_TOML: &str = layout::HOST_CONFIG;

pub const TAG: &str = "matrix-provision";
pub const TAG_DB: &str = "mp-database";
pub const TAG_FILES: &str = "mp-files";
/// `mp-db=<short id>` on a file snapshot: its database snapshot.
pub const TAG_DB_REF: &str = "mp-db=";

/// What the file snapshot must hold (a backup without any of them cannot be restored).
pub const REQUIRED_PATHS: &[&str] = &[SYNAPSE_CONFIG, HOST_TOML, MANIFEST];
/// Saved when present (no upload yet: no media store; no admin_user: no credentials).
pub const OPTIONAL_PATHS: &[&str] = &[MEDIA_STORE, PROVISION_SECRETS, ADMIN_CREDENTIALS];

/// [`STATE_FILE`] (`layout::BACKUP_STATE`), rewritten atomically (0644 root) when a backup starts
/// and when it ends; absent until the first backup. Format 1, one JSON object:
///
/// ```json
/// {"format": 1, "result": "ok", "pid": 4242,
///  "started": "2026-12-01T03:12:09Z", "started_unix": 1796094729,
///  "finished": "2026-12-01T03:13:40Z", "finished_unix": 1796094820,
///  "message": "", "snapshot": "5d44b0cf", "db_snapshot": "d57de83e", "bytes_added": 1048576,
///  "last_success": "2026-12-01T03:13:40Z", "last_success_unix": 1796094820,
///  "schedule": "daily", "max_age_seconds": 108000}
/// ```
///
/// - `result`: `"running"` (written at the start; with `pid` no longer alive it means the run was
///   killed), `"ok"` or `"failed"` (then `message` says why, one line, no secret).
/// - `finished*`, `snapshot`, `db_snapshot`, `bytes_added` (new data the repository stored): of this run,
///   null/0 while running or when it failed before them.
/// - `last_success*`: the end of the newest successful run, carried over by every later run; null before
///   the first success. A backup is overdue when now − `last_success_unix` > `max_age_seconds` (the
///   schedule's period plus slack, from `[backup] schedule`).
/// - Times are UTC; `*_unix` are seconds since the epoch. Readers must ignore keys they do not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    pub result: String,
    pub pid: u32,
    pub started: String,
    pub started_unix: i64,
    pub finished: Option<String>,
    pub finished_unix: Option<i64>,
    pub message: String,
    pub snapshot: Option<String>,
    pub db_snapshot: Option<String>,
    pub bytes_added: u64,
    pub last_success: Option<String>,
    pub last_success_unix: Option<i64>,
    pub schedule: String,
    pub max_age_seconds: u64,
}

impl State {
    pub fn load(sys: &dyn System) -> Result<Option<State>> {
        let Some(bytes) = sys.read(Path::new(STATE_FILE))? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{STATE_FILE} is not a backup state file (format 1)"))
    }

    fn save(&self, sys: &dyn System) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        let (uid, gid) = owner_ids(sys, "root", "root")?;
        sys.write(
            &FileSpec {
                path: STATE_FILE.into(),
                uid,
                gid,
                mode: 0o644,
            },
            text.as_bytes(),
        )
    }
}

impl State {
    /// [`layout::BACKUP_TEXTFILE`] for node-exporter, after each run: the last success's time (0 before
    /// the first, so "backup too old" fires on a server that never had one) and whether this run
    /// succeeded. Skipped when the textfile directory is missing (metrics off). The atomic write's temp
    /// name does not end in `.prom`, so the collector never reads half a file.
    fn save_textfile(&self, sys: &dyn System) -> Result<()> {
        let dir = Path::new(layout::TEXTFILE_DIR);
        if !sys
            .stat(dir)?
            .is_some_and(|st| st.kind == crate::system::FileKind::Dir)
        {
            return Ok(());
        }
        let text = textfile(self);
        let (uid, gid) = owner_ids(sys, "root", "root")?;
        sys.write(
            &FileSpec {
                path: layout::BACKUP_TEXTFILE.into(),
                uid,
                gid,
                mode: 0o644,
            },
            text.as_bytes(),
        )
    }
}

/// The textfile's text (Prometheus exposition format).
pub fn textfile(state: &State) -> String {
    let ok = layout::BACKUP_SUCCESS_METRIC;
    let last = layout::BACKUP_LAST_RUN_OK_METRIC;
    format!(
        "# HELP {ok} Unix time of the last matrix-provision backup that succeeded (0: none yet).\n\
         # TYPE {ok} gauge\n\
         {ok} {}\n\
         # HELP {last} 1 when the last backup run succeeded, 0 when it failed.\n\
         # TYPE {last} gauge\n\
         {last} {}\n",
        state.last_success_unix.unwrap_or(0),
        u8::from(state.result == "ok"),
    )
}

/// What the file snapshot says about the backup it belongs to (`restic dump` reads it back at restore).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub server_name: String,
    /// The database snapshot (short id) taken just before.
    pub db_snapshot: String,
    pub created: String,
    pub matrix_provision: String,
}

/// One restic snapshot as `restic snapshots --json` lists it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Snapshot {
    pub time: String,
    pub id: String,
    pub short_id: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
}

impl Snapshot {
    fn has(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
    /// The database snapshot a file snapshot refers to.
    pub fn db_ref(&self) -> Option<&str> {
        self.tags.iter().find_map(|t| t.strip_prefix(TAG_DB_REF))
    }
    pub fn unix(&self) -> i64 {
        time::parse_rfc3339(&self.time).unwrap_or(0)
    }
    /// `id` given by the admin: a prefix of the full id (restic's short ids are one).
    pub fn matches(&self, id: &str) -> bool {
        !id.is_empty() && self.id.starts_with(id)
    }
}

/// One backup: its file snapshot and, when complete, its database snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupSet {
    pub files: Snapshot,
    pub db: Option<Snapshot>,
}

/// Group snapshots of `host` into backups (oldest first), and the database snapshots no file snapshot
/// refers to (left by a killed run, or by retention).
pub fn group(snapshots: &[Snapshot], host: &str) -> (Vec<BackupSet>, Vec<Snapshot>) {
    let ours: Vec<&Snapshot> = snapshots
        .iter()
        .filter(|s| s.hostname == host && s.has(TAG))
        .collect();
    let dbs: Vec<&Snapshot> = ours.iter().copied().filter(|s| s.has(TAG_DB)).collect();
    let mut sets: Vec<BackupSet> = ours
        .iter()
        .filter(|s| s.has(TAG_FILES))
        .map(|f| BackupSet {
            files: (*f).clone(),
            db: f
                .db_ref()
                .and_then(|r| dbs.iter().find(|d| d.matches(r)))
                .map(|d| (*d).clone()),
        })
        .collect();
    sets.sort_by_key(|s| s.files.unix());
    let orphans = dbs
        .into_iter()
        .filter(|d| {
            !sets
                .iter()
                .any(|s| s.files.db_ref().is_some_and(|r| d.matches(r)))
        })
        .cloned()
        .collect();
    (sets, orphans)
}

/// restic with this host's repository, password file, cache and backend environment.
pub struct Restic<'a> {
    sys: &'a dyn System,
    repository: String,
    env: Vec<(String, String)>,
}

/// What the repository says to our password.
#[derive(Debug, PartialEq)]
pub enum RepoState {
    Ready,
    /// Nothing there yet: `restic init` makes it.
    Missing,
    /// A repository, but the password file does not open it.
    WrongPassword,
}

const HOUR: u64 = 3600;

impl<'a> Restic<'a> {
    pub fn new(sys: &'a dyn System, backup: &Backup) -> Result<Restic<'a>> {
        let repository = backup
            .repository
            .clone()
            .context("backup.repository is not set in host.toml")?;
        let env = match sys.read(Path::new(ENV_FILE))? {
            Some(bytes) => parse_env(&String::from_utf8_lossy(&bytes))
                .with_context(|| format!("reading {ENV_FILE}"))?,
            None => Vec::new(),
        };
        Ok(Restic {
            sys,
            repository,
            env,
        })
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// `restic ARGS` for this repository: everything restic needs comes through the environment, so no
    /// secret is ever in argv (the env file's values included).
    pub fn cmd<I: IntoIterator<Item = S>, S: Into<String>>(&self, args: I) -> Cmd {
        let mut cmd = Cmd::new("restic")
            .args(args)
            .env("RESTIC_REPOSITORY", self.repository.clone())
            .env("RESTIC_PASSWORD_FILE", PASSWORD_FILE)
            .env("RESTIC_CACHE_DIR", CACHE_DIR)
            .timeout(std::time::Duration::from_secs(HOUR));
        for (k, v) in &self.env {
            cmd = cmd.env(k, v.clone());
        }
        cmd
    }

    fn ok(&self, cmd: Cmd) -> Result<CmdOutput> {
        run_ok(self.sys, &cmd).with_context(|| format!("restic repository {}", self.repository))
    }

    pub fn probe(&self) -> Result<RepoState> {
        let out = self.sys.run(&self.cmd(["cat", "config"]))?;
        if out.ok() {
            return Ok(RepoState::Ready);
        }
        // Exit codes 10 and 12 since restic 0.17; the messages in every version (0.14 on Debian 12).
        let err = out.stderr.to_ascii_lowercase();
        if out.status == 12 || err.contains("wrong password") {
            return Ok(RepoState::WrongPassword);
        }
        if out.status == 10
            || err.contains("is there a repository at the following location")
            || err.contains("repository does not exist")
        {
            return Ok(RepoState::Missing);
        }
        bail!(
            "restic cannot open the repository {} (exit {}): {}",
            self.repository,
            out.status,
            crate::report::escape(&out.tail())
        )
    }

    pub fn init(&self) -> Result<()> {
        self.ok(self.cmd(["init"])).map(|_| ())
    }

    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let out = self.ok(self.cmd(["snapshots", "--json"]))?;
        let text = out.stdout.trim();
        if text.is_empty() || text == "null" {
            return Ok(Vec::new());
        }
        serde_json::from_str(text).context("`restic snapshots --json`: unexpected output")
    }

    /// Restore size (bytes) of the given snapshots together.
    pub fn size(&self, ids: &[&str]) -> Result<u64> {
        let out = self.ok(self.cmd(
            ["stats", "--json", "--mode", "restore-size"]
                .into_iter()
                .chain(ids.iter().copied()),
        ))?;
        let v: serde_json::Value =
            serde_json::from_str(out.stdout.trim()).context("`restic stats --json`")?;
        Ok(v["total_size"].as_u64().unwrap_or(0))
    }

    pub fn forget(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.ok(self.cmd(
            ["forget".to_string()]
                .into_iter()
                .chain(ids.iter().cloned()),
        ))
        .map(|_| ())
    }

    /// A file out of a snapshot, in memory (small files only: the manifest, a key).
    pub fn dump(&self, snapshot: &str, path: &str) -> Result<Option<String>> {
        let out = self.sys.run(&self.cmd(["dump", snapshot, path]))?;
        Ok(out.ok().then_some(out.stdout))
    }
}

/// `KEY=VALUE` lines (blank lines and `#` comments skipped; optional `export `; quotes around the value
/// removed), as a systemd EnvironmentFile or a shell would read them.
pub fn parse_env(text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            bail!("line {}: expected KEY=VALUE", n + 1);
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!(
                "line {}: `{}` is not a variable name",
                n + 1,
                crate::report::escape(k)
            );
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
            .unwrap_or(v);
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// The summary line of `restic backup --json`: (snapshot short id, bytes added).
fn summary(out: &CmdOutput) -> Option<(String, u64)> {
    out.stdout.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["message_type"] == "summary").then(|| {
            let id = v["snapshot_id"].as_str().unwrap_or("");
            (
                id.chars().take(8).collect(),
                v["data_added"].as_u64().unwrap_or(0),
            )
        })
    })
}

pub use crate::system::as_postgres;

/// What one backup run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub snapshot: String,
    pub db_snapshot: String,
    pub bytes_added: u64,
    /// Snapshots removed by the retention policy and leftovers of killed runs.
    pub forgotten: usize,
}

/// `matrix-provision backup`: dump, files, retention, with the state file written at start and end.
/// `now` gives seconds since the epoch (tests pin it).
pub fn run(sys: &dyn System, config: &HostConfig, now: &dyn Fn() -> i64) -> Result<Outcome> {
    let b = &config.backup;
    if !b.enabled {
        bail!("backups are off: set enabled = true and a repository under [backup] in host.toml, then run apply");
    }
    let _lock = sys.lock_exclusive(Path::new(LOCK)).map_err(|e| {
        anyhow::anyhow!("another backup or restore is running (lock {LOCK}: {e:#})")
    })?;
    let previous = State::load(sys).ok().flatten();
    let started = now();
    let mut state = State {
        format: 1,
        result: "running".into(),
        pid: std::process::id(),
        started: time::rfc3339(started),
        started_unix: started,
        finished: None,
        finished_unix: None,
        message: String::new(),
        snapshot: None,
        db_snapshot: None,
        bytes_added: 0,
        last_success: previous.as_ref().and_then(|p| p.last_success.clone()),
        last_success_unix: previous.as_ref().and_then(|p| p.last_success_unix),
        schedule: b.schedule.clone(),
        max_age_seconds: b.max_age_secs(),
    };
    state.save(sys)?;
    let result = run_locked(sys, config, now);
    let end = now();
    state.finished = Some(time::rfc3339(end));
    state.finished_unix = Some(end);
    match &result {
        Ok(o) => {
            state.result = "ok".into();
            state.snapshot = Some(o.snapshot.clone());
            state.db_snapshot = Some(o.db_snapshot.clone());
            state.bytes_added = o.bytes_added;
            state.last_success = state.finished.clone();
            state.last_success_unix = Some(end);
        }
        Err(e) => {
            state.result = "failed".into();
            let msg = format!("{e:#}");
            state.message = crate::report::escape(msg.lines().next().unwrap_or(""));
        }
    }
    state.save(sys)?;
    state.save_textfile(sys)?;
    result
}

fn run_locked(sys: &dyn System, config: &HostConfig, now: &dyn Fn() -> i64) -> Result<Outcome> {
    let b = &config.backup;
    let host = config.server_name.as_str();
    let restic = Restic::new(sys, b)?;
    match restic.probe()? {
        RepoState::Ready => {}
        RepoState::Missing => bail!(
            "there is no restic repository at {}: run `matrix-provision apply` (it creates it)",
            restic.repository()
        ),
        RepoState::WrongPassword => bail!(
            "the password in {PASSWORD_FILE} does not open the repository {}",
            restic.repository()
        ),
    }
    if sys.stat(Path::new(SIGNING_KEY))?.is_none() {
        bail!("{SIGNING_KEY} does not exist: has Synapse ever started? (systemctl status matrix-synapse)");
    }
    // A killed restic leaves its lock; `unlock` removes only locks whose process is gone (or that are old).
    run_ok(sys, &restic.cmd(["unlock"]))?;
    // Database snapshots of killed runs: nothing refers to them and nothing will.
    let (_, orphans) = group(&restic.snapshots()?, host);
    restic.forget(&orphans.iter().map(|s| s.id.clone()).collect::<Vec<_>>())?;
    let forgotten_before = orphans.len();

    // The dump, streamed: pg_dump's stdout is restic's stdin.
    let db_args = [
        "backup",
        "--stdin",
        "--stdin-filename",
        DB_FILENAME,
        "--host",
        host,
        "--tag",
        TAG,
        "--tag",
        TAG_DB,
        "--json",
    ];
    let dump = as_postgres("pg_dump", &["--format=custom", "--compress=0", DATABASE])
        .timeout(std::time::Duration::from_secs(12 * HOUR));
    let outs = sys.run_pipeline(&[
        dump,
        restic
            .cmd(db_args)
            .timeout(std::time::Duration::from_secs(12 * HOUR)),
    ])?;
    let (pg, rs) = (&outs[0], &outs[1]);
    let db = summary(rs);
    if !pg.ok() {
        // restic saw an early end of its input and may have stored it: a truncated dump must not stay.
        if let Some((id, _)) = &db {
            let _ = restic.forget(std::slice::from_ref(id));
        }
        bail!(
            "pg_dump of database {DATABASE} failed (exit {}): {}",
            pg.status,
            crate::report::escape(&pg.tail())
        );
    }
    let Some((db_id, db_added)) = db.filter(|_| rs.ok()) else {
        bail!(
            "restic could not store the database dump (exit {}): {}",
            rs.status,
            crate::report::escape(&rs.tail())
        );
    };

    let manifest = Manifest {
        format: 1,
        server_name: host.to_string(),
        db_snapshot: db_id.clone(),
        created: time::rfc3339(now()),
        matrix_provision: env!("CARGO_PKG_VERSION").to_string(),
    };
    let (uid, gid) = owner_ids(sys, "root", "root")?;
    sys.write(
        &FileSpec {
            path: MANIFEST.into(),
            uid,
            gid,
            mode: 0o600,
        },
        format!("{}\n", serde_json::to_string_pretty(&manifest)?).as_bytes(),
    )?;
    let mut paths: Vec<&str> = REQUIRED_PATHS.to_vec();
    for p in OPTIONAL_PATHS {
        if sys.stat(Path::new(p))?.is_some() {
            paths.push(p);
        }
    }
    let db_tag = format!("{TAG_DB_REF}{db_id}");
    let mut args: Vec<String> = [
        "backup", "--host", host, "--tag", TAG, "--tag", TAG_FILES, "--tag", &db_tag, "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(paths.iter().map(|p| p.to_string()));
    let files = sys.run(
        &restic
            .cmd(args)
            .timeout(std::time::Duration::from_secs(12 * HOUR)),
    )?;
    let stored = summary(&files);
    if !files.ok() {
        // Exit 3: a snapshot was made but some file could not be read; it is not a complete backup.
        if let Some((id, _)) = &stored {
            let _ = restic.forget(std::slice::from_ref(id));
        }
        let _ = restic.forget(std::slice::from_ref(&db_id));
        bail!(
            "restic could not back up {} (exit {}): {}",
            paths.join(" "),
            files.status,
            crate::report::escape(&files.tail())
        );
    }
    let (files_id, files_added) =
        stored.context("`restic backup --json` printed no summary (no snapshot id)")?;

    // Retention on the file snapshots; their database snapshots follow, then one prune.
    let keep = |flag: &str, n: u32| [flag.to_string(), n.to_string()];
    let mut forget: Vec<String> = [
        "forget",
        "--host",
        host,
        "--tag",
        TAG_FILES,
        "--group-by",
        "host",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    forget.extend(keep("--keep-daily", b.keep_daily));
    forget.extend(keep("--keep-weekly", b.keep_weekly));
    forget.extend(keep("--keep-monthly", b.keep_monthly));
    let before = restic.snapshots()?;
    run_ok(sys, &restic.cmd(forget))?;
    let after = restic.snapshots()?;
    let (_, orphans) = group(&after, host);
    restic.forget(&orphans.iter().map(|s| s.id.clone()).collect::<Vec<_>>())?;
    run_ok(
        sys,
        &restic
            .cmd(["prune"])
            .timeout(std::time::Duration::from_secs(6 * HOUR)),
    )?;
    Ok(Outcome {
        snapshot: files_id,
        db_snapshot: db_id,
        bytes_added: db_added + files_added,
        forgotten: forgotten_before + before.len().saturating_sub(after.len()) + orphans.len(),
    })
}

/// One line of `backup list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listed {
    /// What `restore --snapshot` takes (the file snapshot's short id).
    pub id: String,
    pub time: String,
    pub age_seconds: i64,
    /// Restore size of database dump + files.
    pub bytes: u64,
    pub complete: bool,
    pub db_snapshot: Option<String>,
}

/// Every backup of this server in the repository, newest first.
pub fn list(sys: &dyn System, config: &HostConfig, now: i64) -> Result<Vec<Listed>> {
    let restic = Restic::new(sys, &config.backup)?;
    let (sets, _) = group(&restic.snapshots()?, &config.server_name);
    let mut out = Vec::new();
    for s in sets.iter().rev() {
        let mut ids = vec![s.files.id.as_str()];
        ids.extend(s.db.as_ref().map(|d| d.id.as_str()));
        out.push(Listed {
            id: s.files.short_id.clone(),
            time: time::rfc3339(s.files.unix()),
            age_seconds: now - s.files.unix(),
            bytes: restic.size(&ids)?,
            complete: s.db.is_some(),
            db_snapshot: s.db.as_ref().map(|d| d.short_id.clone()),
        });
    }
    Ok(out)
}

/// `1.4 GiB`-style sizes for listings.
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// Host paths of a backup, for messages.
pub fn saved_paths() -> Vec<PathBuf> {
    REQUIRED_PATHS
        .iter()
        .chain(OPTIONAL_PATHS)
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests;
