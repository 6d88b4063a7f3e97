use std::sync::{Arc, Mutex};

use super::restore::{choose, existing_data, restore};
use super::*;
use crate::system::{CmdOutput, FakeSystem};

const NOW: i64 = 1_796_131_516;

fn config() -> HostConfig {
    crate::config::parse(
        "server_name = \"example.com\"\n[acme]\nemail = \"a@example.com\"\n[synapse]\nadmin_user = \"admin\"\n\
         [backup]\nenabled = true\nrepository = \"/srv/restic\"\nkeep_daily = 3\nkeep_weekly = 2\nkeep_monthly = 1\n",
        "host.toml",
    )
    .unwrap()
}

fn out(status: i32, stdout: &str) -> CmdOutput {
    CmdOutput {
        status,
        stdout: stdout.into(),
        stderr: String::new(),
    }
}

fn snap(id: &str, time: &str, host: &str, tags: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "time": time, "id": format!("{id}{}", "0".repeat(56)), "short_id": id, "hostname": host,
        "tags": tags, "paths": ["/x"],
    })
}

/// A repository in memory: `restic snapshots` lists what `backup` added and `forget` left.
#[derive(Clone, Default)]
struct Repo {
    snaps: Arc<Mutex<Vec<serde_json::Value>>>,
    next: Arc<Mutex<u32>>,
}

impl Repo {
    fn add(&self, v: serde_json::Value) {
        self.snaps.lock().unwrap().push(v);
    }
    fn ids(&self) -> Vec<String> {
        self.snaps
            .lock()
            .unwrap()
            .iter()
            .map(|s| s["short_id"].as_str().unwrap().to_string())
            .collect()
    }
    fn install(&self, sys: &FakeSystem) {
        let repo = self.clone();
        sys.on(move |c| {
            if c.program != "restic" {
                return None;
            }
            let a: Vec<&str> = c.args.iter().map(String::as_str).collect();
            Some(match a.as_slice() {
                ["cat", "config"] | ["unlock"] | ["prune"] => out(0, ""),
                ["snapshots", "--json"] => out(0, &serde_json::to_string(&*repo.snaps.lock().unwrap()).unwrap()),
                ["forget", ids @ ..] if !ids[0].starts_with("--") => {
                    repo.snaps.lock().unwrap().retain(|s| !ids.iter().any(|i| s["id"].as_str().unwrap().starts_with(i)));
                    out(0, "")
                }
                ["forget", ..] => out(0, ""),
                ["backup", rest @ ..] => {
                    let mut n = repo.next.lock().unwrap();
                    *n += 1;
                    let id = format!("{:08x}", 0xabc00000u32 + *n);
                    let tags: Vec<&str> = rest
                        .windows(2)
                        .filter(|w| w[0] == "--tag")
                        .map(|w| w[1])
                        .collect();
                    repo.add(snap(&id, "2026-12-01T13:25:16Z", "example.com", &tags));
                    out(
                        0,
                        &format!(
                            "{{\"message_type\":\"status\"}}\n{{\"message_type\":\"summary\",\"data_added\":100,\"snapshot_id\":\"{id}\"}}\n"
                        ),
                    )
                }
                _ => return None,
            })
        });
    }
}

fn host() -> (FakeSystem, Repo) {
    let sys = FakeSystem::new();
    std::fs::create_dir_all(sys.path(layout::STATE_DIR)).unwrap();
    sys.put(SIGNING_KEY, "ed25519 a_key secret\n");
    sys.put(HOST_TOML, "server_name = \"example.com\"\n");
    sys.on_cmd(
        "setpriv --reuid=postgres --regid=postgres --init-groups --reset-env -- pg_dump",
        0,
        "PGDMP-the-whole-database",
    );
    let repo = Repo::default();
    repo.install(&sys);
    (sys, repo)
}

