//! Element Web: verified, atomic install and update of release tarballs (replaces the guides' update.sh).
//!
//! Layout under the install root (default `/var/www/element`):
//!
//! ```text
//! config.json                     written by apply from host.toml; survives every update
//! archive/element-vX.Y.Z/         one directory per release; its config.json -> ../../config.json
//! current -> archive/element-vX.Y.Z   what nginx serves; replaced by rename(2), never rm + ln
//! .lock                           flock(2) held while anything changes
//! ```
//!
//! Transient, removed on every failure path (and, if a run was killed, by the next run):
//! `archive/.element-vX.Y.Z.tmp-RAND/` (extraction), `.download-vX.Y.Z-RAND/` (tarball, signature,
//! keyring), `current.tmp-RAND` (the new symlink before it is renamed over `current`).
//!
//! A release becomes visible only after it downloaded completely, `gpgv` accepted its signature
//! and it unpacked without error; only then does `current` move. Anything created is owned by the
//! owner of the install root (so apply, running as root, leaves files the unprivileged update
//! timer can replace) and is world-readable for nginx.

mod extract;
mod release;
mod verify;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use rand::distributions::Alphanumeric;
use rand::Rng;

use crate::config::HostConfig;
use crate::http::{self, describe_io};
use release::Version;

pub use release::{parse_tag, resolve, Release, Wanted};
pub use verify::{BUILTIN_KEY, BUILTIN_KEY_FINGERPRINT, BUILTIN_SIGNING_SUBKEY};

/// Where apply installs Element and nginx's `root` points (`current` below it).
pub const DEFAULT_ROOT: &str = "/var/www/element";

/// Where releases come from and which key must have signed them.
#[derive(Debug, Clone)]
pub struct ElementSource {
    /// GitHub-style releases API base: `{url}/latest` and `{url}/tags/{tag}`.
    pub releases_url: String,
    /// Keyring file (binary or armored) trusted for signatures; None = built-in Element key.
    pub signing_keyring: Option<PathBuf>,
    /// Timeouts, size cap and CA bundle for every download.
    pub http: http::Options,
}

impl ElementSource {
    pub fn from_config(cfg: &HostConfig) -> ElementSource {
        ElementSource {
            releases_url: cfg.sources.element_releases_url.clone(),
            signing_keyring: cfg.sources.element_signing_key.as_ref().map(PathBuf::from),
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
}

/// One Element installation on disk.
#[derive(Debug, Clone)]
pub struct Installation {
    pub root: PathBuf,
    /// Releases kept in `archive/`, the live one included (0 is treated as 1).
    pub keep: u32,
}

impl Installation {
    pub fn new(root: impl Into<PathBuf>, keep: u32) -> Installation {
        Installation {
            root: root.into(),
            keep,
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
#[derive(Debug, Clone, PartialEq, Eq)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    AlreadyCurrent,
    Installed,
    Switched,
    RolledBack,
}

/// What a call changed.
#[derive(Debug, Clone, PartialEq, Eq)]
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
pub fn installed_version(inst: &Installation) -> Result<Option<String>> {
    let link = inst.current_link();
    let meta = match fs::symlink_metadata(&link) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow!("read {}: {e}", link.display())),
    };
    if !meta.file_type().is_symlink() {
        bail!(
            "{} is not a symlink (a copy from a manual install?); move it aside so it can be managed",
            link.display()
        );
    }
    let target = fs::read_link(&link).map_err(|e| anyhow!("read {}: {e}", link.display()))?;
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

/// Releases unpacked in `archive/`, oldest first.
pub fn releases(inst: &Installation) -> Result<Vec<String>> {
    let dir = inst.archive();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow!("list {}: {e}", dir.display())),
    };
    let mut found: Vec<(Version, String)> = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| anyhow!("list {}: {e}", dir.display()))?;
        let name = entry.file_name();
        let Some(tag) = name.to_str().and_then(|n| n.strip_prefix("element-")) else {
            continue;
        };
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if let (true, Some(v)) = (is_dir, Version::parse(tag)) {
            found.push((v, tag.to_string()));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, t)| t).collect())
}

