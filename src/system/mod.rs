//! The one seam between matrix-provision and the host. Steps see the machine only through [`System`]:
//! `RealSystem` touches `/` (or a `--root` prefix for files), `FakeSystem` (tests) keeps files in a temp dir
//! and answers commands from a script, so every step can be unit-tested without root.

mod atomic;
#[cfg(any(test, feature = "fake"))]
mod fake;
pub mod memo;
mod real;
mod shared;
mod tools;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

pub use atomic::{write_atomic, FileSpec};
#[cfg(any(test, feature = "fake"))]
pub use fake::FakeSystem;
pub use real::RealSystem;
pub use tools::{
    as_postgres, detect_ssh_ports, psql, psql_in, unit_state, unit_state_cmd, SshPorts, UnitState,
};

/// A command to run on the host. Built with [`Cmd::new`] and `arg`/`env`/`stdin`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
    /// Longest the command may run; None: [`default_timeout`] for its program. On expiry it is killed
    /// with everything it started and the run is an error naming it.
    pub timeout: Option<Duration>,
}

impl Cmd {
    pub fn new(program: &str) -> Cmd {
        Cmd {
            program: program.to_string(),
            ..Cmd::default()
        }
    }
    pub fn arg(mut self, a: impl Into<String>) -> Cmd {
        self.args.push(a.into());
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Cmd {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
    pub fn env(mut self, k: &str, v: impl Into<String>) -> Cmd {
        self.env.push((k.to_string(), v.into()));
        self
    }
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(data.into());
        self
    }
    pub fn timeout(mut self, limit: Duration) -> Cmd {
        self.timeout = Some(limit);
        self
    }
    /// The limit that applies: the one set, else the program's default.
    pub fn time_limit(&self) -> Duration {
        self.timeout
            .unwrap_or_else(|| default_timeout(&self.program, &self.args))
    }
    /// The command line as a user would type it (for error messages; never contains stdin).
    pub fn display(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// How long a tool may take before it counts as hung. Local queries answer in seconds; package
/// transactions and ACME orders talk to the network and unpack, so they get minutes. `runuser … -- PROG`
/// and `setpriv … -- PROG` are judged by PROG.
pub fn default_timeout(program: &str, args: &[String]) -> Duration {
    let name = program.rsplit('/').next().unwrap_or(program);
    if name == "runuser" || name == "setpriv" {
        if let Some(i) = args.iter().position(|a| a == "--") {
            if let Some(inner) = args.get(i + 1) {
                return default_timeout(inner, &args[i + 2..]);
            }
        }
    }
    let minutes = |m: u64| Duration::from_secs(m * 60);
    match name {
        "apt-get" | "apt" | "dpkg" => minutes(30),
        "certbot" => minutes(10),
        // This program as the Element tree's owner (setpriv): downloads of up to http's 15 min, then unpacking.
        "matrix-provision" => minutes(20),
        // Starting Synapse or PostgreSQL may take a while; systemd has its own start timeouts below this.
        "systemctl" => minutes(5),
        // Synapse's config check imports all of Synapse (slow under emulation).
        "python" | "python3" => minutes(5),
        "adduser"
        | "psql"
        | "nginx"
        | "gpgv"
        | "gpg"
        | "ufw"
        | "debconf-set-selections"
        | "openssl"
        | "journalctl" => Duration::from_secs(60),
        "ss" | "sshd" | "dpkg-query" | "df" => Duration::from_secs(20),
        _ => minutes(5),
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CmdOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn ok(&self) -> bool {
        self.status == 0
    }
    /// Last lines of stderr (or stdout), for error messages that must stay short.
    pub fn tail(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let lines: Vec<&str> = text.trim_end().lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub kind: FileKind,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits only (0o7777).
    pub mode: u32,
}

/// Host facts that steps and templates need. Gathered once per run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Facts {
    pub ram_mb: u64,
    pub cpus: u32,
    /// Free space on the filesystem holding /var, in MB.
    pub var_free_mb: u64,
    pub os_id: String,
    pub os_version_id: String,
    /// `VERSION_CODENAME` in /etc/os-release; crate::release maps it to a supported release.
    pub os_codename: String,
    pub is_root: bool,
    /// Every address on the host's interfaces (loopback included), sorted, without duplicates.
    pub addresses: Vec<std::net::IpAddr>,
}

/// Send + Sync: independent steps run on several threads at once, all through this one seam.
pub trait System: Send + Sync {
    /// Contents of a file, None when it does not exist.
    fn read(&self, path: &Path) -> Result<Option<Vec<u8>>>;
    /// lstat: does not follow a final symlink.
    fn stat(&self, path: &Path) -> Result<Option<FileStat>>;
    fn read_link(&self, path: &Path) -> Result<Option<PathBuf>>;
    /// The atomic writer: temp file in the same directory, owner/mode, fsync, backup, rename.
    fn write(&self, spec: &FileSpec, contents: &[u8]) -> Result<()>;
    /// Atomically point `link` at `target` (new link renamed over the old one).
    fn symlink(&self, target: &Path, link: &Path) -> Result<()>;
    fn mkdir(&self, path: &Path, owner: (u32, u32), mode: u32) -> Result<()>;
    fn chown_chmod(&self, path: &Path, owner: (u32, u32), mode: u32) -> Result<()>;
    fn remove(&self, path: &Path) -> Result<()>;
    /// Run a command to completion. A non-zero exit is not an error here: callers judge the status.
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput>;
    /// Run `cmds` as a shell pipeline: each one's stdout is the next one's stdin, through a pipe (nothing
    /// in between is held in memory or written to disk). The first takes its own `stdin`, if any; every
    /// output has its own status and stderr, only the last has stdout. The time limit is the longest of
    /// theirs; on expiry every command is killed with what it started, and the run is an error.
    fn run_pipeline(&self, cmds: &[Cmd]) -> Result<Vec<CmdOutput>>;
    /// Run `cmd`, or share the outcome of a run of the same command that started after this call, with
    /// the others who asked meanwhile (shared.rs): config validators that several steps need at once.
    fn run_shared(&self, cmd: &Cmd) -> Result<CmdOutput>;
    fn uid(&self, user: &str) -> Result<Option<u32>>;
    fn gid(&self, group: &str) -> Result<Option<u32>>;
    fn http_get(&self, url: &str) -> Result<Vec<u8>>;
    fn facts(&self) -> Facts;
    /// PID of a process holding an fcntl write lock on `path` (how dpkg and apt lock their databases).
    fn lock_holder(&self, path: &Path) -> Result<Option<i32>>;
    /// Exclusive flock(2) on `path`, created 0644 when missing, never opened through a symlink (O_NOFOLLOW)
    /// and only if it is a regular file; held until the returned guard is dropped.
    fn lock_exclusive(&self, path: &Path) -> Result<Box<dyn std::any::Any>>;
    /// Names and kinds (lstat) of a directory's entries, None when it does not exist; never follows a
    /// symlink at `path` itself.
    fn list_dir(&self, path: &Path) -> Result<Option<Vec<(String, FileKind)>>>;
    /// mkdir(2) of one new directory (the parent must exist; fails if anything is there already).
    fn mkdir_new(&self, path: &Path, mode: u32) -> Result<()>;
    /// A new regular file with exactly `contents` (O_CREAT|O_EXCL|O_NOFOLLOW: never through a symlink,
    /// never over an existing entry), mode set on the open descriptor.
    fn create_new(&self, path: &Path, mode: u32, contents: &[u8]) -> Result<()>;
    /// A new symlink (fails if anything is at `link`).
    fn symlink_new(&self, target: &Path, link: &Path) -> Result<()>;
    fn hard_link(&self, from: &Path, to: &Path) -> Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> Result<()>;
    /// Removes a file, symlink or whole directory tree without following any symlink in it; absent is fine.
    fn remove_tree(&self, path: &Path) -> Result<()>;
    /// syncfs(2) on the filesystem holding `path`.
    fn sync_fs(&self, path: &Path) -> Result<()>;
    /// Bytes available to unprivileged users on the filesystem holding `path`.
    fn free_bytes(&self, path: &Path) -> Result<u64>;
    /// HTTP GET with explicit options (size cap, timeouts, the host.toml key named in errors).
    fn http_fetch(&self, url: &str, opts: &crate::http::Options) -> Result<Vec<u8>>;
    /// Remove the temp files a killed run left in `dir` (hidden `.…mp-tmp…` names); their host paths.
    fn sweep_temps(&self, dir: &Path) -> Result<Vec<PathBuf>>;
    /// An environment variable of this run (e.g. `SSH_CONNECTION`: the session the admin is on).
    fn env_var(&self, name: &str) -> Option<String>;
    /// Where backups of replaced files go.
    fn backup_dir(&self) -> PathBuf {
        PathBuf::from(crate::layout::BACKUP_DIR)
    }
}

/// Run and require exit status 0; the error names the command and shows the end of its output.
pub fn run_ok(sys: &dyn System, cmd: &Cmd) -> Result<CmdOutput> {
    let out = sys.run(cmd)?;
    if !out.ok() {
        anyhow::bail!(
            "`{}` exited with status {}:\n{}",
            cmd.display(),
            out.status,
            out.tail()
        );
    }
    Ok(out)
}

/// Resolve "user"/"group" names to ids; errors say which name is missing (usually: its package isn't installed yet).
pub fn owner_ids(sys: &dyn System, user: &str, group: &str) -> Result<(u32, u32)> {
    let uid = sys
        .uid(user)?
        .ok_or_else(|| anyhow::anyhow!("user `{user}` does not exist on this host"))?;
    let gid = sys
        .gid(group)?
        .ok_or_else(|| anyhow::anyhow!("group `{group}` does not exist on this host"))?;
    Ok((uid, gid))
}