#[test]
fn a_backup_streams_the_dump_into_restic_then_the_files_then_prunes() {
    let (sys, repo) = host();
    let o = run(&sys, &config(), &|| NOW).unwrap();
    let ran = sys.ran.lock().unwrap().clone();
    let stdin_backup = ran
        .iter()
        .find(|c| c.args.contains(&"--stdin".to_string()))
        .unwrap();
    // pg_dump's output reached restic through the pipe, and was never written to disk.
    assert_eq!(
        stdin_backup.stdin.as_deref(),
        Some(&b"PGDMP-the-whole-database"[..])
    );
    assert!(sys
        .snapshot()
        .iter()
        .all(|(_, c)| !String::from_utf8_lossy(c).contains("PGDMP")));
    let dump = ran
        .iter()
        .find(|c| c.args.contains(&"pg_dump".to_string()))
        .unwrap();
    assert_eq!(dump.display(), "setpriv --reuid=postgres --regid=postgres --init-groups --reset-env -- pg_dump --format=custom --compress=0 synapse");
    let files = ran
        .iter()
        .find(|c| {
            c.args.first().map(String::as_str) == Some("backup")
                && !c.args.contains(&"--stdin".to_string())
        })
        .unwrap();
    let line = files.display();
    assert!(
        line.contains(&format!("--tag mp-db={}", o.db_snapshot)),
        "{line}"
    );
    for p in [SYNAPSE_CONFIG, HOST_TOML, MANIFEST] {
        assert!(files.args.contains(&p.to_string()), "{p} in {line}");
    }
    // No upload yet: no media store to save, and that is no error.
    assert!(!files.args.contains(&MEDIA_STORE.to_string()), "{line}");
    let manifest: Manifest = serde_json::from_str(&sys.get(MANIFEST).unwrap()).unwrap();
    assert_eq!(
        (manifest.server_name.as_str(), manifest.db_snapshot.as_str()),
        ("example.com", o.db_snapshot.as_str())
    );
    let forget = ran
        .iter()
        .map(Cmd::display)
        .find(|c| c.starts_with("restic forget --host"))
        .unwrap();
    assert_eq!(
        forget,
        "restic forget --host example.com --tag mp-files --group-by host --keep-daily 3 --keep-weekly 2 --keep-monthly 1"
    );
    assert_eq!(ran.last().unwrap().display(), "restic prune");
    // Both snapshots stay: a complete backup.
    let (sets, orphans) = group(
        &serde_json::from_value::<Vec<Snapshot>>(serde_json::Value::Array(
            repo.snaps.lock().unwrap().clone(),
        ))
        .unwrap(),
        "example.com",
    );
    assert_eq!((sets.len(), orphans.len()), (1, 0));
    assert!(sets[0].db.is_some());
    let state = State::load(&sys).unwrap().unwrap();
    assert_eq!(state.result, "ok");
    assert_eq!(state.last_success_unix, Some(NOW));
    assert_eq!(state.snapshot.as_deref(), Some(o.snapshot.as_str()));
    assert_eq!(state.max_age_seconds, 30 * 3600);
    assert_eq!(o.bytes_added, 200);
}

#[test]
fn a_failed_dump_leaves_no_truncated_snapshot_and_records_the_failure() {
    let (sys, repo) = host();
    // A previous success is carried over.
    run(&sys, &config(), &|| NOW - 86_400).unwrap();
    let before = repo.ids();
    sys.on_cmd(
        "setpriv --reuid=postgres --regid=postgres --init-groups --reset-env -- pg_dump",
        1,
        "PGDMP-half",
    );
    let err = run(&sys, &config(), &|| NOW).unwrap_err().to_string();
    assert!(err.contains("pg_dump of database synapse failed"), "{err}");
    assert_eq!(repo.ids(), before, "the truncated dump was forgotten");
    let state = State::load(&sys).unwrap().unwrap();
    assert_eq!(state.result, "failed");
    assert!(state.message.contains("pg_dump"), "{}", state.message);
    assert_eq!(state.last_success_unix, Some(NOW - 86_400));
    // No file snapshot was attempted after it.
    let backups = sys
        .commands()
        .iter()
        .filter(|c| c.starts_with("restic backup --host"))
        .count();
    assert_eq!(backups, 1, "only the first run's");
}

