//! Which release: tags, their order, and the GitHub-style releases API
//! (`{url}/latest`, `{url}/tags/{tag}` → JSON with `tag_name` and `assets[]`).

use std::cmp::Ordering;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::ElementSource;
use crate::http;
use crate::system::System;

/// The host.toml key that `ElementSource::releases_url` comes from, named in network errors.
const RELEASES_KEY: &str = "sources.element_releases_url";

/// What the admin asked for: `element.version = "latest"` or a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    Latest,
    Pinned(String),
}

impl Wanted {
    /// `"latest"` or a tag such as `"v1.11.85"` (a missing leading `v` is added).
    pub fn parse(s: &str) -> Result<Wanted> {
        if s == "latest" {
            Ok(Wanted::Latest)
        } else {
            Ok(Wanted::Pinned(parse_tag(s)?))
        }
    }
}

impl std::fmt::Display for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wanted::Latest => f.write_str("latest"),
            Wanted::Pinned(t) => f.write_str(t),
        }
    }
}

/// One published release, as the releases API describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub tag: String,
    pub tarball_url: String,
    /// None when the release has no `.asc` asset: install refuses it.
    pub signature_url: Option<String>,
    /// The API document this came from, for error messages.
    pub api_url: String,
    /// GitHub's flags: "latest" never follows a release marked so.
    pub prerelease: bool,
    pub draft: bool,
}

impl Release {
    pub fn tarball_name(&self) -> String {
        tarball_name(&self.tag)
    }
}

pub(crate) fn tarball_name(tag: &str) -> String {
    format!("element-{tag}.tar.gz")
}

/// Validates a release tag and normalizes it to the `vX.Y.Z[-pre]` form Element uses.
/// Tags become file names and URL path segments, so anything else is refused.
pub fn parse_tag(s: &str) -> Result<String> {
    let tag = if s.starts_with('v') {
        s.to_string()
    } else {
        format!("v{s}")
    };
    if Version::parse(&tag).is_none() {
        bail!(
            "`{s}` is not an Element release tag (expected \"latest\" or a tag like \"v1.11.85\")"
        );
    }
    Ok(tag)
}

/// Numeric version order: v1.11.9 < v1.11.10, and v2.0.0-rc.1 < v2.0.0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    nums: Vec<u64>,
    pre: Option<String>,
}

impl Version {
    pub(crate) fn parse(tag: &str) -> Option<Version> {
        let rest = tag.strip_prefix('v')?;
        let (core, pre) = match rest.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (rest, None),
        };
        let nums = core
            .split('.')
            .map(|p| {
                if !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()) {
                    p.parse().ok()
                } else {
                    None
                }
            })
            .collect::<Option<Vec<u64>>>()?;
        if let Some(p) = pre {
            let ok = !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                && !p.contains("..");
            if !ok {
                return None;
            }
        }
        Some(Version {
            nums,
            pre: pre.map(str::to_string),
        })
    }
}

