//! The real host. File paths are taken relative to `root` (normally `/`), which lets `--root DIR` aim the
//! file side at a scratch tree; commands always run on the host itself.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::memo::{self, Memo};
use super::{atomic, tools, Cmd, CmdOutput, Facts, FileKind, FileSpec, FileStat, System};

pub struct RealSystem {
    root: PathBuf,
    http: crate::http::Options,
    /// Read-only answers of this run, until it changes something (memo.rs).
    memo: Memo,
    shared: super::shared::Shared,
}

impl RealSystem {
    pub fn new(root: impl Into<PathBuf>) -> RealSystem {
        RealSystem {
            root: root.into(),
            http: crate::http::Options::default(),
            memo: Memo::default(),
            shared: Default::default(),
        }
    }

    /// Ask `systemctl show` about all of `units` at once; until this run changes something, each
    /// step's own question about one of them is answered from it. [`memo::Batch::fetch`] it with
    /// [`RealSystem::fetch`], on another thread if the run should not wait for it.
    pub fn units_batch(&self, units: &[String]) -> memo::Batch<'_> {
        self.memo.units_batch(
            units,
            |u| tools::unit_state_cmd(&[u]),
            tools::unit_state_cmd(units),
        )
    }

    pub fn fetch(&self, batch: memo::Batch<'_>) {
        batch.fetch(|c| run_bounded(c, c.time_limit()));
    }

    /// Trust only this PEM bundle for HTTPS (a private CA that issued this host's certificates).
    pub fn with_ca_bundle(mut self, bundle: Option<PathBuf>) -> RealSystem {
        self.http.ca_bundle = bundle;
        self
    }

    /// The path on this machine for a host path.
    pub fn map(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    fn lookup_id(&self, db: &str, name: &str) -> Result<Option<u32>> {
        if self.root == Path::new("/") {
            // nix goes through NSS, the system's own authority on accounts.
            return Ok(if db == "passwd" {
                nix::unistd::User::from_name(name)?.map(|u| u.uid.as_raw())
            } else {
                nix::unistd::Group::from_name(name)?.map(|g| g.gid.as_raw())
            });
        }
        let text = self
            .read(&Path::new("/etc").join(db))?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Ok(text.lines().find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some(name))
                .then(|| fields.nth(1).and_then(|id| id.parse().ok()))
                .flatten()
        }))
    }
}

fn not_found_is_none<T>(r: std::io::Result<T>, path: &Path) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

impl System for RealSystem {
    fn read(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        not_found_is_none(fs::read(self.map(path)), path)
    }

    fn stat(&self, path: &Path) -> Result<Option<FileStat>> {
        Ok(
            not_found_is_none(fs::symlink_metadata(self.map(path)), path)?.map(|m| {
                let t = m.file_type();
                FileStat {
                    kind: kind_of(t),
                    uid: m.uid(),
                    gid: m.gid(),
                    mode: m.mode() & 0o7777,
                }
            }),
        )
    }

