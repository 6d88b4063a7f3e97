//! `matrix-provision maintenance` (issue 14, what matrix-maintenance.timer runs): purge cached remote media
//! older than `media.purge_remote_media_days` through the admin API, then report what grows: the database
//! size, the media store, the largest rooms. Through [`System`] and the admin [`Session`].

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::admin::Session;
use crate::backup::{DATABASE, MEDIA_STORE};
use crate::config::HostConfig;
use crate::system::{psql, psql_in};
use crate::system::{run_ok, Cmd, System};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Room {
    pub room_id: String,
    pub name: String,
    pub events: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Remote media files purged (None: no purge configured).
    pub purged_remote_media: Option<u64>,
    pub database_bytes: u64,
    pub media_store_bytes: Option<u64>,
    /// By number of events, largest first (at most 10).
    pub largest_rooms: Vec<Room>,
}

pub fn run(
    sys: &dyn System,
    config: &HostConfig,
    session: Option<&Session>,
    now_ms: i64,
) -> Result<Report> {
    let purged_remote_media = match config.media.purge_remote_media_days {
        Some(days) => {
            let session = session.context(
                "media.purge_remote_media_days is set but there is no admin session (set synapse.admin_user and run apply)",
            )?;
            let before = now_ms - i64::from(days) * 86_400_000;
            Some(
                session
                    .purge_media_cache(before)
                    .context("purging cached remote media")?,
            )
        }
        None => None,
    };
    let size = run_ok(
        sys,
        &psql(sys, &format!("SELECT pg_database_size('{DATABASE}');\n")),
    )?;
    let database_bytes = size
        .stdout
        .trim()
        .parse()
        .with_context(|| format!("pg_database_size: unexpected `{}`", size.stdout.trim()))?;
    let media_store_bytes = if sys.stat(Path::new(MEDIA_STORE))?.is_some() {
        let du = run_ok(sys, &Cmd::new("du").args(["-s", "-b", MEDIA_STORE]))?;
        du.stdout
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
    } else {
        None
    };
    let rooms = run_ok(
        sys,
        &psql_in(
            sys,
            DATABASE,
            "SELECT e.room_id || '|' || count(*) || '|' || coalesce(max(s.name), '') \
             FROM events e LEFT JOIN room_stats_state s USING (room_id) \
             GROUP BY e.room_id ORDER BY count(*) DESC LIMIT 10;\n",
        ),
    )?;
    let largest_rooms = rooms
        .stdout
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '|');
            Some(Room {
                room_id: f.next()?.to_string(),
                events: f.next()?.parse().ok()?,
                name: f.next().unwrap_or("").to_string(),
            })
        })
        .collect();
    Ok(Report {
        purged_remote_media,
        database_bytes,
        media_store_bytes,
        largest_rooms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{Credentials, FakeTransport};
    use crate::secrets::Secret;
    use crate::system::FakeSystem;

    fn config(purge: Option<u32>) -> HostConfig {
        let mut text = "server_name = \"example.com\"\n[acme]\nemail = \"a@example.com\"\n[synapse]\nadmin_user = \"admin\"\n".to_string();
        if let Some(d) = purge {
            text.push_str(&format!("[media]\npurge_remote_media_days = {d}\n"));
        }
        crate::config::parse(&text, "host.toml").unwrap()
    }

    fn host() -> FakeSystem {
        let sys = FakeSystem::new();
        sys.on_cmd("setpriv --reuid=postgres --regid=postgres --init-groups --reset-env -- psql -X -A -t -q -v ON_ERROR_STOP=1 -d postgres", 0, "73400320\n");
        sys.on_cmd(
            "setpriv --reuid=postgres --regid=postgres --init-groups --reset-env -- psql -X -A -t -q -v ON_ERROR_STOP=1 -d synapse",
            0,
            "!big:example.com|1200|Town | square\n!small:example.com|3|\n",
        );
        sys.put("/var/lib/matrix-synapse/media/local_content/ab/cd", "x");
        sys.on_cmd(
            "du -s -b /var/lib/matrix-synapse/media",
            0,
            "5242880\t/var/lib/matrix-synapse/media\n",
        );
        sys
    }

    #[test]
    fn purges_remote_media_older_than_the_setting_and_reports_sizes_and_rooms() {
        let sys = host();
        let t = FakeTransport::new();
        t.reply(
            "POST",
            "/_synapse/admin/v1/purge_media_cache",
            200,
            r#"{"deleted": 17}"#,
        );
        let creds = Credentials {
            user_id: "@admin:example.com".into(),
            password: Secret::from_stored("pw"),
            access_token: Some(Secret::from_stored("tok")),
        };
        let session = Session::with(&sys, &t, creds);
        let now_ms = 1_796_131_516_000;
        let r = run(&sys, &config(Some(30)), Some(&session), now_ms).unwrap();
        assert_eq!(r.purged_remote_media, Some(17));
        let sent = t.sent();
        let purge = sent
            .iter()
            .find(|s| s.path.contains("purge_media_cache"))
            .unwrap();
        assert!(
            purge
                .path
                .ends_with(&format!("before_ts={}", now_ms - 30 * 86_400_000)),
            "{}",
            purge.path
        );
        assert_eq!(r.database_bytes, 73_400_320);
        assert_eq!(r.media_store_bytes, Some(5_242_880));
        assert_eq!(r.largest_rooms[0].name, "Town | square");
        assert_eq!(r.largest_rooms[0].events, 1200);
        assert_eq!(r.largest_rooms.len(), 2);
        // The SQL goes on stdin, never in argv.
        let cmds = sys.commands();
        assert!(cmds.iter().all(|c| !c.contains("SELECT")), "{cmds:?}");
    }

    #[test]
    fn without_a_purge_setting_only_the_report() {
        let sys = host();
        let r = run(&sys, &config(None), None, 0).unwrap();
        assert_eq!(r.purged_remote_media, None);
        assert_eq!(r.database_bytes, 73_400_320);
    }
}
