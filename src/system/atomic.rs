//! The one atomic file writer. A reader (or a crash) sees the old file or the new one, never half of either.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rand::distributions::{Alphanumeric, DistString};

/// Where and how a file is written. `path` is the host path (the `System` maps it under its root).
#[derive(Debug, Clone, PartialEq)]
pub struct FileSpec {
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// Temp file beside the target (same filesystem, so rename is atomic), owner and mode set before the rename
/// so the file never exists with looser permissions, fsync of file and directory, backup of the old contents.
pub fn write_atomic(
    real_path: &Path,
    spec: &FileSpec,
    contents: &[u8],
    backup_dir: Option<&Path>,
) -> Result<()> {
    let dir = real_path
        .parent()
        .with_context(|| format!("{}: has no parent directory", spec.path.display()))?;
    if !dir.exists() {
        fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    }
    let name = real_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix = Alphanumeric.sample_string(&mut rand::thread_rng(), 8);
    let tmp = dir.join(format!(".{name}.mp-tmp-{suffix}"));
    let result = write_tmp(&tmp, spec, contents)
        .and_then(|()| backup(real_path, &spec.path, backup_dir))
        .and_then(|()| {
            fs::rename(&tmp, real_path)
                .with_context(|| format!("renaming {} into place", tmp.display()))
        })
        .and_then(|()| fsync_dir(dir));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", spec.path.display()))
}

fn write_tmp(tmp: &Path, spec: &FileSpec, contents: &[u8]) -> Result<()> {
    // 0600 at creation: secrets must never be readable, even for the instant before chmod.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents).map_err(disk_full_hint)?;
    nix::unistd::fchown(
        std::os::fd::AsRawFd::as_raw_fd(&file),
        Some(spec.uid.into()),
        Some(spec.gid.into()),
    )
    .with_context(|| format!("chown {}:{}", spec.uid, spec.gid))?;
    file.set_permissions(fs::Permissions::from_mode(spec.mode))?;
    file.sync_all().map_err(disk_full_hint)?;
    Ok(())
}

fn disk_full_hint(e: std::io::Error) -> anyhow::Error {
    if e.raw_os_error() == Some(nix::libc::ENOSPC) {
        anyhow::anyhow!("disk full: free some space and run again")
    } else {
        e.into()
    }
}

/// Keep the replaced version under `backup_dir/<host path>.<unix time>` (mode 0600: it may hold secrets).
fn backup(real_path: &Path, host_path: &Path, backup_dir: Option<&Path>) -> Result<()> {
    let Some(backup_dir) = backup_dir else {
        return Ok(());
    };
    if !real_path.is_file() {
        return Ok(());
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let rel = host_path.strip_prefix("/").unwrap_or(host_path);
    let dest = backup_dir.join(format!("{}.{stamp}", rel.display()));
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
        fs::set_permissions(backup_dir, fs::Permissions::from_mode(0o700))?;
    }
    let old = fs::read(real_path)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&dest)
        .with_context(|| format!("backing up to {}", dest.display()))?;
    file.write_all(&old).map_err(disk_full_hint)?;
    file.sync_all()?;
    Ok(())
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> (u32, u32) {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    }

    fn spec(path: &str, mode: u32) -> FileSpec {
        let (uid, gid) = me();
        FileSpec {
            path: PathBuf::from(path),
            uid,
            gid,
            mode,
        }
    }

    #[test]
    fn writes_mode_and_contents_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("etc/secret.conf");
        write_atomic(&target, &spec("/etc/secret.conf", 0o640), b"x=1\n", None).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"x=1\n");
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        let names: Vec<_> = fs::read_dir(target.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret.conf")]);
    }

    #[test]
    fn backs_up_replaced_contents_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.conf");
        let backups = dir.path().join("backup");
        write_atomic(
            &target,
            &spec("/etc/a.conf", 0o644),
            b"old\n",
            Some(&backups),
        )
        .unwrap();
        write_atomic(
            &target,
            &spec("/etc/a.conf", 0o644),
            b"new\n",
            Some(&backups),
        )
        .unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new\n");
        let saved: Vec<_> = fs::read_dir(backups.join("etc")).unwrap().collect();
        assert_eq!(saved.len(), 1, "only the replaced version is backed up");
        let path = saved[0].as_ref().unwrap().path();
        assert_eq!(fs::read(&path).unwrap(), b"old\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn failure_leaves_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.conf");
        fs::write(&target, b"old").unwrap();
        // A backup dir below a regular file cannot be created: the write fails after the temp file exists.
        let blocker = dir.path().join("blocker");
        fs::write(&blocker, b"").unwrap();
        let err = write_atomic(
            &target,
            &spec("/etc/a.conf", 0o644),
            b"new",
            Some(&blocker.join("b")),
        );
        assert!(err.is_err());
        assert_eq!(fs::read(&target).unwrap(), b"old");
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, vec!["a.conf", "blocker"]);
    }
}
