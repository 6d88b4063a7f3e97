//! The real playbooks, planned against a fake fresh Debian 13 host (FakeSystem: the newest release): the graph builds for every shape of
//! host.toml, the plan lists the work, writes nothing, and no secret appears in it.

use std::path::PathBuf;

use matrix_provision::engine::{self, Ctx, Silent, Status};
use matrix_provision::playbook::{self, Inputs};
use matrix_provision::system::FakeSystem;

fn fresh_host() -> FakeSystem {
    let sys = FakeSystem::new();
    sys.on_cmd("sshd -T", 0, "port 2222\n");
    sys.on_cmd("ss ", 0, "");
    sys.on_cmd("dpkg-query", 1, "");
    sys.on_cmd("systemctl show", 1, "");
    // Units no package ships, as systemd answers for them (exit 0): what the steps turning timers off see.
    for unit in ["matrix-backup.timer", "matrix-maintenance.timer"] {
        sys.on_cmd(
            &format!(
                "systemctl show -p LoadState -p ActiveState -p SubState -p UnitFileState {unit}"
            ),
            0,
            "LoadState=not-found\nActiveState=inactive\nSubState=dead\nUnitFileState=\n",
        );
    }
    sys.on_cmd("runuser -u postgres", 2, "");
    sys.on_cmd("setpriv --reuid=postgres", 2, "");
    // The admin's host.toml and this binary: copied for the Element update timer.
    sys.put("/root/host.toml", "server_name = \"example.com\"\n");
    sys.put("/opt/build/matrix-provision", "\u{7f}ELF binary");
    sys
}

fn inputs() -> Inputs {
    Inputs {
        config_path: PathBuf::from("/root/host.toml"),
        self_exe: PathBuf::from("/opt/build/matrix-provision"),
    }
}

const BASE: &str = "server_name = \"example.com\"\n[acme]\nemail = \"admin@example.com\"\n";

fn plan(extra: &str) -> (FakeSystem, engine::Report, String) {
    plan_on(fresh_host(), extra)
}

fn plan_on(sys: FakeSystem, extra: &str) -> (FakeSystem, engine::Report, String) {
    let config = matrix_provision::config::parse(&format!("{BASE}{extra}"), "host.toml").unwrap();
    let before = sys.snapshot();
    let graph = playbook::build(&config, &inputs(), &sys, true).unwrap();
    let ctx = Ctx::new(&sys, &graph.secrets);
    let report = engine::run(&graph.nodes, &ctx, true, &mut Silent).unwrap();
    assert_eq!(sys.snapshot(), before, "plan wrote to the host");
    let json = serde_json::to_string(&report).unwrap();
    for (name, value) in graph.secrets.named() {
        assert!(
            !json.contains(value.expose()),
            "secret {name} leaked into the plan"
        );
    }
    (sys, report, json)
}

#[test]
fn fresh_host_plan_lists_everything_and_writes_nothing() {
    let (sys, report, json) = plan("");
    let failed: Vec<_> = report
        .outcomes
        .iter()
        .filter(|o| o.status == Status::Failed)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(report.count(Status::Changed), 0);
    let planned: Vec<&str> = report
        .outcomes
        .iter()
        .filter(|o| o.status == Status::Planned)
        .map(|o| o.id.as_str())
        .collect();
    for id in [
        "matrix-keyring",
        "packages",
        "postgres-db",
        "synapse-conf-database",
        "cert-matrix.example.com",
        "cert-example.com",
        "coturn-conf",
        "element-release",
        "firewall",
        "restart:matrix-synapse",
    ] {
        assert!(planned.contains(&id), "{id} missing from plan: {planned:?}");
    }
    // The database fragment holds the password: its diff is redacted, never shown.
    assert!(json.contains("redacted"), "{json}");
    assert!(sys
        .commands()
        .iter()
        .all(|c| !c.starts_with("apt-get") && !c.starts_with("systemctl enable")));
}

#[test]
fn optional_parts_leave_the_graph_when_turned_off() {
    let (_, report, json) = plan(
        "[turn]\nenabled = false\n[element]\nenabled = false\n[firewall]\nenabled = false\n[synapse]\nhost = \"example.com\"\nfederation = false\n",
    );
    assert!(!report.failed(), "{json}");
    let ids: Vec<&str> = report.outcomes.iter().map(|o| o.id.as_str()).collect();
    for gone in [
        "coturn-conf",
        "element-release",
        "firewall",
        "secret-turn_shared_secret",
        "nginx-wellknown-vhost",
        "cert-turn.example.com",
    ] {
        assert!(
            !ids.contains(&gone),
            "{gone} should not be planned: {ids:?}"
        );
    }
    assert!(ids.contains(&"cert-example.com"));
}

