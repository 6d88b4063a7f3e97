//! The provisioner's admin account on disk: JSON, 0600 root, written atomically. The password is kept so
//! that an expired or revoked access token can be replaced by logging in again.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::CREDENTIALS_PATH;
use crate::secrets::Secret;
use crate::system::{owner_ids, FileSpec, System};

#[derive(Debug, Clone)]
pub struct Credentials {
    pub user_id: String,
    pub password: Secret,
    /// None while the account is being created (the file is written before registering, so a crash
    /// between the two cannot lose the password of an account that exists).
    pub access_token: Option<Secret>,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    user_id: String,
    password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access_token: Option<String>,
}

impl Credentials {
    /// None when the file does not exist.
    pub fn load(sys: &dyn System) -> Result<Option<Credentials>> {
        let bytes = sys.read(Path::new(CREDENTIALS_PATH)).map_err(|e| {
            if format!("{e:#}").contains("ermission denied") {
                e.context(format!(
                    "{CREDENTIALS_PATH} is readable by root only: run this as root (sudo)"
                ))
            } else {
                e
            }
        })?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        let d: OnDisk = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{CREDENTIALS_PATH} is not valid JSON with user_id and password; restore it from {}/",
                crate::layout::BACKUP_DIR
            )
        })?;
        Ok(Some(Credentials {
            user_id: d.user_id,
            password: Secret::from_stored(&d.password),
            access_token: d
                .access_token
                .filter(|t| !t.is_empty())
                .map(|t| Secret::from_stored(&t)),
        }))
    }

    pub fn save(&self, sys: &dyn System) -> Result<()> {
        let (uid, gid) = owner_ids(sys, "root", "root")?;
        let d = OnDisk {
            user_id: self.user_id.clone(),
            password: self.password.expose().to_string(),
            access_token: self.access_token.as_ref().map(|t| t.expose().to_string()),
        };
        let mut text = serde_json::to_string_pretty(&d)?;
        text.push('\n');
        sys.write(
            &FileSpec {
                path: CREDENTIALS_PATH.into(),
                uid,
                gid,
                mode: 0o600,
            },
            text.as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::FakeSystem;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trips_with_mode_0600() {
        let sys = FakeSystem::new();
        assert!(Credentials::load(&sys).unwrap().is_none());
        let c = Credentials {
            user_id: "@admin:ex.org".into(),
            password: Secret::from_stored("pw"),
            access_token: Some(Secret::from_stored("tok")),
        };
        c.save(&sys).unwrap();
        let back = Credentials::load(&sys).unwrap().unwrap();
        assert_eq!(back.user_id, "@admin:ex.org");
        assert_eq!(back.password.expose(), "pw");
        assert_eq!(back.access_token.unwrap().expose(), "tok");
        let mode = std::fs::metadata(sys.path(CREDENTIALS_PATH))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
