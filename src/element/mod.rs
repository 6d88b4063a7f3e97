//! Element Web: verified, atomic install and update of release tarballs (replaces the guides' update.sh).
//!
//! Layout under the install root (default `/var/www/element`, owned by the updater user `matrix-element`
//! when element.auto_update is on, else by root):
//!
//! ```text
//! archive/element-vX.Y.Z/         one directory per release, as shipped
//! current -> archive/element-vX.Y.Z   what nginx serves; replaced by rename(2), never rm + ln
//! .lock                           flock(2) held while anything changes (opened O_NOFOLLOW)
//! ```
//!
//! Our `config.json` is not in this tree: apply writes it root-owned to /etc/matrix-provision/element/ and
//! nginx serves `/config.json` from there, so an update (or the updater user) can never replace it.
//!
//! Transient, removed on every failure path (and, if a run was killed, by the next run):
//! `archive/.element-vX.Y.Z.tmp-RAND/` (extraction), `.verify-vX.Y.Z-RAND/` (keyring and signature for
//! gpgv), `.current.mp-tmp` (the new symlink before it is renamed over `current`).
//!
//! A release becomes visible only after it downloaded completely (into memory), `gpgv` accepted its
//! signature over exactly those bytes, and they unpacked without error within [`Limits`] and the free
//! space; only then does `current` move. Root never works in a tree another user can write: run as root on
//! such a tree, every call hands the work to the tree's owner (setpriv) and only reads its answer.
//! Every file operation goes through the [`System`] seam.

mod extract;
mod release;
#[cfg(test)]
mod tests;
mod verify;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::config::HostConfig;
use crate::http;
use crate::system::{Cmd, FileKind, System};
use release::Version;

pub use extract::Limits;
pub use release::{parse_tag, resolve, resolve_with, Release, Wanted};
pub use verify::{BUILTIN_KEY, BUILTIN_KEY_FINGERPRINT, BUILTIN_SIGNING_SUBKEY};

/// Where apply installs Element and nginx's `root` points (`current` below it).
pub const DEFAULT_ROOT: &str = crate::layout::ELEMENT_ROOT;

/// Where releases come from and which key must have signed them.
#[derive(Debug, Clone, Default)]
pub struct ElementSource {
    /// GitHub-style releases API base: `{url}/latest` and `{url}/tags/{tag}`.
    pub releases_url: String,
    /// Keyring file (binary or armored) trusted for signatures; None = built-in Element key.
    pub signing_keyring: Option<PathBuf>,
    /// The trusted keyring's bytes, already read (wins over `signing_keyring`): how root hands the key to
    /// the unprivileged process that does the update.
    pub signing_key: Option<Vec<u8>>,
    /// Timeouts, size cap and CA bundle for every download.
    pub http: http::Options,
}

impl ElementSource {
    pub fn from_config(cfg: &HostConfig) -> ElementSource {
        ElementSource {
            releases_url: cfg.sources.element_releases_url.clone(),
            signing_keyring: cfg.sources.element_signing_key.as_ref().map(PathBuf::from),
            signing_key: None,
            http: http::Options::default(),
        }
    }

    fn http_options(&self, key: &str) -> http::Options {
        let mut o = self.http.clone();
        if o.config_key.is_none() {
            o.config_key = Some(key.to_string());
        }
        o
    }

    /// The keyring gpgv trusts, in binary form.
    fn keyring(&self, sys: &dyn System) -> Result<Vec<u8>> {
        match &self.signing_key {
            Some(bytes) => verify::to_binary(bytes).context("signing keyring"),
            None => verify::keyring(sys, self.signing_keyring.as_deref()),
        }
    }
}

/// One Element installation on disk.
#[derive(Debug, Clone)]
pub struct Installation {
    pub root: PathBuf,
    /// Releases kept in `archive/`, the live one included (0 is treated as 1).
    pub keep: u32,
    /// The most one release may unpack to.
    pub limits: Limits,
}

impl Installation {
    pub fn new(root: impl Into<PathBuf>, keep: u32) -> Installation {
        Installation {
            root: root.into(),
            keep,
            limits: Limits::default(),
        }
    }

    /// [`DEFAULT_ROOT`] with `element.keep_releases`.
    pub fn from_config(cfg: &HostConfig) -> Installation {
        Installation::new(DEFAULT_ROOT, cfg.element.keep_releases)
    }

