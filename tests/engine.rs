//! Engine behaviour with small test steps: order, restart de-duplication, owed restarts that survive a
//! failed run, skipping dependents of a failure, and dry runs that touch nothing.

use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use matrix_provision::engine::{self, Change, Ctx, Node, Silent, Status, Step};
use matrix_provision::secrets::SecretStore;
use matrix_provision::system::FakeSystem;

type Log = Arc<Mutex<Vec<String>>>;

/// A step whose host state is a flag; applying sets it. `fail` makes apply error.
struct Flag {
    name: String,
    done: Arc<Mutex<bool>>,
    fail: bool,
    log: Log,
}

impl Step for Flag {
    fn check(&self, _ctx: &Ctx) -> Result<Change> {
        Ok(if *self.done.lock().unwrap() {
            Change::in_sync()
        } else {
            Change::create(format!("set {}", self.name))
        })
    }
    fn apply(&self, _ctx: &Ctx, _c: &Change) -> Result<()> {
        self.log
            .lock()
            .unwrap()
            .push(format!("apply {}", self.name));
        if self.fail {
            bail!("{} broke", self.name);
        }
        *self.done.lock().unwrap() = true;
        Ok(())
    }
}

struct Handler {
    name: String,
    fail: Arc<Mutex<bool>>,
    log: Log,
}

impl Step for Handler {
    fn check(&self, _ctx: &Ctx) -> Result<Change> {
        Ok(Change::run(self.name.clone()))
    }
    fn apply(&self, _ctx: &Ctx, _c: &Change) -> Result<()> {
        if *self.fail.lock().unwrap() {
            bail!("{} refused", self.name);
        }
        self.log.lock().unwrap().push(format!("run {}", self.name));
        Ok(())
    }
}

fn flag(id: &str, after: &[&str], notify: &[&str], log: &Log) -> (Node, Arc<Mutex<bool>>) {
    let done = Arc::new(Mutex::new(false));
    let node = Node {
        id: id.into(),
        description: id.into(),
        step: Box::new(Flag {
            name: id.into(),
            done: done.clone(),
            fail: false,
            log: log.clone(),
        }),
        after: after.iter().map(|s| s.to_string()).collect(),
        notify: notify.iter().map(|s| s.to_string()).collect(),
        handler: false,
        exclusive: vec![],
    };
    (node, done)
}

fn handler(id: &str, log: &Log) -> (Node, Arc<Mutex<bool>>) {
    let fail = Arc::new(Mutex::new(false));
    let node = Node {
        id: id.into(),
        description: id.into(),
        step: Box::new(Handler {
            name: id.into(),
            fail: fail.clone(),
            log: log.clone(),
        }),
        after: vec![],
        notify: vec![],
        handler: true,
        exclusive: vec![],
    };
    (node, fail)
}

#[test]
fn a_handler_runs_once_after_all_its_notifiers() {
    let log: Log = Arc::default();
    let (h, _) = handler("restart:synapse", &log);
    // The handler is listed first: the engine must still order it after both notifiers.
    let (a, _) = flag("a", &[], &["restart:synapse"], &log);
    let (b, _) = flag("b", &["a"], &["restart:synapse"], &log);
    let nodes = vec![h, a, b];
    let sys = FakeSystem::new();
    let secrets = SecretStore::new();
    let ctx = Ctx::new(&sys, &secrets);
    let report = engine::run(&nodes, &ctx, false, &mut Silent).unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        vec!["apply a", "apply b", "run restart:synapse"]
    );
    assert_eq!(report.handlers_run(), vec!["restart:synapse"]);
    // Second run: nothing changed, so no restart.
    log.lock().unwrap().clear();
    let report = engine::run(&nodes, &ctx, false, &mut Silent).unwrap();
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());
    assert_eq!(report.count(Status::InSync), 3);
}

