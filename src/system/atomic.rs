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
    let tmp = temp_path(real_path);
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

/// Marks our temp files; [`sweep_temps`] removes what a killed run left behind.
const TEMP_MARK: &str = ".mp-tmp";

/// A fresh temp name beside `real_path`: `.<name>.mp-tmp-<random>~`. Hidden (nginx's `*.conf` and
/// `sites-enabled/*` globs skip dot files) and ending in `~`, which certbot's hook runner skips and run-parts
/// refuses, so a leftover in renewal-hooks/deploy/ or a conf.d never runs or loads.
pub fn temp_path(real_path: &Path) -> PathBuf {
    let name = real_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix = Alphanumeric.sample_string(&mut rand::thread_rng(), 8);
    real_path.with_file_name(format!(".{name}{TEMP_MARK}-{suffix}~"))
}

fn is_temp(name: &str) -> bool {
    // Also the names older versions used (no `~`, or a symlink's fixed `.mp-tmp`).
    name.starts_with('.') && name.contains(TEMP_MARK)
}

/// Remove the temp files a killed run left in `dir` (call it under the run lock, so no writer of ours is
/// mid-write). Returns what it removed; a missing directory has none.
pub fn sweep_temps(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        if !is_temp(&entry.file_name().to_string_lossy()) || entry.file_type()?.is_dir() {
            continue;
        }
        fs::remove_file(entry.path())
            .with_context(|| format!("removing {}", entry.path().display()))?;
        removed.push(entry.path());
    }
    removed.sort();
    Ok(removed)
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

/// How many replaced versions of one file stay under the backup directory.
pub const BACKUPS_KEPT: usize = 5;

/// Keep the replaced version under `backup_dir/<host path>.<unix time>.<ns>` (mode 0600: it may hold
/// secrets), then prune that file's backups to the newest [`BACKUPS_KEPT`].
fn backup(real_path: &Path, host_path: &Path, backup_dir: Option<&Path>) -> Result<()> {
    let Some(backup_dir) = backup_dir else {
        return Ok(());
    };
    if !real_path.is_file() {
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // Nanoseconds: a rejected candidate and its rollback within one second must not share a name.
    let stamp = format!("{}.{:09}", now.as_secs(), now.subsec_nanos());
    let rel = host_path.strip_prefix("/").unwrap_or(host_path);
    let dest = backup_dir.join(format!("{}.{stamp}", rel.display()));
    let parent = dest
        .parent()
        .with_context(|| format!("{}: no parent directory", dest.display()))?;
    fs::create_dir_all(parent)?;
    fs::set_permissions(backup_dir, fs::Permissions::from_mode(0o700))?;
    let old = fs::read(real_path)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&dest)
        .with_context(|| format!("backing up to {}", dest.display()))?;
    file.write_all(&old).map_err(disk_full_hint)?;
    file.sync_all()?;
    let name = real_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    prune(parent, &name)
}

/// Keep the newest [`BACKUPS_KEPT`] backups of `name` in `dir`, each 0600 (older versions of this
/// program, or an admin's copy, may have left looser modes).
fn prune(dir: &Path, name: &str) -> Result<()> {
    let prefix = format!("{name}.");
    let mut stamps: Vec<(Vec<u64>, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        // `<secs>` (older versions) or `<secs>.<ns>`; anything else is another file's backup.
        let parts: Option<Vec<u64>> = rest.split('.').map(|p| p.parse().ok()).collect();
        match parts {
            Some(p) if (1..=2).contains(&p.len()) && entry.file_type()?.is_file() => {
                stamps.push((p, entry.path()))
            }
            _ => {}
        }
    }
    stamps.sort();
    let excess = stamps.len().saturating_sub(BACKUPS_KEPT);
    for (i, (_, path)) in stamps.iter().enumerate() {
        if i < excess {
            fs::remove_file(path).with_context(|| format!("pruning {}", path.display()))?;
        } else {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        }
    }
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

    #[test]
    fn backups_are_pruned_to_the_newest_few_and_stay_private() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.conf");
        let backups = dir.path().join("backup");
        // A backup in the old format with a loose mode, and another file's backup that must stay.
        fs::create_dir_all(backups.join("etc")).unwrap();
        fs::write(backups.join("etc/a.conf.1000000000"), b"ancient").unwrap();
        fs::set_permissions(
            backups.join("etc/a.conf.1000000000"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        fs::write(backups.join("etc/a.conf.d.1000000000"), b"other").unwrap();
        for i in 0..(BACKUPS_KEPT + 3) {
            let text = format!("v{i}\n");
            write_atomic(
                &target,
                &spec("/etc/a.conf", 0o644),
                text.as_bytes(),
                Some(&backups),
            )
            .unwrap();
        }
        let mut kept: Vec<_> = fs::read_dir(backups.join("etc"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.to_string_lossy().contains("a.conf.d."))
            .collect();
        kept.sort();
        assert_eq!(kept.len(), BACKUPS_KEPT, "{kept:?}");
        let newest = fs::read(kept.last().unwrap()).unwrap();
        assert_eq!(newest, format!("v{}\n", BACKUPS_KEPT + 1).as_bytes());
        for p in &kept {
            let mode = fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        assert!(backups.join("etc/a.conf.d.1000000000").exists());
    }

    #[test]
    fn temp_names_are_ignored_by_hook_runners_and_swept() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = temp_path(&dir.path().join("matrix-provision"));
        let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
        // certbot skips hooks ending in `~`; run-parts only runs [A-Za-z0-9_-]+ names.
        assert!(name.starts_with('.') && name.ends_with('~'), "{name}");
        fs::write(&tmp, b"#!/bin/sh\n").unwrap();
        fs::write(dir.path().join(".old.mp-tmp-abcdefgh"), b"").unwrap();
        fs::write(dir.path().join("matrix-provision"), b"keep").unwrap();
        let removed = sweep_temps(dir.path()).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("matrix-provision")]);
        assert!(sweep_temps(&dir.path().join("missing")).unwrap().is_empty());
    }
}
