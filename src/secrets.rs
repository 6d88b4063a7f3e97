//! Secrets as a type: generated once with `rand`, stored 0600/0640 by the secret step, never printed.
//! `Debug`/`Display` of a [`Secret`] say `[redacted]`; the only way to the value is [`Secret::expose`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{Context, Result};
use rand::distributions::{Alphanumeric, DistString};

use crate::system::System;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// 64 alphanumeric characters (~380 bits) from the OS RNG: safe in YAML, INI and URLs without quoting.
    pub fn generate() -> Secret {
        Secret(Alphanumeric.sample_string(&mut rand::rngs::OsRng, 64))
    }
    pub fn from_stored(value: &str) -> Secret {
        Secret(value.trim_end_matches('\n').to_string())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Every secret of the run, read from disk or freshly generated (in memory until its secret step stores it),
/// so that a plan renders files with the very values apply will write.
#[derive(Default)]
pub struct SecretStore {
    entries: BTreeMap<String, Secret>,
    /// Secrets met during the run that no template renders (the admin's password and token): redacted
    /// like the others. Behind a Mutex because steps only see the store shared, from several threads.
    remembered: std::sync::Mutex<Vec<Secret>>,
}

impl SecretStore {
    pub fn new() -> SecretStore {
        SecretStore::default()
    }

    /// Use the stored value at `path` if there is one, else generate one.
    pub fn load(&mut self, sys: &dyn System, name: &str, path: &Path) -> Result<()> {
        let stored = sys
            .read(path)
            .with_context(|| format!("reading secret `{name}`"))?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .filter(|s| !s.trim().is_empty());
        let secret = match stored {
            Some(s) => Secret::from_stored(&s),
            None => Secret::generate(),
        };
        self.entries.insert(name.to_string(), secret);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.entries.get(name)
    }

    /// Every loaded secret with its name (what templates may inline: render::Secrets).
    pub fn named(&self) -> impl Iterator<Item = (&str, &Secret)> {
        self.entries.iter().map(|(name, s)| (name.as_str(), s))
    }

    /// Redact `secret` from now on too (it is not rendered into any file, so it has no name here).
    pub fn remember(&self, secret: &Secret) {
        let mut r = self.remembered.lock().unwrap();
        if !secret.expose().is_empty() && !r.contains(secret) {
            r.push(secret.clone());
        }
    }

    fn all(&self) -> Vec<Secret> {
        let mut all: Vec<Secret> = self.entries.values().cloned().collect();
        all.extend(self.remembered.lock().unwrap().iter().cloned());
        all
    }

    /// Does `text` contain any secret? Such file contents are never diffed in the open.
    pub fn appears_in(&self, text: &str) -> bool {
        self.all()
            .iter()
            .any(|secret| text.contains(secret.expose()))
    }

    /// Replace every secret in `text` with `[redacted]` (for error messages and logs).
    pub fn redact(&self, text: &str) -> String {
        self.all().iter().fold(text.to_string(), |t, secret| {
            t.replace(secret.expose(), "[redacted]")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::FakeSystem;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::generate();
        assert_eq!(s.expose().len(), 64);
        assert!(!format!("{s:?} {s}").contains(s.expose()));
    }

    #[test]
    fn stored_secret_is_reused_and_missing_one_is_generated_once() {
        let sys = FakeSystem::new();
        sys.put("/etc/s/a", "stored-value\n");
        let mut store = SecretStore::new();
        store.load(&sys, "a", Path::new("/etc/s/a")).unwrap();
        store.load(&sys, "b", Path::new("/etc/s/b")).unwrap();
        assert_eq!(store.get("a").unwrap().expose(), "stored-value");
        assert_eq!(
            store.get("b").unwrap().expose().len(),
            64,
            "b is freshly generated"
        );
        let b = store.get("b").unwrap().expose().to_string();
        assert!(store.appears_in(&format!("password: {b}\n")));
        assert_eq!(store.redact(&format!("x {b} y")), "x [redacted] y");
        assert_ne!(b, Secret::generate().expose());
    }
}
