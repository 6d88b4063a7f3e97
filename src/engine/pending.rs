//! Handlers owed but not yet run, kept on disk so a failed or killed run cannot lose a restart.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};

use crate::system::{FileSpec, System};

pub const PATH: &str = crate::layout::PENDING_HANDLERS;

pub fn load(sys: &dyn System) -> Result<BTreeSet<String>> {
    match sys.read(Path::new(PATH))? {
        None => Ok(BTreeSet::new()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{PATH} is corrupt; delete it and run again")),
    }
}

pub fn save(sys: &dyn System, pending: &BTreeSet<String>) -> Result<()> {
    let (uid, gid) = crate::system::owner_ids(sys, "root", "root")?;
    let spec = FileSpec {
        path: PATH.into(),
        uid,
        gid,
        mode: 0o600,
    };
    sys.write(&spec, &serde_json::to_vec(pending)?)
}
