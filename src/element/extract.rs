//! Unpacks a release tarball (`element-vX/...`) into an empty directory, refusing anything that
//! could write or point outside it. We unpack entry by entry (tar + flate2) rather than calling
//! system tar so that every entry is checked before it touches the disk and every error says
//! whether the archive or the disk is at fault.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use flate2::read::GzDecoder;
use tar::EntryType;

use crate::http::describe_io;

/// Extracts `tarball`, whose entries must all live under `top/`, into `dest` (existing, empty).
/// Files end up 0644 (0755 if executable), directories 0755: world-readable for nginx, never
/// setuid or world-writable, whatever the archive says.
pub(crate) fn extract(tarball: &Path, top: &str, dest: &Path) -> Result<()> {
    // The file lives in a temporary directory; callers name the URL, we name the file.
    let name = tarball.file_name().map_or_else(
        || tarball.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let corrupt = |e: io::Error| anyhow!("tarball {name} is corrupt or truncated: {e}");
    let file = File::open(tarball).map_err(|e| anyhow!("open {name}: {e}"))?;
    let mut archive = tar::Archive::new(GzDecoder::new(io::BufReader::new(file)));
    let mut count = 0usize;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        let raw = entry.path().map_err(corrupt)?.into_owned();
        let shown = raw.display().to_string();
        let Some(rel) = inside(&raw, top).map_err(|why| unsafe_entry(&name, &shown, &why))? else {
            continue; // the top directory itself
        };
        let target = dest.join(&rel);
        no_symlink_on_the_way(dest, &rel).map_err(|why| unsafe_entry(&name, &shown, &why))?;
        match kind {
            EntryType::Directory => {
                if !target.is_dir() {
                    fs::create_dir_all(&target)
                        .map_err(|e| describe_io(e, &format!("create {}", target.display())))?;
                }
                set_mode(&target, 0o755)?;
            }
            EntryType::Regular | EntryType::Continuous => {
                make_parent(dest, &rel)?;
                remove_existing_file(&target)?;
                let exec = entry.header().mode().map_err(corrupt)? & 0o111 != 0;
                let mode = if exec { 0o755 } else { 0o644 };
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(&target)
                    .map_err(|e| describe_io(e, &format!("create {}", target.display())))?;
                copy(&mut entry, &mut out).map_err(|e| match e {
                    CopyError::Read(e) => corrupt(e),
                    CopyError::Write(e) => describe_io(e, &format!("write {}", target.display())),
                })?;
                set_mode(&target, mode)?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| unsafe_entry(&name, &shown, "symlink without a target"))?
                    .into_owned();
                symlink_stays_inside(&rel, &link)
                    .map_err(|why| unsafe_entry(&name, &shown, &why))?;
                make_parent(dest, &rel)?;
                if fs::symlink_metadata(&target).is_ok() {
                    return Err(unsafe_entry(
                        &name,
                        &shown,
                        "symlink would replace an existing entry",
                    ));
                }
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|e| describe_io(e, &format!("create symlink {}", target.display())))?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| unsafe_entry(&name, &shown, "hard link without a target"))?
                    .into_owned();
                let from_rel = inside(&link, top)
                    .map_err(|why| {
                        unsafe_entry(&name, &shown, &format!("hard link target: {why}"))
                    })?
                    .ok_or_else(|| unsafe_entry(&name, &shown, "hard link to the top directory"))?;
                no_symlink_on_the_way(dest, &from_rel).map_err(|why| {
                    unsafe_entry(&name, &shown, &format!("hard link target: {why}"))
                })?;
                let from = dest.join(&from_rel);
                let is_file = fs::symlink_metadata(&from)
                    .map(|m| m.is_file())
                    .unwrap_or(false);
                if !is_file {
                    return Err(unsafe_entry(
                        &name,
                        &shown,
                        "hard link to something that is not an earlier regular file",
                    ));
                }
                make_parent(dest, &rel)?;
                remove_existing_file(&target)?;
                fs::hard_link(&from, &target)
                    .map_err(|e| describe_io(e, &format!("link {}", target.display())))?;
            }
            other => {
                return Err(unsafe_entry(
                    &name,
                    &shown,
                    &format!(
                        "unsupported entry type {other:?} (only files, directories and links)"
                    ),
                ))
            }
        }
        count += 1;
    }
    // Read to the end of the gzip stream so its length and CRC are checked: a tarball cut
    // after the tar end marker would otherwise pass.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(corrupt)?;
    if count == 0 {
        bail!("tarball {name} has nothing under {top}/");
    }
    Ok(())
}