    fn read_link(&self, path: &Path) -> Result<Option<PathBuf>> {
        match fs::read_link(self.map(path)) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::InvalidInput => {
                Ok(None)
            }
            Err(e) => Err(e).with_context(|| format!("readlink {}", path.display())),
        }
    }

    fn write(&self, spec: &FileSpec, contents: &[u8]) -> Result<()> {
        self.memo.changed();
        let backups = self.map(&self.backup_dir());
        atomic::write_atomic(&self.map(&spec.path), spec, contents, Some(&backups))
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        self.memo.changed();
        let real = self.map(link);
        let tmp = atomic::temp_path(&real);
        std::os::unix::fs::symlink(target, &tmp)
            .and_then(|()| fs::rename(&tmp, &real))
            .with_context(|| format!("linking {} -> {}", link.display(), target.display()))
    }

    fn mkdir(&self, path: &Path, owner: (u32, u32), mode: u32) -> Result<()> {
        self.memo.changed();
        let real = self.map(path);
        fs::create_dir_all(&real).with_context(|| format!("mkdir {}", path.display()))?;
        self.chown_chmod(path, owner, mode)
    }

    fn chown_chmod(&self, path: &Path, owner: (u32, u32), mode: u32) -> Result<()> {
        self.memo.changed();
        let real = self.map(path);
        nix::unistd::chown(&real, Some(owner.0.into()), Some(owner.1.into()))
            .with_context(|| format!("chown {}", path.display()))?;
        fs::set_permissions(&real, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {:o} {}", mode, path.display()))
    }

    fn remove(&self, path: &Path) -> Result<()> {
        self.memo.changed();
        let real = self.map(path);
        match fs::remove_file(&real) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        }
    }

    fn run(&self, cmd: &Cmd) -> Result<CmdOutput> {
        self.memo.run(cmd, |c| run_bounded(c, c.time_limit()))
    }

    fn run_shared(&self, cmd: &Cmd) -> Result<CmdOutput> {
        self.shared.run(cmd, |c| self.run(c))
    }

    fn run_pipeline(&self, cmds: &[Cmd]) -> Result<Vec<CmdOutput>> {
        let limit = cmds.iter().map(Cmd::time_limit).max().unwrap_or_default();
        run_pipeline_bounded(cmds, limit)
    }

    fn uid(&self, user: &str) -> Result<Option<u32>> {
        self.lookup_id("passwd", user)
    }

    fn gid(&self, group: &str) -> Result<Option<u32>> {
        self.lookup_id("group", group)
    }

    fn http_get(&self, url: &str) -> Result<Vec<u8>> {
        crate::http::get(url, &crate::http::suited(url, &self.http))
    }

    fn sweep_temps(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let removed = atomic::sweep_temps(&self.map(dir))?;
        Ok(removed
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| dir.join(n))
            .collect())
    }

    fn lock_holder(&self, path: &Path) -> Result<Option<i32>> {
        let file = match fs::File::open(self.map(path)) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        // F_GETLK asks who would block a write lock, without taking one.
        let mut probe: nix::libc::flock = unsafe { std::mem::zeroed() };
        probe.l_type = nix::libc::F_WRLCK as i16;
        probe.l_whence = nix::libc::SEEK_SET as i16;
        nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            nix::fcntl::FcntlArg::F_GETLK(&mut probe),
        )
        .with_context(|| format!("checking the lock on {}", path.display()))?;
        Ok((probe.l_type != nix::libc::F_UNLCK as i16).then_some(probe.l_pid))
    }

    fn lock_exclusive(&self, path: &Path) -> Result<Box<dyn std::any::Any>> {
        use std::os::unix::fs::OpenOptionsExt;
        let real = self.map(path);
        let flags = nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK;
        let opened = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(flags)
            .open(&real)
            .or_else(|e| match e.raw_os_error() {
                // flock works on a read-only descriptor too: a lock file left by another user still locks.
                Some(nix::libc::EACCES) | Some(nix::libc::EROFS) => fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(flags)
                    .open(&real),
                _ => Err(e),
            });
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => anyhow::bail!(
                "lock file {} is a symlink; refusing to open it (remove it: it is recreated as a plain file)",
                path.display()
            ),
            Err(e) => {
                return Err(e).with_context(|| format!("opening lock file {}", path.display()))
            }
        };
        let meta = file
            .metadata()
            .with_context(|| format!("stat lock file {}", path.display()))?;
        if !meta.file_type().is_file() {
            anyhow::bail!(
                "lock file {} is not a regular file; refusing to use it",
                path.display()
            );
        }
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow::anyhow!("lock {}: {e}", path.display()))?;
        Ok(Box::new(lock))
    }

    fn list_dir(&self, path: &Path) -> Result<Option<Vec<(String, FileKind)>>> {
        let real = self.map(path);
        match fs::symlink_metadata(&real) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
            Ok(m) if !m.file_type().is_dir() => {
                anyhow::bail!("{} is not a directory (a symlink?)", path.display())
            }
            Ok(_) => {}
        }
        let mut out = Vec::new();
        for e in fs::read_dir(&real).with_context(|| format!("listing {}", path.display()))? {
            let e = e.with_context(|| format!("listing {}", path.display()))?;
            let t = e.file_type()?;
            let kind = kind_of(t);
            out.push((e.file_name().to_string_lossy().into_owned(), kind));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Some(out))
    }

    fn mkdir_new(&self, path: &Path, mode: u32) -> Result<()> {
        self.memo.changed();
        use std::os::unix::fs::DirBuilderExt;
        let real = self.map(path);
        fs::DirBuilder::new()
            .mode(mode)
            .create(&real)
            .map_err(|e| crate::http::describe_io(e, &format!("create {}", path.display())))?;
        // The umask may have taken bits away; the directory is new and ours, lstat proves it is no symlink.
        fs::set_permissions(&real, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {:o} {}", mode, path.display()))
    }

    fn create_new(&self, path: &Path, mode: u32, contents: &[u8]) -> Result<()> {
        self.memo.changed();
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let real = self.map(path);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&real)
            .map_err(|e| crate::http::describe_io(e, &format!("create {}", path.display())))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {:o} {}", mode, path.display()))?;
        f.write_all(contents)
            .map_err(|e| crate::http::describe_io(e, &format!("write {}", path.display())))
    }

    fn symlink_new(&self, target: &Path, link: &Path) -> Result<()> {
        self.memo.changed();
        std::os::unix::fs::symlink(target, self.map(link))
            .map_err(|e| crate::http::describe_io(e, &format!("create symlink {}", link.display())))
    }

    fn hard_link(&self, from: &Path, to: &Path) -> Result<()> {
        self.memo.changed();
        fs::hard_link(self.map(from), self.map(to))
            .map_err(|e| crate::http::describe_io(e, &format!("link {}", to.display())))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.memo.changed();
        fs::rename(self.map(from), self.map(to))
            .with_context(|| format!("move {} to {}", from.display(), to.display()))
    }

    fn remove_tree(&self, path: &Path) -> Result<()> {
        self.memo.changed();
        let real = self.map(path);
        // std's remove_dir_all works with openat/unlinkat and never follows a symlink inside the tree.
        let r = match fs::symlink_metadata(&real) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&real),
            Ok(_) => fs::remove_file(&real),
            Err(e) => Err(e),
        };
        match r {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        }
    }

    fn sync_fs(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(self.map(path))
            .with_context(|| format!("open {}", path.display()))?;
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir))
            .map_err(|e| crate::http::describe_io(e.into(), &format!("flush {}", path.display())))
    }

    fn free_bytes(&self, path: &Path) -> Result<u64> {
        let s = nix::sys::statvfs::statvfs(&self.map(path))
            .with_context(|| format!("statvfs {}", path.display()))?;
        Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
    }

    fn http_fetch(&self, url: &str, opts: &crate::http::Options) -> Result<Vec<u8>> {
        let mut o = opts.clone();
        if o.ca_bundle.is_none() {
            o.ca_bundle = self.http.ca_bundle.clone();
        }
        crate::http::get(url, &crate::http::suited(url, &o))
    }

    fn env_var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn facts(&self) -> Facts {
        let mut sys = sysinfo::System::new();
        sys.refresh_memory();
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let var = self.map(Path::new("/var"));
        let var_free_mb = nix::sys::statvfs::statvfs(&var)
            .map(|s| s.blocks_available() * s.fragment_size() / (1024 * 1024))
            .unwrap_or(0);
        let os = self
            .read(Path::new("/etc/os-release"))
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let field = |key: &str| {
            os.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(|v| v.trim_matches('"').to_string())
                .unwrap_or_default()
        };
        Facts {
            ram_mb: sys.total_memory() / (1024 * 1024),
            cpus,
            var_free_mb,
            os_id: field("ID"),
            os_version_id: field("VERSION_ID"),
            os_codename: field("VERSION_CODENAME"),
            is_root: nix::unistd::geteuid().is_root(),
            addresses: interface_addresses(),
        }
    }
}

