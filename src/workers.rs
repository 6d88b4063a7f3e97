//! Synapse workers (issue 13): the roles Synapse's `docs/workers.md` describes, as one table, and the
//! layout `[synapse.workers]` resolves to on a host (auto-sized from its CPUs and RAM, explicit counts
//! overriding). Templates and playbooks see only the resolved [`Layout`]: every worker's name, ports and
//! resources, the nginx routes per role, and the pool sizes that follow the process count.
//!
//! A new role is a row of [`ROLES`]: its worker app, listener resources, the endpoints nginx sends it
//! (regular expressions from docs/workers.md), how nginx balances them, and the shared-config key that
//! hands it its duty. The templates loop over the rows; none of them names a role.

use serde::Serialize;

use crate::config::{Workers, WorkersMode};
use crate::layout::{LOOPBACK, SYNAPSE_WORKER_UNIT, WORKER_HTTP_BASE, WORKER_REPLICATION_BASE};

/// How nginx spreads a role's requests over its instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Round robin (stateless client API requests).
    RoundRobin,
    /// By the user in the access token: one user's `/sync` stays on one worker (its caches).
    User,
    /// By client address: one remote server's transactions go to one worker, in order.
    Source,
}

/// One worker role. `key` is its host.toml count key and its workers' name prefix (`sync1`, `sync2`).
#[derive(Debug, Clone, Serialize)]
pub struct Role {
    pub key: &'static str,
    pub app: &'static str,
    /// Most instances Synapse supports for this duty (single-writer streams, one background runner).
    pub max: u32,
    /// Resources of the worker's HTTP listener on loopback (health alone for workers nginx never calls).
    pub resources: &'static [&'static str],
    /// Stream writers answer other processes over HTTP replication: a replication listener and an
    /// `instance_map` entry.
    pub replication: bool,
    /// Streams this role writes (`stream_writers`).
    pub streams: &'static [&'static str],
    /// Shared-config key listing this role's instances (`pusher_instances`, …).
    pub instances_key: Option<&'static str>,
    /// Shared-config key naming its one instance (`run_background_tasks_on`, …).
    pub single_key: Option<&'static str>,
    /// Only meaningful while federation is on.
    pub federation_only: bool,
    pub balance: Balance,
    /// Endpoints nginx routes to this role, from docs/workers.md; rows earlier in [`ROLES`] win.
    pub routes: &'static [&'static str],
    /// One line for examples/host.toml and plan output.
    pub about: &'static str,
}

const CLIENT: &[&str] = &["client"];
const HEALTH: &[&str] = &["health"];

