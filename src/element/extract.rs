//! Unpacks a release tarball (`element-vX/...`) into an empty directory, refusing anything that
//! could write or point outside it. We unpack entry by entry (tar + flate2) rather than calling
//! system tar so that every entry is checked before it touches the disk and every error says
//! whether the archive or the disk is at fault. The tarball is the in-memory copy whose signature
//! was checked: nothing is read back by name. A first pass checks every entry and adds up what
//! unpacking would take (bounded by [`Limits`], compared with the free space) before the second pass
//! writes anything, through the [`System`] seam only.

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use flate2::read::GzDecoder;
use tar::EntryType;

use crate::system::{FileKind, System};

/// The most a release may unpack to. Element Web releases are ~3 000 entries and ~100 MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_entries: u64,
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 50_000,
            max_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// What a tarball unpacks to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Size {
    pub entries: u64,
    pub bytes: u64,
}

/// Checks every entry of `tarball` (must all live under `top/`, stay inside it, be files, directories or
/// links) against `limits` without writing anything.
pub(crate) fn scan(tarball: &[u8], name: &str, top: &str, limits: Limits) -> Result<Size> {
    walk(tarball, name, top, limits, None)
}

/// Unpacks `tarball` into `dest` (existing, empty). Files end up 0644 (0755 if executable),
/// directories 0755: world-readable for nginx, never setuid or world-writable, whatever the archive says.
pub(crate) fn extract(
    sys: &dyn System,
    tarball: &[u8],
    name: &str,
    top: &str,
    dest: &Path,
    limits: Limits,
) -> Result<Size> {
    walk(tarball, name, top, limits, Some((sys, dest)))
}

fn walk(
    tarball: &[u8],
    name: &str,
    top: &str,
    limits: Limits,
    out: Option<(&dyn System, &Path)>,
) -> Result<Size> {
    let corrupt = |e: io::Error| anyhow!("tarball {name} is corrupt or truncated: {e}");
    let mut archive = tar::Archive::new(GzDecoder::new(tarball));
    let mut size = Size::default();
    let mut count = 0usize;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let kind = entry.header().entry_type();
        // Counted before anything else, extension headers too: a bomb of tiny entries stops here.
        size.entries += 1;
        size.bytes += entry.header().entry_size().map_err(corrupt)?;
        if size.entries > limits.max_entries {
            bail!(
                "tarball {name} has more than {} entries; refusing to unpack it (not an Element Web release?)",
                limits.max_entries
            );
        }
        if size.bytes > limits.max_bytes {
            bail!(
                "tarball {name} unpacks to more than {} MB; refusing to unpack it (not an Element Web release?)",
                limits.max_bytes / (1024 * 1024)
            );
        }
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        let raw = entry.path().map_err(corrupt)?.into_owned();
        let shown = raw.display().to_string();
        let bad = |why: &str| unsafe_entry(name, &shown, why);
        let Some(rel) = inside(&raw, top).map_err(|why| bad(&why))? else {
            continue; // the top directory itself
        };
        let link = match kind {
            EntryType::Directory | EntryType::Regular | EntryType::Continuous => None,
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| bad("symlink without a target"))?
                    .into_owned();
                symlink_stays_inside(&rel, &link).map_err(|why| bad(&why))?;
                Some(link)
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| bad("hard link without a target"))?
                    .into_owned();
                let from_rel = inside(&link, top)
                    .map_err(|why| bad(&format!("hard link target: {why}")))?
                    .ok_or_else(|| bad("hard link to the top directory"))?;
                Some(from_rel)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                return Err(bad(&format!(
                    "device or FIFO entry ({kind:?}); a web release has only files, directories and links"
                )))
            }
            other => {
                return Err(bad(&format!(
                    "unsupported entry type {other:?} (only files, directories and links)"
                )))
            }
        };
        count += 1;
        let Some((sys, dest)) = out else {
            continue;
        };
        let target = dest.join(&rel);
        no_symlink_on_the_way(sys, dest, &rel).map_err(|why| bad(&why))?;
        match (kind, link) {
            (EntryType::Directory, _) => match sys.stat(&target)? {
                Some(st) if st.kind == FileKind::Dir => {}
                Some(_) => return Err(bad("a directory where the archive already has a file")),
                None => make_dirs(sys, dest, &rel)?,
            },
            (EntryType::Symlink, Some(link)) => {
                make_parent(sys, dest, &rel)?;
                if sys.stat(&target)?.is_some() {
                    return Err(bad("symlink would replace an existing entry"));
                }
                sys.symlink_new(&link, &target)?;
            }
            (EntryType::Link, Some(from_rel)) => {
                no_symlink_on_the_way(sys, dest, &from_rel)
                    .map_err(|why| bad(&format!("hard link target: {why}")))?;
                let from = dest.join(&from_rel);
                if !sys.stat(&from)?.is_some_and(|st| st.kind == FileKind::File) {
                    return Err(bad(
                        "hard link to something that is not an earlier regular file",
                    ));
                }
                make_parent(sys, dest, &rel)?;
                remove_existing_file(sys, &target)?;
                sys.hard_link(&from, &target)?;
            }
            _ => {
                make_parent(sys, dest, &rel)?;
                remove_existing_file(sys, &target)?;
                let exec = entry.header().mode().map_err(corrupt)? & 0o111 != 0;
                let mode = if exec { 0o755 } else { 0o644 };
                let mut data = Vec::new();
                entry.read_to_end(&mut data).map_err(corrupt)?;
                sys.create_new(&target, mode, &data)?;
            }
        }
    }
    // Read to the end of the gzip stream so its length and CRC are checked: a tarball cut
    // after the tar end marker would otherwise pass.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(corrupt)?;
    if count == 0 {
        bail!("tarball {name} has nothing under {top}/");
    }
    Ok(size)
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
fn no_symlink_on_the_way(
    sys: &dyn System,
    dest: &Path,
    rel: &Path,
) -> std::result::Result<(), String> {
    let mut at = dest.to_path_buf();
    let n = rel.components().count();
    for (i, c) in rel.components().enumerate() {
        at.push(c);
        if i + 1 == n {
            break;
        }
        match sys.stat(&at) {
            Ok(Some(st)) if st.kind == FileKind::Symlink => {
                return Err(format!("goes through the symlink {}", at.display()))
            }
            Ok(Some(st)) if st.kind != FileKind::Dir => {
                return Err(format!("goes through the non-directory {}", at.display()))
            }
            Err(e) => return Err(format!("{e:#}")),
            _ => {}
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

fn make_parent(sys: &dyn System, dest: &Path, rel: &Path) -> Result<()> {
    match rel.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => make_dirs(sys, dest, parent),
        _ => Ok(()),
    }
}

/// Creates the missing directories of `rel` below `dest`, one mkdir at a time (never through a link:
/// no_symlink_on_the_way checked every component that exists).
fn make_dirs(sys: &dyn System, dest: &Path, rel: &Path) -> Result<()> {
    let mut at = dest.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match sys.stat(&at)? {
            Some(st) if st.kind == FileKind::Dir => {}
            Some(_) => bail!("{} is in the way of a directory", at.display()),
            None => sys.mkdir_new(&at, 0o755)?,
        }
    }
    Ok(())
}

fn remove_existing_file(sys: &dyn System, target: &Path) -> Result<()> {
    match sys.stat(target)? {
        Some(st) if st.kind == FileKind::Dir => bail!(
            "{} is a directory in the archive and a file too",
            target.display()
        ),
        Some(_) => sys.remove(target),
        None => Ok(()),
    }
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