impl Version {
    pub(crate) fn is_prerelease(&self) -> bool {
        self.pre.is_some()
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.nums.len().max(other.nums.len());
        for i in 0..n {
            let a = self.nums.get(i).copied().unwrap_or(0);
            let b = other.nums.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match (&self.pre, &other.pre) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Deserialize)]
struct ApiRelease {
    tag_name: String,
    #[serde(default)]
    assets: Vec<ApiAsset>,
    #[serde(default)]
    prerelease: bool,
    #[serde(default)]
    draft: bool,
}

#[derive(Deserialize)]
struct ApiAsset {
    name: String,
    browser_download_url: String,
}

/// Asks the releases API which release `wanted` means. Network, no writes.
pub fn resolve(source: &ElementSource, wanted: &Wanted) -> Result<Release> {
    resolve_with(&crate::system::RealSystem::new("/"), source, wanted)
}

/// [`resolve`] through the given host.
pub fn resolve_with(sys: &dyn System, source: &ElementSource, wanted: &Wanted) -> Result<Release> {
    let base = source.releases_url.trim_end_matches('/');
    let api_url = match wanted {
        Wanted::Latest => format!("{base}/latest"),
        Wanted::Pinned(tag) => format!("{base}/tags/{tag}"),
    };
    let opts = http::Options {
        max_bytes: 4 * 1024 * 1024,
        ..source.http_options(RELEASES_KEY)
    };
    let body = sys
        .http_fetch(&api_url, &opts)
        .with_context(|| format!("find the {wanted} Element release"))?;
    parse_release(&body, &api_url, wanted)
}

fn parse_release(body: &[u8], api_url: &str, wanted: &Wanted) -> Result<Release> {
    let api: ApiRelease = serde_json::from_slice(body).with_context(|| {
        format!("{api_url}: not a release description (expected JSON with tag_name and assets)")
    })?;
    let tag = parse_tag(&api.tag_name).with_context(|| format!("{api_url}: bad tag_name"))?;
    if tag != api.tag_name {
        bail!("{api_url}: tag_name `{}` lacks the leading v", api.tag_name);
    }
    if let Wanted::Pinned(want) = wanted {
        if &tag != want {
            bail!("{api_url}: asked for {want} but the server described {tag}");
        }
    }
    let name = tarball_name(&tag);
    let sig_name = format!("{name}.asc");
    let find = |n: &str| {
        api.assets
            .iter()
            .find(|a| a.name == n)
            .map(|a| a.browser_download_url.clone())
    };
    let Some(tarball_url) = find(&name) else {
        bail!("{api_url}: release {tag} has no asset named {name}");
    };
    Ok(Release {
        signature_url: find(&sig_name),
        tag,
        tarball_url,
        api_url: api_url.to_string(),
        prerelease: api.prerelease,
        draft: api.draft,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn versions_order_numerically_and_prereleases_first() {
        assert!(v("v1.11.9") < v("v1.11.10"));
        assert!(v("v1.9") < v("v1.10.0"));
        assert!(v("v2.0.0-rc.1") < v("v2.0.0"));
        assert_eq!(v("v1.2"), v("v1.2"));
        assert!(v("v1.2").cmp(&v("v1.2.0")) == Ordering::Equal);
    }

    #[test]
    fn tags_that_could_escape_a_path_or_url_are_refused() {
        for bad in [
            "",
            "v",
            "v1..2",
            "v1.2/../../etc",
            "v1.2-../x",
            "v1.2-a/b",
            "v1.2 ",
            "latest2",
            "vX.Y",
            "v1.2-",
        ] {
            assert!(parse_tag(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_tag("1.11.85").unwrap(), "v1.11.85");
        assert_eq!(parse_tag("v1.12.0-rc.2").unwrap(), "v1.12.0-rc.2");
        assert_eq!(Wanted::parse("latest").unwrap(), Wanted::Latest);
    }

    #[test]
    fn parses_github_release_json() {
        let body = br#"{"tag_name":"v1.2.3","name":"v1.2.3","assets":[
            {"name":"element-v1.2.3.tar.gz.asc","browser_download_url":"https://x/element-v1.2.3.tar.gz.asc"},
            {"name":"element-v1.2.3.tar.gz","browser_download_url":"https://x/element-v1.2.3.tar.gz"}]}"#;
        let r = parse_release(body, "https://api/latest", &Wanted::Latest).unwrap();
        assert_eq!(r.tag, "v1.2.3");
        assert_eq!(r.tarball_url, "https://x/element-v1.2.3.tar.gz");
        assert_eq!(
            r.signature_url.as_deref(),
            Some("https://x/element-v1.2.3.tar.gz.asc")
        );
        let e = parse_release(body, "u", &Wanted::Pinned("v1.2.4".into())).unwrap_err();
        assert!(e.to_string().contains("asked for v1.2.4"), "{e}");
        let e = parse_release(b"<html>", "u", &Wanted::Latest).unwrap_err();
        assert!(
            format!("{e:#}").contains("not a release description"),
            "{e:#}"
        );
    }
}