/// Every role, in nginx precedence order (the first row whose pattern matches a request serves it).
/// Port blocks follow the row index, so adding or scaling one role never moves another's ports.
pub const ROLES: &[Role] = &[
    Role {
        key: "media",
        app: "synapse.app.media_repository",
        max: 1,
        resources: &["media"],
        replication: false,
        streams: &[],
        instances_key: None,
        single_key: Some("media_instance_running_background_jobs"),
        federation_only: false,
        balance: Balance::RoundRobin,
        routes: &[
            "^/_matrix/media/",
            "^/_matrix/client/v1/media/",
            "^/_matrix/federation/v1/media/",
        ],
        about: "the media repository (uploads, downloads, thumbnails, URL previews)",
    },
    Role {
        key: "stream_writer",
        app: "synapse.app.generic_worker",
        max: 1,
        resources: CLIENT,
        replication: true,
        // device_lists stays on the main process: it is a multi-writer stream whose other writers must
        // see every device change, and the main process answers federation device queries.
        streams: &[
            "typing",
            "to_device",
            "account_data",
            "receipts",
            "presence",
            "push_rules",
        ],
        instances_key: None,
        single_key: None,
        federation_only: false,
        balance: Balance::RoundRobin,
        routes: &[
            "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/typing",
            "^/_matrix/client/(r0|v3|unstable)/sendToDevice/",
            "^/_matrix/client/(r0|v3|unstable)/.*/tags",
            "^/_matrix/client/(r0|v3|unstable)/.*/account_data",
            "^/_matrix/client/(r0|v3|unstable)/rooms/.*/receipt",
            "^/_matrix/client/(r0|v3|unstable)/rooms/.*/read_markers",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/presence/",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/pushrules/",
        ],
        about:
            "writes the typing, to-device, account data, receipts, presence and push rules streams",
    },
    Role {
        key: "sync",
        app: "synapse.app.generic_worker",
        max: 9,
        resources: CLIENT,
        replication: false,
        streams: &[],
        instances_key: None,
        single_key: None,
        federation_only: false,
        balance: Balance::User,
        routes: &[
            "^/_matrix/client/(r0|v3)/sync$",
            "^/_matrix/client/(api/v1|r0|v3)/events$",
            "^/_matrix/client/(api/v1|r0|v3)/initialSync$",
            "^/_matrix/client/(api/v1|r0|v3)/rooms/[^/]+/initialSync$",
        ],
        about: "/sync, one user always on the same worker",
    },
    Role {
        key: "federation",
        app: "synapse.app.generic_worker",
        max: 9,
        resources: &["federation"],
        replication: false,
        streams: &[],
        instances_key: None,
        single_key: None,
        federation_only: true,
        balance: Balance::Source,
        routes: &[
            "^/_matrix/federation/v1/version$",
            "^/_matrix/federation/v1/event/",
            "^/_matrix/federation/v1/state/",
            "^/_matrix/federation/v1/state_ids/",
            "^/_matrix/federation/v1/backfill/",
            "^/_matrix/federation/v1/get_missing_events/",
            "^/_matrix/federation/v1/publicRooms",
            "^/_matrix/federation/v1/query/",
            "^/_matrix/federation/v1/make_join/",
            "^/_matrix/federation/v1/make_leave/",
            "^/_matrix/federation/(v1|v2)/send_join/",
            "^/_matrix/federation/(v1|v2)/send_leave/",
            "^/_matrix/federation/v1/make_knock/",
            "^/_matrix/federation/v1/send_knock/",
            "^/_matrix/federation/(v1|v2)/invite/",
            "^/_matrix/federation/v1/event_auth/",
            "^/_matrix/federation/v1/timestamp_to_event/",
            "^/_matrix/federation/v1/exchange_third_party_invite/",
            "^/_matrix/federation/v1/user/devices/",
            "^/_matrix/key/v2/query",
            "^/_matrix/federation/v1/hierarchy/",
            "^/_matrix/federation/v1/send/",
        ],
        about: "inbound federation, one remote server always on the same worker",
    },
    Role {
        key: "client",
        app: "synapse.app.generic_worker",
        max: 9,
        resources: CLIENT,
        replication: false,
        streams: &[],
        instances_key: None,
        single_key: None,
        federation_only: false,
        balance: Balance::RoundRobin,
        routes: &[
            "^/_matrix/client/(api/v1|r0|v3|unstable)/createRoom$",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/publicRooms$",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/joined_members$",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/context/.*$",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/members$",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/state$",
            "^/_matrix/client/v1/rooms/.*/hierarchy$",
            "^/_matrix/client/(v1|unstable)/rooms/.*/relations/",
            "^/_matrix/client/v1/rooms/.*/threads$",
            "^/_matrix/client/(r0|v3|unstable)/account/3pid$",
            "^/_matrix/client/(r0|v3|unstable)/account/whoami$",
            "^/_matrix/client/(r0|v3|unstable)/account/deactivate$",
            "^/_matrix/client/versions$",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/voip/turnServer$",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/event/",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/joined_rooms$",
            "^/_matrix/client/v1/rooms/.*/timestamp_to_event$",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/search$",
            "^/_matrix/client/(r0|v3|unstable)/user/.*/filter(/|$)",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/directory/room/.*$",
            "^/_matrix/client/(r0|v3|unstable)/capabilities$",
            "^/_matrix/client/(r0|v3|unstable)/notifications$",
            "^/_matrix/client/(r0|v3|unstable)/keys/query$",
            "^/_matrix/client/(r0|v3|unstable)/keys/changes$",
            "^/_matrix/client/(r0|v3|unstable)/keys/claim$",
            "^/_matrix/client/(r0|v3|unstable)/room_keys/",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/login$",
            "^/_matrix/client/(r0|v3|unstable)/register$",
            "^/_matrix/client/(r0|v3|unstable)/register/available$",
            "^/_matrix/client/v1/register/m.login.registration_token/validity$",
            "^/_matrix/client/(r0|v3|unstable)/password_policy$",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/redact",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/send",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/state/",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/(join|invite|leave|ban|unban|kick)$",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/join/",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/knock/",
            "^/_matrix/client/(api/v1|r0|v3|unstable)/profile/",
            "^/_matrix/client/(r0|v3|unstable)/user_directory/search$",
        ],
        about: "the client API (rooms, messages, login, keys, profiles)",
    },
    Role {
        key: "federation_sender",
        app: "synapse.app.generic_worker",
        max: 9,
        resources: HEALTH,
        replication: false,
        streams: &[],
        instances_key: Some("federation_sender_instances"),
        single_key: None,
        federation_only: true,
        balance: Balance::RoundRobin,
        routes: &[],
        about: "sends outbound federation traffic",
    },
    Role {
        key: "pusher",
        app: "synapse.app.generic_worker",
        max: 9,
        resources: HEALTH,
        replication: false,
        streams: &[],
        instances_key: Some("pusher_instances"),
        single_key: None,
        federation_only: false,
        balance: Balance::RoundRobin,
        routes: &[],
        about: "sends push notifications to push gateways",
    },
    Role {
        key: "background",
        app: "synapse.app.generic_worker",
        max: 1,
        resources: HEALTH,
        replication: false,
        streams: &[],
        instances_key: None,
        single_key: Some("run_background_tasks_on"),
        federation_only: false,
        balance: Balance::RoundRobin,
        routes: &[],
        about: "runs the background tasks (cleanup, statistics, user directory updates)",
    },
    Role {
        key: "event_persister",
        app: "synapse.app.generic_worker",
        max: 4,
        resources: HEALTH,
        replication: true,
        streams: &["events"],
        instances_key: None,
        single_key: None,
        federation_only: false,
        balance: Balance::RoundRobin,
        routes: &[],
        about: "persists events (sharded by room)",
    },
];

