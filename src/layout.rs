//! The converged host's layout: every host path, port, systemd unit name and loopback URL matrix-provision
//! uses, said once. Add new host paths/ports/units here (a constant, and a [`Layout`] field when a playbook
//! or template needs it); nothing outside this module names them (`tests::no_layout_literals_elsewhere`).
//!
//! Fixed locations are constants, for code that runs without a host.toml (admin, element-update, the run
//! lock). [`Layout`] is what playbooks and templates see as `paths`: the constants plus what depends on
//! host.toml and the host's release (the PostgreSQL cluster, the TLS names each service presents).

use std::path::Path;

use serde::Serialize;

use crate::config::HostConfig;
use crate::release::Release;

// matrix-provision's own state and configuration.
/// Root-only state: pending handlers, the admin's credentials, the provisioner's secrets, backups.
pub const STATE_DIR: &str = "/var/lib/matrix-provision";
/// Secrets only matrix-provision reads (the PostgreSQL password), 0700 root.
pub const PROVISIONER_SECRETS_DIR: &str = "/var/lib/matrix-provision/secrets";
/// Previous versions of every file the atomic writer replaced (0600, newest 5 per file).
pub const BACKUP_DIR: &str = "/var/lib/matrix-provision/backup";
/// Handlers owed by a run that changed something (see engine::pending).
pub const PENDING_HANDLERS: &str = "/var/lib/matrix-provision/pending-handlers.json";
/// The provisioner's admin credentials: user id, password, access token (0600 root).
pub const ADMIN_CREDENTIALS: &str = "/var/lib/matrix-provision/admin.json";
/// One apply at a time.
pub const RUN_LOCK: &str = "/run/matrix-provision.lock";
/// Our own root-owned configuration directory (0755: nginx reads Element's config.json below it).
pub const CONFIG_DIR: &str = "/etc/matrix-provision";
/// The copy of host.toml apply keeps; the default of every command operating this host.
pub const HOST_CONFIG: &str = "/etc/matrix-provision/host.toml";
/// Root-owned directory holding our Element `config.json`, outside the updater-writable tree.
pub const ELEMENT_CONFIG_DIR: &str = "/etc/matrix-provision/element";
/// Where the .deb installs the binary (Cargo.toml `[package.metadata.deb]`).
pub const PACKAGED_BINARY: &str = "/usr/sbin/matrix-provision";
/// Where apply installs a copy of itself for the update timer when it does not run from the package.
pub const INSTALLED_BINARY: &str = "/usr/local/bin/matrix-provision";

// apt and systemd.
pub const MATRIX_KEYRING: &str = "/usr/share/keyrings/matrix-org-archive-keyring.gpg";
pub const MATRIX_SOURCES: &str = "/etc/apt/sources.list.d/matrix-org.sources";
/// Local units and drop-ins (`<unit>.service.d/` beside the package's unit).
pub const SYSTEMD_DIR: &str = "/etc/systemd/system";
/// The run-time directory services may write (nginx's pid file).
pub const RUN_DIR: &str = "/run";

// Synapse.
pub const SYNAPSE_UNIT: &str = "matrix-synapse";
pub const SYNAPSE_CONFIG_DIR: &str = "/etc/matrix-synapse";
/// The package's conffile; our settings go to conf.d fragments beside it.
pub const SYNAPSE_HOMESERVER_YAML: &str = "/etc/matrix-synapse/homeserver.yaml";
pub const SYNAPSE_CONF_D: &str = "/etc/matrix-synapse/conf.d";
/// Written by the package from debconf; preflight compares it with server_name.
pub const SYNAPSE_SERVER_NAME_YAML: &str = "/etc/matrix-synapse/conf.d/server_name.yaml";
pub const SYNAPSE_SIGNING_KEY: &str = "/etc/matrix-synapse/homeserver.signing.key";
/// One file per Synapse secret: registration_shared_secret, macaroon_secret_key, form_secret,
/// turn_shared_secret.
pub const SYNAPSE_SECRETS_DIR: &str = "/etc/matrix-synapse/secrets";
/// Written by the secret step of playbooks/20-synapse.toml; Synapse reads it through
/// `registration_shared_secret_path`.
pub const SYNAPSE_REGISTRATION_SECRET: &str =
    "/etc/matrix-synapse/secrets/registration_shared_secret";
pub const SYNAPSE_DATA_DIR: &str = "/var/lib/matrix-synapse";
/// The package's default SQLite database: its presence means Synapse ran before we configured PostgreSQL.
pub const SYNAPSE_SQLITE_DB: &str = "/var/lib/matrix-synapse/homeserver.db";
pub const SYNAPSE_LOG_DIR: &str = "/var/log/matrix-synapse";
/// The package's virtualenv interpreter (Synapse's config check runs with it).
pub const SYNAPSE_PYTHON: &str = "/opt/venvs/matrix-synapse/bin/python";