    fn archive(&self) -> PathBuf {
        self.root.join("archive")
    }

    fn release_dir(&self, tag: &str) -> PathBuf {
        self.archive().join(format!("element-{tag}"))
    }

    fn current_link(&self) -> PathBuf {
        self.root.join("current")
    }
}

/// What `update` would do (`--check`, and `plan` in apply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Plan {
    UpToDate {
        version: String,
    },
    /// Download, verify, unpack, switch.
    Install {
        from: Option<String>,
        to: String,
    },
    /// The release is already unpacked in `archive/`: only `current` moves.
    Switch {
        from: Option<String>,
        to: String,
    },
}

impl Plan {
    pub fn is_change(&self) -> bool {
        !matches!(self, Plan::UpToDate { .. })
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let was = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
        match self {
            Plan::UpToDate { version } => write!(f, "Element {version} is current; nothing to do"),
            Plan::Install { from, to } => write!(
                f,
                "would download, verify and install Element {to} (installed: {})",
                was(from)
            ),
            Plan::Switch { from, to } => write!(
                f,
                "would switch to Element {to}, already unpacked in archive/ (installed: {})",
                was(from)
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    AlreadyCurrent,
    Installed,
    Switched,
    RolledBack,
}

/// What a call changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub action: Action,
    /// The release `current` points to now.
    pub version: String,
    /// The release it pointed to before, if any.
    pub previous: Option<String>,
    /// Old releases removed from `archive/` (keep_releases).
    pub pruned: Vec<String>,
    /// Things that went wrong without undoing the change (e.g. an old release that would not delete).
    pub warnings: Vec<String>,
}

impl Outcome {
    pub fn changed(&self) -> bool {
        self.action != Action::AlreadyCurrent
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let was = self.previous.as_deref().unwrap_or("none");
        let v = &self.version;
        match self.action {
            Action::AlreadyCurrent => write!(f, "Element {v} is already current; nothing to do")?,
            Action::Installed => write!(f, "Element {v} installed and live (was {was})")?,
            Action::Switched => write!(
                f,
                "Element {v} (already unpacked) is live again (was {was})"
            )?,
            Action::RolledBack => write!(f, "Element rolled back from {was} to {v}")?,
        }
        if !self.pruned.is_empty() {
            write!(f, "; removed old releases {}", self.pruned.join(", "))?;
        }
        Ok(())
    }
}

/// The release `current` points to, from the symlink alone (offline, no lock). None when there
/// is no `current`. Understands update.sh's absolute links too.
pub fn installed_version(sys: &dyn System, inst: &Installation) -> Result<Option<String>> {
    let link = inst.current_link();
    let Some(st) = sys.stat(&link)? else {
        return Ok(None);
    };
    if st.kind != FileKind::Symlink {
        bail!(
            "{} is not a symlink (a copy from a manual install?); move it aside so it can be managed",
            link.display()
        );
    }
    let target = sys
        .read_link(&link)?
        .ok_or_else(|| anyhow!("read {}: vanished", link.display()))?;
    let tag = target
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("element-"))
        .and_then(|t| Version::parse(t).map(|_| t.to_string()));
    match tag {
        Some(t) => Ok(Some(t)),
        None => bail!(
            "{} points to {}, which is not an archive/element-vX.Y.Z release directory",
            link.display(),
            target.display()
        ),
    }
}

/// Releases unpacked in `archive/` (real directories, never symlinks), oldest first.
pub fn releases(sys: &dyn System, inst: &Installation) -> Result<Vec<String>> {
    let Some(entries) = sys.list_dir(&inst.archive())? else {
        return Ok(Vec::new());
    };
    let mut found: Vec<(Version, String)> = entries
        .into_iter()
        .filter(|(_, kind)| *kind == FileKind::Dir)
        .filter_map(|(name, _)| {
            let tag = name.strip_prefix("element-")?;
            Version::parse(tag).map(|v| (v, tag.to_string()))
        })
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, t)| t).collect())
}

