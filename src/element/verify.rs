//! Signature check. `gpgv` is the authority; this file only prepares its keyring and reads its verdict.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use crate::system::{Cmd, System};

/// The Element release key as published at packages.element.io/element-release-key.asc
/// ("Element Releases <releases@riot.im>"). Its fingerprints are pinned below and checked by a test.
pub const BUILTIN_KEY: &str = include_str!("element-release-key.asc");
/// Primary key fingerprint of [`BUILTIN_KEY`].
pub const BUILTIN_KEY_FINGERPRINT: &str = "712BFBEE92DCA45252DB17D7C7BE97EFA179B100";
/// The signing subkey that has signed element-web tarballs since 2021.
pub const BUILTIN_SIGNING_SUBKEY: &str = "E95B7699E80B68A9EAD9A19A2BAA9B8552BD9047";

/// The keyring gpgv will trust, in binary form (gpgv does not read armor).
/// `source`: the admin's keyring file (binary or armored), or None for the built-in Element key.
pub(crate) fn keyring(sys: &dyn System, source: Option<&Path>) -> Result<Vec<u8>> {
    let (bytes, origin) = match source {
        Some(p) => (
            sys.read(p)
                .and_then(|b| b.ok_or_else(|| anyhow!("No such file or directory")))
                .with_context(|| {
                    format!(
                        "read the Element signing keyring {} (sources.element_signing_key)",
                        p.display()
                    )
                })?,
            p.display().to_string(),
        ),
        None => (
            BUILTIN_KEY.as_bytes().to_vec(),
            "built-in Element release key".into(),
        ),
    };
    to_binary(&bytes).with_context(|| format!("signing keyring {origin}"))
}

pub(crate) use crate::steps::openpgp::binary as to_binary;

/// Runs `gpgv` on `data` itself (handed over on stdin, never reopened by name: the bytes verified are the
/// bytes the caller goes on to unpack) and succeeds only on a good signature by a key in `keyring`.
/// `workdir` is a fresh private directory for the keyring and signature files. `what` names the release.
pub(crate) fn gpgv(
    sys: &dyn System,
    workdir: &Path,
    keyring: &[u8],
    sig: &[u8],
    data: &[u8],
    what: &str,
) -> Result<()> {
    let keyring_path = workdir.join("keyring.gpg");
    let sig_path = workdir.join("signature.asc");
    sys.create_new(&keyring_path, 0o600, keyring)?;
    sys.create_new(&sig_path, 0o600, sig)?;
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let cmd = Cmd::new("gpgv")
        .arg("--homedir")
        .arg(path(workdir))
        .arg("--keyring")
        .arg(path(&keyring_path))
        .args(["--status-fd", "1"])
        .arg(path(&sig_path))
        .arg("-")
        .env("LC_ALL", "C")
        .stdin(data.to_vec());
    let out = sys
        .run(&cmd)
        .with_context(|| format!("verify {what} (gpgv is in the gpgv package)"))?;
    let status = &out.stdout;
    let valid = status.lines().any(|l| l.starts_with("[GNUPG:] VALIDSIG "));
    if out.ok() && valid {
        return Ok(());
    }
    let reason = if status.lines().any(|l| l.starts_with("[GNUPG:] BADSIG ")) {
        "BAD signature: the tarball does not match its signature (corrupted or tampered with)"
    } else if status.lines().any(|l| l.starts_with("[GNUPG:] NO_PUBKEY ")) {
        "signed by a key that is not in the trusted keyring (sources.element_signing_key)"
    } else if status.lines().any(|l| l.starts_with("[GNUPG:] NODATA ")) {
        "the .asc file holds no OpenPGP signature"
    } else {
        "signature not valid"
    };
    let detail: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    bail!(
        "verify {what}: {reason}\ngpgv said:\n  {}",
        detail.join("\n  ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_key_dearmors_to_an_rsa_public_key_packet() {
        let bin = to_binary(BUILTIN_KEY.as_bytes()).unwrap();
        // New-format public-key packet (0xc6) or old-format with 2-byte length (0x99), version 4.
        assert!(bin[0] == 0x99 || bin[0] == 0xc6, "first byte {:#x}", bin[0]);
        assert_eq!(bin[3], 4);
        assert!(bin.len() > 2000, "{} bytes", bin.len());
    }

    /// Our dearmor must equal gpg's, and the embedded key must carry the pinned fingerprints
    /// (independent sources: Arch's element-web PKGBUILD validpgpkeys, element-web's install docs).
    #[test]
    fn builtin_key_matches_gpg_and_the_pinned_fingerprints() {
        let home = tempfile::tempdir().unwrap();
        let asc = home.path().join("k.asc");
        std::fs::write(&asc, BUILTIN_KEY).unwrap();
        let gpg = |args: &[&str]| {
            let out = std::process::Command::new("gpg")
                .arg("--homedir")
                .arg(home.path())
                .args(["--batch", "--quiet"])
                .args(args)
                .arg(&asc)
                .output()
                .expect("gpg is needed by the tests (apt-get install gnupg)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        assert_eq!(
            to_binary(BUILTIN_KEY.as_bytes()).unwrap(),
            gpg(&["--dearmor", "-o", "-"])
        );
        let listing = String::from_utf8(gpg(&["--with-colons", "--show-keys"])).unwrap();
        let fprs: Vec<&str> = listing
            .lines()
            .filter_map(|l| l.strip_prefix("fpr:"))
            .map(|l| l.trim_matches(':'))
            .collect();
        assert_eq!(fprs, [BUILTIN_KEY_FINGERPRINT, BUILTIN_SIGNING_SUBKEY]);
        assert!(listing.contains("Element Releases <releases@riot.im>"));
    }
}