// What the services may use (crate::sizing): cgroup v2 limits at the root of the tree this host sees,
// then the v1 equivalents (a hybrid host).
pub const CGROUP_V2_MEMORY_MAX: &str = "/sys/fs/cgroup/memory.max";
pub const CGROUP_V2_CPU_MAX: &str = "/sys/fs/cgroup/cpu.max";
pub const CGROUP_V1_MEMORY_LIMIT: &str = "/sys/fs/cgroup/memory/memory.limit_in_bytes";
pub const CGROUP_V1_CPU_QUOTA: &str = "/sys/fs/cgroup/cpu/cpu.cfs_quota_us";
pub const CGROUP_V1_CPU_PERIOD: &str = "/sys/fs/cgroup/cpu/cpu.cfs_period_us";

// Loopback listeners.
pub const LOOPBACK: &str = "127.0.0.1";
/// Synapse's plain-HTTP client (and federation) listener, on loopback only.
pub const SYNAPSE_PORT: u16 = 8008;
/// Where Synapse's listener answers (never anything but loopback).
pub const SYNAPSE_ADDR: &str = "127.0.0.1:8008";
pub const SYNAPSE_URL: &str = "http://127.0.0.1:8008";
/// The name of nginx's upstream for SYNAPSE_ADDR (the vhosts proxy to `http://` + this).
pub const NGINX_SYNAPSE_UPSTREAM: &str = "matrix_synapse";
pub const SYNAPSE_HEALTH_URL: &str = "http://127.0.0.1:8008/health";

// Public ports.
pub const SSH_PORT: u16 = 22;
pub const HTTP_PORT: u16 = 80;
pub const HTTPS_PORT: u16 = 443;
pub const FEDERATION_PORT: u16 = 8448;
pub const TURN_PORT: u16 = 3478;
pub const TURNS_PORT: u16 = 5349;

// PostgreSQL (the cluster's own paths depend on the release: see Layout).
pub const POSTGRES_UNIT: &str = "postgresql";
pub const POSTGRES_DATA_DIR: &str = "/var/lib/postgresql";
pub const POSTGRES_LOG_DIR: &str = "/var/log/postgresql";
pub const POSTGRES_RUN_DIR: &str = "/run/postgresql";
/// postgresql-common keeps each cluster's config in `<this>/<version>/<cluster>/` (what pg_lsclusters lists).
pub const POSTGRES_CONFIG_DIR: &str = "/etc/postgresql";

/// The psql of one PostgreSQL major version, without postgresql-common's Perl wrapper in front.
pub fn postgres_psql(major: &str) -> String {
    format!("/usr/lib/postgresql/{major}/bin/psql")
}

// nginx and certbot.
pub const NGINX_UNIT: &str = "nginx";
/// nginx's configuration tree: what `nginx -t` reads. A step changing anything below it, or running
/// `nginx -t`, holds [`NGINX_CONFIG_LOCK`] (derived in playbook::build, never declared by hand).
pub const NGINX_CONFIG_DIR: &str = "/etc/nginx";
pub const NGINX_CONFIG_LOCK: &str = "nginx-config";
pub const NGINX_SITES_AVAILABLE: &str = "/etc/nginx/sites-available";
pub const NGINX_SITES_ENABLED: &str = "/etc/nginx/sites-enabled";
pub const NGINX_CONF_D: &str = "/etc/nginx/conf.d";
pub const NGINX_TLS_SNIPPET: &str = "/etc/nginx/snippets/matrix-provision-tls.conf";
pub const NGINX_DATA_DIR: &str = "/var/lib/nginx";
pub const NGINX_LOG_DIR: &str = "/var/log/nginx";
/// certbot `--webroot-path`; nginx serves `/.well-known/acme-challenge/` from here on port 80. Under
/// /var/www, not the private state dir: nginx (www-data) must be able to read challenges.
pub const ACME_WEBROOT: &str = "/var/www/letsencrypt";
/// Element releases live under here (the updater user's tree); `current` is the served release.
pub const ELEMENT_ROOT: &str = "/var/www/element";
pub const CERTBOT_UNIT: &str = "certbot";
/// certbot's live directory: `<live>/<host>/{cert,fullchain,privkey}.pem`.
pub const LETSENCRYPT_LIVE: &str = "/etc/letsencrypt/live";
pub const LETSENCRYPT_RENEWAL: &str = "/etc/letsencrypt/renewal";
pub const LETSENCRYPT_ARCHIVE: &str = "/etc/letsencrypt/archive";
/// The fcntl locks certbot takes, one per directory it writes (config, work, logs).
pub const CERTBOT_LOCKS: [&str; 3] = [
    "/etc/letsencrypt/.certbot.lock",
    "/var/lib/letsencrypt/.certbot.lock",
    "/var/log/letsencrypt/.certbot.lock",
];
pub const LETSENCRYPT_DEPLOY_HOOKS: &str = "/etc/letsencrypt/renewal-hooks/deploy";

