//! What a check found: the typed change that dry-run renders and apply carries out.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    InSync,
    Create,
    Modify,
    /// An action with no file to diff (install packages, request a certificate, restart a service).
    Run,
    /// The check needs something an earlier pending step will provide (plan only).
    AfterDeps,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Detail {
    None,
    /// Unified diff of a file that holds no secret.
    Diff {
        text: String,
    },
    /// A file that holds a secret: only the size of the change is shown.
    Redacted {
        lines_changed: usize,
    },
    Items {
        items: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub kind: ChangeKind,
    /// One line a human reads in the plan: "install nginx, coturn", "write /etc/...".
    pub summary: String,
    pub detail: Detail,
}

impl Change {
    pub fn in_sync() -> Change {
        Change {
            kind: ChangeKind::InSync,
            summary: String::new(),
            detail: Detail::None,
        }
    }
    pub fn new(kind: ChangeKind, summary: impl Into<String>) -> Change {
        Change {
            kind,
            summary: summary.into(),
            detail: Detail::None,
        }
    }
    pub fn create(summary: impl Into<String>) -> Change {
        Change::new(ChangeKind::Create, summary)
    }
    pub fn modify(summary: impl Into<String>) -> Change {
        Change::new(ChangeKind::Modify, summary)
    }
    pub fn run(summary: impl Into<String>) -> Change {
        Change::new(ChangeKind::Run, summary)
    }
    pub fn with_detail(mut self, detail: Detail) -> Change {
        self.detail = detail;
        self
    }
    pub fn with_items(self, items: Vec<String>) -> Change {
        self.with_detail(Detail::Items { items })
    }
    pub fn is_in_sync(&self) -> bool {
        self.kind == ChangeKind::InSync
    }
}
