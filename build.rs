//! Puts the git commit into `matrix-provision --version`, so a bug report names the exact build.
//! Outside a git checkout (a source tarball, a packaging chroot) the version says "unknown commit"
//! instead of failing the build; MP_GIT_COMMIT overrides both (e.g. for a build from an exported tree).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=MP_GIT_COMMIT");
    // HEAD changes on checkout, the branch's ref on commit (packed-refs after a gc). Not the index:
    // every `git status` touches it, and rebuilding the crate each time would cost more than "-dirty" is worth.
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watch.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for path in watch {
        // A path that does not exist would make cargo rerun this script on every build.
        match git(&["rev-parse", "--git-path", &path]) {
            Some(p) if std::path::Path::new(&p).exists() => println!("cargo:rerun-if-changed={p}"),
            _ => {}
        }
    }
    let commit = std::env::var("MP_GIT_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    let version = std::env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    let long = match commit {
        Some(c) => format!("{version} (commit {c})"),
        None => format!("{version} (unknown commit: not built from a git checkout)"),
    };
    println!("cargo:rustc-env=MP_LONG_VERSION={long}");
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