// coturn.
pub const COTURN_UNIT: &str = "coturn";
/// Our own config file; the package's /etc/turnserver.conf conffile stays untouched.
pub const COTURN_CONFIG: &str = "/etc/coturn/matrix-provision.conf";
/// coturn's copy of the TURN certificate (turnserver cannot read certbot's live directory).
pub const COTURN_CERT_DIR: &str = "/etc/coturn/certs";
pub const COTURN_DATA_DIR: &str = "/var/lib/turn";
pub const TURNSERVER_BIN: &str = "/usr/bin/turnserver";

// Synapse's workers (issue 13) and the Redis they replicate through.
/// The template unit, before the instance name: `matrix-synapse-worker@<name>`.
pub const SYNAPSE_WORKER_UNIT: &str = "matrix-synapse-worker@";
/// Groups the main process and every enabled worker (Synapse's docs/systemd-with-workers).
pub const SYNAPSE_TARGET: &str = "matrix-synapse.target";
/// One `<name>.yaml` per worker.
pub const SYNAPSE_WORKERS_DIR: &str = "/etc/matrix-synapse/workers";
/// The shared worker settings (instance_map, stream writers, Redis), a conf.d fragment.
pub const SYNAPSE_WORKERS_CONF: &str = "/etc/matrix-synapse/conf.d/mp-workers.yaml";
/// Authenticates HTTP replication between the processes (`worker_replication_secret_path`).
pub const SYNAPSE_REPLICATION_SECRET: &str =
    "/etc/matrix-synapse/secrets/worker_replication_secret";
/// The main process's HTTP replication listener, on loopback.
pub const SYNAPSE_REPLICATION_PORT: u16 = 9093;
/// Worker `i` of the role in row `r` of `workers::ROLES` listens on WORKER_HTTP_BASE + 10 r + i and, when
/// it writes a stream, takes replication on WORKER_REPLICATION_BASE + 10 r + i (i = 1..=9), on loopback.
pub const WORKER_HTTP_BASE: u16 = 8100;
pub const WORKER_REPLICATION_BASE: u16 = 9100;
pub const REDIS_UNIT: &str = "redis-server";
/// Debian's conffile: our configuration includes it and is never written into it.
pub const DEBIAN_REDIS_CONF: &str = "/etc/redis/redis.conf";
/// Ours, outside /etc/redis (the package's unit lets redis write there).
pub const REDIS_CONFIG: &str = "/etc/matrix-provision/redis.conf";
pub const REDIS_BIN: &str = "/usr/bin/redis-server";
/// Redis's only listener: a unix socket in a directory only redis and Synapse's group may enter.
pub const REDIS_SOCKET_DIR: &str = "/run/matrix-provision-redis";
pub const REDIS_SOCKET: &str = "/run/matrix-provision-redis/redis.sock";
/// Makes REDIS_SOCKET_DIR at every boot (/run is a tmpfs).
pub const REDIS_TMPFILES: &str = "/etc/tmpfiles.d/matrix-provision-redis.conf";

// Element's updater.
/// `.service` and `.timer`.
pub const ELEMENT_UPDATE_UNIT: &str = "matrix-element-update";