/// What [`update`] would do. Reads the disk, asks the releases API when it must; writes nothing.
pub fn plan_update(inst: &Installation, source: &ElementSource, wanted: &Wanted) -> Result<Plan> {
    let current = live_version(inst)?;
    let tag = match wanted {
        Wanted::Pinned(tag) if current.as_deref() == Some(tag.as_str()) => tag.clone(),
        Wanted::Pinned(tag) if is_complete(&inst.release_dir(tag)) => tag.clone(),
        _ => resolve(source, wanted)?.tag,
    };
    Ok(if current.as_deref() == Some(tag.as_str()) {
        Plan::UpToDate { version: tag }
    } else if is_complete(&inst.release_dir(&tag)) {
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
pub fn update(inst: &Installation, source: &ElementSource, wanted: &Wanted) -> Result<Outcome> {
    let _lock = prepare(inst)?;
    if let Wanted::Pinned(tag) = wanted {
        // A pinned release already here needs no network.
        let current = live_version(inst)?;
        if current.as_deref() == Some(tag.as_str()) || is_complete(&inst.release_dir(tag)) {
            return switch_to(inst, tag, current, Action::Switched);
        }
    }
    let release = resolve(source, wanted)?;
    install_locked(inst, source, &release)
}

/// Installs a release found by [`resolve`] (see [`update`]).
pub fn install(inst: &Installation, source: &ElementSource, release: &Release) -> Result<Outcome> {
    let _lock = prepare(inst)?;
    install_locked(inst, source, release)
}

/// What [`rollback`] would do: switch to the newest unpacked release older than the live one.
pub fn plan_rollback(inst: &Installation) -> Result<Plan> {
    let (from, to) = rollback_target(inst)?;
    Ok(Plan::Switch {
        from: Some(from),
        to,
    })
}

/// Switches `current` back to the newest release in `archive/` older than the live one.
pub fn rollback(inst: &Installation) -> Result<Outcome> {
    let _lock = prepare(inst)?;
    let (from, to) = rollback_target(inst)?;
    switch_to(inst, &to, Some(from), Action::RolledBack)
}

fn rollback_target(inst: &Installation) -> Result<(String, String)> {
    let Some(from) = installed_version(inst)? else {
        bail!(
            "no Element release is installed ({} does not exist); nothing to roll back",
            inst.current_link().display()
        );
    };
    let cur = Version::parse(&from).expect("installed_version returns valid tags");
    let present = releases(inst)?;
    let to = present
        .iter()
        .rev()
        .filter(|t| Version::parse(t).is_some_and(|v| v < cur))
        .find(|t| is_complete(&inst.release_dir(t)));
    match to {
        Some(t) => Ok((from, t.clone())),
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
fn live_version(inst: &Installation) -> Result<Option<String>> {
    Ok(installed_version(inst)?.filter(|t| is_complete(&inst.release_dir(t))))
}

fn is_complete(dir: &Path) -> bool {
    dir.join("index.html").is_file()
}

/// Creates the root, takes the lock, creates archive/, removes leftovers of a killed run.
fn prepare(inst: &Installation) -> Result<Flock<File>> {
    let root = &inst.root;
    if !root.is_dir() {
        fs::create_dir_all(root)
            .map_err(|e| describe_io(e, &format!("create {}", root.display())))?;
        set_mode(root, 0o755)?;
    }
    let owner = owner_for(root)?;
    // Lock before creating anything else: two runs must not race on archive/ either.
    let lock = lock(root, owner)?;
    let archive = inst.archive();
    if !archive.is_dir() {
        fs::create_dir(&archive)
            .map_err(|e| describe_io(e, &format!("create {}", archive.display())))?;
        set_mode(&archive, 0o755)?;
        chown(&archive, owner)?;
    }
    clean_stale(inst);
    Ok(lock)
}

fn lock(root: &Path, owner: Option<(u32, u32)>) -> Result<Flock<File>> {
    let path = root.join(".lock");
    let existed = path.exists();
    // flock works on a read-only descriptor too: a lock file left by another user still locks.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
        .or_else(|_| File::open(&path))
        .map_err(|e| describe_io(e, &format!("open lock file {}", path.display())))?;
    if !existed {
        chown(&path, owner)?;
    }
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("lock {}: {e}", path.display()))
}

fn clean_stale(inst: &Installation) {
    let sweep = |dir: &Path, matches: &dyn Fn(&str) -> bool| {
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                let name = e.file_name();
                if name.to_str().is_some_and(matches) {
                    remove_any(&e.path());
                }
            }
        }
    };
    sweep(&inst.archive(), &|n| {
        n.starts_with(".element-") && n.contains(".tmp-")
    });
    sweep(&inst.root, &|n| {
        n.starts_with(".download-") || n.starts_with("current.tmp-")
    });
}

fn install_locked(
    inst: &Installation,
    source: &ElementSource,
    release: &Release,
) -> Result<Outcome> {
    let tag = parse_tag(&release.tag)?;
    let current = live_version(inst)?;
    let dir = inst.release_dir(&tag);
    if current.as_deref() == Some(tag.as_str()) || is_complete(&dir) {
        return switch_to(inst, &tag, current, Action::Switched);
    }
    let what = format!("Element {tag} ({})", release.tarball_url);
    let Some(sig_url) = &release.signature_url else {
        bail!(
            "Element {tag} has no signature asset {}.asc in {}; refusing to install an unsigned release",
            release.tarball_name(),
            release.api_url
        );
    };
    let owner = owner_for(&inst.root)?;

    let dl = Temp::dir(
        &inst.root.join(format!(".download-{tag}-{}", suffix())),
        0o700,
    )?;
    let tarball = dl.path.join(release.tarball_name());
    let sig = dl.path.join(format!("{}.asc", release.tarball_name()));
    let opts = source.http_options("sources.element_releases_url");
    http::download(&release.tarball_url, &tarball, &opts)
        .with_context(|| format!("download Element {tag}"))?;
    http::download(sig_url, &sig, &opts)
        .with_context(|| format!("download the signature of Element {tag}"))?;
    let keyring = dl.path.join("keyring.gpg");
    verify::write_keyring(source.signing_keyring.as_deref(), &keyring)?;
    verify::gpgv(&keyring, &dl.path, &sig, &tarball, &what)?;

    if dir.exists() {
        // A partial directory (not ours: we only rename complete ones into place).
        fs::remove_dir_all(&dir)
            .map_err(|e| anyhow!("remove incomplete {}: {e}", dir.display()))?;
    }
    let tmp = Temp::dir(
        &inst
            .archive()
            .join(format!(".element-{tag}.tmp-{}", suffix())),
        0o755,
    )?;
    extract::extract(&tarball, &format!("element-{tag}"), &tmp.path)
        .with_context(|| format!("unpack {what}"))?;
    if !is_complete(&tmp.path) {
        bail!("{what}: the tarball has no element-{tag}/index.html; not an Element Web release");
    }
    link_config(&tmp.path, owner)?;
    chown_tree(&tmp.path, owner)?;
    // Flush the unpacked files before anything points at them: after a crash, `current` must
    // never lead to empty files. One syncfs per update is cheaper than an fsync per file.
    let archive_dir = File::open(inst.archive())
        .map_err(|e| anyhow!("open {}: {e}", inst.archive().display()))?;
    nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&archive_dir))
        .map_err(|e| describe_io(e.into(), &format!("flush {}", inst.archive().display())))?;
    fs::rename(&tmp.path, &dir)
        .map_err(|e| anyhow!("move {} to {}: {e}", tmp.path.display(), dir.display()))?;
    tmp.disarm();
    drop(dl);
    switch_to(inst, &tag, current, Action::Installed)
}

