//! The engine: check → plan → apply → verify over the step graph.
//!
//! Every node's check returns a typed [`Change`]. In a dry run the engine only collects them. In apply it
//! carries out exactly that change, then checks again and insists on "in sync". Handler nodes (restart,
//! reload) run once, after every step that notifies them, and only when one of those changed; a handler
//! owed by a run that failed is remembered on disk (`pending`) and run by the next one.

mod change;
mod expect;
mod graph;
mod pending;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Mutex};
use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;

pub use change::{Change, ChangeKind, Detail};
pub use expect::{
    Contents, ExpectedBackup, ExpectedCert, ExpectedFile, ExpectedKind, ExpectedProbe,
    ExpectedState, ExpectedTls, ExpectedUnit, FileOwner,
};
pub use graph::order;

use crate::secrets::SecretStore;
use crate::system::System;

/// What steps get to work with: the host seam, the secrets, and a place to leave warnings.
pub struct Ctx<'a> {
    pub sys: &'a dyn System,
    pub secrets: &'a SecretStore,
    warnings: RefCell<Vec<String>>,
}

impl<'a> Ctx<'a> {
    pub fn new(sys: &'a dyn System, secrets: &'a SecretStore) -> Ctx<'a> {
        Ctx {
            sys,
            secrets,
            warnings: RefCell::new(Vec::new()),
        }
    }
    /// The warnings left so far (what the report will print).
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.borrow().clone()
    }
    /// Something the admin should know that does not stop the run (e.g. DNS not pointing here yet).
    pub fn warn(&self, message: impl Into<String>) {
        let message = message.into();
        let mut w = self.warnings.borrow_mut();
        if !w.contains(&message) {
            w.push(message);
        }
    }
}

/// Send + Sync: the engine runs independent steps on several threads (see `run`).
pub trait Step: Send + Sync {
    /// Look at the real host and say what would change. Never writes.
    fn check(&self, ctx: &Ctx) -> Result<Change>;
    /// Carry out `change` (what `check` just returned).
    fn apply(&self, ctx: &Ctx, change: &Change) -> Result<()>;
    /// Add what this step leaves on a converged host (units, rules, certificates, files) to `state`,
    /// for `doctor`. Most kinds have nothing a later look could check.
    fn expect(&self, _state: &mut ExpectedState) {}
}

pub struct Node {
    pub id: String,
    /// Human label: "file /etc/nginx/sites-available/…", "packages", "restart matrix-synapse".
    pub description: String,
    pub step: Box<dyn Step>,
    pub after: Vec<String>,
    /// Handler ids this step triggers when it changes something.
    pub notify: Vec<String>,
    pub handler: bool,
    /// Resources that allow one user at a time (the dpkg lock, certbot, ufw…): nodes naming the same
    /// one never run at the same time, whatever the graph allows.
    pub exclusive: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InSync,
    /// Dry run: would change.
    Planned,
    Changed,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub id: String,
    pub description: String,
    pub status: Status,
    /// A restart/reload/daemon-reload rather than a step.
    pub handler: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// Why it failed, was skipped, or (for handlers) why it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Wall time of this node (check, and apply + re-check when it changed), for `bench/`.
    pub millis: u64,
    /// When it started, in milliseconds from the start of the run (what overlapped what, for `bench/`).
    pub start_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dry_run: bool,
    /// In graph order (the order a sequential run takes), whatever ran concurrently.
    pub outcomes: Vec<Outcome>,
    pub warnings: Vec<String>,
    /// Wall time of the whole walk.
    pub wall_ms: u64,
    /// The chain of dependent nodes with the largest total time: no `--jobs` can finish sooner.
    pub critical_path: Vec<String>,
}

impl Report {
    pub fn count(&self, status: Status) -> usize {
        self.outcomes.iter().filter(|o| o.status == status).count()
    }
    pub fn handlers_run(&self) -> Vec<&str> {
        self.outcomes
            .iter()
            .filter(|o| o.status == Status::Changed && o.handler)
            .map(|o| o.id.as_str())
            .collect()
    }
    pub fn failed(&self) -> bool {
        self.count(Status::Failed) > 0
    }
    pub fn has_changes(&self) -> bool {
        self.count(Status::Planned) + self.count(Status::Changed) > 0
    }
}

