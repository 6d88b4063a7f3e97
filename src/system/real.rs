//! The real host. File paths are taken relative to `root` (normally `/`), which lets `--root DIR` aim the
//! file side at a scratch tree; commands always run on the host itself.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{atomic, Cmd, CmdOutput, Facts, FileKind, FileSpec, FileStat, System};

pub struct RealSystem {
    root: PathBuf,
    http: crate::http::Options,
}

impl RealSystem {
    pub fn new(root: impl Into<PathBuf>) -> RealSystem {
        RealSystem {
            root: root.into(),
            http: crate::http::Options::default(),
        }
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
                    kind: if t.is_symlink() {
                        FileKind::Symlink
                    } else if t.is_dir() {
                        FileKind::Dir
                    } else if t.is_file() {
                        FileKind::File
                    } else {
                        FileKind::Other
                    },
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
        let backups = self.map(&self.backup_dir());
        atomic::write_atomic(&self.map(&spec.path), spec, contents, Some(&backups))
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        let real = self.map(link);
        let tmp = real.with_file_name(format!(
            ".{}.mp-tmp",
            real.file_name().unwrap_or_default().to_string_lossy()
        ));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp)
            .and_then(|()| fs::rename(&tmp, &real))
            .with_context(|| format!("linking {} -> {}", link.display(), target.display()))
    }

    fn mkdir(&self, path: &Path, owner: (u32, u32), mode: u32) -> Result<()> {
        let real = self.map(path);
        fs::create_dir_all(&real).with_context(|| format!("mkdir {}", path.display()))?;
        self.chown_chmod(path, owner, mode)
    }

    fn chown_chmod(&self, path: &Path, owner: (u32, u32), mode: u32) -> Result<()> {
        let real = self.map(path);
        nix::unistd::chown(&real, Some(owner.0.into()), Some(owner.1.into()))
            .with_context(|| format!("chown {}", path.display()))?;
        fs::set_permissions(&real, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {:o} {}", mode, path.display()))
    }

    fn remove(&self, path: &Path) -> Result<()> {
        let real = self.map(path);
        match fs::remove_file(&real) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        }
    }

    fn run(&self, cmd: &Cmd) -> Result<CmdOutput> {
        let mut expr = duct::cmd(&cmd.program, &cmd.args)
            // Stable, parseable output from every tool we read.
            .env("LC_ALL", "C.UTF-8")
            .stdout_capture()
            .stderr_capture()
            .unchecked();
        for (k, v) in &cmd.env {
            expr = expr.env(k, v);
        }
        expr = match &cmd.stdin {
            Some(data) => expr.stdin_bytes(data.clone()),
            None => expr.stdin_null(),
        };
        let out = expr
            .run()
            .with_context(|| format!("running `{}` (is its package installed?)", cmd.display()))?;
        Ok(CmdOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn uid(&self, user: &str) -> Result<Option<u32>> {
        self.lookup_id("passwd", user)
    }

    fn gid(&self, group: &str) -> Result<Option<u32>> {
        self.lookup_id("group", group)
    }

    fn http_get(&self, url: &str) -> Result<Vec<u8>> {
        crate::http::get(url, &self.http)
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