// Backups and upkeep (issue 14; src/backup, src/maintenance.rs).
/// Root-only (0700): the restic repository password and the admin's backend environment.
pub const BACKUP_CONFIG_DIR: &str = "/etc/matrix-provision/backup";
/// The repository password, a secret apply generates once; in no backup (it must be stored off the host).
pub const RESTIC_PASSWORD: &str = "/etc/matrix-provision/backup/restic-password";
/// Optional KEY=VALUE lines for restic's backend (S3 keys, a REST password), written by the admin.
pub const RESTIC_ENV: &str = "/etc/matrix-provision/backup/restic.env";
pub const CACHE_DIR: &str = "/var/cache/matrix-provision";
/// restic's local cache of repository metadata.
pub const RESTIC_CACHE_DIR: &str = "/var/cache/matrix-provision/restic";
/// The last backup's time and result (`backup::State`), read by doctor and metrics.
pub const BACKUP_STATE: &str = "/var/lib/matrix-provision/last-backup.json";
/// What a backup holds; part of its file snapshot.
pub const BACKUP_MANIFEST: &str = "/var/lib/matrix-provision/backup-manifest.json";
/// One backup or restore at a time (in the state directory: the backup service may write there).
pub const BACKUP_LOCK: &str = "/var/lib/matrix-provision/backup.lock";
/// `.service` and `.timer`.
pub const BACKUP_UNIT: &str = "matrix-backup";
/// `.service` and `.timer`: `matrix-provision maintenance`.
pub const MAINTENANCE_UNIT: &str = "matrix-maintenance";
/// Synapse's media store (the package's `media_store_path`).
pub const SYNAPSE_MEDIA_STORE: &str = "/var/lib/matrix-synapse/media";
// Metrics ([metrics]): Debian's Prometheus and exporters, configured by drop-ins and files of our own.
pub const PROMETHEUS_UNIT: &str = "prometheus";
pub const NODE_EXPORTER_UNIT: &str = "prometheus-node-exporter";
pub const POSTGRES_EXPORTER_UNIT: &str = "prometheus-postgres-exporter";
/// `.service` and `.timer`: writes the certificate-expiry textfile hourly.
pub const CERT_EXPIRY_UNIT: &str = "matrix-provision-cert-expiry";
/// Our Prometheus configuration and rules (Debian's /etc/prometheus/prometheus.yml is a conffile).
pub const PROMETHEUS_CONFIG: &str = "/etc/prometheus/matrix-provision.yml";
pub const PROMETHEUS_RECORDING_RULES: &str = "/etc/prometheus/matrix-provision-recording.rules.yml";
pub const PROMETHEUS_ALERT_RULES: &str = "/etc/prometheus/matrix-provision-alerts.rules.yml";
pub const PROMETHEUS_PORT: u16 = 9090;
pub const NODE_EXPORTER_PORT: u16 = 9100;
pub const POSTGRES_EXPORTER_PORT: u16 = 9187;
/// Synapse's main process's `metrics` listener (workers get ports of their own: [`synapse_processes`]).
pub const SYNAPSE_METRICS_PORT: u16 = 9000;
/// Prometheus's API and UI (doctor asks it; the SSH tunnel reaches it).
pub const PROMETHEUS_URL: &str = "http://127.0.0.1:9090";
/// node-exporter's textfile collector directory (Debian's default): every `*.prom` file in it is read.
pub const TEXTFILE_DIR: &str = "/var/lib/prometheus/node-exporter";
/// Written by the backup job after each run: [`BACKUP_SUCCESS_METRIC`]. Replace it atomically (write a
/// temp name not ending in `.prom` in the same directory, then rename); skip it when TEXTFILE_DIR is
/// missing (metrics off).
pub const BACKUP_TEXTFILE: &str = "/var/lib/prometheus/node-exporter/matrix-provision-backup.prom";
/// Gauge: Unix time of the last backup that succeeded. BackupTooOld fires when it is older than
/// `metrics.backup_max_age`.
pub const BACKUP_SUCCESS_METRIC: &str = "matrix_provision_backup_last_success_timestamp_seconds";
/// Gauge in the same file: 1 when the last backup run succeeded, 0 when it failed.
pub const BACKUP_LAST_RUN_OK_METRIC: &str = "matrix_provision_backup_last_run_success";
/// Written by the certificate-expiry timer: [`CERT_EXPIRY_METRIC`] per certbot lineage.
pub const CERT_TEXTFILE: &str =
    "/var/lib/prometheus/node-exporter/matrix-provision-certificates.prom";
/// Gauge, label `name`: notAfter of each certificate, as Unix time.
pub const CERT_EXPIRY_METRIC: &str = "matrix_provision_certificate_expiry_timestamp_seconds";
/// Scripts our units run.
pub const LIBEXEC_DIR: &str = "/usr/local/lib/matrix-provision";
pub const CERT_EXPIRY_SCRIPT: &str = "/usr/local/lib/matrix-provision/cert-expiry-textfile";
/// Prometheus on the Synapse vhost (metrics.expose_ui): the nginx snippet, its basic-auth users (a hash
/// only) and the generated password.
pub const NGINX_PROMETHEUS_SNIPPET: &str = "/etc/nginx/snippets/matrix-provision-prometheus.conf";
pub const PROMETHEUS_HTPASSWD: &str = "/etc/nginx/matrix-provision-prometheus.htpasswd";
pub const PROMETHEUS_UI_PASSWORD: &str = "/var/lib/matrix-provision/secrets/prometheus_ui_password";
/// Where the package's homeserver.yaml keeps the media store (the disk alerts watch its filesystem).
pub const SYNAPSE_MEDIA_DIR: &str = "/var/lib/matrix-synapse/media";

/// One Synapse process with its own metrics listener on loopback.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SynapseProcess {
    /// The `process` label of its metrics and alerts ("main", or the worker's name).
    pub name: String,
    pub unit: String,
    pub metrics_port: u16,
}