/// The addresses of this host's interfaces, as getifaddrs(3) lists them. Empty if it fails, which it does
/// only without memory or sockets: then nothing else in the run would work either.
fn interface_addresses() -> Vec<std::net::IpAddr> {
    let mut out: Vec<std::net::IpAddr> = nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs
                .filter_map(|a| a.address)
                .filter_map(|a| {
                    if let Some(v4) = a.as_sockaddr_in() {
                        Some(std::net::IpAddr::V4(v4.ip()))
                    } else {
                        a.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip()))
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

/// Run `cmd` to completion or until `limit`. The child leads its own process group, so on expiry the
/// whole group is killed, and so is every other descendant (apt starts dpkg in a session of its own):
/// nothing it started keeps a lock or a pipe after the step failed.
fn run_bounded(cmd: &Cmd, limit: Duration) -> Result<CmdOutput> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    let mut command = Command::new(&cmd.program);
    command
        .args(&cmd.args)
        // Stable, parseable output from every tool we read.
        .env("LC_ALL", "C.UTF-8")
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(if cmd.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command
        .spawn()
        .with_context(|| format!("running `{}` (is its package installed?)", cmd.display()))?;
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel::<(bool, Vec<u8>)>();
    for (is_out, pipe) in [
        (
            true,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            false,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        let tx = tx.clone();
        let mut pipe = pipe.expect("piped");
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send((is_out, buf));
        });
    }
    drop(tx);
    if let (Some(data), Some(stdin)) = (cmd.stdin.clone(), child.stdin.take()) {
        feed_stdin(data, stdin);
    }
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(2);
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for a command")? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(100));
    };
    let Some(status) = status else {
        kill_tree(pid);
        let _ = child.wait();
        anyhow::bail!(
            "`{}` did not finish within {}; killed it and every process it started",
            cmd.display(),
            human(limit)
        );
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    // A daemon the command left behind may hold the pipes open; its output is not waited for.
    let grace = Instant::now() + Duration::from_secs(2);
    for _ in 0..2 {
        match rx.recv_timeout(grace.saturating_duration_since(Instant::now())) {
            Ok((true, b)) => stdout = b,
            Ok((false, b)) => stderr = b,
            Err(_) => break,
        }
    }
    Ok(CmdOutput {
        status: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// [`System::run_pipeline`]: every command in the process group of the first (so a kill reaches them all),
/// connected by pipes the kernel holds; stderr of each and stdout of the last read by threads.
fn run_pipeline_bounded(cmds: &[Cmd], limit: Duration) -> Result<Vec<CmdOutput>> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};

    anyhow::ensure!(!cmds.is_empty(), "an empty pipeline");
    let shown = cmds
        .iter()
        .map(Cmd::display)
        .collect::<Vec<_>>()
        .join(" | ");
    let mut children: Vec<Child> = Vec::new();
    let mut group = 0i32;
    let kill_all = |children: &mut Vec<Child>| {
        for c in children.iter() {
            kill_tree(c.id() as i32);
        }
        for c in children.iter_mut() {
            let _ = c.wait();
        }
    };
    let mut readers = Vec::new();
    for (i, cmd) in cmds.iter().enumerate() {
        let last = i + 1 == cmds.len();
        let stdin = match children.last_mut().and_then(|c| c.stdout.take()) {
            Some(out) => Stdio::from(out),
            None if cmd.stdin.is_some() => Stdio::piped(),
            None => Stdio::null(),
        };
        let mut command = Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .env("LC_ALL", "C.UTF-8")
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(group);
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                kill_all(&mut children);
                return Err(e).with_context(|| {
                    format!("running `{}` (is its package installed?)", cmd.display())
                });
            }
        };
        if group == 0 {
            group = child.id() as i32;
        }
        if i == 0 {
            if let (Some(data), Some(stdin)) = (cmd.stdin.clone(), child.stdin.take()) {
                feed_stdin(data, stdin);
            }
        }
        let mut err = child.stderr.take().expect("piped");
        let mut out = if last { child.stdout.take() } else { None };
        readers.push(std::thread::spawn(move || {
            let mut e = Vec::new();
            let mut o = Vec::new();
            let t = out.take().map(|mut p| {
                std::thread::spawn(move || {
                    let mut b = Vec::new();
                    let _ = p.read_to_end(&mut b);
                    b
                })
            });
            let _ = err.read_to_end(&mut e);
            if let Some(t) = t {
                o = t.join().unwrap_or_default();
            }
            (o, e)
        }));
        children.push(child);
    }
    let deadline = Instant::now() + limit;
    let mut statuses: Vec<Option<std::process::ExitStatus>> = vec![None; children.len()];
    let mut pause = Duration::from_millis(2);
    while statuses.iter().any(Option::is_none) {
        for (i, c) in children.iter_mut().enumerate() {
            if statuses[i].is_none() {
                statuses[i] = c.try_wait().context("waiting for a command")?;
            }
        }
        if statuses.iter().all(Option::is_some) {
            break;
        }
        if Instant::now() >= deadline {
            kill_all(&mut children);
            anyhow::bail!(
                "`{shown}` did not finish within {}; killed it and every process it started",
                human(limit)
            );
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    let outputs = readers
        .into_iter()
        .zip(statuses)
        .map(|(reader, status)| {
            let (stdout, stderr) = reader.join().unwrap_or_default();
            CmdOutput {
                status: status.and_then(|s| s.code()).unwrap_or(-1),
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
            }
        })
        .collect();
    Ok(outputs)
}

/// SIGKILL the process group `pid` leads and every descendant of `pid`, found through /proc (children
/// first stopped so none can fork away while the tree is walked).
fn kill_tree(pid: i32) {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::Pid;
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        let _ = kill(Pid::from_raw(parent), Signal::SIGSTOP);
        tree.extend(children_of(parent));
        i += 1;
    }
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    for p in tree {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
}

fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
            fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s % 60 == 0 {
        format!("{} min", s / 60)
    } else if s > 0 {
        format!("{s} s")
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Our four kinds of directory entry, from an lstat-style file type (a symlink is never followed).
fn kind_of(t: fs::FileType) -> FileKind {
    if t.is_symlink() {
        FileKind::Symlink
    } else if t.is_dir() {
        FileKind::Dir
    } else if t.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    }
}

/// Writes a child's input from a thread of its own. A child that exits without reading its input closes
/// the pipe: not our error, and (where SIGPIPE has its default action, see cli::main) no reason for this
/// process to die, so the writer blocks SIGPIPE for itself and sees EPIPE instead.
fn feed_stdin(data: Vec<u8>, mut stdin: std::process::ChildStdin) {
    use std::io::Write;
    std::thread::spawn(move || {
        let mut pipe = nix::sys::signal::SigSet::empty();
        pipe.add(nix::sys::signal::Signal::SIGPIPE);
        let _ = pipe.thread_block();
        let _ = stdin.write_all(&data);
    });
}

#[cfg(test)]
mod tests {
    use super::super::default_timeout;
    use super::*;

    #[test]
    fn a_hung_command_is_killed_with_its_children_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        // The shell starts a grandchild in a session of its own (as apt does with dpkg), then hangs.
        let script = format!(
            "setsid sh -c 'echo $$ > {}; exec sleep 300' & sleep 300",
            pidfile.display()
        );
        let cmd = Cmd::new("sh")
            .args(["-c", &script])
            .timeout(Duration::from_millis(700));
        let started = Instant::now();
        let err = RealSystem::new("/").run(&cmd).unwrap_err().to_string();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(err.contains("did not finish within 700 ms"), "{err}");
        assert!(err.contains("sh -c"), "{err}");
        let grandchild: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let state = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
        assert!(
            state.is_empty() || state.contains(") Z "),
            "the grandchild survived: {state}"
        );
    }

    #[test]
    fn a_pipeline_streams_through_pipes_and_reports_each_status() {
        let sys = RealSystem::new("/");
        // 8 MiB through three processes: more than any pipe buffer, so it only works if they run at once.
        let outs = sys
            .run_pipeline(&[
                Cmd::new("head").args(["-c", "8388608", "/dev/zero"]),
                Cmd::new("tr").args(["\\0", "a"]),
                Cmd::new("wc").arg("-c"),
            ])
            .unwrap();
        assert_eq!(outs.len(), 3);
        assert_eq!(outs[2].stdout.trim(), "8388608");
        assert!(outs.iter().all(CmdOutput::ok));
        // The first failing is seen even though the last succeeds (no `pipefail` needed).
        let outs = sys
            .run_pipeline(&[
                Cmd::new("sh").args(["-c", "echo partial; echo broke >&2; exit 3"]),
                Cmd::new("cat"),
            ])
            .unwrap();
        assert_eq!((outs[0].status, outs[0].stderr.trim()), (3, "broke"));
        assert_eq!((outs[1].status, outs[1].stdout.as_str()), (0, "partial\n"));
        // First command's stdin, and a hung pipeline is killed whole.
        let outs = sys
            .run_pipeline(&[Cmd::new("cat").stdin("in"), Cmd::new("cat")])
            .unwrap();
        assert_eq!(outs[1].stdout, "in");
        let started = Instant::now();
        let err = sys
            .run_pipeline(&[
                Cmd::new("sleep")
                    .arg("30")
                    .timeout(Duration::from_millis(500)),
                Cmd::new("cat").timeout(Duration::from_millis(500)),
            ])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sleep 30 | cat") && err.contains("did not finish"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn output_status_and_stdin_pass_through() {
        let out = RealSystem::new("/")
            .run(
                &Cmd::new("sh")
                    .args(["-c", "cat; echo err >&2; exit 3"])
                    .stdin("in"),
            )
            .unwrap();
        assert_eq!(
            (out.status, out.stdout.as_str(), out.stderr.as_str()),
            (3, "in", "err\n")
        );
    }

    /// Input for a child that is already gone: EPIPE for the writer, never a SIGPIPE for the process
    /// (which read-only commands would die of, having restored its default action).
    #[test]
    fn input_for_a_child_that_exited_is_no_signal() {
        // SAFETY: sets a signal disposition; the test binary's threads do not depend on SIGPIPE.
        unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
            .unwrap();
        }
        let out = RealSystem::new("/")
            .run(&Cmd::new("true").stdin(vec![b'x'; 1 << 20]))
            .unwrap();
        assert_eq!(out.status, 0);
    }

    #[test]
    fn defaults_suit_the_tool() {
        let t = |p: &str, a: &[&str]| {
            default_timeout(p, &a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert!(t("apt-get", &["install"]) >= Duration::from_secs(600));
        assert!(t("certbot", &[]) >= Duration::from_secs(300));
        assert!(t("ss", &[]) <= Duration::from_secs(30));
        assert_eq!(
            t("runuser", &["-u", "postgres", "--", "psql"]),
            t("psql", &[])
        );
        assert!(t("psql", &[]) <= Duration::from_secs(60));
        // The Element job as the tree's owner outlives its downloads' own 15 min limit.
        assert!(
            t(
                "setpriv",
                &[
                    "--reuid=998",
                    "--",
                    "/usr/local/bin/matrix-provision",
                    "element-job"
                ]
            ) > Duration::from_secs(15 * 60)
        );
    }
}