/// What [`update`] would do. Reads the disk, asks the releases API when it must; writes nothing.
pub fn plan_update(
    sys: &dyn System,
    inst: &Installation,
    source: &ElementSource,
    wanted: &Wanted,
) -> Result<Plan> {
    if let Some(owner) = acting_user(sys, inst)? {
        return match delegate(sys, inst, source, JobOp::Plan(wanted.to_string()), owner)? {
            JobResult::Plan(p) => Ok(p),
            JobResult::Outcome(_) => bail!("the unprivileged updater answered out of turn"),
        };
    }
    let current = live_version(sys, inst)?;
    let tag = match wanted {
        Wanted::Pinned(tag) if current.as_deref() == Some(tag.as_str()) => tag.clone(),
        Wanted::Pinned(tag) if is_complete(sys, &inst.release_dir(tag))? => tag.clone(),
        _ => {
            let release = resolve_with(sys, source, wanted)?;
            follow_latest_policy(wanted, &release, current.as_deref())?;
            release.tag
        }
    };
    Ok(if current.as_deref() == Some(tag.as_str()) {
        Plan::UpToDate { version: tag }
    } else if is_complete(sys, &inst.release_dir(&tag))? {
        Plan::Switch {
            from: current,
            to: tag,
        }
    } else {
        Plan::Install {
            from: current,
            to: tag,
        }
    })
}

/// Makes `wanted` the live release: no-op when it already is, a switch when it is unpacked in
/// `archive/`, otherwise download + verify + unpack + switch. Prunes old releases after a change.
/// Run as root on a tree another user owns, the work is done by that user (see [`acting_user`]).
pub fn update(
    sys: &dyn System,
    inst: &Installation,
    source: &ElementSource,
    wanted: &Wanted,
) -> Result<Outcome> {
    if let Some(owner) = acting_user(sys, inst)? {
        return outcome_of(delegate(
            sys,
            inst,
            source,
            JobOp::Update(wanted.to_string()),
            owner,
        )?);
    }
    let _lock = prepare(sys, inst)?;
    let current = live_version(sys, inst)?;
    if let Wanted::Pinned(tag) = wanted {
        // A pinned release already here needs no network.
        if current.as_deref() == Some(tag.as_str()) || is_complete(sys, &inst.release_dir(tag))? {
            return switch_to(sys, inst, tag, current, Action::Switched);
        }
    }
    let release = resolve_with(sys, source, wanted)?;
    follow_latest_policy(wanted, &release, current.as_deref())?;
    install_locked(sys, inst, source, &release, current)
}

/// "latest" is whatever the release list says, so it is believed only where it cannot hurt: it never
/// moves the live release back to an older one, nor onto a draft or pre-release. A pinned version (host.toml
/// or `--version`) is the admin's own choice and may do either.
fn follow_latest_policy(wanted: &Wanted, release: &Release, live: Option<&str>) -> Result<()> {
    if *wanted != Wanted::Latest {
        return Ok(());
    }
    let tag = &release.tag;
    let how_anyway = format!(
        "to install it on purpose, run `matrix-provision element-update --version {tag}` or pin element.version = \"{tag}\""
    );
    let what = if release.draft {
        Some("is marked as a draft")
    } else if release.prerelease {
        Some("is marked as a pre-release")
    } else if Version::parse(tag).is_some_and(|v| v.is_prerelease()) {
        Some("has a pre-release tag")
    } else {
        None
    };
    if let Some(what) = what {
        bail!(
            "refusing the \"latest\" Element release {tag} from {}: it {what}; the live release stays. {how_anyway}",
            release.api_url
        );
    }
    if let Some(live) = live {
        let (Some(old), Some(new)) = (Version::parse(live), Version::parse(tag)) else {
            return Ok(());
        };
        if new < old {
            bail!(
                "refusing the \"latest\" Element release {tag} from {}: it is older than the live {live} \
                 (a release list that goes backwards is stale or tampered with); {live} stays live. \
                 To go back on purpose: `matrix-provision element-update --rollback` or --version {tag}",
                release.api_url
            );
        }
    }
    Ok(())
}

/// What [`rollback`] would do: switch to the newest unpacked release older than the live one.
pub fn plan_rollback(sys: &dyn System, inst: &Installation) -> Result<Plan> {
    if let Some(owner) = acting_user(sys, inst)? {
        return match delegate(
            sys,
            inst,
            &ElementSource::default(),
            JobOp::PlanRollback,
            owner,
        )? {
            JobResult::Plan(p) => Ok(p),
            JobResult::Outcome(_) => bail!("the unprivileged updater answered out of turn"),
        };
    }
    let (from, to) = rollback_target(sys, inst)?;
    Ok(Plan::Switch {
        from: Some(from),
        to,
    })
}