#[test]
fn the_database_snapshot_a_killed_run_left_is_forgotten_by_the_next() {
    let (sys, repo) = host();
    repo.add(snap(
        "deadbeef",
        "2026-11-30T03:00:00Z",
        "example.com",
        &[TAG, TAG_DB],
    ));
    // Another server's snapshots in the same repository are never touched.
    repo.add(snap(
        "0the0r00",
        "2026-11-30T03:00:00Z",
        "other.org",
        &[TAG, TAG_DB],
    ));
    run(&sys, &config(), &|| NOW).unwrap();
    let ids = repo.ids();
    assert!(!ids.contains(&"deadbeef".to_string()), "{ids:?}");
    assert!(ids.contains(&"0the0r00".to_string()), "{ids:?}");
    assert_eq!(ids.len(), 3);
}

#[test]
fn backups_off_or_a_wrong_password_are_clear_errors() {
    let (sys, _) = host();
    let mut c = config();
    c.backup.enabled = false;
    assert!(run(&sys, &c, &|| NOW)
        .unwrap_err()
        .to_string()
        .contains("backups are off"));
    sys.on(|c| {
        (c.args == ["cat", "config"]).then(|| CmdOutput {
            status: 12,
            stdout: String::new(),
            stderr: "Fatal: wrong password or no key found\n".into(),
        })
    });
    let err = run(&sys, &config(), &|| NOW).unwrap_err().to_string();
    assert!(err.contains(PASSWORD_FILE), "{err}");
    assert_eq!(State::load(&sys).unwrap().unwrap().result, "failed");
}

#[test]
fn the_env_file_reaches_restic_in_its_environment() {
    let (sys, _) = host();
    sys.put(
        ENV_FILE,
        "# S3\nAWS_ACCESS_KEY_ID=AKIA1\nexport AWS_SECRET_ACCESS_KEY=\"s3cr3t\"\n",
    );
    run(&sys, &config(), &|| NOW).unwrap();
    let ran = sys.ran.lock().unwrap().clone();
    let restic: Vec<&Cmd> = ran.iter().filter(|c| c.program == "restic").collect();
    assert!(restic.iter().all(|c| c
        .env
        .contains(&("AWS_SECRET_ACCESS_KEY".into(), "s3cr3t".into()))));
    assert!(restic.iter().all(|c| !c.display().contains("s3cr3t")));
    assert!(parse_env("no equals sign\n").is_err());
}

fn repo_with_backups() -> Repo {
    let repo = Repo::default();
    repo.add(snap(
        "aaaa0001",
        "2026-11-29T03:00:00Z",
        "example.com",
        &[TAG, TAG_DB],
    ));
    repo.add(snap(
        "bbbb0001",
        "2026-11-29T03:00:09Z",
        "example.com",
        &[TAG, TAG_FILES, "mp-db=aaaa0001"],
    ));
    repo.add(snap(
        "aaaa0002",
        "2026-11-30T03:00:00Z",
        "example.com",
        &[TAG, TAG_DB],
    ));
    repo.add(snap(
        "bbbb0002",
        "2026-11-30T03:00:09Z",
        "example.com",
        &[TAG, TAG_FILES, "mp-db=aaaa0002"],
    ));
    // A file snapshot whose database snapshot is gone, and a killed run's dump.
    repo.add(snap(
        "bbbb0003",
        "2026-11-30T09:00:09Z",
        "example.com",
        &[TAG, TAG_FILES, "mp-db=aaaa0003"],
    ));
    repo.add(snap(
        "aaaa0004",
        "2026-11-30T10:00:00Z",
        "example.com",
        &[TAG, TAG_DB],
    ));
    repo.add(snap(
        "cccc0001",
        "2026-11-30T10:00:00Z",
        "other.org",
        &[TAG, TAG_FILES, "mp-db=x"],
    ));
    repo
}

fn manifest_for(sys: &FakeSystem, files: &'static str, json: String) {
    sys.on(move |c| {
        (c.program == "restic"
            && c.args.first().map(String::as_str) == Some("dump")
            && c.args[1].starts_with(files))
        .then(|| match c.args[2].as_str() {
            MANIFEST => out(0, &json),
            SIGNING_KEY => out(0, "ed25519 a_key secret\n"),
            _ => out(1, ""),
        })
    });
}

fn good_manifest(db: &str) -> String {
    format!("{{\"format\":1,\"server_name\":\"example.com\",\"db_snapshot\":\"{db}\",\"created\":\"2026-11-30T03:00:00Z\",\"matrix_provision\":\"0.1.0\"}}")
}

