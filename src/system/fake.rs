//! A host for tests: files live in a temp dir (through the real atomic writer), commands are answered by a
//! script the test supplies and recorded so the test can assert exactly what would have run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Result};

use super::{Cmd, CmdOutput, Facts, FileKind, FileSpec, FileStat, RealSystem, System};

// Send + Sync: the engine runs independent steps on several threads against one host.
type Responder = Box<dyn Fn(&Cmd) -> Option<CmdOutput> + Send + Sync>;

pub struct FakeSystem {
    files: RealSystem,
    pub root: tempfile::TempDir,
    responders: Mutex<Vec<Responder>>,
    pub ran: Mutex<Vec<Cmd>>,
    pub urls: Mutex<HashMap<String, Vec<u8>>>,
    pub facts: Facts,
    /// Lock files a fake process holds (path → pid); each query releases one hold, like a process finishing.
    pub locks: Mutex<HashMap<PathBuf, Vec<i32>>>,
    /// Owners `stat` reports for these host paths instead of the real ones (a tree "owned" by another user
    /// without needing root to chown it).
    pub owners: Mutex<HashMap<PathBuf, (u32, u32)>>,
    /// The run's environment as `env_var` reports it (empty: no SSH session, nothing else).
    pub env: Mutex<HashMap<String, String>>,
    shared: super::shared::Shared,
}

impl Default for FakeSystem {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeSystem {
    pub fn new() -> FakeSystem {
        let root = tempfile::tempdir().expect("temp dir");
        FakeSystem {
            files: RealSystem::new(root.path()),
            root,
            responders: Mutex::new(Vec::new()),
            ran: Mutex::new(Vec::new()),
            urls: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            env: Mutex::new(HashMap::new()),
            shared: Default::default(),
            facts: Facts {
                ram_mb: 4096,
                cpus: 2,
                var_free_mb: 50_000,
                os_id: "debian".into(),
                // A new server: the newest supported release (tests set an older one explicitly).
                os_version_id: crate::release::NEWEST.version.into(),
                os_codename: crate::release::NEWEST.codename.into(),
                is_root: true,
                addresses: vec![
                    std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::Ipv6Addr::LOCALHOST.into(),
                ],
            },
        }
    }

    /// Answer commands for which `f` returns Some; later responders win.
    pub fn on(&self, f: impl Fn(&Cmd) -> Option<CmdOutput> + Send + Sync + 'static) {
        self.responders.lock().unwrap().push(Box::new(f));
    }

    /// Answer every run of `program` whose command line starts with `prefix` with `stdout` and status.
    pub fn on_cmd(&self, prefix: &str, status: i32, stdout: &str) {
        let prefix = prefix.to_string();
        let stdout = stdout.to_string();
        self.on(move |c| {
            c.display().starts_with(&prefix).then(|| CmdOutput {
                status,
                stdout: stdout.clone(),
                stderr: String::new(),
            })
        });
    }

    pub fn put(&self, path: &str, contents: &str) {
        let real = self.path(path);
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::fs::write(real, contents).unwrap();
    }

    pub fn get(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.path(path)).ok()
    }

    pub fn path(&self, host_path: &str) -> PathBuf {
        self.files.map(Path::new(host_path))
    }

    /// Command lines run so far, as typed.
    pub fn commands(&self) -> Vec<String> {
        self.ran.lock().unwrap().iter().map(Cmd::display).collect()
    }

    /// A snapshot of every file under the fake root (path → contents), to prove nothing was written.
    pub fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() && !p.is_symlink() {
                    walk(&p, out);
                } else {
                    out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.root.path(), &mut out);
        out.sort();
        out
    }
}

fn me() -> u32 {
    nix::unistd::getuid().as_raw()
}

