//! Signature check. `gpgv` is the authority; this file only prepares its keyring and reads its verdict.

use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

/// The Element release key as published at packages.element.io/element-release-key.asc
/// ("Element Releases <releases@riot.im>"). Its fingerprints are pinned below and checked by a test.
pub const BUILTIN_KEY: &str = include_str!("element-release-key.asc");
/// Primary key fingerprint of [`BUILTIN_KEY`].
pub const BUILTIN_KEY_FINGERPRINT: &str = "712BFBEE92DCA45252DB17D7C7BE97EFA179B100";
/// The signing subkey that has signed element-web tarballs since 2021.
pub const BUILTIN_SIGNING_SUBKEY: &str = "E95B7699E80B68A9EAD9A19A2BAA9B8552BD9047";

/// Writes the keyring gpgv will trust to `dest`, in binary form (gpgv does not read armor).
/// `source`: the admin's keyring file (binary or armored), or None for the built-in Element key.
pub(crate) fn write_keyring(source: Option<&Path>, dest: &Path) -> Result<()> {
    let (bytes, origin) = match source {
        Some(p) => (
            std::fs::read(p).with_context(|| {
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
    let binary = to_binary(&bytes).with_context(|| format!("signing keyring {origin}"))?;
    std::fs::write(dest, binary)
        .map_err(|e| crate::http::describe_io(e, &format!("write {}", dest.display())))
}

/// Accepts a binary keyring as is and dearmors ASCII-armored key blocks (one or several).
pub(crate) fn to_binary(bytes: &[u8]) -> Result<Vec<u8>> {
    let text_start = bytes.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = text_start else {
        bail!("is empty");
    };
    if !bytes[start..].starts_with(b"-----BEGIN PGP") {
        // OpenPGP packets start with a tag byte that has the high bit set.
        if bytes[start] & 0x80 == 0 {
            bail!("is neither an armored (-----BEGIN PGP PUBLIC KEY BLOCK-----) nor a binary OpenPGP keyring");
        }
        return Ok(bytes.to_vec());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| anyhow!("armored keyring is not text"))?;
    let mut out = Vec::new();
    let mut lines = text.lines().map(str::trim_end);
    let mut blocks = 0;
    while let Some(line) = lines.next() {
        if !line.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
            continue;
        }
        // Armor headers ("Version: ...") run until the first blank line.
        let mut b64 = String::new();
        let mut in_headers = true;
        let mut ended = false;
        for l in lines.by_ref() {
            if l.starts_with("-----END PGP PUBLIC KEY BLOCK-----") {
                ended = true;
                break;
            }
            if in_headers {
                if l.is_empty() {
                    in_headers = false;
                } else if !l.contains(": ") {
                    // No header section at all: this is already data.
                    in_headers = false;
                    b64.push_str(l);
                }
                continue;
            }
            if l.starts_with('=') {
                continue; // CRC24 line; gpgv checks the packets themselves
            }
            b64.push_str(l.trim());
        }
        if !ended {
            bail!("armored key block has no END line (truncated?)");
        }
        out.extend(base64_decode(&b64)?);
        blocks += 1;
    }
    if blocks == 0 {
        bail!("has no PGP PUBLIC KEY BLOCK");
    }
    Ok(out)
}

fn base64_decode(s: &str) -> Result<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some((c - b'A') as u32),
            b'a'..=b'z' => Some((c - b'a' + 26) as u32),
            b'0'..=b'9' => Some((c - b'0' + 52) as u32),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let data = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in data {
        let v = val(c)
            .ok_or_else(|| anyhow!("armored key has a non-base64 character {:?}", c as char))?;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// Runs `gpgv` and succeeds only on a good signature by a key in `keyring`.
/// `what` names the release and URL in the error.
pub(crate) fn gpgv(
    keyring: &Path,
    homedir: &Path,
    sig: &Path,
    data: &Path,
    what: &str,
) -> Result<()> {
    let out = Command::new("gpgv")
        .arg("--homedir")
        .arg(homedir)
        .arg("--keyring")
        .arg(keyring)
        .args(["--status-fd", "1"])
        .arg(sig)
        .arg(data)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow!("verify {what}: gpgv is not installed (apt-get install gpgv)")
            } else {
                anyhow!("verify {what}: cannot run gpgv: {e}")
            }
        })?;
    let status = String::from_utf8_lossy(&out.stdout);
    let valid = status.lines().any(|l| l.starts_with("[GNUPG:] VALIDSIG "));
    if out.status.success() && valid {
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
    let stderr = String::from_utf8_lossy(&out.stderr);
    let detail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    bail!(
        "verify {what}: {reason}\ngpgv said:\n  {}",
        detail.join("\n  ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_on_known_vectors() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("Zg==").unwrap(), b"f");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(base64_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert!(base64_decode("Zm9v!").is_err());
    }

    #[test]
    fn builtin_key_dearmors_to_an_rsa_public_key_packet() {
        let bin = to_binary(BUILTIN_KEY.as_bytes()).unwrap();
        // New-format public-key packet (0xc6) or old-format with 2-byte length (0x99), version 4.
        assert!(bin[0] == 0x99 || bin[0] == 0xc6, "first byte {:#x}", bin[0]);
        assert_eq!(bin[3], 4);
        assert!(bin.len() > 2000, "{} bytes", bin.len());
    }

    #[test]
    fn rejects_things_that_are_not_keyrings() {
        assert!(to_binary(b"").is_err());
        assert!(to_binary(b"hello").is_err());
        assert!(to_binary(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nZm9v\n").is_err());
        assert_eq!(to_binary(&[0x99, 1, 2]).unwrap(), vec![0x99, 1, 2]);
    }

    /// Our dearmor must equal gpg's, and the embedded key must carry the pinned fingerprints
    /// (independent sources: Arch's element-web PKGBUILD validpgpkeys, element-web's install docs).
    #[test]
    fn builtin_key_matches_gpg_and_the_pinned_fingerprints() {
        let home = tempfile::tempdir().unwrap();
        let asc = home.path().join("k.asc");
        std::fs::write(&asc, BUILTIN_KEY).unwrap();
        let gpg = |args: &[&str]| {
            let out = Command::new("gpg")
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