/// The Synapse processes of this host, in one place: the main process's metrics listener, the scrape
/// targets and the SynapseDown alert are rendered from this list. A worker is one more entry (its own
/// unit and metrics port, its listener in its own config).
pub fn synapse_processes(_config: &HostConfig) -> Vec<SynapseProcess> {
    vec![SynapseProcess {
        name: "main".into(),
        unit: SYNAPSE_UNIT.into(),
        metrics_port: SYNAPSE_METRICS_PORT,
    }]
}

/// A TLS name a service presents on a port, and the certificate it must present there.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TlsEndpoint {
    pub name: String,
    pub port: u16,
    pub cert: String,
}

/// What playbooks and templates see as `paths`: the constants above plus what depends on host.toml and
/// the release. Field names are template variables (`{{ paths.synapse_conf_d }}`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Layout {
    pub state_dir: String,
    pub provisioner_secrets_dir: String,
    pub config_dir: String,
    pub host_config: String,
    pub element_config_dir: String,
    /// The binary the update timer runs: the package's own when apply runs from it, else where apply
    /// installs a copy of itself.
    pub binary: String,

    pub matrix_keyring: String,
    pub matrix_sources: String,
    pub systemd_dir: String,
    pub run_dir: String,

    pub synapse_unit: String,
    pub synapse_dropin_dir: String,
    pub synapse_homeserver_yaml: String,
    pub synapse_conf_d: String,
    /// Synapse's secrets directory (the name predates the layout module).
    pub secrets_dir: String,
    pub synapse_data_dir: String,
    pub synapse_log_dir: String,
    pub synapse_python: String,

    pub loopback: String,
    pub synapse_port: u16,
    /// nginx's upstream block for Synapse's main process (keepalive connections to synapse_port).
    pub synapse_upstream: String,
    pub synapse_health_url: String,

    pub http_port: u16,
    pub https_port: u16,
    pub federation_port: u16,
    pub turn_port: u16,
    pub turns_port: u16,

    pub postgres_unit: String,
    /// The cluster's own unit (`postgresql` only fans out to it): `postgresql@<major>-main`.
    pub postgres_cluster_unit: String,
    pub postgres_dropin_dir: String,
    /// The cluster's conf.d: Debian's postgresql.conf includes it, so tuning never edits a conffile.
    pub postgres_conf_d: String,
    pub postgres_data_dir: String,
    pub postgres_log_dir: String,
    pub postgres_run_dir: String,

    pub nginx_unit: String,
    pub nginx_dropin_dir: String,
    pub nginx_sites_available: String,
    pub nginx_sites_enabled: String,
    pub nginx_conf_d: String,
    pub nginx_tls_snippet: String,
    pub nginx_data_dir: String,
    pub nginx_log_dir: String,
    pub acme_webroot: String,
    pub element_root: String,
    /// What nginx's vhosts present (doctor compares each with the certificate on disk).
    pub nginx_tls: Vec<TlsEndpoint>,

    pub certbot_unit: String,
    pub certbot_dropin_dir: String,
    pub letsencrypt_live: String,
    pub letsencrypt_deploy_hooks: String,

    pub coturn_unit: String,
    pub coturn_dropin_dir: String,
    pub coturn_config: String,
    pub coturn_cert_dir: String,
    pub coturn_data_dir: String,
    pub turnserver_bin: String,
    /// TURN over TLS presents turn.host's certificate (from coturn's copy, which must match certbot's).
    pub coturn_tls: Vec<TlsEndpoint>,

    pub element_update_unit: String,

    pub backup_config_dir: String,
    pub restic_password: String,
    pub cache_dir: String,
    pub backup_unit: String,
    pub maintenance_unit: String,
    pub synapse_processes: Vec<SynapseProcess>,
    /// Prometheus, node-exporter, postgres-exporter: each configured by a drop-in of ours.
    pub metrics_units: Vec<String>,
    pub prometheus_unit: String,
    pub node_exporter_unit: String,
    pub postgres_exporter_unit: String,
    pub prometheus_dropin_dir: String,
    pub node_exporter_dropin_dir: String,
    pub postgres_exporter_dropin_dir: String,
    pub cert_expiry_unit: String,
    pub prometheus_config: String,
    pub prometheus_recording_rules: String,
    pub prometheus_alert_rules: String,
    pub prometheus_port: u16,
    pub node_exporter_port: u16,
    pub postgres_exporter_port: u16,
    pub textfile_dir: String,
    pub backup_textfile: String,
    pub backup_metric: String,
    pub cert_textfile: String,
    pub cert_metric: String,
    pub libexec_dir: String,
    pub cert_expiry_script: String,
    pub nginx_prometheus_snippet: String,
    pub prometheus_htpasswd: String,
    pub prometheus_ui_password: String,
    pub synapse_worker_unit: String,
    pub synapse_target: String,
    pub synapse_workers_dir: String,
    pub synapse_workers_conf: String,
    pub synapse_replication_secret: String,
    pub synapse_replication_port: u16,
    pub redis_unit: String,
    pub redis_dropin_dir: String,
    pub debian_redis_conf: String,
    pub redis_config: String,
    pub redis_bin: String,
    pub redis_socket_dir: String,
    pub redis_socket: String,
    pub redis_tmpfiles: String,
}

