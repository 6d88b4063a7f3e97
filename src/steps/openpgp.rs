//! V4 OpenPGP fingerprints of the primary keys in a keyring (RFC 4880 §12.2: SHA-1 over 0x99, a two-octet
//! length and the public-key packet body). Just enough to pin a downloaded keyring to the expected key
//! before apt is told to trust it; signature checking itself stays with apt/gpgv.

use anyhow::{bail, Context, Result};
use base64::Engine;
use sha1::{Digest, Sha1};

/// Uppercase hex fingerprints of every primary public key (tag 6), in file order. Accepts binary or armored.
pub fn fingerprints(keyring: &[u8]) -> Result<Vec<String>> {
    let data = binary(keyring)?;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let (tag, body, next) = packet(&data, pos)?;
        if tag == 6 {
            if body.first() != Some(&4) {
                bail!(
                    "keyring has a version {} key; only version 4 keys are supported",
                    body.first().copied().unwrap_or(0)
                );
            }
            let mut h = Sha1::new();
            h.update([0x99, (body.len() >> 8) as u8, body.len() as u8]);
            h.update(body);
            out.push(h.finalize().iter().map(|b| format!("{b:02X}")).collect());
        }
        pos = next;
    }
    if out.is_empty() {
        bail!("no OpenPGP public key found in the keyring");
    }
    Ok(out)
}

/// The keyring in binary form, as apt wants it in a `.gpg` file named by Signed-By and gpgv reads with
/// `--keyring`: a binary keyring as is, ASCII-armored key blocks (one or several) dearmored. The one
/// dearmor of the project (apt keyrings and Element's signing key both come through here).
pub fn binary(keyring: &[u8]) -> Result<Vec<u8>> {
    let Some(start) = keyring.iter().position(|b| !b.is_ascii_whitespace()) else {
        bail!("is empty");
    };
    if keyring[start..].starts_with(b"-----BEGIN PGP") {
        return dearmor(keyring);
    }
    // OpenPGP packets start with a tag byte that has the high bit set.
    if keyring[start] & 0x80 == 0 {
        bail!("is neither an armored (-----BEGIN PGP PUBLIC KEY BLOCK-----) nor a binary OpenPGP keyring");
    }
    Ok(keyring.to_vec())
}

/// One packet at `pos`: (tag, body, position after it).
fn packet(data: &[u8], pos: usize) -> Result<(u8, &[u8], usize)> {
    let truncated = || anyhow::anyhow!("keyring is truncated or not OpenPGP data (offset {pos})");
    let head = *data.get(pos).ok_or_else(truncated)?;
    if head & 0x80 == 0 {
        bail!("not OpenPGP data at offset {pos}");
    }
    let byte = |i: usize| data.get(i).copied().map(usize::from).ok_or_else(truncated);
    let (tag, len, start) = if head & 0x40 != 0 {
        let o1 = byte(pos + 1)?;
        match o1 {
            0..=191 => (head & 0x3f, o1, pos + 2),
            192..=223 => (
                head & 0x3f,
                ((o1 - 192) << 8) + byte(pos + 2)? + 192,
                pos + 3,
            ),
            255 => (
                head & 0x3f,
                (byte(pos + 2)? << 24)
                    | (byte(pos + 3)? << 16)
                    | (byte(pos + 4)? << 8)
                    | byte(pos + 5)?,
                pos + 6,
            ),
            _ => bail!("partial-length packet in a keyring (offset {pos})"),
        }
    } else {
        let tag = (head >> 2) & 0x0f;
        match head & 3 {
            0 => (tag, byte(pos + 1)?, pos + 2),
            1 => (tag, (byte(pos + 1)? << 8) | byte(pos + 2)?, pos + 3),
            2 => (
                tag,
                (byte(pos + 1)? << 24)
                    | (byte(pos + 2)? << 16)
                    | (byte(pos + 3)? << 8)
                    | byte(pos + 4)?,
                pos + 5,
            ),
            _ => (tag, data.len() - (pos + 1), pos + 1),
        }
    };
    let end = start
        .checked_add(len)
        .filter(|&e| e <= data.len())
        .ok_or_else(truncated)?;
    Ok((tag, &data[start..end], end))
}