/// Switches `current` back to the newest release in `archive/` older than the live one.
pub fn rollback(sys: &dyn System, inst: &Installation) -> Result<Outcome> {
    if let Some(owner) = acting_user(sys, inst)? {
        return outcome_of(delegate(
            sys,
            inst,
            &ElementSource::default(),
            JobOp::Rollback,
            owner,
        )?);
    }
    let _lock = prepare(sys, inst)?;
    let (from, to) = rollback_target(sys, inst)?;
    switch_to(sys, inst, &to, Some(from), Action::RolledBack)
}

fn rollback_target(sys: &dyn System, inst: &Installation) -> Result<(String, String)> {
    let Some(from) = installed_version(sys, inst)? else {
        bail!(
            "no Element release is installed ({} does not exist); nothing to roll back",
            inst.current_link().display()
        );
    };
    let cur = Version::parse(&from).expect("installed_version returns valid tags");
    let present = releases(sys, inst)?;
    let mut to = None;
    for t in present.iter().rev() {
        if Version::parse(t).is_some_and(|v| v < cur) && is_complete(sys, &inst.release_dir(t))? {
            to = Some(t.clone());
            break;
        }
    }
    match to {
        Some(t) => Ok((from, t)),
        None => bail!(
            "no Element release older than {from} in {} to roll back to (present: {})",
            inst.archive().display(),
            if present.is_empty() {
                "none".into()
            } else {
                present.join(", ")
            }
        ),
    }
}

/// The live release, counting a `current` that points at a missing or partial directory as none.
fn live_version(sys: &dyn System, inst: &Installation) -> Result<Option<String>> {
    match installed_version(sys, inst)? {
        Some(t) if is_complete(sys, &inst.release_dir(&t))? => Ok(Some(t)),
        _ => Ok(None),
    }
}

/// A release directory we unpacked: a real directory (not a symlink to one) holding a regular index.html.
fn is_complete(sys: &dyn System, dir: &Path) -> Result<bool> {
    Ok(sys.stat(dir)?.is_some_and(|s| s.kind == FileKind::Dir)
        && sys
            .stat(&dir.join("index.html"))?
            .is_some_and(|s| s.kind == FileKind::File))
}

/// Root never works inside a tree a less privileged user can write: who must do the work instead.
/// None: this process itself (not root, or root on a tree that only root can write). Some(uid, gid): the
/// tree's owner, by [`delegate`]. A root-owned tree with something writable by others in it is refused.
fn acting_user(sys: &dyn System, inst: &Installation) -> Result<Option<(u32, u32)>> {
    if !sys.facts().is_root {
        return Ok(None);
    }
    let root = &inst.root;
    let Some(st) = sys.stat(root)? else {
        return Ok(None); // created below, by root, for root
    };
    if st.kind != FileKind::Dir {
        bail!(
            "{} is not a directory (a symlink?); refusing to work through it: move it aside",
            root.display()
        );
    }
    if st.uid != 0 {
        return Ok(Some((st.uid, st.gid)));
    }
    for p in [root.clone(), inst.archive()] {
        let Some(st) = sys.stat(&p)? else { continue };
        if st.uid != 0 || st.kind != FileKind::Dir || st.mode & 0o022 != 0 {
            bail!(
                "{} belongs to uid {} (mode {:o}) inside the root-owned {}; root will not work in a tree \
                 another user can write. Give the whole tree to one owner: `chown -R root:root {}` \
                 (element.auto_update = false) or let apply hand it to matrix-element (auto_update = true)",
                p.display(),
                st.uid,
                st.mode,
                root.display(),
                root.display()
            );
        }
    }
    Ok(None)
}

