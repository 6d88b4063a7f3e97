//! The error a bad host.toml produces: every problem found, each with its line, field and a fix.

use serde::Serialize;
use std::fmt;

/// One problem in host.toml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigIssue {
    /// 1-based line in the file; None when the problem is an absence (a missing key) or the file itself.
    pub line: Option<usize>,
    /// Dotted path of the field, e.g. `synapse.max_upload_size_mb` or `firewall.extra_allowed_ports[1]`;
    /// empty when the problem concerns the whole file (unreadable, TOML syntax).
    pub field: String,
    /// The offending value as written in the file (TOML source text), when there is one.
    pub value: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub hint: Option<String>,
}

impl ConfigIssue {
    /// The issue as one line, without the file name: `7: synapse.x = 0: must be …; write …`.
    /// Every part is escaped: values from the file (quoted in messages and hints too) never reach the
    /// terminal with raw control characters.
    fn fmt_body(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::report::escape;
        if !self.field.is_empty() {
            f.write_str(&escape(&self.field))?;
            if let Some(value) = &self.value {
                write!(f, " = {}", escape(value))?;
            }
            f.write_str(": ")?;
        }
        f.write_str(&escape(&self.message))?;
        if let Some(hint) = &self.hint {
            write!(f, "; {}", escape(hint))?;
        }
        Ok(())
    }
}

/// host.toml was unreadable or invalid. Holds every issue found, sorted by line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    file: String,
    errors: Vec<ConfigIssue>,
}

impl ConfigError {
    pub(crate) fn new(file: &str, mut errors: Vec<ConfigIssue>) -> Self {
        // By line, then field (list entries are checked in two passes); line-less issues (missing keys)
        // last, in the order validation found them, which is the file's logical order.
        errors.sort_by(|a, b| match (a.line, b.line) {
            (Some(x), Some(y)) => (x, &a.field).cmp(&(y, &b.field)),
            (x, y) => x.is_none().cmp(&y.is_none()),
        });
        ConfigError {
            file: file.to_string(),
            errors,
        }
    }

    /// The file name as given to `parse`/`load`, used as the prefix of every line of the message.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// All issues, for `--json` output.
    pub fn errors(&self) -> &[ConfigIssue] {
        &self.errors
    }
}

impl fmt::Display for ConfigError {
    /// One issue per line: `host.toml:7: synapse.max_upload_size_mb = 0: must be …; write …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match issue.line {
                Some(line) => write!(f, "{}:{line}: ", self.file)?,
                None => write!(f, "{}: ", self.file)?,
            }
            issue.fmt_body(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(line: Option<usize>, field: &str, value: Option<&str>) -> ConfigIssue {
        ConfigIssue {
            line,
            field: field.into(),
            value: value.map(Into::into),
            message: "bad".into(),
            hint: Some("write x".into()),
        }
    }

    #[test]
    fn display_sorts_by_line_and_puts_missing_last() {
        let err = ConfigError::new(
            "host.toml",
            vec![
                issue(None, "server_name", None),
                issue(Some(9), "turn.min_port", Some("3")),
                issue(None, "acme.email", None),
                issue(Some(2), "", None),
            ],
        );
        assert_eq!(
            err.to_string(),
            "host.toml:2: bad; write x\n\
             host.toml:9: turn.min_port = 3: bad; write x\n\
             host.toml: server_name: bad; write x\n\
             host.toml: acme.email: bad; write x"
        );
        assert_eq!(err.errors().len(), 4);
        assert_eq!(err.file(), "host.toml");
    }
}
