//! The concurrent walk: independent branches overlap, exclusive resources never do, dependents and handlers
//! wait for everything before them, a failure skips exactly its dependents, output stays in graph order,
//! and `jobs = 1` is the old one-at-a-time run. Steps here record when they start and end.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use matrix_provision::engine::{self, Change, Ctx, Listener, Node, Outcome, Silent, Status, Step};
use matrix_provision::secrets::SecretStore;
use matrix_provision::system::FakeSystem;

/// Start/end times per step, and who ran at once with whom.
#[derive(Default)]
struct Trace {
    events: Mutex<Vec<(String, &'static str, Instant)>>,
    /// Steps that have started (for rendezvous).
    started: Mutex<Vec<String>>,
    cv: Condvar,
}

impl Trace {
    fn record(&self, id: &str, what: &'static str) {
        self.events
            .lock()
            .unwrap()
            .push((id.to_string(), what, Instant::now()));
        if what == "start" {
            self.started.lock().unwrap().push(id.to_string());
            self.cv.notify_all();
        }
    }
    /// Block until `other` has started, or fail after a while (a sequential engine never gets there).
    fn meet(&self, other: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut started = self.started.lock().unwrap();
        while !started.iter().any(|s| s == other) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("`{other}` never ran at the same time");
            }
            started = self.cv.wait_timeout(started, left).unwrap().0;
        }
        Ok(())
    }
    fn time(&self, id: &str, what: &str) -> Instant {
        self.events
            .lock()
            .unwrap()
            .iter()
            .find(|(i, w, _)| i == id && *w == what)
            .unwrap_or_else(|| panic!("{id} has no {what}"))
            .2
    }
    fn ran(&self, id: &str) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(i, w, _)| i == id && *w == "start")
            .count()
    }
    /// The largest number of the given steps that were inside apply at one moment.
    fn max_overlap(&self, ids: &[&str]) -> usize {
        let (mut now, mut max) = (0usize, 0usize);
        for (id, what, _) in self.events.lock().unwrap().iter() {
            if !ids.contains(&id.as_str()) {
                continue;
            }
            if *what == "start" {
                now += 1;
                max = max.max(now);
            } else {
                now -= 1;
            }
        }
        max
    }
}

struct Timed {
    id: String,
    trace: Arc<Trace>,
    sleep_ms: u64,
    /// Wait inside apply until this step has started too (proves the two overlap).
    meet: Option<String>,
    fail: bool,
    done: Mutex<bool>,
}

impl Step for Timed {
    fn check(&self, _ctx: &Ctx) -> Result<Change> {
        Ok(if *self.done.lock().unwrap() {
            Change::in_sync()
        } else {
            Change::create(format!("make {}", self.id))
        })
    }
    fn apply(&self, _ctx: &Ctx, _c: &Change) -> Result<()> {
        self.trace.record(&self.id, "start");
        std::thread::sleep(Duration::from_millis(self.sleep_ms));
        let met = self.meet.as_ref().map_or(Ok(()), |m| self.trace.meet(m));
        self.trace.record(&self.id, "end");
        met?;
        if self.fail {
            bail!("{} broke", self.id);
        }
        *self.done.lock().unwrap() = true;
        Ok(())
    }
}

struct Spec<'a> {
    id: &'a str,
    after: &'a [&'a str],
    notify: &'a [&'a str],
    exclusive: &'a [&'a str],
    sleep_ms: u64,
    meet: Option<&'a str>,
    fail: bool,
    handler: bool,
}

const STEP: Spec = Spec {
    id: "",
    after: &[],
    notify: &[],
    exclusive: &[],
    sleep_ms: 0,
    meet: None,
    fail: false,
    handler: false,
};

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn node(s: Spec, trace: &Arc<Trace>) -> Node {
    Node {
        id: s.id.into(),
        description: s.id.into(),
        step: Box::new(Timed {
            id: s.id.into(),
            trace: trace.clone(),
            sleep_ms: s.sleep_ms,
            meet: s.meet.map(String::from),
            fail: s.fail,
            done: Mutex::new(false),
        }),
        after: strings(s.after),
        notify: strings(s.notify),
        handler: s.handler,
        exclusive: strings(s.exclusive),
    }
}