/// Every PUBLIC KEY BLOCK in the text, concatenated. Armor headers ("Version: ...") run until the first
/// blank line; the CRC24 line is skipped (gpgv and apt check the packets themselves).
fn dearmor(text: &[u8]) -> Result<Vec<u8>> {
    let text = std::str::from_utf8(text).context("armored keyring is not text")?;
    let mut out = Vec::new();
    let mut lines = text.lines().map(str::trim_end);
    let mut blocks = 0;
    while let Some(line) = lines.next() {
        if !line.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
            continue;
        }
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
                    b64.push_str(l.trim());
                }
                continue;
            }
            if l.starts_with('=') {
                continue;
            }
            b64.push_str(l.trim());
        }
        if !ended {
            bail!("armored key block has no END line (truncated?)");
        }
        out.extend(
            base64::engine::general_purpose::STANDARD
                .decode(&b64)
                .context("armored keyring is not valid base64")?,
        );
        blocks += 1;
    }
    if blocks == 0 {
        bail!("has no PGP PUBLIC KEY BLOCK");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v4 packet built by hand: the fingerprint must equal SHA-1(0x99 || len || body).
    #[test]
    fn fingerprint_of_a_handmade_v4_key() {
        let body: Vec<u8> = vec![4, 0x5e, 0x00, 0x00, 0x00, 22, 0x01, 0x02, 0x03];
        let mut data = vec![0x99, 0x00, body.len() as u8]; // old format, tag 6, two-octet length
        data.extend(&body);
        let mut h = Sha1::new();
        h.update([0x99, 0, body.len() as u8]);
        h.update(&body);
        let want: String = h.finalize().iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(fingerprints(&data).unwrap(), vec![want]);
    }

    #[test]
    fn dearmor_handles_headers_several_blocks_and_refuses_non_keyrings() {
        let one = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nVersion: x\n\nmQ==\n=AAAA\n-----END PGP PUBLIC KEY BLOCK-----\n";
        assert_eq!(binary(one.as_bytes()).unwrap(), vec![0x99]);
        let two = format!("\n{one}{}", one.replace("mQ==", "xg=="));
        assert_eq!(binary(two.as_bytes()).unwrap(), vec![0x99, 0xc6]);
        assert!(binary(b"").is_err());
        assert!(binary(b"hello").is_err());
        assert!(binary(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nZm9v\n").is_err());
        assert!(binary(
            b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nZm9v!\n-----END PGP PUBLIC KEY BLOCK-----"
        )
        .is_err());
        assert_eq!(binary(&[0x99, 1, 2]).unwrap(), vec![0x99, 1, 2]);
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert!(fingerprints(b"<html>not found</html>").is_err());
        assert!(fingerprints(&[0x99, 0x00, 0x40, 4]).is_err());
        assert!(fingerprints(b"").is_err());
    }

    /// Cross-check with gpg when it is installed: generate a key, compare fingerprints.
    #[test]
    fn matches_gpg_for_a_generated_key() {
        let Ok(dir) = tempfile::tempdir() else { return };
        let home = dir.path().to_str().unwrap();
        let gen = std::process::Command::new("gpg")
            .args([
                "--batch",
                "--homedir",
                home,
                "--passphrase",
                "",
                "--quick-gen-key",
                "Test <t@example.invalid>",
                "ed25519",
                "sign",
                "never",
            ])
            .output();
        let Ok(gen) = gen else {
            eprintln!("gpg not installed: cross-check not run");
            return;
        };
        assert!(
            gen.status.success(),
            "{}",
            String::from_utf8_lossy(&gen.stderr)
        );
        let export = std::process::Command::new("gpg")
            .args(["--batch", "--homedir", home, "--export"])
            .output()
            .unwrap();
        let armored = std::process::Command::new("gpg")
            .args(["--batch", "--homedir", home, "--armor", "--export"])
            .output()
            .unwrap();
        let listing = std::process::Command::new("gpg")
            .args(["--batch", "--homedir", home, "--with-colons", "--list-keys"])
            .output()
            .unwrap();
        let fpr = String::from_utf8_lossy(&listing.stdout)
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .map(|l| l.split(':').nth(9).unwrap().to_string())
            .unwrap();
        assert_eq!(fingerprints(&export.stdout).unwrap(), vec![fpr.clone()]);
        assert_eq!(fingerprints(&armored.stdout).unwrap(), vec![fpr]);
    }
}
