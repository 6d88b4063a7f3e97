//! The updater against [`FakeSystem`]: releases served from its URL map, gpgv answered by a script that
//! accepts exactly the tarballs the test "signed", the tree in its temp dir.

use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::*;
use crate::system::{CmdOutput, FakeSystem};

const ROOT: &str = "/var/www/element";
const API: &str = "http://releases.test/releases";

/// A gzipped release tarball: `element-{tag}/index.html` plus `extra` raw entries (header, data).
fn tarball(tag: &str, extra: Vec<(tar::Header, Vec<u8>)>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], kind: tar::EntryType| {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add(&format!("element-{tag}/"), b"", tar::EntryType::Directory);
    add(
        &format!("element-{tag}/index.html"),
        format!("<title>fake Element {tag}</title>").as_bytes(),
        tar::EntryType::Regular,
    );
    for (mut h, data) in extra {
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// A raw header with any name (tar::Header::set_path refuses the hostile ones we need).
fn raw(name: &str, kind: tar::EntryType, link: Option<&str>, size: u64) -> tar::Header {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h
}

struct Host {
    sys: FakeSystem,
    /// Tarballs gpgv accepts; every stdin gpgv saw.
    signed: Rc<RefCell<Vec<Vec<u8>>>>,
    verified: Rc<RefCell<Vec<Vec<u8>>>>,
}

impl Host {
    /// A host where this process acts as the tree's owner (not root), the tree created.
    fn new() -> Host {
        let mut sys = FakeSystem::new();
        sys.facts.is_root = false;
        std::fs::create_dir_all(sys.path(ROOT)).unwrap();
        let signed: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
        let verified: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
        let (s, v) = (signed.clone(), verified.clone());
        sys.on(move |c| {
            (c.program == "gpgv").then(|| {
                let data = c.stdin.clone().unwrap_or_default();
                v.borrow_mut().push(data.clone());
                let good = s.borrow().contains(&data);
                CmdOutput {
                    status: if good { 0 } else { 1 },
                    stdout: if good {
                        "[GNUPG:] GOODSIG x\n[GNUPG:] VALIDSIG ABCD\n".into()
                    } else {
                        "[GNUPG:] BADSIG x\n".into()
                    },
                    stderr: String::new(),
                }
            })
        });
        Host {
            sys,
            signed,
            verified,
        }
    }

    /// Publishes `tag` (signed unless `signed` is false) at tags/{tag}; `flags` go into its JSON.
    fn publish(&self, tag: &str, tarball: Vec<u8>, signed: bool, flags: &str) -> String {
        let url = format!("http://dl.test/{tag}/element-{tag}.tar.gz");
        let json = format!(
            r#"{{"tag_name":"{tag}"{flags},"assets":[
            {{"name":"element-{tag}.tar.gz","browser_download_url":"{url}"}},
            {{"name":"element-{tag}.tar.gz.asc","browser_download_url":"{url}.asc"}}]}}"#
        );
        if signed {
            self.signed.borrow_mut().push(tarball.clone());
        }
        let mut urls = self.sys.urls.borrow_mut();
        urls.insert(url.clone(), tarball);
        urls.insert(
            format!("{url}.asc"),
            b"-----BEGIN PGP SIGNATURE-----".to_vec(),
        );
        urls.insert(format!("{API}/tags/{tag}"), json.clone().into_bytes());
        json
    }

    fn release(&self, tag: &str) -> String {
        self.publish(tag, tarball(tag, vec![]), true, "")
    }

    fn set_latest(&self, json: String) {
        self.sys
            .urls
            .borrow_mut()
            .insert(format!("{API}/latest"), json.into_bytes());
    }

    fn update(&self, wanted: &str) -> Result<Outcome> {
        self.update_in(&inst(), wanted)
    }

    fn update_in(&self, inst: &Installation, wanted: &str) -> Result<Outcome> {
        update(&self.sys, inst, &source(), &Wanted::parse(wanted).unwrap())
    }

    fn live(&self) -> Option<String> {
        installed_version(&self.sys, &inst()).unwrap()
    }

    fn names(&self, dir: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.sys.path(dir))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// This test program as the fake host sees it: at its own path, executable by anyone.