impl System for FakeSystem {
    fn read(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        self.files.read(path)
    }
    fn stat(&self, path: &Path) -> Result<Option<FileStat>> {
        let mut st = self.files.stat(path)?;
        if let (Some(st), Some(&(uid, gid))) = (st.as_mut(), self.owners.lock().unwrap().get(path))
        {
            st.uid = uid;
            st.gid = gid;
        }
        Ok(st)
    }
    fn read_link(&self, path: &Path) -> Result<Option<PathBuf>> {
        self.files.read_link(path)
    }
    fn write(&self, spec: &FileSpec, contents: &[u8]) -> Result<()> {
        self.files.write(spec, contents)
    }
    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        self.files.symlink(target, link)
    }
    fn mkdir(&self, path: &Path, owner: (u32, u32), mode: u32) -> Result<()> {
        self.files.mkdir(path, owner, mode)
    }
    fn chown_chmod(&self, path: &Path, owner: (u32, u32), mode: u32) -> Result<()> {
        self.files.chown_chmod(path, owner, mode)
    }
    fn remove(&self, path: &Path) -> Result<()> {
        self.files.remove(path)
    }
    fn lock_exclusive(&self, path: &Path) -> Result<Box<dyn std::any::Any>> {
        self.files.lock_exclusive(path)
    }
    fn list_dir(&self, path: &Path) -> Result<Option<Vec<(String, FileKind)>>> {
        self.files.list_dir(path)
    }
    fn mkdir_new(&self, path: &Path, mode: u32) -> Result<()> {
        self.files.mkdir_new(path, mode)
    }
    fn create_new(&self, path: &Path, mode: u32, contents: &[u8]) -> Result<()> {
        self.files.create_new(path, mode, contents)
    }
    fn symlink_new(&self, target: &Path, link: &Path) -> Result<()> {
        self.files.symlink_new(target, link)
    }
    fn hard_link(&self, from: &Path, to: &Path) -> Result<()> {
        self.files.hard_link(from, to)
    }
    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.files.rename(from, to)
    }
    fn remove_tree(&self, path: &Path) -> Result<()> {
        self.files.remove_tree(path)
    }
    fn sync_fs(&self, _path: &Path) -> Result<()> {
        Ok(())
    }
    /// The free space the test set in `facts.var_free_mb`, for every path.
    fn free_bytes(&self, _path: &Path) -> Result<u64> {
        Ok(self.facts.var_free_mb * 1024 * 1024)
    }
    fn http_fetch(&self, url: &str, _opts: &crate::http::Options) -> Result<Vec<u8>> {
        self.http_get(url)
    }
    fn run_shared(&self, cmd: &Cmd) -> Result<CmdOutput> {
        self.shared.run(cmd, |c| self.run(c))
    }
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput> {
        self.ran.lock().unwrap().push(cmd.clone());
        for r in self.responders.lock().unwrap().iter().rev() {
            if let Some(out) = r(cmd) {
                return Ok(out);
            }
        }
        bail!("fake system: no answer scripted for `{}`", cmd.display())
    }
    // Every account maps to the test's own ids so chown works without root.
    /// Each command is answered in turn, seeing the previous one's stdout as its `stdin` (so a test can
    /// assert what flowed through the pipe); only the last output keeps its stdout, as with real pipes.
    fn run_pipeline(&self, cmds: &[Cmd]) -> Result<Vec<CmdOutput>> {
        let mut outputs: Vec<CmdOutput> = Vec::new();
        for (i, cmd) in cmds.iter().enumerate() {
            let mut cmd = cmd.clone();
            if let Some(prev) = outputs.last_mut() {
                cmd.stdin = Some(std::mem::take(&mut prev.stdout).into_bytes());
            }
            let out = self.run(&cmd)?;
            outputs.push(out);
            if i + 1 == cmds.len() {
                break;
            }
        }
        Ok(outputs)
    }
    fn uid(&self, _user: &str) -> Result<Option<u32>> {
        Ok(Some(me()))
    }
    fn gid(&self, _group: &str) -> Result<Option<u32>> {
        Ok(Some(nix::unistd::getgid().as_raw()))
    }
    fn http_get(&self, url: &str) -> Result<Vec<u8>> {
        match self.urls.lock().unwrap().get(url) {
            Some(b) => Ok(b.clone()),
            None => bail!("GET {url}: connection refused"),
        }
    }
    fn facts(&self) -> Facts {
        self.facts.clone()
    }
    fn sweep_temps(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        self.files.sweep_temps(dir)
    }
    fn env_var(&self, name: &str) -> Option<String> {
        self.env.lock().unwrap().get(name).cloned()
    }
    fn lock_holder(&self, path: &Path) -> Result<Option<i32>> {
        Ok(self
            .locks
            .lock()
            .unwrap()
            .get_mut(path)
            .and_then(|holds| holds.pop()))
    }
}