fn unsafe_entry(tarball: &str, entry: &str, why: &str) -> anyhow::Error {
    anyhow!("tarball {tarball} is unsafe, refusing to install it: entry `{entry}`: {why}")
}

/// The entry's path below `top/`, or None for `top/` itself.
fn inside(path: &Path, top: &str) -> std::result::Result<Option<PathBuf>, String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains `..`".into()),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path".into()),
        }
    }
    match parts.split_first() {
        None => Err("empty path".into()),
        Some((first, _)) if first.to_str() != Some(top) => {
            Err(format!("outside the release directory {top}/"))
        }
        Some((_, [])) => Ok(None),
        Some((_, rest)) => Ok(Some(rest.iter().collect())),
    }
}

/// Refuses to create anything through a symlink made by an earlier entry (the classic
/// "symlink dir, then file inside it" escape).
fn no_symlink_on_the_way(dest: &Path, rel: &Path) -> std::result::Result<(), String> {
    let mut at = dest.to_path_buf();
    let n = rel.components().count();
    for (i, c) in rel.components().enumerate() {
        at.push(c);
        if i + 1 == n {
            break;
        }
        if let Ok(m) = fs::symlink_metadata(&at) {
            if m.file_type().is_symlink() {
                return Err(format!("goes through the symlink {}", at.display()));
            }
        }
    }
    Ok(())
}

/// A symlink may point only inside the release: a relative target whose `..` steps all come
/// first and never climb above the release directory.
fn symlink_stays_inside(rel: &Path, link: &Path) -> std::result::Result<(), String> {
    let shown = link.display();
    let mut depth = rel.components().count() as i64 - 1; // directory holding the link
    let mut descending = false;
    for c in link.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("symlink to the absolute path {shown}"))
            }
            Component::CurDir => {}
            Component::ParentDir if descending => {
                return Err(format!("symlink target {shown} has `..` after a name"))
            }
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("symlink target {shown} points outside the release"));
                }
            }
            Component::Normal(_) => descending = true,
        }
    }
    Ok(())
}

fn make_parent(dest: &Path, rel: &Path) -> Result<()> {
    if let Some(parent) = rel.parent() {
        if !parent.as_os_str().is_empty() {
            let dir = dest.join(parent);
            if !dir.is_dir() {
                fs::create_dir_all(&dir)
                    .map_err(|e| describe_io(e, &format!("create {}", dir.display())))?;
                set_mode(&dir, 0o755)?;
            }
        }
    }
    Ok(())
}

fn remove_existing_file(target: &Path) -> Result<()> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => bail!(
            "{} is a directory in the archive and a file too",
            target.display()
        ),
        Ok(_) => fs::remove_file(target).map_err(|e| anyhow!("remove {}: {e}", target.display())),
        Err(_) => Ok(()),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| anyhow!("chmod {}: {e}", path.display()))
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// io::copy, but telling a bad archive (read) from a full disk (write).
fn copy(from: &mut dyn Read, to: &mut File) -> std::result::Result<(), CopyError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
    to.flush().map_err(CopyError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_must_stay_under_the_top_dir() {
        let t = "element-v1";
        assert_eq!(inside(Path::new("element-v1/"), t), Ok(None));
        assert_eq!(
            inside(Path::new("./element-v1/a/b"), t),
            Ok(Some(PathBuf::from("a/b")))
        );
        assert!(inside(Path::new("element-v1/../x"), t).is_err());
        assert!(inside(Path::new("/etc/passwd"), t).is_err());
        assert!(inside(Path::new("other/x"), t).is_err());
        assert!(inside(Path::new("element-v1x/x"), t).is_err());
    }

    #[test]
    fn symlinks_may_not_climb_out() {
        let ok = |rel: &str, link: &str| symlink_stays_inside(Path::new(rel), Path::new(link));
        assert!(ok("a", "b").is_ok());
        assert!(ok("d/a", "../b").is_ok());
        assert!(ok("d/e/a", "../../b/c").is_ok());
        assert!(ok("a", "../b").is_err());
        assert!(ok("d/a", "../../b").is_err());
        assert!(ok("a", "/etc/passwd").is_err());
        assert!(ok("x/y/a", "x/../../..").is_err());
    }
}