fn install_self(sys: &FakeSystem) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe().unwrap();
    let at = sys.path(exe.to_str().unwrap());
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::fs::write(&at, b"this program").unwrap();
    std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(sys.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

fn inst() -> Installation {
    Installation::new(ROOT, 3)
}

fn source() -> ElementSource {
    ElementSource {
        releases_url: API.into(),
        // Never read by the fake gpgv; proves the keyring comes from here, not from a file in the tree.
        signing_key: Some(vec![0x99, 0, 1, 4]),
        ..ElementSource::default()
    }
}

fn err(r: Result<Outcome>) -> String {
    format!("{:#}", r.expect_err("expected a refusal"))
}

#[test]
fn the_lock_is_never_opened_through_a_symlink() {
    let h = Host::new();
    h.release("v1.0.0");
    let victim = h.sys.path("/etc/victim");
    std::fs::create_dir_all(victim.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&victim, h.sys.path(&format!("{ROOT}/.lock"))).unwrap();
    let msg = err(h.update("v1.0.0"));
    assert!(msg.contains(".lock is a symlink"), "{msg}");
    assert!(!victim.exists(), "the lock's target was created");
    assert_eq!(h.live(), None);

    // Pointing at an existing file of someone else's does not work either, and leaves it as it was.
    std::fs::write(&victim, "root's").unwrap();
    assert!(err(h.update("v1.0.0")).contains("is a symlink"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's");
}

#[test]
fn the_lock_must_be_a_regular_file() {
    let h = Host::new();
    h.release("v1.0.0");
    std::fs::create_dir(h.sys.path(&format!("{ROOT}/.lock"))).unwrap();
    assert!(err(h.update("v1.0.0")).contains("opening lock file"));
}

#[test]
fn root_hands_the_work_to_the_trees_owner_and_touches_nothing() {
    let mut h = Host::new();
    h.sys.facts.is_root = true;
    let exe = install_self(&h.sys);
    h.sys.owners.borrow_mut().insert(ROOT.into(), (998, 997));
    // The owner's traps: an archive/ that leads to /etc, a lock that leads to a root file.
    std::fs::create_dir_all(h.sys.path("/etc")).unwrap();
    std::os::unix::fs::symlink(h.sys.path("/etc"), h.sys.path(&format!("{ROOT}/archive"))).unwrap();
    std::os::unix::fs::symlink(h.sys.path("/etc/x"), h.sys.path(&format!("{ROOT}/.lock"))).unwrap();
    let answer = JobResult::Outcome(Outcome {
        action: Action::Installed,
        version: "v1.1.0".into(),
        previous: None,
        pruned: vec![],
        warnings: vec![],
    });
    let json = serde_json::to_string(&answer).unwrap();
    h.sys.on(move |c| {
        (c.program == "setpriv").then(|| CmdOutput {
            status: 0,
            stdout: json.clone(),
            stderr: String::new(),
        })
    });
    let before = h.sys.snapshot();
    let o = h.update("latest").unwrap();
    assert_eq!(o.version, "v1.1.0");
    assert_eq!(h.sys.snapshot(), before, "root wrote something itself");
    let ran = h.sys.ran.borrow();
    assert_eq!(ran.len(), 1, "{:?}", h.sys.commands());
    let c = &ran[0];
    assert_eq!(
        c.args[..5],
        [
            "--reuid=998",
            "--regid=997",
            "--clear-groups",
            "--no-new-privs",
            "--"
        ]
    );
    assert_eq!(c.args[5], exe.to_str().unwrap());
    assert_eq!(c.args.last().map(String::as_str), Some("element-job"));
    let job: Job = serde_json::from_slice(c.stdin.as_ref().unwrap()).unwrap();
    assert_eq!(job.root, Path::new(ROOT));
    assert!(matches!(job.op, JobOp::Update(ref w) if w == "latest"));
    assert!(
        job.keyring.is_some(),
        "the key is handed over, not read by the owner"
    );
}

#[test]
fn root_passes_on_the_owners_refusal() {
    let mut h = Host::new();
    h.sys.facts.is_root = true;
    install_self(&h.sys);
    h.sys.owners.borrow_mut().insert(ROOT.into(), (998, 998));
    h.sys.on(|c| {
        (c.program == "setpriv").then(|| CmdOutput {
            status: 1,
            stdout: String::new(),
            stderr: "error: lock file /var/www/element/.lock is a symlink\n".into(),
        })
    });
    let msg = err(h.update("latest"));
    assert!(
        msg.starts_with("lock file /var/www/element/.lock is a symlink"),
        "{msg}"
    );
    assert!(msg.contains("as uid 998"), "{msg}");
    let msg = format!("{:#}", rollback(&h.sys, &inst()).unwrap_err());
    assert!(msg.contains("as uid 998"), "{msg}");
}

#[test]
fn root_refuses_a_root_tree_with_a_part_another_user_can_write() {
    let mut h = Host::new();
    h.sys.facts.is_root = true;
    std::fs::create_dir_all(h.sys.path(&format!("{ROOT}/archive"))).unwrap();
    let archive = format!("{ROOT}/archive");
    h.sys.owners.borrow_mut().insert(ROOT.into(), (0, 0));
    h.sys.owners.borrow_mut().insert(archive.into(), (998, 998));
    let msg = err(h.update("latest"));
    assert!(msg.contains("belongs to uid 998"), "{msg}");
    assert!(msg.contains("chown -R root:root"), "{msg}");
    assert!(h.sys.commands().is_empty());
}

#[test]
fn gpgv_checks_the_very_bytes_that_are_unpacked() {
    let h = Host::new();
    let bytes = tarball("v1.0.0", vec![]);
    h.publish("v1.0.0", bytes.clone(), true, "");
    let o = h.update("v1.0.0").unwrap();
    assert_eq!(o.action, Action::Installed);
    assert_eq!(*h.verified.borrow(), vec![bytes], "gpgv saw other bytes");
    let gpgv = h.sys.ran.borrow()[0].clone();
    assert_eq!(gpgv.program, "gpgv");
    // The data comes on stdin ("-"), never as a file that could be swapped after the check.
    assert_eq!(gpgv.args.last().map(String::as_str), Some("-"));
    assert_eq!(
        h.sys.get(&format!("{ROOT}/current/index.html")).unwrap(),
        "<title>fake Element v1.0.0</title>"
    );
    // Nothing but the releases, the link and the lock stays behind; keyring and signature are gone.
    assert_eq!(h.names(ROOT), [".lock", "archive", "current"]);
    assert_eq!(h.names(&format!("{ROOT}/archive")), ["element-v1.0.0"]);
}

#[test]
fn a_bad_signature_leaves_the_live_release_and_no_leftovers() {
    let h = Host::new();
    h.release("v1.0.0");
    h.update("v1.0.0").unwrap();
    h.publish("v1.1.0", tarball("v1.1.0", vec![]), false, "");
    let msg = err(h.update("v1.1.0"));
    assert!(msg.contains("BAD signature"), "{msg}");
    assert_eq!(h.live().as_deref(), Some("v1.0.0"));
    assert_eq!(h.names(ROOT), [".lock", "archive", "current"]);
    assert_eq!(h.names(&format!("{ROOT}/archive")), ["element-v1.0.0"]);
}

#[test]
fn latest_never_moves_back_to_an_older_release() {
    let h = Host::new();
    let old = h.release("v1.0.0");
    h.release("v1.1.0");
    h.update("v1.1.0").unwrap();
    h.set_latest(old);
    let msg = err(h.update("latest"));
    assert!(msg.contains("older than the live v1.1.0"), "{msg}");
    assert!(msg.contains("--rollback"), "{msg}");
    assert_eq!(h.live().as_deref(), Some("v1.1.0"));
    let e = plan_update(&h.sys, &inst(), &source(), &Wanted::Latest).unwrap_err();
    assert!(format!("{e:#}").contains("older"), "{e:#}");
    // The admin may go back on purpose.
    assert_eq!(h.update("v1.0.0").unwrap().version, "v1.0.0");
}

#[test]
fn latest_never_takes_a_draft_or_prerelease() {
    let h = Host::new();
    h.release("v1.0.0");
    h.update("v1.0.0").unwrap();
    for (tag, flags, why) in [
        ("v1.1.0", r#","prerelease":true"#, "marked as a pre-release"),
        ("v1.1.1", r#","draft":true"#, "marked as a draft"),
        ("v1.2.0-rc.1", "", "has a pre-release tag"),
    ] {
        let json = h.publish(tag, tarball(tag, vec![]), true, flags);
        h.set_latest(json);
        let msg = err(h.update("latest"));
        assert!(msg.contains(why) && msg.contains(tag), "{msg}");
        assert!(msg.contains(&format!("--version {tag}")), "{msg}");
        assert_eq!(h.live().as_deref(), Some("v1.0.0"));
    }
    // Pinned, the same release is the admin's choice.
    assert_eq!(h.update("v1.2.0-rc.1").unwrap().version, "v1.2.0-rc.1");
}

#[test]
fn unpacking_is_bounded_by_entries_bytes_and_free_space() {
    let h = Host::new();
    h.release("v1.0.0");
    h.update("v1.0.0").unwrap();
    let many: Vec<_> = (0..5)
        .map(|i| {
            let name = format!("element-v1.1.0/f{i}");
            (
                raw(&name, tar::EntryType::Regular, None, 3),
                b"abc".to_vec(),
            )
        })
        .collect();
    h.publish("v1.1.0", tarball("v1.1.0", many), true, "");
    let mut small = inst();
    small.limits.max_entries = 4;
    let msg = err(h.update_in(&small, "v1.1.0"));
    assert!(msg.contains("more than 4 entries"), "{msg}");
    let mut small = inst();
    small.limits.max_bytes = 20;
    let msg = err(h.update_in(&small, "v1.1.0"));
    assert!(msg.contains("unpacks to more than"), "{msg}");
    assert_eq!(h.live().as_deref(), Some("v1.0.0"));
    assert_eq!(h.names(&format!("{ROOT}/archive")), ["element-v1.0.0"]);
}

#[test]
fn free_space_is_checked_before_anything_is_unpacked() {
    let mut h = Host::new();
    h.release("v1.0.0");
    h.update("v1.0.0").unwrap();
    h.release("v1.1.0");
    h.sys.facts.var_free_mb = 10;
    let msg = err(h.update("v1.1.0"));
    assert!(msg.contains("not enough free space"), "{msg}");
    assert!(msg.contains("10 MB are free"), "{msg}");
    assert_eq!(h.live().as_deref(), Some("v1.0.0"));
    assert_eq!(h.names(&format!("{ROOT}/archive")), ["element-v1.0.0"]);
}

#[test]
fn hostile_entries_are_refused_before_anything_is_written() {
    for (name, kind, link, why) in [
        (
            "element-v1.1.0/dev",
            tar::EntryType::Char,
            None,
            "device or FIFO",
        ),
        (
            "element-v1.1.0/fifo",
            tar::EntryType::Fifo,
            None,
            "device or FIFO",
        ),
        (
            "/etc/passwd",
            tar::EntryType::Regular,
            None,
            "absolute path",
        ),
        ("element-v1.1.0/../x", tar::EntryType::Regular, None, "`..`"),
        (
            "element-v1.1.0/etc",
            tar::EntryType::Symlink,
            Some("/etc"),
            "absolute path /etc",
        ),
        (
            "element-v1.1.0/up",
            tar::EntryType::Symlink,
            Some("../.."),
            "points outside the release",
        ),
        (
            "element-v1.1.0/hard",
            tar::EntryType::Link,
            Some("/etc/shadow"),
            "hard link target",
        ),
    ] {
        let h = Host::new();
        let entry = (raw(name, kind, link, 0), Vec::new());
        h.publish("v1.1.0", tarball("v1.1.0", vec![entry]), true, "");
        let msg = err(h.update("v1.1.0"));
        assert!(msg.contains("unsafe") && msg.contains(why), "{name}: {msg}");
        assert_eq!(
            h.names(&format!("{ROOT}/archive")),
            Vec::<String>::new(),
            "{name}"
        );
    }
}

#[test]
fn a_release_dir_that_is_a_symlink_is_replaced_not_followed() {
    let h = Host::new();
    // Someone else's directory that looks like a release.
    let elsewhere = h.sys.path("/usr/share/nginx/html");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("index.html"), "nginx").unwrap();
    std::fs::create_dir_all(h.sys.path(&format!("{ROOT}/archive"))).unwrap();
    std::os::unix::fs::symlink(
        &elsewhere,
        h.sys.path(&format!("{ROOT}/archive/element-v1.1.0")),
    )
    .unwrap();
    assert_eq!(releases(&h.sys, &inst()).unwrap(), Vec::<String>::new());
    h.release("v1.1.0");
    let o = h.update("v1.1.0").unwrap();
    assert_eq!(
        o.action,
        Action::Installed,
        "the link was taken for a release"
    );
    assert_eq!(
        h.names("/usr/share/nginx/html"),
        ["index.html"],
        "something was written through the link"
    );
    let st = h
        .sys
        .stat(Path::new(&format!("{ROOT}/archive/element-v1.1.0")))
        .unwrap()
        .unwrap();
    assert_eq!(st.kind, FileKind::Dir);
}

#[test]
fn an_archive_that_is_a_symlink_is_refused() {
    let h = Host::new();
    std::fs::create_dir_all(h.sys.path("/etc")).unwrap();
    std::os::unix::fs::symlink(h.sys.path("/etc"), h.sys.path(&format!("{ROOT}/archive"))).unwrap();
    h.release("v1.0.0");
    let msg = err(h.update("v1.0.0"));
    assert!(msg.contains("archive is not a directory"), "{msg}");
    assert_eq!(h.names("/etc"), Vec::<String>::new());
}

#[test]
fn the_job_runs_only_unprivileged() {
    let mut h = Host::new();
    h.sys.facts.is_root = true;
    let job = Job {
        op: JobOp::Rollback,
        root: ROOT.into(),
        keep: 3,
        max_entries: 1,
        max_bytes: 1,
        releases_url: API.into(),
        keyring: None,
        ca_bundle: None,
    };
    let e = run_job(&h.sys, &job).unwrap_err();
    assert!(e.to_string().contains("does not run as root"), "{e}");
}

/// A program under a directory closed to others (root's home) cannot be run by the owner: the installed copy
/// is used when it is the same program, else a clear error, and nothing runs.
#[test]
fn the_owner_runs_a_copy_of_this_program_it_can_reach() {
    use std::os::unix::fs::PermissionsExt;
    let mut h = Host::new();
    h.sys.facts.is_root = true;
    h.sys.owners.borrow_mut().insert(ROOT.into(), (998, 998));
    let exe = install_self(&h.sys);
    let closed = h.sys.path(exe.parent().unwrap().to_str().unwrap());
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let copy = h.sys.path("/usr/local/bin/matrix-provision");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::write(&copy, b"another version").unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let msg = err(h.update("latest"));
    assert!(
        msg.contains("cannot be run by the Element tree's owner"),
        "{msg}"
    );
    assert!(h.sys.commands().is_empty());

    std::fs::write(&copy, b"this program").unwrap();
    h.sys.on(|c| {
        (c.program == "setpriv").then(|| CmdOutput {
            status: 1,
            stdout: String::new(),
            stderr: "error: stop here".into(),
        })
    });
    assert!(err(h.update("latest")).starts_with("stop here"));
    assert_eq!(
        h.sys.ran.borrow()[0].args[5],
        "/usr/local/bin/matrix-provision"
    );
}