fn run(nodes: &[Node], jobs: usize) -> (engine::Report, FakeSystem) {
    let sys = FakeSystem::new();
    let secrets = SecretStore::new();
    let report =
        engine::run_jobs(nodes, &Ctx::new(&sys, &secrets), false, jobs, &mut Silent).unwrap();
    (report, sys)
}

fn status(report: &engine::Report, id: &str) -> Status {
    report.outcomes.iter().find(|o| o.id == id).unwrap().status
}

#[test]
fn independent_branches_overlap_and_a_dependent_waits_for_both() {
    let t = Arc::new(Trace::default());
    let nodes = vec![
        node(
            Spec {
                id: "keyring",
                meet: Some("element"),
                ..STEP
            },
            &t,
        ),
        node(
            Spec {
                id: "element",
                meet: Some("keyring"),
                ..STEP
            },
            &t,
        ),
        node(
            Spec {
                id: "packages",
                after: &["keyring", "element"],
                ..STEP
            },
            &t,
        ),
    ];
    let (report, _) = run(&nodes, 8);
    assert!(!report.failed(), "{:?}", report.outcomes);
    assert!(t.time("packages", "start") >= t.time("keyring", "end"));
    assert!(t.time("packages", "start") >= t.time("element", "end"));
}

#[test]
fn exclusive_resources_never_overlap_while_the_rest_does() {
    let t = Arc::new(Trace::default());
    let dpkg = ["apt1", "apt2", "apt3", "debconf"];
    let mut nodes: Vec<Node> = dpkg
        .iter()
        .map(|id| {
            node(
                Spec {
                    id,
                    exclusive: &["dpkg"],
                    sleep_ms: 30,
                    ..STEP
                },
                &t,
            )
        })
        .collect();
    // Two free steps that must meet each other, and one that also holds an unrelated resource.
    nodes.push(node(
        Spec {
            id: "free1",
            meet: Some("free2"),
            ..STEP
        },
        &t,
    ));
    nodes.push(node(
        Spec {
            id: "free2",
            meet: Some("free1"),
            ..STEP
        },
        &t,
    ));
    nodes.push(node(
        Spec {
            id: "ufw",
            exclusive: &["ufw"],
            sleep_ms: 30,
            ..STEP
        },
        &t,
    ));
    let (report, _) = run(&nodes, 8);
    assert!(!report.failed(), "{:?}", report.outcomes);
    assert_eq!(t.max_overlap(&dpkg), 1, "two dpkg users at once");
    assert!(t.max_overlap(&["apt1", "apt2", "apt3", "debconf", "ufw", "free1", "free2"]) >= 2);
}

#[test]
fn jobs_1_runs_one_step_at_a_time_in_graph_order() {
    let t = Arc::new(Trace::default());
    let ids = ["a", "b", "c", "d"];
    let nodes = vec![
        node(
            Spec {
                id: "a",
                sleep_ms: 5,
                ..STEP
            },
            &t,
        ),
        node(
            Spec {
                id: "b",
                sleep_ms: 5,
                ..STEP
            },
            &t,
        ),
        node(
            Spec {
                id: "c",
                after: &["d"],
                sleep_ms: 5,
                ..STEP
            },
            &t,
        ),
        node(
            Spec {
                id: "d",
                sleep_ms: 5,
                ..STEP
            },
            &t,
        ),
    ];
    let (report, _) = run(&nodes, 1);
    assert_eq!(t.max_overlap(&ids), 1);
    let starts: Vec<String> = t
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.1 == "start")
        .map(|e| e.0.clone())
        .collect();
    assert_eq!(starts, ["a", "b", "d", "c"]);
    let listed: Vec<&str> = report.outcomes.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(listed, ["a", "b", "d", "c"]);
}

