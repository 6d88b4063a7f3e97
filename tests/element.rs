//! Element updater against fake releases served on 127.0.0.1 (see tests/support/element-fixtures.sh).

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use matrix_provision::element::{
    self, installed_version, plan_rollback, plan_update, releases, rollback, update, Action,
    ElementSource, Installation, Plan, Wanted,
};
use matrix_provision::system::RealSystem;
use support::{dead_port, fixtures};

fn source() -> ElementSource {
    let f = fixtures();
    ElementSource {
        releases_url: f.releases_url(),
        signing_keyring: Some(f.keyring()),
        ..Default::default()
    }
}

fn sys() -> RealSystem {
    RealSystem::new("/")
}

/// A fresh install root, as apply leaves it.
fn installation(keep: u32) -> (tempfile::TempDir, Installation) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("element");
    fs::create_dir(&root).unwrap();
    (dir, Installation::new(root, keep))
}

fn pinned(tag: &str) -> Wanted {
    Wanted::Pinned(tag.to_string())
}

fn current_target(inst: &Installation) -> PathBuf {
    fs::read_link(inst.root.join("current")).unwrap()
}

fn served_index(inst: &Installation) -> String {
    fs::read_to_string(inst.root.join("current/index.html")).unwrap()
}

/// No extraction dir, download dir or half-made symlink may survive a run.
fn assert_no_leftovers(inst: &Installation) {
    let names = |d: &Path| -> Vec<String> {
        fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    for n in names(&inst.root) {
        assert!(
            !n.starts_with(".download-") && !n.starts_with("current.tmp-"),
            "leftover {n} in the install root"
        );
    }
    for n in names(&inst.root.join("archive")) {
        assert!(n.starts_with("element-v"), "leftover {n} in archive/");
    }
}

fn install_first(inst: &Installation) {
    let o = update(&sys(), inst, &source(), &pinned("v1.0.0")).unwrap();
    assert_eq!(o.action, Action::Installed);
}

#[test]
fn fresh_install_of_latest() {
    let (_d, inst) = installation(3);
    assert_eq!(installed_version(&sys(), &inst).unwrap(), None);
    let plan = plan_update(&sys(), &inst, &source(), &Wanted::Latest).unwrap();
    assert_eq!(
        plan,
        Plan::Install {
            from: None,
            to: "v1.1.0".into()
        }
    );
    assert!(plan.is_change());

    let o = update(&sys(), &inst, &source(), &Wanted::Latest).unwrap();
    assert_eq!(o.action, Action::Installed);
    assert_eq!(o.version, "v1.1.0");
    assert_eq!(o.previous, None);
    assert!(o.changed());
    assert_eq!(
        installed_version(&sys(), &inst).unwrap().as_deref(),
        Some("v1.1.0")
    );
    assert_eq!(current_target(&inst), Path::new("archive/element-v1.1.0"));
    assert!(served_index(&inst).contains("fake Element v1.1.0"));
    assert_eq!(
        fs::read_to_string(inst.root.join("current/version")).unwrap(),
        "v1.1.0\n"
    );

    // The release stays as shipped: our config.json lives outside the tree (nginx serves it from there).
    assert!(fs::symlink_metadata(inst.root.join("current/config.json")).is_err());
    assert!(inst.root.join("current/config.sample.json").is_file());

    // World-readable for nginx, nothing writable by others.
    let mode = |p: &str| {
        fs::metadata(inst.root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("archive/element-v1.1.0"), 0o755);
    assert_eq!(mode("archive/element-v1.1.0/bundles"), 0o755);
    assert_eq!(mode("archive/element-v1.1.0/index.html"), 0o644);
    assert_eq!(mode("archive/element-v1.1.0/bundles/app.js"), 0o644);
    assert_eq!(releases(&sys(), &inst).unwrap(), ["v1.1.0"]);
    assert_no_leftovers(&inst);
}

#[test]
fn already_current_changes_nothing() {
    let (_d, inst) = installation(3);
    update(&sys(), &inst, &source(), &Wanted::Latest).unwrap();
    let before = fs::symlink_metadata(inst.root.join("current")).unwrap();

    assert_eq!(
        plan_update(&sys(), &inst, &source(), &Wanted::Latest).unwrap(),
        Plan::UpToDate {
            version: "v1.1.0".into()
        }
    );
    let o = update(&sys(), &inst, &source(), &Wanted::Latest).unwrap();
    assert_eq!(o.action, Action::AlreadyCurrent);
    assert!(!o.changed());
    assert_eq!(o.version, "v1.1.0");
    assert!(o.to_string().contains("already current"), "{o}");
    let after = fs::symlink_metadata(inst.root.join("current")).unwrap();
    assert_eq!(
        before.ino(),
        after.ino(),
        "current was replaced on a no-op run"
    );

    // A pinned version that is live needs no network at all.
    let offline = ElementSource {
        releases_url: format!("http://127.0.0.1:{}/releases", dead_port()),
        ..source()
    };
    let o = update(&sys(), &inst, &offline, &pinned("v1.1.0")).unwrap();
    assert_eq!(o.action, Action::AlreadyCurrent);
    assert!(!plan_update(&sys(), &inst, &offline, &pinned("v1.1.0"))
        .unwrap()
        .is_change());
}

#[test]
fn pinned_version_is_installed_not_latest() {
    let (_d, inst) = installation(3);
    assert_eq!(
        plan_update(&sys(), &inst, &source(), &pinned("v1.0.0")).unwrap(),
        Plan::Install {
            from: None,
            to: "v1.0.0".into()
        }
    );
    let o = update(&sys(), &inst, &source(), &pinned("v1.0.0")).unwrap();
    assert_eq!(
        (o.action, o.version.as_str()),
        (Action::Installed, "v1.0.0")
    );
    assert!(served_index(&inst).contains("v1.0.0"));
    assert_eq!(releases(&sys(), &inst).unwrap(), ["v1.0.0"]);
}

#[test]
fn update_from_first_to_second_release() {
    let (_d, inst) = installation(3);
    install_first(&inst);
    assert_eq!(
        plan_update(&sys(), &inst, &source(), &Wanted::Latest).unwrap(),
        Plan::Install {
            from: Some("v1.0.0".into()),
            to: "v1.1.0".into()
        }
    );
    let o = update(&sys(), &inst, &source(), &Wanted::Latest).unwrap();
    assert_eq!(o.action, Action::Installed);
    assert_eq!(o.version, "v1.1.0");
    assert_eq!(o.previous.as_deref(), Some("v1.0.0"));
    assert!(o.pruned.is_empty());
    assert!(
        o.to_string()
            .contains("v1.1.0 installed and live (was v1.0.0)"),
        "{o}"
    );
    assert!(served_index(&inst).contains("v1.1.0"));
    assert_eq!(releases(&sys(), &inst).unwrap(), ["v1.0.0", "v1.1.0"]);
    assert_no_leftovers(&inst);
}

#[test]
fn rollback_switches_to_the_previous_release_and_forward_again_offline() {
    let (_d, inst) = installation(3);
    install_first(&inst);
    update(&sys(), &inst, &source(), &Wanted::Latest).unwrap();

    assert_eq!(
        plan_rollback(&sys(), &inst).unwrap(),
        Plan::Switch {
            from: Some("v1.1.0".into()),
            to: "v1.0.0".into()
        }
    );
    let o = rollback(&sys(), &inst).unwrap();
    assert_eq!(o.action, Action::RolledBack);
    assert_eq!(o.version, "v1.0.0");
    assert_eq!(o.previous.as_deref(), Some("v1.1.0"));
    assert!(served_index(&inst).contains("v1.0.0"));
    assert_eq!(
        releases(&sys(), &inst).unwrap(),
        ["v1.0.0", "v1.1.0"],
        "rollback deleted a release"
    );

    let e = rollback(&sys(), &inst).unwrap_err();
    assert!(
        format!("{e:#}").contains("no Element release older than v1.0.0"),
        "{e:#}"
    );
    assert!(served_index(&inst).contains("v1.0.0"));

    // Going forward again reuses the unpacked release: no network needed.
    let offline = ElementSource {
        releases_url: format!("http://127.0.0.1:{}/releases", dead_port()),
        ..source()
    };
    assert_eq!(
        plan_update(&sys(), &inst, &offline, &pinned("v1.1.0")).unwrap(),
        Plan::Switch {
            from: Some("v1.0.0".into()),
            to: "v1.1.0".into()
        }
    );
    let o = update(&sys(), &inst, &offline, &pinned("v1.1.0")).unwrap();
    assert_eq!(o.action, Action::Switched);
    assert!(served_index(&inst).contains("v1.1.0"));
}

#[test]
fn rollback_with_nothing_installed_fails_clearly() {
    let (_d, inst) = installation(3);
    let e = rollback(&sys(), &inst).unwrap_err();
    assert!(
        format!("{e:#}").contains("no Element release is installed"),
        "{e:#}"
    );
}

#[test]
fn retention_keeps_the_newest_releases() {
    let (_d, inst) = installation(2);
    for tag in ["v0.9.0", "v1.0.0"] {
        update(&sys(), &inst, &source(), &pinned(tag)).unwrap();
    }
    let o = update(&sys(), &inst, &source(), &Wanted::Latest).unwrap();
    assert_eq!(o.pruned, ["v0.9.0"]);
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    assert!(o.to_string().contains("removed old releases v0.9.0"), "{o}");
    assert_eq!(releases(&sys(), &inst).unwrap(), ["v1.0.0", "v1.1.0"]);
}

#[test]
fn retention_never_deletes_the_live_release() {
    let (_d, inst) = installation(2);
    update(&sys(), &inst, &source(), &Wanted::Latest).unwrap();
    update(&sys(), &inst, &source(), &pinned("v1.0.0")).unwrap();
    // Pinning the oldest: it stays because it is live, plus the newest other one.
    let o = update(&sys(), &inst, &source(), &pinned("v0.9.0")).unwrap();
    assert_eq!(o.version, "v0.9.0");
    assert_eq!(o.pruned, ["v1.0.0"]);
    assert_eq!(releases(&sys(), &inst).unwrap(), ["v0.9.0", "v1.1.0"]);
    assert!(served_index(&inst).contains("v0.9.0"));
}

/// Installs v1.0.0, then asks for `wanted` from `src` and expects an error mentioning every
/// one of `needles`; the live release, the archive and the install root must be as before.
fn fails_cleanly(src: &ElementSource, wanted: &Wanted, needles: &[&str]) -> String {
    let (_d, inst) = installation(3);
    install_first(&inst);
    let e = update(&sys(), &inst, src, wanted).unwrap_err();
    let msg = format!("{e:#}");
    for n in needles {
        assert!(msg.contains(n), "error lacks {n:?}:\n{msg}");
    }
    assert_eq!(current_target(&inst), Path::new("archive/element-v1.0.0"));
    assert!(served_index(&inst).contains("v1.0.0"));
    assert_eq!(releases(&sys(), &inst).unwrap(), ["v1.0.0"]);
    assert_no_leftovers(&inst);
    msg
}

fn url_of(tag: &str) -> String {
    format!("{}/download/{tag}/element-{tag}.tar.gz", fixtures().base())
}

#[test]
fn tampered_tarball_is_refused() {
    let t = "v1.2.0-tampered";
    fails_cleanly(&source(), &pinned(t), &["BAD signature", t, &url_of(t)]);
}

#[test]
fn signature_by_an_unknown_key_is_refused() {
    let t = "v1.2.0-wrongkey";
    fails_cleanly(
        &source(),
        &pinned(t),
        &["not in the trusted keyring", t, &url_of(t)],
    );
}

#[test]
fn the_builtin_element_key_does_not_trust_the_test_key() {
    let src = ElementSource {
        signing_keyring: None,
        ..source()
    };
    fails_cleanly(
        &src,
        &Wanted::Latest,
        &["not in the trusted keyring", "v1.1.0"],
    );
}

#[test]
fn armored_keyring_works_too() {
    let (_d, inst) = installation(3);
    let src = ElementSource {
        signing_keyring: Some(fixtures().keyring_armored()),
        ..source()
    };
    assert_eq!(
        update(&sys(), &inst, &src, &Wanted::Latest)
            .unwrap()
            .version,
        "v1.1.0"
    );
}

#[test]
fn missing_keyring_file_is_named() {
    let src = ElementSource {
        signing_keyring: Some(PathBuf::from("/nonexistent/element.gpg")),
        ..source()
    };
    fails_cleanly(
        &src,
        &Wanted::Latest,
        &["/nonexistent/element.gpg", "sources.element_signing_key"],
    );
}

#[test]
fn release_without_signature_asset_is_refused() {
    let t = "v1.2.0-unsigned";
    fails_cleanly(
        &source(),
        &pinned(t),
        &[
            "no signature asset",
            "refusing to install an unsigned release",
            t,
        ],
    );
}

#[test]
fn signature_that_404s_is_refused() {
    let t = "v1.2.0-sigmissing";
    let sig = format!("{}.asc", url_of(t));
    fails_cleanly(
        &source(),
        &pinned(t),
        &["HTTP 404", &sig, "signature of Element v1.2.0-sigmissing"],
    );
}

#[test]
fn corrupt_tarball_is_refused() {
    let t = "v1.2.0-corrupt";
    fails_cleanly(
        &source(),
        &pinned(t),
        &["corrupt or truncated", t, &url_of(t)],
    );
}

#[test]
fn truncated_tarball_is_refused() {
    let t = "v1.2.0-truncated";
    fails_cleanly(&source(), &pinned(t), &["corrupt or truncated", t]);
}

#[test]
fn path_traversal_tarball_is_refused() {
    let t = "v1.2.0-traversal";
    let msg = fails_cleanly(&source(), &pinned(t), &["unsafe", "`..`", t]);
    assert!(msg.contains("escaped.txt"), "{msg}");
}

#[test]
fn symlink_out_of_the_release_is_refused() {
    let t = "v1.2.0-symlink";
    fails_cleanly(&source(), &pinned(t), &["unsafe", "absolute path /etc", t]);
}

#[test]
fn unknown_pinned_release_is_a_404_naming_url_and_setting() {
    let url = format!("{}/tags/v9.9.9", fixtures().releases_url());
    fails_cleanly(
        &source(),
        &pinned("v9.9.9"),
        &["HTTP 404", &url, "check sources.element_releases_url"],
    );
    let (_d, inst) = installation(3);
    let e = plan_update(&sys(), &inst, &source(), &pinned("v9.9.9")).unwrap_err();
    assert!(format!("{e:#}").contains("HTTP 404"));
}

#[test]
fn server_down_is_connection_refused() {
    let src = ElementSource {
        releases_url: format!("http://127.0.0.1:{}/releases", dead_port()),
        ..source()
    };
    fails_cleanly(
        &src,
        &Wanted::Latest,
        &[
            "connection refused",
            "/releases/latest",
            "check sources.element_releases_url",
        ],
    );
}

#[test]
fn download_cut_short_is_refused() {
    // A release whose tarball URL drops the connection halfway (see support::answer).
    let f = fixtures();
    let tag = "v1.1.0-short";
    let dir = f.www().join("releases/tags");
    let json = format!(
        r#"{{"tag_name":"{tag}","assets":[
            {{"name":"element-{tag}.tar.gz","browser_download_url":"{b}/short/download/v1.1.0/element-v1.1.0.tar.gz"}},
            {{"name":"element-{tag}.tar.gz.asc","browser_download_url":"{b}/download/v1.1.0/element-v1.1.0.tar.gz.asc"}}]}}"#,
        b = f.base()
    );
    fs::write(dir.join(tag), json).unwrap();
    fails_cleanly(
        &source(),
        &pinned(tag),
        &["download Element v1.1.0-short", "/short/download/"],
    );
}