/// Progress callbacks for the one reporter that prints. Called from the thread that called [`run`] only.
pub trait Listener {
    /// The nodes running right now, whenever one starts or finishes (`done` of `total` have finished).
    fn running(&mut self, _done: usize, _total: usize, _now: &[&Node]) {}
    /// One node's outcome, in graph order: a node that finishes early waits for the ones before it.
    fn finished(&mut self, _outcome: &Outcome) {}
}

pub struct Silent;
impl Listener for Silent {}

/// How many nodes may run at once unless `--jobs` says otherwise. Steps mostly wait (on apt, systemd,
/// Synapse, the network) rather than compute, so this is above the CPU count; the graph and the exclusive
/// resources bound the real concurrency long before it does.
pub const DEFAULT_JOBS: usize = 8;

/// Run the graph with [`DEFAULT_JOBS`]. Errors only for a broken graph; step failures are in the report.
pub fn run(
    nodes: &[Node],
    ctx: &Ctx,
    dry_run: bool,
    listener: &mut dyn Listener,
) -> Result<Report> {
    run_jobs(nodes, ctx, dry_run, DEFAULT_JOBS, listener)
}

/// What a worker thread tells the scheduler.
enum Msg {
    /// The node, its outcome (or an engine error) and its warnings.
    Finished(usize, Result<Outcome>, Vec<String>),
    /// The node is about to change the host and needs its exclusive resources; the scheduler answers on
    /// the channel once it holds them (released when the node finishes).
    Lock(usize, mpsc::Sender<()>),
}