#[test]
fn list_shows_complete_and_incomplete_backups_newest_first_with_size_and_age() {
    let sys = FakeSystem::new();
    repo_with_backups().install(&sys);
    sys.on_cmd(
        "restic stats --json --mode restore-size",
        0,
        "{\"total_size\":1048576,\"total_file_count\":4}",
    );
    let l = list(&sys, &config(), NOW).unwrap();
    let ids: Vec<(&str, bool)> = l.iter().map(|b| (b.id.as_str(), b.complete)).collect();
    assert_eq!(
        ids,
        [("bbbb0003", false), ("bbbb0002", true), ("bbbb0001", true)]
    );
    assert_eq!(l[1].bytes, 1_048_576);
    assert_eq!(
        l[1].age_seconds,
        NOW - time::parse_rfc3339("2026-11-30T03:00:09Z").unwrap()
    );
    let stats = sys
        .commands()
        .into_iter()
        .find(|c| c.starts_with("restic stats"))
        .unwrap();
    assert!(stats.contains("bbbb0003"), "{stats}");
}

#[test]
fn restore_chooses_only_a_complete_backup_of_this_server() {
    let sys = FakeSystem::new();
    repo_with_backups().install(&sys);
    manifest_for(&sys, "bbbb0002", good_manifest("aaaa0002"));
    let restic = Restic::new(&sys, &config().backup).unwrap();
    let c = config();
    let chosen = choose(&restic, &c, "bbbb0002").unwrap();
    assert_eq!(chosen.set.db.as_ref().unwrap().short_id, "aaaa0002");
    // Its database snapshot's id names the same backup; `latest` is the newest complete one.
    assert_eq!(
        choose(&restic, &c, "aaaa0002").unwrap().set.files.short_id,
        "bbbb0002"
    );
    assert_eq!(
        choose(&restic, &c, "latest").unwrap().set.files.short_id,
        "bbbb0002"
    );
    let err = |id: &str| choose(&restic, &c, id).unwrap_err().to_string();
    assert!(
        err("bbbb0003").contains("incomplete: its database snapshot aaaa0003 is missing"),
        "{}",
        err("bbbb0003")
    );
    assert!(
        err("aaaa0004").contains("incomplete") && err("aaaa0004").contains("did not finish"),
        "{}",
        err("aaaa0004")
    );
    assert!(
        err("cccc0001").contains("backup of other.org") && err("cccc0001").contains("server_name"),
        "{}",
        err("cccc0001")
    );
    assert!(
        err("ffff").contains("no backup ffff of example.com"),
        "{}",
        err("ffff")
    );
    // A manifest that disagrees, or none: incomplete too.
    manifest_for(&sys, "bbbb0001", good_manifest("aaaa0002"));
    assert!(
        err("bbbb0001").contains("manifest names database snapshot aaaa0002"),
        "{}",
        err("bbbb0001")
    );
    manifest_for(
        &sys,
        "bbbb0001",
        good_manifest("aaaa0001").replace("example.com", "evil.org"),
    );
    assert!(
        err("bbbb0001").contains("server_name \"evil.org\""),
        "{}",
        err("bbbb0001")
    );
}

fn synapse_db(sys: &FakeSystem, tables: &'static str, counts: &'static str) {
    sys.on(move |c| {
        let psql = c.args.contains(&"psql".to_string())
            && c.args.last().map(String::as_str) == Some("synapse");
        let sql = String::from_utf8_lossy(c.stdin.as_deref().unwrap_or_default()).into_owned();
        (psql && sql.contains("pg_class"))
            .then(|| out(0, tables))
            .or_else(|| (psql && sql.contains("count(*)")).then(|| out(0, counts)))
    });
}