#[test]
fn leftovers_of_a_killed_run_are_swept() {
    let (_d, inst) = installation(3);
    install_first(&inst);
    fs::create_dir_all(inst.root.join("archive/.element-v1.1.0.tmp-dead/sub")).unwrap();
    fs::create_dir_all(inst.root.join(".download-v1.1.0-dead")).unwrap();
    std::os::unix::fs::symlink("archive/element-v1.1.0", inst.root.join("current.tmp-dead"))
        .unwrap();
    update(&sys(), &inst, &source(), &Wanted::Latest).unwrap();
    assert_no_leftovers(&inst);
}

#[test]
fn partial_release_dir_from_update_sh_is_replaced() {
    let (_d, inst) = installation(3);
    install_first(&inst);
    // update.sh extracted in place; a crash leaves a directory without index.html.
    fs::create_dir_all(inst.root.join("archive/element-v1.1.0/bundles")).unwrap();
    let o = update(&sys(), &inst, &source(), &Wanted::Latest).unwrap();
    assert_eq!(o.action, Action::Installed);
    assert!(served_index(&inst).contains("v1.1.0"));
}

#[test]
fn update_sh_layout_is_understood_and_taken_over() {
    let (_d, inst) = installation(3);
    install_first(&inst);
    // update.sh made an absolute link.
    let abs = inst.root.join("archive/element-v1.0.0");
    let cur = inst.root.join("current");
    fs::remove_file(&cur).unwrap();
    std::os::unix::fs::symlink(&abs, &cur).unwrap();
    assert_eq!(
        installed_version(&sys(), &inst).unwrap().as_deref(),
        Some("v1.0.0")
    );
    update(&sys(), &inst, &source(), &Wanted::Latest).unwrap();
    assert_eq!(current_target(&inst), Path::new("archive/element-v1.1.0"));
}