/// Run the graph with up to `jobs` nodes at once (1: one after another, in graph order).
///
/// A ready-queue walk of the DAG: a node starts once every node it comes after has finished; among the
/// ready ones the playbook order decides, so `jobs = 1` runs exactly the order [`order`] gives. Exclusive
/// resources guard changes, not looks: a node checks without them, and only one that is about to change
/// something waits for them (granted in playbook order), then checks again under them before it applies,
/// so a converged host is checked fully in parallel and no change is planned from a look that a
/// concurrent holder made stale. Everything a node's decision depends on
/// (blocked, uncertain, which notifiers changed) is read from finished nodes only, which makes statuses,
/// plans and handler runs the same for any `jobs`. Workers only run steps; this thread schedules, keeps
/// the statuses and talks to the listener.
pub fn run_jobs(
    nodes: &[Node],
    ctx: &Ctx,
    dry_run: bool,
    jobs: usize,
    listener: &mut dyn Listener,
) -> Result<Report> {
    let deps = dependencies(nodes)?;
    let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
    let order = graph::order(&ids, &deps)?;
    let n = nodes.len();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let pending = Mutex::new(pending::load(ctx.sys)?);
    let mut waiting_on: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| waiting_on[i] == 0).collect();
    let mut status: Vec<Option<Status>> = vec![None; n];
    // A node whose inputs may change earlier in this dry run: its check sees today's host, not the planned one.
    let mut uncertain = vec![false; n];
    let mut results: Vec<Option<Outcome>> = vec![None; n];
    let mut node_warnings: Vec<Vec<String>> = vec![Vec::new(); n];
    let mut held: HashSet<&str> = HashSet::new();
    let mut holding = vec![false; n];
    // Nodes waiting for their exclusive resources, by playbook position.
    let mut wanting: std::collections::BTreeMap<usize, mpsc::Sender<()>> = Default::default();
    let mut running: Vec<usize> = Vec::new();
    let (mut emitted, mut done) = (0, 0);
    let mut error: Option<anyhow::Error> = None;
    let (sys, secrets) = (ctx.sys, ctx.secrets);
    let run_start = Instant::now();
    let jobs = jobs.max(1);

    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<Msg>();
        loop {
            // Start every ready node that fits; an engine error stops new starts, running ones finish.
            let startable: Vec<usize> = ready.iter().copied().collect();
            for i in startable {
                if error.is_some() || running.len() >= jobs {
                    break;
                }
                let node = &nodes[i];
                ready.remove(&i);
                running.push(i);
                uncertain[i] = deps[i]
                    .iter()
                    .any(|&d| uncertain[d] || status[d] == Some(Status::Planned));
                let blocked = deps[i]
                    .iter()
                    .find(|&&d| matches!(status[d], Some(Status::Failed | Status::Skipped)))
                    .map(|&d| format!("`{}` did not complete", nodes[d].id));
                let changed: Vec<&str> = deps[i]
                    .iter()
                    .filter(|&&d| nodes[d].notify.contains(&node.id))
                    .filter(|&&d| matches!(status[d], Some(Status::Changed | Status::Planned)))
                    .map(|&d| nodes[d].id.as_str())
                    .collect();
                let uncertain = uncertain[i];
                let (tx, pending) = (tx.clone(), &pending);
                scope.spawn(move || {
                    let ctx = Ctx::new(sys, secrets);
                    let started = Instant::now();
                    let lock = || {
                        if node.exclusive.is_empty() {
                            return;
                        }
                        let (grant, granted) = mpsc::channel();
                        // The scheduler outlives every worker and answers every request.
                        let _ = tx.send(Msg::Lock(i, grant));
                        let _ = granted.recv();
                    };
                    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        if node.handler {
                            run_handler(node, &changed, pending, &ctx, dry_run, blocked, &lock)
                        } else if let Some(reason) = blocked {
                            Ok(outcome(node, Status::Skipped, None, Some(reason)))
                        } else {
                            run_step(node, &ctx, dry_run, uncertain, pending, &lock)
                        }
                    }))
                    .unwrap_or_else(|_| bail!("step `{}` panicked", node.id))
                    .map(|mut o| {
                        o.millis = started.elapsed().as_millis() as u64;
                        o.start_ms = started.duration_since(run_start).as_millis() as u64;
                        o
                    });
                    // The receiver outlives every worker (same scope), so this cannot fail.
                    let _ = tx.send(Msg::Finished(i, result, ctx.warnings.into_inner()));
                });
            }
            if running.is_empty() {
                break;
            }
            let now: Vec<&Node> = running.iter().map(|&i| &nodes[i]).collect();
            listener.running(done, n, &now);
            let (i, result, warnings) = match rx.recv().expect("a worker is running") {
                Msg::Lock(i, grant) => {
                    wanting.insert(i, grant);
                    grant_free(nodes, &mut wanting, &mut held, &mut holding);
                    continue;
                }
                Msg::Finished(i, result, warnings) => (i, result, warnings),
            };
            done += 1;
            running.retain(|&r| r != i);
            if std::mem::take(&mut holding[i]) {
                for r in &nodes[i].exclusive {
                    held.remove(r.as_str());
                }
                grant_free(nodes, &mut wanting, &mut held, &mut holding);
            }
            node_warnings[i] = warnings;
            match result {
                Ok(o) => {
                    status[i] = Some(o.status);
                    results[i] = Some(o);
                    for &j in &dependents[i] {
                        waiting_on[j] -= 1;
                        if waiting_on[j] == 0 {
                            ready.insert(j);
                        }
                    }
                }
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
            while emitted < n {
                match &results[order[emitted]] {
                    Some(o) => listener.finished(o),
                    None => break,
                }
                emitted += 1;
            }
        }
    });
    if let Some(e) = error {
        return Err(e);
    }
    let outcomes: Vec<Outcome> = order
        .iter()
        .map(|&i| results[i].take().expect("every node ran"))
        .collect();
    let mut warnings = ctx.warnings.borrow().clone();
    for &i in &order {
        for w in &node_warnings[i] {
            if !warnings.contains(w) {
                warnings.push(w.clone());
            }
        }
    }
    let millis: Vec<u64> = outcomes.iter().map(|o| o.millis).collect();
    let at: HashMap<usize, usize> = order.iter().enumerate().map(|(p, &i)| (i, p)).collect();
    let deps_by_position: Vec<Vec<usize>> = order
        .iter()
        .map(|&i| deps[i].iter().map(|d| at[d]).collect())
        .collect();
    let critical_path = critical_path(&deps_by_position, &millis)
        .into_iter()
        .map(|p| outcomes[p].id.clone())
        .collect();
    Ok(Report {
        dry_run,
        outcomes,
        warnings,
        wall_ms: run_start.elapsed().as_millis() as u64,
        critical_path,
    })
}