#[test]
fn a_database_with_data_is_refused_before_anything_is_touched() {
    let sys = FakeSystem::new();
    repo_with_backups().install(&sys);
    manifest_for(&sys, "bbbb0002", good_manifest("aaaa0002"));
    let c = config();
    // A fresh Synapse: its schema, the admin apply made, nothing else.
    synapse_db(
        &sys,
        "events\nrooms\nusers\n",
        "rooms|0\nevents|0\nusers|0\n",
    );
    assert_eq!(existing_data(&sys, &c).unwrap(), None);
    let users_sql = sys
        .ran
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find_map(|c| c.stdin.clone())
        .unwrap();
    assert!(String::from_utf8_lossy(&users_sql).contains("name <> '@admin:example.com'"));
    synapse_db(
        &sys,
        "events\nrooms\nusers\n",
        "rooms|2\nevents|310\nusers|0\n",
    );
    let restic = Restic::new(&sys, &c.backup).unwrap();
    let chosen = choose(&restic, &c, "bbbb0002").unwrap();
    let converged = std::cell::Cell::new(false);
    let before = sys.commands().len();
    let err = restore(
        &sys,
        &restic,
        &c,
        &chosen,
        &|| {
            converged.set(true);
            Ok(())
        },
        &|_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("already holds data (2 rooms, 310 events)")
            && err.contains("Nothing was changed"),
        "{err}"
    );
    let after: Vec<String> = sys.commands()[before..].to_vec();
    assert!(
        after
            .iter()
            .all(|c| !c.starts_with("systemctl") && !c.contains("restore")),
        "{after:?}"
    );
    assert!(!converged.get());
}

fn restorable() -> (FakeSystem, HostConfig) {
    let sys = FakeSystem::new();
    std::fs::create_dir_all(sys.path(layout::STATE_DIR)).unwrap();
    repo_with_backups().install(&sys);
    manifest_for(&sys, "bbbb0002", good_manifest("aaaa0002"));
    synapse_db(&sys, "", "");
    sys.on_cmd("systemctl stop matrix-synapse", 0, "");
    sys.on_cmd("restic restore", 0, "restoring <Snapshot bbbb0002> to /\n");
    sys.on_cmd("chown -R matrix-synapse:matrix-synapse", 0, "");
    sys.on_cmd(
        "setpriv --reuid=postgres --regid=postgres --init-groups --reset-env -- psql -X -A -t -q -v ON_ERROR_STOP=1 -d postgres",
        0,
        "",
    );
    sys.on_cmd("restic dump aaaa0002", 0, "PGDMP-restored");
    sys.on_cmd(
        "setpriv --reuid=postgres --regid=postgres --init-groups --reset-env -- pg_restore",
        0,
        "",
    );
    (sys, config())
}

#[test]
fn restore_stops_synapse_restores_files_then_the_database_then_converges_and_waits_for_health() {
    let (sys, c) = restorable();
    sys.put(SIGNING_KEY, "ed25519 a_key secret\n");
    sys.put(&format!("{MEDIA_STORE}/local_content/ab/cd"), "jpeg");
    sys.urls
        .lock()
        .unwrap()
        .insert(layout::SYNAPSE_HEALTH_URL.into(), b"OK".to_vec());
    let restic = Restic::new(&sys, &c.backup).unwrap();
    let chosen = choose(&restic, &c, "latest").unwrap();
    let start = sys.commands().len();
    let converged = std::cell::Cell::new(0);
    restore(
        &sys,
        &restic,
        &c,
        &chosen,
        &|| {
            converged.set(converged.get() + 1);
            Ok(())
        },
        &|_| {},
    )
    .unwrap();
    assert_eq!(converged.get(), 1);
    let ran: Vec<Cmd> = sys.ran.lock().unwrap()[start..].to_vec();
    let lines: Vec<String> = ran
        .iter()
        .map(Cmd::display)
        .filter(|l| !l.contains("-d synapse"))
        .collect();
    let pos = |p: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("{p} in {lines:?}"))
    };
    assert!(pos("systemctl stop matrix-synapse") < pos("restic restore"));
    assert!(
        lines[pos("restic restore")].contains(&format!("--target / --exclude {HOST_TOML}")),
        "{lines:?}"
    );
    assert!(
        pos("restic restore")
            < pos(&format!(
                "chown -R matrix-synapse:matrix-synapse {MEDIA_STORE}"
            ))
    );
    let recreate = ran
        .iter()
        .find(|c| {
            c.args.contains(&"psql".to_string())
                && c.args.last().map(String::as_str) == Some("postgres")
        })
        .unwrap();
    let sql = String::from_utf8_lossy(recreate.stdin.as_deref().unwrap()).into_owned();
    assert!(
        sql.contains("DROP DATABASE IF EXISTS synapse")
            && sql.contains("LC_COLLATE 'C'")
            && sql.contains("TEMPLATE template0"),
        "{sql}"
    );
    assert!(pos("restic dump") > pos("chown"));
    let pg_restore = ran
        .iter()
        .find(|c| c.args.contains(&"pg_restore".to_string()))
        .unwrap();
    // The dump flowed from restic into pg_restore, one transaction, stopping at the first error.
    assert_eq!(pg_restore.stdin.as_deref(), Some(&b"PGDMP-restored"[..]));
    assert!(
        pg_restore
            .args
            .contains(&"--single-transaction".to_string())
            && pg_restore.args.contains(&"--exit-on-error".to_string())
    );
    assert!(lines[pos("restic dump")].contains("/synapse.pgdump"));
}