#[test]
fn a_failure_skips_exactly_its_dependents() {
    let t = Arc::new(Trace::default());
    let nodes = vec![
        node(
            Spec {
                id: "keyring",
                fail: true,
                notify: &["restart:x"],
                ..STEP
            },
            &t,
        ),
        node(
            Spec {
                id: "sources",
                after: &["keyring"],
                ..STEP
            },
            &t,
        ),
        node(
            Spec {
                id: "packages",
                after: &["sources"],
                ..STEP
            },
            &t,
        ),
        node(
            Spec {
                id: "element",
                sleep_ms: 50,
                ..STEP
            },
            &t,
        ),
        node(
            Spec {
                id: "after-element",
                after: &["element"],
                ..STEP
            },
            &t,
        ),
        node(
            Spec {
                id: "restart:x",
                handler: true,
                ..STEP
            },
            &t,
        ),
    ];
    let (report, sys) = run(&nodes, 8);
    assert_eq!(status(&report, "keyring"), Status::Failed);
    assert_eq!(status(&report, "sources"), Status::Skipped);
    assert_eq!(status(&report, "packages"), Status::Skipped);
    assert_eq!(status(&report, "element"), Status::Changed);
    assert_eq!(status(&report, "after-element"), Status::Changed);
    assert_eq!(status(&report, "restart:x"), Status::Skipped);
    assert_eq!(t.ran("sources") + t.ran("packages") + t.ran("restart:x"), 0);
    assert!(sys
        .get("/var/lib/matrix-provision/pending-handlers.json")
        .unwrap()
        .contains("restart:x"));
}

#[test]
fn a_handler_runs_once_after_all_its_concurrent_notifiers() {
    let t = Arc::new(Trace::default());
    let notifiers = ["conf1", "conf2", "conf3", "conf4"];
    let mut nodes = vec![node(
        Spec {
            id: "restart:synapse",
            handler: true,
            ..STEP
        },
        &t,
    )];
    for (k, id) in notifiers.iter().enumerate() {
        nodes.push(node(
            Spec {
                id,
                notify: &["restart:synapse"],
                sleep_ms: 10 * (4 - k as u64),
                ..STEP
            },
            &t,
        ));
    }
    let (report, sys) = run(&nodes, 8);
    assert_eq!(report.handlers_run(), vec!["restart:synapse"]);
    assert_eq!(t.ran("restart:synapse"), 1);
    for id in notifiers {
        assert!(
            t.time("restart:synapse", "start") >= t.time(id, "end"),
            "{id}"
        );
    }
    assert!(
        t.max_overlap(&notifiers) >= 2,
        "the notifiers ran one by one"
    );
    assert_eq!(
        sys.get("/var/lib/matrix-provision/pending-handlers.json")
            .unwrap(),
        "[]"
    );
}

struct Order(Vec<String>);
impl Listener for Order {
    fn finished(&mut self, o: &Outcome) {
        self.0.push(o.id.clone());
    }
}

#[test]
fn lines_come_in_graph_order_and_the_critical_path_is_the_slow_chain() {
    let t = Arc::new(Trace::default());
    let nodes = vec![
        node(
            Spec {
                id: "slow",
                sleep_ms: 150,
                ..STEP
            },
            &t,
        ),
        node(Spec { id: "fast", ..STEP }, &t),
        node(
            Spec {
                id: "fast2",
                after: &["fast"],
                ..STEP
            },
            &t,
        ),
        node(
            Spec {
                id: "end",
                after: &["slow", "fast2"],
                ..STEP
            },
            &t,
        ),
    ];
    let sys = FakeSystem::new();
    let secrets = SecretStore::new();
    let mut order = Order(Vec::new());
    let report = engine::run_jobs(&nodes, &Ctx::new(&sys, &secrets), false, 8, &mut order).unwrap();
    // `fast` and `fast2` finish long before `slow`, yet print after it.
    assert!(t.time("fast2", "end") < t.time("slow", "end"));
    assert_eq!(order.0, ["slow", "fast", "fast2", "end"]);
    assert_eq!(report.critical_path, ["slow", "end"]);
}