/// `<SYSTEMD_DIR>/<unit>.service.d`: where a drop-in for the package's unit goes.
pub fn dropin_dir(unit: &str) -> String {
    format!("{SYSTEMD_DIR}/{unit}.service.d")
}

/// certbot's copy of `file` (cert.pem, fullchain.pem, privkey.pem) for `name`.
pub fn live_file(name: &str, file: &str) -> String {
    format!("{LETSENCRYPT_LIVE}/{name}/{file}")
}

/// systemd's unit for the release's cluster, as postgresql-common names it.
pub fn postgres_cluster_unit(release: &Release) -> String {
    format!("postgresql@{}-main", release.postgres)
}

impl Layout {
    /// The layout for `config` on a host of `release`, run from the binary at `self_exe`. Run from the
    /// package, the timer uses the package's binary itself: a copy in /usr/local/bin would go stale at the
    /// next package upgrade and, being first in PATH, shadow the upgraded one for the admin too.
    pub fn new(config: &HostConfig, release: &Release, self_exe: &Path) -> Layout {
        let binary = if self_exe == Path::new(PACKAGED_BINARY) {
            PACKAGED_BINARY
        } else {
            INSTALLED_BINARY
        };
        let tls = |name: &str, port: u16| TlsEndpoint {
            name: name.to_string(),
            port,
            cert: live_file(name, "cert.pem"),
        };
        // Behind an edge (crate::listeners) this host presents no certificate at all.
        let terminates_tls = crate::listeners::Listeners::of(config).tls;
        let mut nginx_tls = Vec::new();
        if terminates_tls {
            nginx_tls.push(tls(&config.synapse.host, HTTPS_PORT));
            if config.synapse.federation {
                nginx_tls.push(tls(&config.synapse.host, FEDERATION_PORT));
            }
            if config.delegated() {
                nginx_tls.push(tls(&config.server_name, HTTPS_PORT));
            }
            if config.element.enabled {
                nginx_tls.push(tls(&config.element.host, HTTPS_PORT));
            }
        }
        let coturn_tls = if config.turn.enabled && terminates_tls {
            vec![tls(&config.turn.host, TURNS_PORT)]
        } else {
            Vec::new()
        };
        let s = |v: &str| v.to_string();
        Layout {
            state_dir: s(STATE_DIR),
            provisioner_secrets_dir: s(PROVISIONER_SECRETS_DIR),
            config_dir: s(CONFIG_DIR),
            host_config: s(HOST_CONFIG),
            element_config_dir: s(ELEMENT_CONFIG_DIR),
            binary: s(binary),
            matrix_keyring: s(MATRIX_KEYRING),
            matrix_sources: s(MATRIX_SOURCES),
            systemd_dir: s(SYSTEMD_DIR),
            run_dir: s(RUN_DIR),
            synapse_unit: s(SYNAPSE_UNIT),
            synapse_dropin_dir: dropin_dir(SYNAPSE_UNIT),
            synapse_homeserver_yaml: s(SYNAPSE_HOMESERVER_YAML),
            synapse_conf_d: s(SYNAPSE_CONF_D),
            secrets_dir: s(SYNAPSE_SECRETS_DIR),
            synapse_data_dir: s(SYNAPSE_DATA_DIR),
            synapse_log_dir: s(SYNAPSE_LOG_DIR),
            synapse_python: s(SYNAPSE_PYTHON),
            loopback: s(LOOPBACK),
            synapse_port: SYNAPSE_PORT,
            synapse_upstream: s(NGINX_SYNAPSE_UPSTREAM),
            synapse_health_url: s(SYNAPSE_HEALTH_URL),
            http_port: HTTP_PORT,
            https_port: HTTPS_PORT,
            federation_port: FEDERATION_PORT,
            turn_port: TURN_PORT,
            turns_port: TURNS_PORT,
            postgres_unit: s(POSTGRES_UNIT),
            postgres_cluster_unit: postgres_cluster_unit(release),
            // The template unit's drop-in covers every cluster.
            postgres_dropin_dir: dropin_dir("postgresql@"),
            postgres_conf_d: format!("/etc/postgresql/{}/main/conf.d", release.postgres),
            postgres_data_dir: s(POSTGRES_DATA_DIR),
            postgres_log_dir: s(POSTGRES_LOG_DIR),
            postgres_run_dir: s(POSTGRES_RUN_DIR),
            nginx_unit: s(NGINX_UNIT),
            nginx_dropin_dir: dropin_dir(NGINX_UNIT),
            nginx_sites_available: s(NGINX_SITES_AVAILABLE),
            nginx_sites_enabled: s(NGINX_SITES_ENABLED),
            nginx_conf_d: s(NGINX_CONF_D),
            nginx_tls_snippet: s(NGINX_TLS_SNIPPET),
            nginx_data_dir: s(NGINX_DATA_DIR),
            nginx_log_dir: s(NGINX_LOG_DIR),
            acme_webroot: s(ACME_WEBROOT),
            element_root: s(ELEMENT_ROOT),
            nginx_tls,
            certbot_unit: s(CERTBOT_UNIT),
            certbot_dropin_dir: dropin_dir(CERTBOT_UNIT),
            letsencrypt_live: s(LETSENCRYPT_LIVE),
            letsencrypt_deploy_hooks: s(LETSENCRYPT_DEPLOY_HOOKS),
            coturn_unit: s(COTURN_UNIT),
            coturn_dropin_dir: dropin_dir(COTURN_UNIT),
            coturn_config: s(COTURN_CONFIG),
            coturn_cert_dir: s(COTURN_CERT_DIR),
            coturn_data_dir: s(COTURN_DATA_DIR),
            turnserver_bin: s(TURNSERVER_BIN),
            coturn_tls,
            element_update_unit: s(ELEMENT_UPDATE_UNIT),
            backup_config_dir: s(BACKUP_CONFIG_DIR),
            restic_password: s(RESTIC_PASSWORD),
            cache_dir: s(CACHE_DIR),
            backup_unit: s(BACKUP_UNIT),
            maintenance_unit: s(MAINTENANCE_UNIT),
            synapse_processes: synapse_processes(config),
            metrics_units: [PROMETHEUS_UNIT, NODE_EXPORTER_UNIT, POSTGRES_EXPORTER_UNIT]
                .map(String::from)
                .into(),
            prometheus_unit: s(PROMETHEUS_UNIT),
            node_exporter_unit: s(NODE_EXPORTER_UNIT),
            postgres_exporter_unit: s(POSTGRES_EXPORTER_UNIT),
            prometheus_dropin_dir: dropin_dir(PROMETHEUS_UNIT),
            node_exporter_dropin_dir: dropin_dir(NODE_EXPORTER_UNIT),
            postgres_exporter_dropin_dir: dropin_dir(POSTGRES_EXPORTER_UNIT),
            cert_expiry_unit: s(CERT_EXPIRY_UNIT),
            prometheus_config: s(PROMETHEUS_CONFIG),
            prometheus_recording_rules: s(PROMETHEUS_RECORDING_RULES),
            prometheus_alert_rules: s(PROMETHEUS_ALERT_RULES),
            prometheus_port: PROMETHEUS_PORT,
            node_exporter_port: NODE_EXPORTER_PORT,
            postgres_exporter_port: POSTGRES_EXPORTER_PORT,
            textfile_dir: s(TEXTFILE_DIR),
            backup_textfile: s(BACKUP_TEXTFILE),
            backup_metric: s(BACKUP_SUCCESS_METRIC),
            cert_textfile: s(CERT_TEXTFILE),
            cert_metric: s(CERT_EXPIRY_METRIC),
            libexec_dir: s(LIBEXEC_DIR),
            cert_expiry_script: s(CERT_EXPIRY_SCRIPT),
            nginx_prometheus_snippet: s(NGINX_PROMETHEUS_SNIPPET),
            prometheus_htpasswd: s(PROMETHEUS_HTPASSWD),
            prometheus_ui_password: s(PROMETHEUS_UI_PASSWORD),
            synapse_worker_unit: s(SYNAPSE_WORKER_UNIT),
            synapse_target: s(SYNAPSE_TARGET),
            synapse_workers_dir: s(SYNAPSE_WORKERS_DIR),
            synapse_workers_conf: s(SYNAPSE_WORKERS_CONF),
            synapse_replication_secret: s(SYNAPSE_REPLICATION_SECRET),
            synapse_replication_port: SYNAPSE_REPLICATION_PORT,
            redis_unit: s(REDIS_UNIT),
            redis_dropin_dir: dropin_dir(REDIS_UNIT),
            debian_redis_conf: s(DEBIAN_REDIS_CONF),
            redis_config: s(REDIS_CONFIG),
            redis_bin: s(REDIS_BIN),
            redis_socket_dir: s(REDIS_SOCKET_DIR),
            redis_socket: s(REDIS_SOCKET),
            redis_tmpfiles: s(REDIS_TMPFILES),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The constants that spell out a path below another one agree with it.
    #[test]
    fn nested_constants_agree() {
        for (inner, outer) in [
            (PROVISIONER_SECRETS_DIR, STATE_DIR),
            (BACKUP_DIR, STATE_DIR),
            (PENDING_HANDLERS, STATE_DIR),
            (ADMIN_CREDENTIALS, STATE_DIR),
            (HOST_CONFIG, CONFIG_DIR),
            (ELEMENT_CONFIG_DIR, CONFIG_DIR),
            (SYNAPSE_HOMESERVER_YAML, SYNAPSE_CONFIG_DIR),
            (SYNAPSE_CONF_D, SYNAPSE_CONFIG_DIR),
            (SYNAPSE_SERVER_NAME_YAML, SYNAPSE_CONF_D),
            (SYNAPSE_SIGNING_KEY, SYNAPSE_CONFIG_DIR),
            (SYNAPSE_SQLITE_DB, SYNAPSE_DATA_DIR),
            (SYNAPSE_SECRETS_DIR, SYNAPSE_CONFIG_DIR),
            (SYNAPSE_REGISTRATION_SECRET, SYNAPSE_SECRETS_DIR),
            (BACKUP_CONFIG_DIR, CONFIG_DIR),
            (RESTIC_PASSWORD, BACKUP_CONFIG_DIR),
            (RESTIC_ENV, BACKUP_CONFIG_DIR),
            (RESTIC_CACHE_DIR, CACHE_DIR),
            (BACKUP_STATE, STATE_DIR),
            (BACKUP_MANIFEST, STATE_DIR),
            (BACKUP_LOCK, STATE_DIR),
            (SYNAPSE_MEDIA_STORE, SYNAPSE_DATA_DIR),
            (BACKUP_TEXTFILE, TEXTFILE_DIR),
            (CERT_TEXTFILE, TEXTFILE_DIR),
            (CERT_EXPIRY_SCRIPT, LIBEXEC_DIR),
            (PROMETHEUS_UI_PASSWORD, PROVISIONER_SECRETS_DIR),
            (SYNAPSE_MEDIA_DIR, SYNAPSE_DATA_DIR),
            (SYNAPSE_REPLICATION_SECRET, SYNAPSE_SECRETS_DIR),
            (SYNAPSE_WORKERS_DIR, SYNAPSE_CONFIG_DIR),
            (SYNAPSE_WORKERS_CONF, SYNAPSE_CONF_D),
            (REDIS_CONFIG, CONFIG_DIR),
            (REDIS_SOCKET, REDIS_SOCKET_DIR),
        ] {
            assert!(
                inner.starts_with(&format!("{outer}/")),
                "{inner} is not below {outer}"
            );
        }
        assert_eq!(SYNAPSE_ADDR, format!("{LOOPBACK}:{SYNAPSE_PORT}"));
        assert_eq!(SYNAPSE_URL, format!("http://{SYNAPSE_ADDR}"));
        assert_eq!(SYNAPSE_HEALTH_URL, format!("{SYNAPSE_URL}/health"));
        assert_eq!(
            PROMETHEUS_URL,
            format!("http://{LOOPBACK}:{PROMETHEUS_PORT}")
        );
        assert!(CERT_TEXTFILE.ends_with(".prom") && BACKUP_TEXTFILE.ends_with(".prom"));
    }

    #[test]
    fn release_and_config_dependent_parts() {
        let config = crate::config::parse(
            "server_name = \"example.com\"\n[acme]\nemail = \"a@example.com\"\n",
            "t",
        )
        .unwrap();
        let r12 = crate::release::SUPPORTED[0];
        let l = Layout::new(&config, &r12, Path::new(PACKAGED_BINARY));
        let major = r12.postgres;
        assert_eq!(l.postgres_cluster_unit, format!("postgresql@{major}-main"));
        assert_eq!(
            l.postgres_conf_d,
            format!("/etc/postgresql/{major}/main/conf.d")
        );
        assert_eq!(l.binary, PACKAGED_BINARY);
        assert_eq!(
            Layout::new(&config, &r12, Path::new("/tmp/x")).binary,
            INSTALLED_BINARY
        );
        let served: Vec<(&str, u16)> = l
            .nginx_tls
            .iter()
            .map(|t| (t.name.as_str(), t.port))
            .collect();
        assert_eq!(
            served,
            [
                ("matrix.example.com", 443),
                ("matrix.example.com", 8448),
                ("example.com", 443),
                ("element.example.com", 443)
            ]
        );
        assert_eq!(
            l.coturn_tls,
            [TlsEndpoint {
                name: "turn.example.com".into(),
                port: 5349,
                cert: "/etc/letsencrypt/live/turn.example.com/cert.pem".into()
            }]
        );
    }
}