/// What root hands to the unprivileged process (on stdin, as JSON): everything it needs, no secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub op: JobOp,
    pub root: PathBuf,
    pub keep: u32,
    pub max_entries: u64,
    pub max_bytes: u64,
    pub releases_url: String,
    /// The trusted keyring, binary, base64; None = the built-in Element key.
    pub keyring: Option<String>,
    pub ca_bundle: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum JobOp {
    Plan(String),
    Update(String),
    PlanRollback,
    Rollback,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum JobResult {
    Plan(Plan),
    Outcome(Outcome),
}

fn outcome_of(r: JobResult) -> Result<Outcome> {
    match r {
        JobResult::Outcome(o) => Ok(o),
        JobResult::Plan(_) => bail!("the unprivileged updater answered out of turn"),
    }
}

/// The hidden `element-job` subcommand: carry out a [`Job`] as the user this process runs as.
pub fn run_job(sys: &dyn System, job: &Job) -> Result<JobResult> {
    if sys.facts().is_root {
        bail!("element-job is what root hands to the tree's owner; it does not run as root");
    }
    let inst = Installation {
        root: job.root.clone(),
        keep: job.keep,
        limits: Limits {
            max_entries: job.max_entries,
            max_bytes: job.max_bytes,
        },
    };
    let keyring = match &job.keyring {
        Some(b64) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .context("element-job: keyring is not base64")?,
        ),
        None => None,
    };
    let source = ElementSource {
        releases_url: job.releases_url.clone(),
        signing_keyring: None,
        signing_key: Some(keyring.unwrap_or_else(|| BUILTIN_KEY.as_bytes().to_vec())),
        http: http::Options {
            ca_bundle: job.ca_bundle.clone(),
            ..http::Options::default()
        },
    };
    Ok(match &job.op {
        JobOp::Plan(w) => JobResult::Plan(plan_update(sys, &inst, &source, &Wanted::parse(w)?)?),
        JobOp::Update(w) => JobResult::Outcome(update(sys, &inst, &source, &Wanted::parse(w)?)?),
        JobOp::PlanRollback => JobResult::Plan(plan_rollback(sys, &inst)?),
        JobOp::Rollback => JobResult::Outcome(rollback(sys, &inst)?),
    })
}

/// Runs `op` as `owner` (uid, gid): this binary again under setpriv(1) with no supplementary groups and
/// no_new_privs, the job on stdin, its result as JSON on stdout. Root itself touches nothing in the tree.
fn delegate(
    sys: &dyn System,
    inst: &Installation,
    source: &ElementSource,
    op: JobOp,
    (uid, gid): (u32, u32),
) -> Result<JobResult> {
    let keyring = match (&source.signing_key, &source.signing_keyring) {
        (None, None) => None,
        _ => Some(base64::engine::general_purpose::STANDARD.encode(source.keyring(sys)?)),
    };
    let job = Job {
        op,
        root: inst.root.clone(),
        keep: inst.keep,
        max_entries: inst.limits.max_entries,
        max_bytes: inst.limits.max_bytes,
        releases_url: source.releases_url.clone(),
        keyring,
        ca_bundle: source.http.ca_bundle.clone(),
    };
    let exe = runnable_self(sys)?;
    let cmd = Cmd::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".into(),
            "--no-new-privs".into(),
            "--".into(),
        ])
        .arg(exe.to_string_lossy())
        .arg("element-job")
        .stdin(serde_json::to_vec(&job)?);
    let out = sys.run(&cmd)?;
    let who = format!(
        "as uid {uid}, the owner of {} (root does not work in a tree another user can write)",
        inst.root.display()
    );
    if !out.ok() {
        let msg = out.stderr.trim();
        let msg = msg.strip_prefix("error: ").unwrap_or(msg);
        bail!(
            "{}\n(Element update run {who}; exit status {})",
            if msg.is_empty() { "failed" } else { msg },
            out.status
        );
    }
    serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("reading the result of the Element update run {who}"))
}

/// This program, at a path the tree's owner can execute: where it runs from when every directory above it
/// lets others through (not e.g. /root/.cargo/bin), else apply's copy for the update timer when that is the
/// same program.
fn runnable_self(sys: &dyn System) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this program to run it as the updater")?;
    let runnable = |p: &Path| -> Result<bool> {
        let mut ok = sys.stat(p)?.is_some_and(|s| s.mode & 0o001 != 0);
        for dir in p.ancestors().skip(1) {
            ok &= sys
                .stat(dir)?
                .is_some_and(|s| s.kind == FileKind::Dir && s.mode & 0o001 != 0);
        }
        Ok(ok)
    };
    if runnable(&exe)? {
        return Ok(exe);
    }
    let copy = PathBuf::from(crate::layout::INSTALLED_BINARY);
    if runnable(&copy)? && sys.read(&copy)? == sys.read(&exe)? {
        return Ok(copy);
    }
    bail!(
        "{} cannot be run by the Element tree's owner (a directory above it is closed to other users), and \
         {} is not a copy of it; install matrix-provision there (apply does, with element.auto_update = true) \
         or run it from a directory others can enter",
        exe.display(),
        copy.display()
    )
}