// Ports: crate::layout (WORKER_HTTP_BASE, WORKER_REPLICATION_BASE) by row of ROLES and instance.

/// The auto rule (also in examples/host.toml). Below these, every extra Synapse process competes with the
/// main one, PostgreSQL, Redis and nginx for the same cores, and the replication hops cost more than the
/// parallelism gives: one process serves such a host best.
pub const AUTO_MIN_CPUS: u32 = 4;
pub const AUTO_MIN_RAM_MB: u64 = 4096;
/// RAM kept for the main process, PostgreSQL, Redis and the OS; each worker is budgeted this much.
const AUTO_BASE_RAM_MB: u64 = 2048;
const AUTO_RAM_PER_WORKER_MB: u64 = 256;

/// Pool sizes: one process keeps Synapse's default; with workers each process gets a smaller pool, and
/// PostgreSQL's max_connections follows the sum.
const SINGLE_CP: (u32, u32) = (5, 10);
const WORKER_CP: (u32, u32) = (2, 6);
/// Connections beyond Synapse's pools: psql, the provisioner, backups, superuser_reserved_connections.
/// max_connections is the sum rounded up to a multiple of PG_MIN_CONNECTIONS.
const PG_SPARE_CONNECTIONS: u32 = 20;
const PG_MIN_CONNECTIONS: u32 = 50;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Worker {
    pub name: String,
    pub role: &'static str,
    pub app: &'static str,
    /// `matrix-synapse-worker@<name>`.
    pub unit: String,
    pub port: u16,
    /// 0: no replication listener.
    pub replication_port: u16,
    pub resources: Vec<&'static str>,
    pub health_url: String,
}

/// A role with at least one worker, as the templates see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ActiveRole {
    pub key: &'static str,
    pub balance: Balance,
    /// The role's patterns as one nginx regex (from the compiled-in table only, never from host.toml).
    pub location: String,
    pub instances_key: Option<&'static str>,
    pub single_key: Option<&'static str>,
    pub streams: Vec<&'static str>,
    pub names: Vec<String>,
    pub ports: Vec<u16>,
}