/// Points `current` at an unpacked release, then prunes. No-op if it already points there.
fn switch_to(
    inst: &Installation,
    tag: &str,
    current: Option<String>,
    action: Action,
) -> Result<Outcome> {
    let owner = owner_for(&inst.root)?;
    let dir = inst.release_dir(tag);
    if current.as_deref() == Some(tag) {
        return Ok(Outcome {
            action: Action::AlreadyCurrent,
            version: tag.to_string(),
            previous: current,
            pruned: Vec::new(),
            warnings: Vec::new(),
        });
    }
    link_config(&dir, owner)?;
    let link = inst.current_link();
    let tmp_link = inst.root.join(format!("current.tmp-{}", suffix()));
    std::os::unix::fs::symlink(format!("archive/element-{tag}"), &tmp_link)
        .map_err(|e| describe_io(e, &format!("create symlink {}", tmp_link.display())))?;
    let tmp = Temp { path: tmp_link };
    chown(&tmp.path, owner)?;
    if fs::symlink_metadata(&link).is_ok_and(|m| m.is_dir()) {
        bail!(
            "{} is a directory, not a symlink; move it aside so it can be managed",
            link.display()
        );
    }
    fs::rename(&tmp.path, &link).map_err(|e| anyhow!("switch {} to {tag}: {e}", link.display()))?;
    tmp.disarm();
    // Persist the rename before reporting success.
    let _ = File::open(&inst.root).and_then(|d| d.sync_all());
    let (pruned, warnings) = if action == Action::RolledBack {
        (Vec::new(), Vec::new())
    } else {
        prune(inst, tag)
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
fn prune(inst: &Installation, live: &str) -> (Vec<String>, Vec<String>) {
    let mut pruned = Vec::new();
    let mut warnings = Vec::new();
    let all = match releases(inst) {
        Ok(r) => r,
        Err(e) => return (pruned, vec![format!("could not list old releases: {e:#}")]),
    };
    let keep_others = inst.keep.max(1) as usize - 1;
    let others: Vec<&String> = all.iter().rev().filter(|t| t.as_str() != live).collect();
    for tag in others.into_iter().skip(keep_others) {
        let dir = inst.release_dir(tag);
        match fs::remove_dir_all(&dir) {
            Ok(()) => pruned.push(tag.clone()),
            Err(e) => warnings.push(format!("could not remove {}: {e}", dir.display())),
        }
    }
    pruned.reverse();
    (pruned, warnings)
}

/// `config.json` in the release is our file, kept outside so updates never touch it.
fn link_config(dir: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    const TARGET: &str = "../../config.json";
    let p = dir.join("config.json");
    if let Ok(m) = fs::symlink_metadata(&p) {
        if m.file_type().is_symlink() && fs::read_link(&p).is_ok_and(|t| t == Path::new(TARGET)) {
            return Ok(());
        }
        if m.is_dir() {
            bail!(
                "{} is a directory; expected our config.json link",
                p.display()
            );
        }
        fs::remove_file(&p).map_err(|e| anyhow!("remove {}: {e}", p.display()))?;
    }
    std::os::unix::fs::symlink(TARGET, &p)
        .map_err(|e| describe_io(e, &format!("create symlink {}", p.display())))?;
    chown(&p, owner)
}

/// Who should own what we create: the install root's owner, when we are root and it is not.
fn owner_for(root: &Path) -> Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let m = fs::metadata(root).map_err(|e| anyhow!("stat {}: {e}", root.display()))?;
    Ok(if m.uid() == 0 && m.gid() == 0 {
        None
    } else {
        Some((m.uid(), m.gid()))
    })
}

fn chown(path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(|e| anyhow!("chown {}: {e}", path.display()))?;
    }
    Ok(())
}

fn chown_tree(path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    if owner.is_none() {
        return Ok(());
    }
    chown(path, owner)?;
    let m = fs::symlink_metadata(path).map_err(|e| anyhow!("stat {}: {e}", path.display()))?;
    if m.is_dir() {
        for e in fs::read_dir(path).map_err(|e| anyhow!("list {}: {e}", path.display()))? {
            let e = e.map_err(|e| anyhow!("list {}: {e}", path.display()))?;
            chown_tree(&e.path(), owner)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| anyhow!("chmod {}: {e}", path.display()))
}

fn suffix() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(8)
        .map(char::from)
        .collect()
}

fn remove_any(path: &Path) {
    let _ = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    };
}

/// A path removed when dropped, unless disarmed: every early return cleans up after itself.
struct Temp {
    path: PathBuf,
}

impl Temp {
    fn dir(path: &Path, mode: u32) -> Result<Temp> {
        fs::create_dir(path).map_err(|e| describe_io(e, &format!("create {}", path.display())))?;
        let t = Temp {
            path: path.to_path_buf(),
        };
        set_mode(&t.path, mode)?;
        Ok(t)
    }

    fn disarm(mut self) {
        self.path = PathBuf::new();
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            remove_any(&self.path);
        }
    }
}