/// Creates the root, takes the lock, creates archive/, removes leftovers of a killed run.
fn prepare(sys: &dyn System, inst: &Installation) -> Result<Box<dyn std::any::Any>> {
    let root = &inst.root;
    match sys.stat(root)? {
        None => mkdirs(sys, root)?,
        Some(st) if st.kind == FileKind::Dir => {}
        Some(_) => bail!(
            "{} is not a directory (a symlink?); refusing to work through it: move it aside",
            root.display()
        ),
    }
    // Lock before creating anything else: two runs must not race on archive/ either.
    let lock = sys.lock_exclusive(&root.join(".lock"))?;
    let archive = inst.archive();
    match sys.stat(&archive)? {
        None => sys.mkdir_new(&archive, 0o755)?,
        Some(st) if st.kind == FileKind::Dir => {}
        Some(_) => bail!(
            "{} is not a directory (a symlink?); refusing to work through it: move it aside",
            archive.display()
        ),
    }
    clean_stale(sys, inst);
    Ok(lock)
}

fn mkdirs(sys: &dyn System, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && sys.stat(parent)?.is_none() {
            mkdirs(sys, parent)?;
        }
    }
    sys.mkdir_new(path, 0o755)
}

fn clean_stale(sys: &dyn System, inst: &Installation) {
    let sweep = |dir: &Path, matches: &dyn Fn(&str) -> bool| {
        if let Ok(Some(entries)) = sys.list_dir(dir) {
            for (name, _) in entries {
                if matches(&name) {
                    let _ = sys.remove_tree(&dir.join(name));
                }
            }
        }
    };
    sweep(&inst.archive(), &|n| {
        n.starts_with(".element-") && n.contains(".tmp-")
    });
    sweep(&inst.root, &|n| {
        n.starts_with(".download-")
            || n.starts_with(".verify-")
            || n.starts_with("current.tmp-")
            || n == ".current.mp-tmp"
    });
}

fn install_locked(
    sys: &dyn System,
    inst: &Installation,
    source: &ElementSource,
    release: &Release,
    current: Option<String>,
) -> Result<Outcome> {
    let tag = parse_tag(&release.tag)?;
    let dir = inst.release_dir(&tag);
    if current.as_deref() == Some(tag.as_str()) || is_complete(sys, &dir)? {
        return switch_to(sys, inst, &tag, current, Action::Switched);
    }
    let what = format!("Element {tag} ({})", release.tarball_url);
    let Some(sig_url) = &release.signature_url else {
        bail!(
            "Element {tag} has no signature asset {}.asc in {}; refusing to install an unsigned release",
            release.tarball_name(),
            release.api_url
        );
    };
    let keyring = source.keyring(sys)?;
    let opts = source.http_options("sources.element_releases_url");
    // Downloaded into memory, verified and unpacked from these same bytes: nothing is reopened by name.
    let tarball = sys
        .http_fetch(&release.tarball_url, &opts)
        .with_context(|| format!("download Element {tag}"))?;
    let sig = sys
        .http_fetch(
            sig_url,
            &http::Options {
                max_bytes: 1024 * 1024,
                ..opts.clone()
            },
        )
        .with_context(|| format!("download the signature of Element {tag}"))?;
    let work = Temp::dir(
        sys,
        &inst.root.join(format!(".verify-{tag}-{}", suffix())),
        0o700,
    )?;
    verify::gpgv(sys, &work.path, &keyring, &sig, &tarball, &what)?;
    drop(work);

    let name = release.tarball_name();
    let top = format!("element-{tag}");
    let size = extract::scan(&tarball, &name, &top, inst.limits)
        .with_context(|| format!("unpack {what}"))?;
    let free = sys.free_bytes(&inst.archive())?;
    // File data plus a block per entry, and some room left for everyone else.
    let need = size.bytes + size.entries * 4096 + 64 * 1024 * 1024;
    if free < need {
        bail!(
            "not enough free space to unpack Element {tag}: it needs about {} MB in {}, {} MB are free; \
             free space there and retry (the live release stays)",
            need / (1024 * 1024),
            inst.archive().display(),
            free / (1024 * 1024)
        );
    }
    if sys.stat(&dir)?.is_some() {
        // A partial directory, or a link someone put there: never ours (we only rename complete
        // directories into place). remove_tree removes a link itself, never what it points to.
        sys.remove_tree(&dir)
            .with_context(|| format!("remove incomplete {}", dir.display()))?;
    }
    let tmp = Temp::dir(
        sys,
        &inst
            .archive()
            .join(format!(".element-{tag}.tmp-{}", suffix())),
        0o755,
    )?;
    extract::extract(sys, &tarball, &name, &top, &tmp.path, inst.limits)
        .with_context(|| format!("unpack {what}"))?;
    if !is_complete(sys, &tmp.path)? {
        bail!("{what}: the tarball has no element-{tag}/index.html; not an Element Web release");
    }
    // Flush the unpacked files before anything points at them: after a crash, `current` must
    // never lead to empty files. One syncfs per update is cheaper than an fsync per file.
    sys.sync_fs(&inst.archive())?;
    sys.rename(&tmp.path, &dir)?;
    tmp.disarm();
    switch_to(sys, inst, &tag, current, Action::Installed)
}