/// Run from the .deb, the update timer runs the package's binary and apply copies nothing; run from
/// anywhere else, apply installs a copy of itself for the timer.
#[test]
fn update_timer_runs_the_packaged_binary_or_a_copy() {
    let config = matrix_provision::config::parse(BASE, "host.toml").unwrap();
    for (exe, copied, runs) in [
        (
            "/usr/sbin/matrix-provision",
            false,
            "/usr/sbin/matrix-provision",
        ),
        (
            "/opt/build/matrix-provision",
            true,
            "/usr/local/bin/matrix-provision",
        ),
    ] {
        let sys = fresh_host();
        sys.put(exe, "\u{7f}ELF binary");
        let inputs = Inputs {
            self_exe: PathBuf::from(exe),
            ..inputs()
        };
        let graph = playbook::build(&config, &inputs, &sys, true).unwrap();
        let has_copy = graph.nodes.iter().any(|n| n.id == "self-binary");
        assert_eq!(has_copy, copied, "self-binary step for {exe}");
        let unit = graph
            .rendered
            .iter()
            .find(|f| f.dest.ends_with("matrix-element-update.service"))
            .expect("the update service is rendered");
        assert!(
            unit.contents
                .contains(&format!("ExecStart={runs} element-update")),
            "{exe}: {}",
            unit.contents
        );
    }
}

#[test]
fn the_plan_is_the_same_one_at_a_time_and_concurrently() {
    let config = matrix_provision::config::parse(BASE, "host.toml").unwrap();
    let plan_with = |jobs: usize| {
        let sys = fresh_host();
        let graph = playbook::build(&config, &inputs(), &sys, true).unwrap();
        let ctx = Ctx::new(&sys, &graph.secrets);
        let report = engine::run_jobs(&graph.nodes, &ctx, true, jobs, &mut Silent).unwrap();
        let mut doc = serde_json::to_value(&report.outcomes).unwrap();
        // Times differ from run to run; everything else must not.
        for o in doc.as_array_mut().unwrap() {
            o.as_object_mut()
                .unwrap()
                .retain(|k, _| k != "millis" && k != "start_ms");
        }
        // Preflight resolves the names in parallel itself, so its DNS warnings come in any order.
        let mut warnings = report.warnings;
        warnings.sort();
        (doc, warnings)
    };
    let (one, one_warnings) = plan_with(1);
    let (many, many_warnings) = plan_with(8);
    assert_eq!(one, many);
    assert_eq!(one_warnings, many_warnings);
}

/// Where ufw is already installed, the plan shows the SSH port from sshd's effective config, allowed first.
#[test]
fn the_plan_allows_the_detected_ssh_port_first() {
    let sys = fresh_host();
    sys.put("/etc/ufw/ufw.conf", "ENABLED=no\n");
    sys.put("/etc/default/ufw", "IPV6=yes\n");
    let (_, report, _) = plan_on(sys, "");
    let fw = report.outcomes.iter().find(|o| o.id == "firewall").unwrap();
    let change = fw.change.as_ref().unwrap();
    assert!(change.summary.contains("SSH on 2222"), "{}", change.summary);
    let engine::Detail::Items { items } = &change.detail else {
        panic!("{:?}", change.detail)
    };
    assert_eq!(items[0], "ufw allow 2222/tcp");
    assert_eq!(items.last().unwrap(), "ufw --force enable");
}