#[test]
fn a_failed_handler_stays_owed_and_the_next_run_does_it() {
    let log: Log = Arc::default();
    let (h, fail) = handler("restart:nginx", &log);
    let (a, _) = flag("a", &[], &["restart:nginx"], &log);
    let nodes = vec![a, h];
    let sys = FakeSystem::new();
    let secrets = SecretStore::new();
    let ctx = Ctx::new(&sys, &secrets);
    *fail.lock().unwrap() = true;
    let report = engine::run(&nodes, &ctx, false, &mut Silent).unwrap();
    assert!(report.failed());
    assert!(sys
        .get("/var/lib/matrix-provision/pending-handlers.json")
        .unwrap()
        .contains("restart:nginx"));
    // `a` is in sync now, yet the restart it caused is still owed: a plan shows it, the next apply runs it.
    *fail.lock().unwrap() = false;
    let plan = engine::run(&nodes, &ctx, true, &mut Silent).unwrap();
    let owed = plan
        .outcomes
        .iter()
        .find(|o| o.id == "restart:nginx")
        .unwrap();
    assert_eq!(owed.status, Status::Planned);
    assert!(owed.reason.as_deref().unwrap().contains("earlier run"));
    let report = engine::run(&nodes, &ctx, false, &mut Silent).unwrap();
    assert_eq!(report.handlers_run(), vec!["restart:nginx"]);
    assert_eq!(
        sys.get("/var/lib/matrix-provision/pending-handlers.json")
            .unwrap(),
        "[]"
    );
}

#[test]
fn dependents_of_a_failure_are_skipped_with_the_reason_and_others_go_on() {
    let log: Log = Arc::default();
    let broken = Node {
        id: "keyring".into(),
        description: "keyring".into(),
        step: Box::new(Flag {
            name: "keyring".into(),
            done: Arc::default(),
            fail: true,
            log: log.clone(),
        }),
        after: vec![],
        notify: vec!["restart:x".into()],
        handler: false,
        exclusive: vec![],
    };
    let (sources, _) = flag("sources", &["keyring"], &[], &log);
    let (packages, _) = flag("packages", &["sources"], &[], &log);
    let (other, _) = flag("other", &[], &[], &log);
    let (h, _) = handler("restart:x", &log);
    let nodes = vec![broken, sources, packages, other, h];
    let sys = FakeSystem::new();
    let secrets = SecretStore::new();
    let report = engine::run(&nodes, &Ctx::new(&sys, &secrets), false, &mut Silent).unwrap();
    let status = |id: &str| report.outcomes.iter().find(|o| o.id == id).unwrap().clone();
    assert_eq!(status("keyring").status, Status::Failed);
    assert!(status("keyring").reason.unwrap().contains("keyring broke"));
    assert_eq!(status("sources").status, Status::Skipped);
    assert!(status("sources").reason.unwrap().contains("`keyring`"));
    assert_eq!(status("packages").status, Status::Skipped);
    assert_eq!(status("other").status, Status::Changed);
    // The restart the failed step asked for is neither run nor forgotten.
    assert_eq!(status("restart:x").status, Status::Skipped);
    assert!(!log.lock().unwrap().iter().any(|l| l == "run restart:x"));
    assert!(sys
        .get("/var/lib/matrix-provision/pending-handlers.json")
        .unwrap()
        .contains("restart:x"));
}

#[test]
fn a_cycle_in_the_graph_is_an_error_naming_it() {
    let log: Log = Arc::default();
    let (a, _) = flag("a", &["b"], &[], &log);
    let (b, _) = flag("b", &["a"], &[], &log);
    let sys = FakeSystem::new();
    let secrets = SecretStore::new();
    let err = engine::run(&[a, b], &Ctx::new(&sys, &secrets), true, &mut Silent).unwrap_err();
    assert!(
        err.to_string().contains("a -> b -> a") || err.to_string().contains("b -> a -> b"),
        "{err}"
    );
}

#[test]
fn dry_run_applies_nothing() {
    let log: Log = Arc::default();
    let (a, done) = flag("a", &[], &["restart:y"], &log);
    let (h, _) = handler("restart:y", &log);
    let sys = FakeSystem::new();
    let before = sys.snapshot();
    let secrets = SecretStore::new();
    let report = engine::run(&[a, h], &Ctx::new(&sys, &secrets), true, &mut Silent).unwrap();
    assert_eq!(report.count(Status::Planned), 2);
    assert!(log.lock().unwrap().is_empty());
    assert!(!*done.lock().unwrap());
    assert_eq!(sys.snapshot(), before);
}