#[test]
fn current_that_is_a_directory_is_an_error_not_a_guess() {
    let (_d, inst) = installation(3);
    fs::create_dir(inst.root.join("current")).unwrap();
    let e = installed_version(&sys(), &inst).unwrap_err();
    assert!(e.to_string().contains("is not a symlink"), "{e}");
    let e = update(&sys(), &inst, &source(), &Wanted::Latest).unwrap_err();
    assert!(format!("{e:#}").contains("is not a symlink"), "{e:#}");
    assert!(inst.root.join("current").is_dir());
}

#[test]
fn install_root_is_created_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let inst = Installation::new(dir.path().join("a/b/element"), 3);
    let o = element::update(&sys(), &inst, &source(), &Wanted::Latest).unwrap();
    assert_eq!(o.version, "v1.1.0");
}

#[test]
fn concurrent_runs_serialize_on_the_lock() {
    let (_d, inst) = installation(3);
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let inst = inst.clone();
            std::thread::spawn(move || {
                update(&sys(), &inst, &source(), &Wanted::Latest)
                    .unwrap()
                    .action
            })
        })
        .collect();
    let mut actions: Vec<Action> = runs.into_iter().map(|h| h.join().unwrap()).collect();
    actions.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(actions, [Action::AlreadyCurrent, Action::Installed]);
    assert_eq!(releases(&sys(), &inst).unwrap(), ["v1.1.0"]);
    assert_no_leftovers(&inst);
}