/// `[metrics]` on and off both plan on a fresh host; on, the exporters, Prometheus (its files checked by
/// promtool) and the UI's htpasswd are planned; off (the default), nothing of it is installed and the
/// cleanup steps find nothing to do there.
#[test]
fn metrics_plan_on_and_off() {
    let (_, report, json) = plan("[metrics]\nenabled = true\nexpose_ui = true\n");
    assert!(!report.failed(), "{json}");
    let ids: Vec<&str> = report.outcomes.iter().map(|o| o.id.as_str()).collect();
    for id in [
        "prometheus-config",
        "prometheus-alert-rules",
        "metrics-prometheus-service",
        "metrics-prometheus-postgres-exporter-dropin",
        "metrics-htpasswd",
        "metrics-postgres-role",
    ] {
        assert!(ids.contains(&id), "{id} not planned: {ids:?}");
    }
    // The certificate-expiry timer's first run (5 s after its start) must find the certificates.
    let config =
        matrix_provision::config::parse(&format!("{BASE}[metrics]\nenabled = true\n"), "host.toml")
            .unwrap();
    let graph = playbook::build(&config, &inputs(), &fresh_host(), true).unwrap();
    let timer = graph
        .nodes
        .iter()
        .find(|n| n.id == "metrics-cert-expiry-timer")
        .unwrap();
    for name in playbook::cert_names(&config) {
        assert!(
            timer.after.contains(&format!("cert-{name}")),
            "{:?}",
            timer.after
        );
    }
    let (_, report, json) = plan("");
    assert!(!report.failed(), "{json}");
    let cleanup: Vec<_> = report
        .outcomes
        .iter()
        .filter(|o| o.id.starts_with("metrics-"))
        .collect();
    assert!(!cleanup.is_empty());
    assert!(cleanup.iter().all(|o| o.status == Status::InSync), "{json}");
}

/// Workers (issue 13) on a fresh 2-CPU host: auto picks none there and the plan says why; the counts
/// written make the layout, each worker with its file, unit instance and restart, Redis and the target.
#[test]
fn workers_plan_their_files_units_and_restarts_and_say_why() {
    let (_, report, json) = plan("[synapse.workers]\nmode = \"auto\"\nsync = 2\nmedia = 1\n");
    assert!(!report.failed(), "{json}");
    let planned: Vec<&str> = report
        .outcomes
        .iter()
        .filter(|o| o.status == Status::Planned)
        .map(|o| o.id.as_str())
        .collect();
    for id in [
        "redis-conf",
        "redis-service",
        "synapse-conf-workers",
        "synapse-worker-unit",
        "synapse-worker-conf-sync1",
        "synapse-worker-conf-sync2",
        "synapse-worker-conf-media1",
        "restart:matrix-synapse-worker@sync2",
        "synapse-worker-media1",
        "synapse-target",
    ] {
        assert!(planned.contains(&id), "{id} missing from plan: {planned:?}");
    }
    assert!(
        !planned.iter().any(|id| id.contains("client1")),
        "{planned:?}"
    );
    let why = report
        .warnings
        .iter()
        .find(|w| w.starts_with("synapse.workers: auto: no workers on 2 CPU(s)"))
        .unwrap_or_else(|| panic!("no reason in {:?}", report.warnings));
    assert!(why.contains("host.toml sets media = 1, sync = 2"), "{why}");
}

/// Off (the default): no worker step but the ones that remove an earlier layout, and no reason to tell.
#[test]
fn workers_off_only_cleans_up() {
    let (_, report, json) = plan("");
    assert!(!report.failed(), "{json}");
    let ids: Vec<&str> = report.outcomes.iter().map(|o| o.id.as_str()).collect();
    assert!(ids.contains(&"synapse-workers-prune"));
    assert!(ids.contains(&"synapse-worker-unit-absent"));
    assert!(!ids
        .iter()
        .any(|id| id.starts_with("redis-service") || id.starts_with("synapse-worker-conf-")));
    assert!(!report
        .warnings
        .iter()
        .any(|w| w.contains("synapse.workers")));
}

/// A change to one worker's file restarts that worker only; the shared fragment restarts Synapse (and with
/// it, through PartOf=, every worker).
#[test]
fn a_worker_file_restarts_only_its_worker() {
    let sys = fresh_host();
    let config = matrix_provision::config::parse(
        &format!("{BASE}[synapse.workers]\nmode = \"auto\"\nsync = 2\nclient = 1\n"),
        "host.toml",
    )
    .unwrap();
    let graph = playbook::build(&config, &inputs(), &sys, true).unwrap();
    let notify = |id: &str| {
        graph
            .nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
            .notify
            .clone()
    };
    assert_eq!(
        notify("synapse-worker-conf-sync2"),
        ["restart:matrix-synapse-worker@sync2"]
    );
    assert_eq!(notify("synapse-conf-workers"), ["restart:matrix-synapse"]);
}