/// What `[synapse.workers]` resolves to on this host.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Layout {
    pub enabled: bool,
    /// Why this layout: the auto rule's reading of the host, and which counts host.toml fixed.
    pub reason: String,
    pub workers: Vec<Worker>,
    pub roles: Vec<ActiveRole>,
    /// Synapse processes: the main one plus the workers.
    pub processes: u32,
    pub cp_min: u32,
    pub cp_max: u32,
    pub pg_max_connections: u32,
}

/// What auto picks for a host of `cpus` and `ram_mb`, and why (role key → count).
pub fn auto_counts(cpus: u32, ram_mb: u64, federation: bool) -> (Vec<(&'static str, u32)>, String) {
    if cpus < AUTO_MIN_CPUS || ram_mb < AUTO_MIN_RAM_MB {
        return (
            Vec::new(),
            format!(
                "auto: no workers on {cpus} CPU(s) and {ram_mb} MB RAM (workers need at least \
                 {AUTO_MIN_CPUS} CPUs and {AUTO_MIN_RAM_MB} MB: below that the extra processes compete \
                 for the same cores and one process is faster)"
            ),
        );
    }
    let fed = |n: u32| if federation { n } else { 0 };
    let mut counts = vec![
        ("media", 1),
        ("stream_writer", u32::from(cpus >= 8)),
        ("sync", (cpus / 4).max(1)),
        ("federation", fed((cpus / 8).max(1))),
        ("client", (cpus / 4).max(1)),
        ("federation_sender", fed(1)),
        ("pusher", u32::from(cpus >= 8)),
        ("background", 1),
        ("event_persister", if cpus >= 16 { 2 } else { 0 }),
    ];
    for (key, n) in counts.iter_mut() {
        *n = (*n).min(role(key).max);
    }
    // RAM budget: shed the scaled-out roles down to one each first, then the optional single ones.
    let budget = ((ram_mb - AUTO_BASE_RAM_MB) / AUTO_RAM_PER_WORKER_MB) as u32;
    while counts.iter().map(|c| c.1).sum::<u32>() > budget {
        let scaled = counts
            .iter_mut()
            .filter(|c| matches!(c.0, "sync" | "client" | "federation") && c.1 > 1)
            .max_by_key(|c| c.1);
        let shed = match scaled {
            Some(c) => c,
            None => match ["event_persister", "pusher", "stream_writer"]
                .iter()
                .find_map(|k| counts.iter().position(|c| c.0 == *k && c.1 > 0))
            {
                Some(i) => &mut counts[i],
                None => break,
            },
        };
        shed.1 -= 1;
    }
    let total: u32 = counts.iter().map(|c| c.1).sum();
    (
        counts,
        format!(
            "auto: {total} workers for {cpus} CPUs and {ram_mb} MB RAM (sync and client: CPUs / 4, \
             federation: CPUs / 8, stream writer and pusher from 8 CPUs, 2 event persisters from 16; \
             at most (RAM - {AUTO_BASE_RAM_MB} MB) / {AUTO_RAM_PER_WORKER_MB} MB workers)"
        ),
    )
}

pub fn role(key: &str) -> &'static Role {
    ROLES
        .iter()
        .find(|r| r.key == key)
        .unwrap_or_else(|| panic!("no worker role `{key}`"))
}

impl Workers {
    /// The count host.toml fixed for a role, if any.
    pub fn count(&self, key: &str) -> Option<u32> {
        self.counts.get(key).copied()
    }
}