/// Root on a tree another user owns does nothing there itself: `element-update` (the real binary, as
/// root) hands the work to the owner, so everything new belongs to that user, and a `.lock` the owner
/// pointed at a file of root's is refused rather than created. Needs root; elsewhere there is nothing to run.
#[test]
fn as_root_the_update_runs_as_the_trees_owner() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: nothing to hand over");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("element");
    fs::create_dir(&root).unwrap();
    let (uid, gid) = (65534, 65534); // nobody:nogroup
    std::os::unix::fs::chown(&root, Some(uid), Some(gid)).unwrap();
    let f = fixtures();
    let cfg = dir.path().join("host.toml");
    fs::write(
        &cfg,
        support::host_toml(&f.releases_url(), &f.keyring(), "latest", true),
    )
    .unwrap();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_matrix-provision"))
            .arg("element-update")
            .arg("--config")
            .arg(&cfg)
            .arg("--root")
            .arg(&root)
            .output()
            .unwrap()
    };

    // The hostile owner's lock: a symlink to a file root would create.
    let target = dir.path().join("root-owned-file");
    std::os::unix::fs::symlink(&target, root.join(".lock")).unwrap();
    std::os::unix::fs::lchown(root.join(".lock"), Some(uid), Some(gid)).unwrap();
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a symlinked .lock was used");
    assert!(stderr.contains("is a symlink"), "{stderr}");
    assert!(stderr.contains("as uid 65534"), "{stderr}");
    assert!(!target.exists(), "root created the lock's target");
    fs::remove_file(root.join(".lock")).unwrap();

    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("v1.1.0 installed"));
    let mut stack = vec![
        root.join("archive"),
        root.join("current"),
        root.join(".lock"),
    ];
    let mut seen = 0;
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (uid, gid),
            "{} owned by {}:{}",
            p.display(),
            m.uid(),
            m.gid()
        );
        seen += 1;
        if m.is_dir() {
            stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(seen >= 8, "walked only {seen} entries");
}
