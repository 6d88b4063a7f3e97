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
    sys.on_cmd("runuser -u postgres", 2, "");
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