/// Hand their resources to the waiting nodes, in playbook order, whose resources are all free.
fn grant_free<'n>(
    nodes: &'n [Node],
    wanting: &mut std::collections::BTreeMap<usize, mpsc::Sender<()>>,
    held: &mut HashSet<&'n str>,
    holding: &mut [bool],
) {
    let waiting: Vec<usize> = wanting.keys().copied().collect();
    for i in waiting {
        if nodes[i].exclusive.iter().any(|r| held.contains(r.as_str())) {
            continue;
        }
        held.extend(nodes[i].exclusive.iter().map(String::as_str));
        holding[i] = true;
        if let Some(grant) = wanting.remove(&i) {
            // The worker waits on it; it cannot have gone away.
            let _ = grant.send(());
        }
    }
}

fn outcome(node: &Node, status: Status, change: Option<Change>, reason: Option<String>) -> Outcome {
    Outcome {
        id: node.id.clone(),
        description: node.description.clone(),
        status,
        handler: node.handler,
        change,
        reason,
        millis: 0,
        start_ms: 0,
    }
}

fn run_step(
    node: &Node,
    ctx: &Ctx,
    dry_run: bool,
    uncertain: bool,
    pending: &Mutex<BTreeSet<String>>,
    lock: &dyn Fn(),
) -> Result<Outcome> {
    let exclusive = !node.exclusive.is_empty();
    let change = match node.step.check(ctx) {
        // Looked without the node's resources while a holder may be changing the host: look again under them.
        Err(_) if exclusive && !dry_run => None,
        Ok(change) => Some(change),
        Err(e) if dry_run && uncertain => {
            let change = Change::new(
                ChangeKind::AfterDeps,
                format!(
                    "checked once the steps before it are applied (today: {})",
                    format!("{e:#}").lines().next().unwrap_or_default()
                ),
            );
            return Ok(outcome(node, Status::Planned, Some(change), None));
        }
        Err(e) => return Ok(failed(node, "check", e)),
    };
    if let Some(change) = &change {
        if change.is_in_sync() {
            return Ok(outcome(node, Status::InSync, None, None));
        }
        if dry_run {
            return Ok(outcome(node, Status::Planned, Some(change.clone()), None));
        }
    }
    let change = if exclusive {
        lock();
        match node.step.check(ctx) {
            Ok(change) if change.is_in_sync() => {
                return Ok(outcome(node, Status::InSync, None, None))
            }
            Ok(change) => change,
            Err(e) => return Ok(failed(node, "check", e)),
        }
    } else {
        change.expect("a check without resources that failed has returned")
    };
    // Remember the restarts this change owes before making it: a crash mid-apply must not lose them.
    // Saved under the lock, so the file always holds every handler owed by any running step.
    {
        let mut pending = pending.lock().expect("pending lock");
        let before = pending.len();
        pending.extend(node.notify.iter().cloned());
        if pending.len() != before {
            pending::save(ctx.sys, &pending)?;
        }
    }
    if let Err(e) = node.step.apply(ctx, &change) {
        return Ok(failed(node, "apply", e));
    }
    match node.step.check(ctx) {
        Ok(after) if after.is_in_sync() => Ok(outcome(node, Status::Changed, Some(change), None)),
        Ok(after) => Ok(outcome(
            node,
            Status::Failed,
            Some(change),
            Some(format!(
                "applied, but the host is still not as wanted: {}",
                after.summary
            )),
        )),
        Err(e) => Ok(failed(node, "verify", e)),
    }
}