/// Points `current` at an unpacked release, then prunes. No-op if it already points there.
fn switch_to(
    sys: &dyn System,
    inst: &Installation,
    tag: &str,
    current: Option<String>,
    action: Action,
) -> Result<Outcome> {
    if current.as_deref() == Some(tag) {
        return Ok(Outcome {
            action: Action::AlreadyCurrent,
            version: tag.to_string(),
            previous: current,
            pruned: Vec::new(),
            warnings: Vec::new(),
        });
    }
    let link = inst.current_link();
    if sys.stat(&link)?.is_some_and(|s| s.kind == FileKind::Dir) {
        bail!(
            "{} is a directory, not a symlink; move it aside so it can be managed",
            link.display()
        );
    }
    sys.symlink(Path::new(&format!("archive/element-{tag}")), &link)
        .with_context(|| format!("switch {} to {tag}", link.display()))?;
    // Persist the rename before reporting success.
    sys.sync_fs(&inst.root)?;
    let (pruned, warnings) = if action == Action::RolledBack {
        (Vec::new(), Vec::new())
    } else {
        prune(sys, inst, tag)
    };
    Ok(Outcome {
        action,
        version: tag.to_string(),
        previous: current,
        pruned,
        warnings,
    })
}

/// Keeps the live release and the newest `keep - 1` others.
fn prune(sys: &dyn System, inst: &Installation, live: &str) -> (Vec<String>, Vec<String>) {
    let mut pruned = Vec::new();
    let mut warnings = Vec::new();
    let all = match releases(sys, inst) {
        Ok(r) => r,
        Err(e) => return (pruned, vec![format!("could not list old releases: {e:#}")]),
    };
    let keep_others = inst.keep.max(1) as usize - 1;
    let others: Vec<&String> = all.iter().rev().filter(|t| t.as_str() != live).collect();
    for tag in others.into_iter().skip(keep_others) {
        let dir = inst.release_dir(tag);
        match sys.remove_tree(&dir) {
            Ok(()) => pruned.push(tag.clone()),
            Err(e) => warnings.push(format!("could not remove {}: {e:#}", dir.display())),
        }
    }
    pruned.reverse();
    (pruned, warnings)
}

fn suffix() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(8)
        .map(char::from)
        .collect()
}

/// A directory removed when dropped, unless disarmed: every early return cleans up after itself.
struct Temp<'a> {
    sys: &'a dyn System,
    path: PathBuf,
}

impl<'a> Temp<'a> {
    fn dir(sys: &'a dyn System, path: &Path, mode: u32) -> Result<Temp<'a>> {
        sys.mkdir_new(path, mode)?;
        Ok(Temp {
            sys,
            path: path.to_path_buf(),
        })
    }

    fn disarm(mut self) {
        self.path = PathBuf::new();
    }
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = self.sys.remove_tree(&self.path);
        }
    }
}