#[test]
fn a_failed_database_restore_leaves_synapse_stopped_and_says_so() {
    let (sys, c) = restorable();
    sys.on_cmd(
        "setpriv --reuid=postgres --regid=postgres --init-groups --reset-env -- pg_restore",
        1,
        "",
    );
    let restic = Restic::new(&sys, &c.backup).unwrap();
    let chosen = choose(&restic, &c, "bbbb0002").unwrap();
    let converged = std::cell::Cell::new(false);
    let err = format!(
        "{:#}",
        restore(
            &sys,
            &restic,
            &c,
            &chosen,
            &|| {
                converged.set(true);
                Ok(())
            },
            &|_| {}
        )
        .unwrap_err()
    );
    assert!(
        err.contains("pg_restore failed")
            && err.contains("left stopped")
            && err.contains("run the same restore again"),
        "{err}"
    );
    assert!(
        !converged.get(),
        "Synapse is never started on a half-restored database"
    );
    let stops = sys
        .commands()
        .iter()
        .filter(|c| *c == "systemctl stop matrix-synapse")
        .count();
    assert_eq!(stops, 2, "stopped before, and again after the failure");
    // A failing apply after a complete restore says that apply finishes it.
    let (sys, c) = restorable();
    let restic = Restic::new(&sys, &c.backup).unwrap();
    let chosen = choose(&restic, &c, "bbbb0002").unwrap();
    let err = format!(
        "{:#}",
        restore(
            &sys,
            &restic,
            &c,
            &chosen,
            &|| anyhow::bail!("apply failed"),
            &|_| {}
        )
        .unwrap_err()
    );
    assert!(
        err.contains("files and database are restored")
            && err.contains("apply host.toml` finishes it"),
        "{err}"
    );
}

#[test]
fn the_textfile_says_the_last_success_and_the_last_run_when_metrics_are_on() {
    let (sys, _) = host();
    // Metrics off (no textfile directory): no file.
    run(&sys, &config(), &|| NOW - 86_400).unwrap();
    assert!(sys
        .read(Path::new(layout::BACKUP_TEXTFILE))
        .unwrap()
        .is_none());
    std::fs::create_dir_all(sys.path(layout::TEXTFILE_DIR)).unwrap();
    run(&sys, &config(), &|| NOW).unwrap();
    let text = String::from_utf8(
        sys.read(Path::new(layout::BACKUP_TEXTFILE))
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(
        text.contains(&format!("\n{} {NOW}\n", layout::BACKUP_SUCCESS_METRIC)),
        "{text}"
    );
    assert!(
        text.contains(&format!("\n{} 1\n", layout::BACKUP_LAST_RUN_OK_METRIC)),
        "{text}"
    );
    // A failed run: 0, and the last success stays the one before.
    sys.on_cmd(
        "setpriv --reuid=postgres --regid=postgres --init-groups --reset-env -- pg_dump",
        1,
        "",
    );
    run(&sys, &config(), &|| NOW + 60).unwrap_err();
    let text = String::from_utf8(
        sys.read(Path::new(layout::BACKUP_TEXTFILE))
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(
        text.contains(&format!("\n{} {NOW}\n", layout::BACKUP_SUCCESS_METRIC)),
        "{text}"
    );
    assert!(
        text.contains(&format!("\n{} 0\n", layout::BACKUP_LAST_RUN_OK_METRIC)),
        "{text}"
    );
}
