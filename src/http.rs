//! Blocking HTTP GET for the few downloads matrix-provision makes (keyring, Element releases, health checks).

use std::io::Read;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Downloads larger than this are refused (Element tarballs are ~30 MB).
const MAX_BYTES: u64 = 512 * 1024 * 1024;

pub fn get(url: &str) -> Result<Vec<u8>> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout(Duration::from_secs(300))
        .build();
    let resp = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, _)) => bail!("GET {url}: HTTP {code}"),
        Err(e) => bail!("GET {url}: {e}"),
    };
    let mut body = Vec::new();
    resp.into_reader()
        .take(MAX_BYTES + 1)
        .read_to_end(&mut body)
        .with_context(|| format!("GET {url}: reading the body"))?;
    if body.len() as u64 > MAX_BYTES {
        bail!("GET {url}: larger than {MAX_BYTES} bytes");
    }
    Ok(body)
}