fn failed(node: &Node, phase: &str, e: anyhow::Error) -> Outcome {
    outcome(node, Status::Failed, None, Some(format!("{phase}: {e:#}")))
}

/// `changed`: the notifiers of this handler that changed (or would, in a dry run), all finished.
fn run_handler(
    node: &Node,
    changed: &[&str],
    pending: &Mutex<BTreeSet<String>>,
    ctx: &Ctx,
    dry_run: bool,
    blocked: Option<String>,
    lock: &dyn Fn(),
) -> Result<Outcome> {
    let owed = pending.lock().expect("pending lock").contains(&node.id);
    if changed.is_empty() && !owed {
        return Ok(outcome(node, Status::InSync, None, None));
    }
    let because = if changed.is_empty() {
        "owed by an earlier run that did not finish".to_string()
    } else {
        format!("changed: {}", changed.join(", "))
    };
    if let Some(reason) = blocked {
        // Stays in `pending`: the next run does it once its inputs are fixed.
        return Ok(outcome(
            node,
            Status::Skipped,
            None,
            Some(format!("{reason}; still owed")),
        ));
    }
    let change = Change::run(node.description.clone());
    if dry_run {
        return Ok(outcome(node, Status::Planned, Some(change), Some(because)));
    }
    lock();
    if let Err(e) = node.step.apply(ctx, &change) {
        let mut o = failed(node, "run", e);
        o.reason = o
            .reason
            .map(|r| format!("{r} (still owed; the next run retries)"));
        return Ok(o);
    }
    // Every notifier has finished (they come before it), so no step can owe it again in this run.
    let mut pending = pending.lock().expect("pending lock");
    pending.remove(&node.id);
    pending::save(ctx.sys, &pending)?;
    Ok(outcome(node, Status::Changed, Some(change), Some(because)))
}

/// The longest chain by total time: `deps[p]` are positions before `p` (a topological order), `millis[p]`
/// its time. Returns positions, first to last.
pub fn critical_path(deps: &[Vec<usize>], millis: &[u64]) -> Vec<usize> {
    let mut total = vec![0u64; millis.len()];
    let mut via: Vec<Option<usize>> = vec![None; millis.len()];
    for p in 0..millis.len() {
        via[p] = deps[p]
            .iter()
            .copied()
            .max_by_key(|&d| (total[d], std::cmp::Reverse(d)));
        total[p] = millis[p] + via[p].map_or(0, |d| total[d]);
    }
    // Ties go to the later node: the longer chain of the same length in time.
    let Some(mut p) = (0..millis.len()).max_by_key(|&p| (total[p], p)) else {
        return Vec::new();
    };
    let mut path = vec![p];
    while let Some(d) = via[p] {
        path.push(d);
        p = d;
    }
    path.reverse();
    path
}

/// Resolve `after` and `notify` into index lists; a handler comes after every step that notifies it.
fn dependencies(nodes: &[Node]) -> Result<Vec<Vec<usize>>> {
    let mut index = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        if index.insert(n.id.as_str(), i).is_some() {
            bail!(
                "two steps share the id `{}` (ids must be unique across playbooks/)",
                n.id
            );
        }
    }
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for a in &n.after {
            match index.get(a.as_str()) {
                Some(&d) => deps[i].push(d),
                None => bail!(
                    "step `{}` comes after `{a}`, which no playbook defines",
                    n.id
                ),
            }
        }
        for h in &n.notify {
            match index.get(h.as_str()) {
                Some(&d) if nodes[d].handler => deps[d].push(i),
                Some(_) => bail!(
                    "step `{}` notifies `{h}`, which is a step, not a handler",
                    n.id
                ),
                None => bail!("step `{}` notifies `{h}`, which no playbook defines", n.id),
            }
        }
    }
    Ok(deps)
}
