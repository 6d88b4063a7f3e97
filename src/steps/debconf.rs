//! debconf preseeding: answers written with debconf-set-selections before the package asks.
//! The check reads debconf's own database (config.dat) directly: no extra package (debconf-utils) needed.

use anyhow::{Context, Result};

use crate::engine::{Change, Ctx, Step};
use crate::system::{run_ok, Cmd};

const CONFIG_DAT: &str = "/var/cache/debconf/config.dat";

pub struct DebconfStep {
    pub package: String,
    /// (question, type, value), e.g. ("matrix-synapse/server-name", "string", "example.com").
    pub answers: Vec<(String, String, String)>,
}

/// Value of `question` in a config.dat text (RFC822-like stanzas: Name:, Value:, ...).
fn stored_value(db: &str, question: &str) -> Option<String> {
    db.split("\n\n").find_map(|stanza| {
        let mut lines = stanza.lines();
        (lines.next()? == format!("Name: {question}").as_str()).then(|| {
            lines
                .find_map(|l| l.strip_prefix("Value:"))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        })
    })
}

impl Step for DebconfStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        let db = ctx
            .sys
            .read(std::path::Path::new(CONFIG_DAT))?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let differ: Vec<String> = self
            .answers
            .iter()
            .filter(|(q, _, v)| stored_value(&db, q).as_deref() != Some(v.as_str()))
            .map(|(q, _, v)| format!("{q} = {v}"))
            .collect();
        if differ.is_empty() {
            return Ok(Change::in_sync());
        }
        Ok(Change::run(format!("preseed debconf for {}", self.package)).with_items(differ))
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        let input: String = self
            .answers
            .iter()
            .map(|(q, t, v)| format!("{} {q} {t} {v}\n", self.package))
            .collect();
        run_ok(ctx.sys, &Cmd::new("debconf-set-selections").stdin(input))
            .context("preseeding debconf")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_values_from_config_dat() {
        let db = "Name: matrix-synapse/report-stats\nTemplate: matrix-synapse/report-stats\nValue: false\nOwners: matrix-synapse-py3\n\nName: matrix-synapse/server-name\nTemplate: matrix-synapse/server-name\nValue: example.com\nOwners: matrix-synapse-py3\nFlags: seen\n";
        assert_eq!(
            stored_value(db, "matrix-synapse/server-name").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            stored_value(db, "matrix-synapse/report-stats").as_deref(),
            Some("false")
        );
        assert_eq!(stored_value(db, "matrix-synapse/other"), None);
    }
}
