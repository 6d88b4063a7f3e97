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
use std::collections::{BTreeSet, HashMap};

use anyhow::{bail, Result};
use serde::Serialize;

pub use change::{Change, ChangeKind, Detail};
pub use expect::{
    Contents, ExpectedCert, ExpectedFile, ExpectedKind, ExpectedState, ExpectedTls, ExpectedUnit,
    FileOwner,
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
    /// Something the admin should know that does not stop the run (e.g. DNS not pointing here yet).
    pub fn warn(&self, message: impl Into<String>) {
        let message = message.into();
        let mut w = self.warnings.borrow_mut();
        if !w.contains(&message) {
            w.push(message);
        }
    }
}

pub trait Step {
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
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub outcomes: Vec<Outcome>,
    pub warnings: Vec<String>,
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

/// Progress callbacks for the one reporter that prints.
pub trait Listener {
    fn started(&mut self, _index: usize, _total: usize, _node: &Node) {}
    fn finished(&mut self, _outcome: &Outcome) {}
}

pub struct Silent;
impl Listener for Silent {}

/// Run the graph. Errors only for a broken graph; step failures are in the report.
pub fn run(
    nodes: &[Node],
    ctx: &Ctx,
    dry_run: bool,
    listener: &mut dyn Listener,
) -> Result<Report> {
    let deps = dependencies(nodes)?;
    let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
    let order = graph::order(&ids, &deps)?;
    let mut pending = pending::load(ctx.sys)?;
    let mut status: Vec<Option<Status>> = vec![None; nodes.len()];
    // A node whose inputs may change earlier in this dry run: its check sees today's host, not the planned one.
    let mut uncertain = vec![false; nodes.len()];
    let mut outcomes = Vec::with_capacity(nodes.len());

    for (position, &i) in order.iter().enumerate() {
        let node = &nodes[i];
        listener.started(position, order.len(), node);
        uncertain[i] = deps[i]
            .iter()
            .any(|&d| uncertain[d] || status[d] == Some(Status::Planned));
        let blocked = deps[i]
            .iter()
            .find(|&&d| matches!(status[d], Some(Status::Failed | Status::Skipped)))
            .map(|&d| format!("`{}` did not complete", nodes[d].id));
        let started = std::time::Instant::now();
        let mut outcome = if node.handler {
            run_handler(
                node,
                &deps[i],
                nodes,
                &status,
                &mut pending,
                ctx,
                dry_run,
                blocked,
            )?
        } else if let Some(reason) = blocked {
            outcome(node, Status::Skipped, None, Some(reason))
        } else {
            run_step(node, ctx, dry_run, uncertain[i], &mut pending)?
        };
        outcome.millis = started.elapsed().as_millis() as u64;
        status[i] = Some(outcome.status);
        listener.finished(&outcome);
        outcomes.push(outcome);
    }
    let warnings = ctx.warnings.borrow().clone();
    Ok(Report {
        dry_run,
        outcomes,
        warnings,
    })
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
    }
}

fn run_step(
    node: &Node,
    ctx: &Ctx,
    dry_run: bool,
    uncertain: bool,
    pending: &mut BTreeSet<String>,
) -> Result<Outcome> {
    let change = match node.step.check(ctx) {
        Ok(change) => change,
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
    if change.is_in_sync() {
        return Ok(outcome(node, Status::InSync, None, None));
    }
    if dry_run {
        return Ok(outcome(node, Status::Planned, Some(change), None));
    }
    // Remember the restarts this change owes before making it: a crash mid-apply must not lose them.
    let before = pending.len();
    pending.extend(node.notify.iter().cloned());
    if pending.len() != before {
        pending::save(ctx.sys, pending)?;
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

#[allow(clippy::too_many_arguments)]
fn run_handler(
    node: &Node,
    notifiers: &[usize],
    nodes: &[Node],
    status: &[Option<Status>],
    pending: &mut BTreeSet<String>,
    ctx: &Ctx,
    dry_run: bool,
    blocked: Option<String>,
) -> Result<Outcome> {
    let changed: Vec<&str> = notifiers
        .iter()
        .filter(|&&d| nodes[d].notify.contains(&node.id))
        .filter(|&&d| matches!(status[d], Some(Status::Changed | Status::Planned)))
        .map(|&d| nodes[d].id.as_str())
        .collect();
    let owed = pending.contains(&node.id);
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
    if let Err(e) = node.step.apply(ctx, &change) {
        let mut o = failed(node, "run", e);
        o.reason = o
            .reason
            .map(|r| format!("{r} (still owed; the next run retries)"));
        return Ok(o);
    }
    pending.remove(&node.id);
    pending::save(ctx.sys, pending)?;
    Ok(outcome(node, Status::Changed, Some(change), Some(because)))
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