impl Layout {
    pub fn resolve(config: &Workers, cpus: u32, ram_mb: u64, federation: bool) -> Layout {
        let (auto, mut reason) = match config.mode {
            WorkersMode::Off => (
                Vec::new(),
                "workers are off (synapse.workers.mode)".to_string(),
            ),
            WorkersMode::Auto => auto_counts(cpus, ram_mb, federation),
        };
        // In table order, as examples/host.toml lists them.
        let fixed: Vec<String> = ROLES
            .iter()
            .filter_map(|r| config.count(r.key).map(|n| format!("{} = {n}", r.key)))
            .collect();
        if !fixed.is_empty() {
            reason.push_str(&format!("; host.toml sets {}", fixed.join(", ")));
        }
        let mut workers = Vec::new();
        let mut roles = Vec::new();
        for (row, r) in ROLES.iter().enumerate() {
            let n = if config.mode == WorkersMode::Off {
                0
            } else {
                config.count(r.key).unwrap_or_else(|| {
                    auto.iter()
                        .find(|(k, _)| *k == r.key)
                        .map_or(0, |(_, n)| *n)
                })
            };
            let mut active = ActiveRole {
                key: r.key,
                balance: r.balance,
                location: nginx_regex(r.routes),
                instances_key: r.instances_key,
                single_key: r.single_key,
                streams: r.streams.to_vec(),
                names: Vec::new(),
                ports: Vec::new(),
            };
            for i in 1..=n.min(9) {
                let name = format!("{}{i}", r.key);
                let port = WORKER_HTTP_BASE + 10 * row as u16 + i as u16;
                workers.push(Worker {
                    unit: format!("{SYNAPSE_WORKER_UNIT}{name}"),
                    app: r.app,
                    role: r.key,
                    port,
                    replication_port: if r.replication {
                        WORKER_REPLICATION_BASE + 10 * row as u16 + i as u16
                    } else {
                        0
                    },
                    resources: r.resources.to_vec(),
                    health_url: format!("http://{LOOPBACK}:{port}/health"),
                    name: name.clone(),
                });
                active.names.push(name);
                active.ports.push(port);
            }
            if n > 0 {
                roles.push(active);
            }
        }
        let processes = 1 + workers.len() as u32;
        let (cp_min, cp_max) = if workers.is_empty() {
            SINGLE_CP
        } else {
            WORKER_CP
        };
        Layout {
            enabled: !workers.is_empty(),
            reason,
            workers,
            roles,
            processes,
            cp_min,
            cp_max,
            // Rounded up to a multiple of 50: adding or removing a worker rarely restarts PostgreSQL.
            pg_max_connections: (processes * cp_max + PG_SPARE_CONNECTIONS)
                .div_ceil(PG_MIN_CONNECTIONS)
                .max(1)
                * PG_MIN_CONNECTIONS,
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.workers.iter().map(|w| w.name.clone()).collect()
    }
}

/// `^(?:a|b)` of patterns that each start with `^`; an empty list matches nothing (no location).
fn nginx_regex(routes: &[&str]) -> String {
    if routes.is_empty() {
        return String::new();
    }
    let alts: Vec<&str> = routes
        .iter()
        .map(|p| p.strip_prefix('^').unwrap_or(p))
        .collect();
    format!("^(?:{})", alts.join("|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(mode: WorkersMode, counts: &[(&str, u32)]) -> Workers {
        Workers {
            mode,
            counts: counts.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
        }
    }

    fn count(l: &Layout, role: &str) -> usize {
        l.workers.iter().filter(|w| w.role == role).count()
    }

    #[test]
    fn off_is_one_process_with_synapse_defaults() {
        let l = Layout::resolve(&workers(WorkersMode::Off, &[]), 64, 262144, true);
        assert!(!l.enabled);
        assert_eq!((l.processes, l.cp_min, l.cp_max), (1, 5, 10));
        assert_eq!(l.pg_max_connections, 50);
    }

    /// The 2-core machines of this project get no workers from auto, and the reason says so.
    #[test]
    fn auto_picks_none_below_four_cpus_or_four_gb() {
        for (cpus, ram) in [(2, 16384), (3, 8192), (8, 3072)] {
            let l = Layout::resolve(&workers(WorkersMode::Auto, &[]), cpus, ram, true);
            assert!(!l.enabled, "{cpus} {ram}");
            assert!(l.reason.contains("no workers"), "{}", l.reason);
            assert!(l.reason.contains(&format!("{cpus} CPU")), "{}", l.reason);
        }
    }

    #[test]
    fn auto_scales_with_cpus_and_ram() {
        let l = Layout::resolve(&workers(WorkersMode::Auto, &[]), 4, 8192, true);
        assert_eq!(
            l.names(),
            [
                "media1",
                "sync1",
                "federation1",
                "client1",
                "federation_sender1",
                "background1"
            ]
        );
        assert_eq!(l.processes, 7);
        // 7 processes * cp_max 6 + 20 spare = 62, rounded up to 100.
        assert_eq!(l.pg_max_connections, 100);
        let big = Layout::resolve(&workers(WorkersMode::Auto, &[]), 16, 65536, true);
        assert_eq!(count(&big, "sync"), 4);
        assert_eq!(count(&big, "client"), 4);
        assert_eq!(count(&big, "federation"), 2);
        assert_eq!(count(&big, "event_persister"), 2);
        assert_eq!(count(&big, "stream_writer"), 1);
        // 16 CPUs but 4 GB: (4096 - 2048) / 256 = 8 workers: sync/client/federation shed to one each,
        // then the event persisters.
        let tight = Layout::resolve(&workers(WorkersMode::Auto, &[]), 16, 4096, true);
        assert_eq!(tight.workers.len(), 8, "{:?}", tight.names());
        assert_eq!(count(&tight, "media"), 1);
        assert_eq!(count(&tight, "background"), 1);
    }

    #[test]
    fn no_federation_roles_without_federation() {
        let l = Layout::resolve(&workers(WorkersMode::Auto, &[]), 8, 16384, false);
        assert_eq!(count(&l, "federation"), 0);
        assert_eq!(count(&l, "federation_sender"), 0);
    }

    #[test]
    fn explicit_counts_override_auto() {
        let l = Layout::resolve(
            &workers(WorkersMode::Auto, &[("sync", 2), ("media", 0)]),
            2,
            2048,
            true,
        );
        assert_eq!(l.names(), ["sync1", "sync2"]);
        assert!(l.reason.contains("sync = 2"), "{}", l.reason);
        let l = Layout::resolve(&workers(WorkersMode::Auto, &[("client", 0)]), 4, 8192, true);
        assert_eq!(count(&l, "client"), 0);
        assert_eq!(count(&l, "sync"), 1);
    }

    /// Ports depend on the role and the instance only: scaling sync never moves the media worker.
    #[test]
    fn ports_are_stable_per_role_and_distinct() {
        let a = Layout::resolve(
            &workers(WorkersMode::Auto, &[("sync", 1), ("media", 1)]),
            2,
            2048,
            true,
        );
        let b = Layout::resolve(
            &workers(WorkersMode::Auto, &[("sync", 3), ("media", 1)]),
            2,
            2048,
            true,
        );
        let port = |l: &Layout, n: &str| l.workers.iter().find(|w| w.name == n).unwrap().port;
        assert_eq!(port(&a, "media1"), port(&b, "media1"));
        let all = Layout::resolve(
            &workers(
                WorkersMode::Auto,
                &ROLES.iter().map(|r| (r.key, r.max)).collect::<Vec<_>>(),
            ),
            2,
            2048,
            true,
        );
        let mut ports: Vec<u16> = all.workers.iter().map(|w| w.port).collect();
        ports.extend(
            all.workers
                .iter()
                .filter(|w| w.replication_port > 0)
                .map(|w| w.replication_port),
        );
        ports.push(crate::layout::SYNAPSE_REPLICATION_PORT);
        ports.push(crate::layout::SYNAPSE_PORT);
        let n = ports.len();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), n);
    }

    /// Every pattern is anchored and holds nothing nginx would read as syntax outside a quoted regex.
    #[test]
    fn routes_are_anchored_and_quotable() {
        for r in ROLES {
            for p in r.routes {
                assert!(p.starts_with("^/_matrix/"), "{p}");
                assert!(!p.contains(['"', '{', '}', ';', ' ', '\'']), "{p}");
            }
            assert_eq!(r.routes.is_empty(), nginx_regex(r.routes).is_empty());
        }
        let sync = nginx_regex(role("sync").routes);
        assert!(
            sync.starts_with("^(?:/_matrix/client/(r0|v3)/sync$|"),
            "{sync}"
        );
    }
}