#[test]
fn outcomes_do_not_depend_on_jobs() {
    let build = |t: &Arc<Trace>| {
        vec![
            node(
                Spec {
                    id: "a",
                    notify: &["h"],
                    ..STEP
                },
                t,
            ),
            node(
                Spec {
                    id: "b",
                    fail: true,
                    ..STEP
                },
                t,
            ),
            node(
                Spec {
                    id: "c",
                    after: &["b"],
                    ..STEP
                },
                t,
            ),
            node(
                Spec {
                    id: "d",
                    after: &["a"],
                    notify: &["h"],
                    exclusive: &["dpkg"],
                    ..STEP
                },
                t,
            ),
            node(
                Spec {
                    id: "h",
                    handler: true,
                    ..STEP
                },
                t,
            ),
        ]
    };
    let summary = |r: &engine::Report| -> HashMap<String, Status> {
        r.outcomes
            .iter()
            .map(|o| (o.id.clone(), o.status))
            .collect()
    };
    let one = run(&build(&Arc::default()), 1).0;
    let many = run(&build(&Arc::default()), 8).0;
    assert_eq!(summary(&one), summary(&many));
    let ids = |r: &engine::Report| r.outcomes.iter().map(|o| o.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&one), ids(&many));
}

/// A thing two steps may both converge (say, a package both want): the first to apply makes it so.
struct Shared {
    id: String,
    trace: Arc<Trace>,
    /// Meet this step inside check (proves the checks overlap).
    meet: Option<String>,
    done: Arc<Mutex<bool>>,
    applied: Mutex<usize>,
}

impl Step for Shared {
    fn check(&self, _ctx: &Ctx) -> Result<Change> {
        let first = self.trace.ran(&self.id) == 0;
        self.trace.record(&self.id, "start");
        let met = match (&self.meet, first) {
            (Some(m), true) => self.trace.meet(m),
            _ => Ok(()),
        };
        self.trace.record(&self.id, "end");
        met?;
        Ok(if *self.done.lock().unwrap() {
            Change::in_sync()
        } else {
            Change::create(format!("make {}", self.id))
        })
    }
    fn apply(&self, _ctx: &Ctx, _c: &Change) -> Result<()> {
        *self.applied.lock().unwrap() += 1;
        *self.done.lock().unwrap() = true;
        Ok(())
    }
}

fn shared(id: &str, meet: &str, done: &Arc<Mutex<bool>>, trace: &Arc<Trace>) -> Node {
    Node {
        id: id.into(),
        description: id.into(),
        step: Box::new(Shared {
            id: id.into(),
            trace: trace.clone(),
            meet: Some(meet.into()),
            done: done.clone(),
            applied: Mutex::new(0),
        }),
        after: vec![],
        notify: vec![],
        handler: false,
        exclusive: strings(&["dpkg"]),
    }
}

#[test]
fn checks_need_no_exclusive_resource_so_a_converged_host_is_checked_in_parallel() {
    let t = Arc::new(Trace::default());
    let done = Arc::new(Mutex::new(true));
    let nodes = vec![
        shared("svc1", "svc2", &done, &t),
        shared("svc2", "svc1", &done, &t),
    ];
    // Each check waits until the other has started: a walk that held `dpkg` for checks would fail them.
    let (report, _) = run(&nodes, 8);
    assert!(!report.failed(), "{:?}", report.outcomes);
    assert_eq!(report.count(Status::InSync), 2);
}

#[test]
fn a_change_is_checked_again_under_its_resources_before_it_is_applied() {
    let t = Arc::new(Trace::default());
    let done = Arc::new(Mutex::new(false));
    let nodes = vec![
        shared("apt1", "apt2", &done, &t),
        shared("apt2", "apt1", &done, &t),
    ];
    // Both look at once and both see work; whichever gets `dpkg` second looks again and finds it done.
    let (report, _) = run(&nodes, 8);
    assert!(!report.failed(), "{:?}", report.outcomes);
    assert_eq!(report.count(Status::Changed), 1, "{:?}", report.outcomes);
    assert_eq!(report.count(Status::InSync), 1, "{:?}", report.outcomes);
}
