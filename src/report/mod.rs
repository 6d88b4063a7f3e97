//! The one place that prints a run: human lines (with an indicatif spinner on a terminal), or one JSON
//! document on stdout with `--json`. Every string passes through the secret store's redaction first.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::Verbosity;
use crate::engine::{ChangeKind, Detail, Listener, Node, Outcome, Report, Status};
use crate::secrets::SecretStore;

pub struct Reporter<'a> {
    verbosity: Verbosity,
    json: bool,
    dry_run: bool,
    secrets: &'a SecretStore,
    bar: Option<ProgressBar>,
}

impl<'a> Reporter<'a> {
    pub fn new(
        verbosity: Verbosity,
        json: bool,
        dry_run: bool,
        secrets: &'a SecretStore,
    ) -> Reporter<'a> {
        let bar =
            (!json && verbosity > Verbosity::Quiet && std::io::stderr().is_terminal()).then(|| {
                let bar = ProgressBar::new(0);
                bar.set_style(
                    ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg}")
                        .expect("static template"),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            });
        Reporter {
            verbosity,
            json,
            dry_run,
            secrets,
            bar,
        }
    }

    fn line(&self, text: &str) {
        let text = escape_lines(&self.secrets.redact(text));
        match &self.bar {
            Some(bar) => bar.suspend(|| out(&text)),
            None => out(&text),
        }
    }

    pub fn begin(&self, server_name: &str) {
        if !self.json && self.verbosity > Verbosity::Quiet {
            let what = if self.dry_run { "plan" } else { "apply" };
            self.line(&format!("{what}: Matrix homeserver {server_name}"));
        }
    }

    pub fn end(&mut self, report: &Report) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if self.json {
            let doc = serde_json::json!({
                "dry_run": report.dry_run,
                "summary": summary_counts(report),
                "steps": report.outcomes,
                "warnings": report.warnings,
            });
            out(&self.secrets.redact(&doc.to_string()));
            return;
        }
        for w in &report.warnings {
            self.line(&format!("warning: {w}"));
        }
        self.line(&summary_line(report));
    }
}

/// Text from outside (host.toml values, command output, Synapse's answers) made safe for a terminal:
/// control characters, including ESC and the C1 range, are shown as escapes (`\n`, `\u{1b}`) instead of
/// being sent raw, so a value cannot move the cursor, rewrite earlier lines or forge output.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_invisible(c) => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// [`escape`] line by line: multi-line text (diffs, error chains) keeps its newlines and tabs.
pub fn escape_lines(text: &str) -> String {
    text.split('\n')
        .map(|l| l.split('\t').map(escape).collect::<Vec<_>>().join("\t"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One line on stdout. A reader that went away (`apply | head`) is no reason to stop converging, so a
/// closed pipe is not an error, and nothing more is written once it happened.
pub fn out(text: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static CLOSED: AtomicBool = AtomicBool::new(false);
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = write_line(&mut std::io::stdout().lock(), text) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CLOSED.store(true, Ordering::Relaxed);
        }
    }
}

fn write_line(w: &mut dyn std::io::Write, text: &str) -> std::io::Result<()> {
    writeln!(w, "{text}")?;
    w.flush()
}

/// Format characters that reorder or hide text on a terminal (bidi overrides, zero-width marks).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

fn summary_counts(report: &Report) -> serde_json::Value {
    serde_json::json!({
        "in_sync": report.count(Status::InSync),
        "to_change": report.count(Status::Planned),
        "changed": report.count(Status::Changed),
        "failed": report.count(Status::Failed),
        "skipped": report.count(Status::Skipped),
        "restarted": report.handlers_run(),
    })
}

/// `N in sync, M changed, K failed, restarted: …` (plan: `M to change`).
pub fn summary_line(report: &Report) -> String {
    let mut parts = vec![format!("{} in sync", report.count(Status::InSync))];
    if report.dry_run {
        parts.push(format!("{} to change", report.count(Status::Planned)));
    } else {
        parts.push(format!("{} changed", report.count(Status::Changed)));
    }
    parts.push(format!("{} failed", report.count(Status::Failed)));
    let skipped = report.count(Status::Skipped);
    if skipped > 0 {
        parts.push(format!("{skipped} skipped"));
    }
    let restarted = report.handlers_run();
    parts.push(format!(
        "restarted: {}",
        if restarted.is_empty() {
            "none".to_string()
        } else {
            restarted.join(", ")
        }
    ));
    parts.join(", ")
}

fn marker(o: &Outcome) -> &'static str {
    match (o.status, o.change.as_ref().map(|c| c.kind)) {
        (Status::Failed, _) => "✗",
        (Status::Skipped, _) => "-",
        (_, Some(ChangeKind::Create)) => "+",
        (_, Some(ChangeKind::Modify)) => "~",
        (_, Some(ChangeKind::AfterDeps)) => "?",
        _ => "»",
    }
}

impl Listener for Reporter<'_> {
    fn started(&mut self, index: usize, total: usize, node: &Node) {
        if let Some(bar) = &self.bar {
            bar.set_length(total as u64);
            bar.set_position(index as u64);
            bar.set_message(node.description.clone());
        }
    }

    fn finished(&mut self, o: &Outcome) {
        if self.json || o.status == Status::InSync {
            return;
        }
        let failed = matches!(o.status, Status::Failed | Status::Skipped);
        if self.verbosity == Verbosity::Quiet && !failed {
            return;
        }
        let summary = o.change.as_ref().map(|c| c.summary.as_str()).unwrap_or("");
        let mut text = format!("{} {}", marker(o), o.description);
        if !summary.is_empty() && summary != o.description {
            text.push_str(&format!(": {summary}"));
        }
        if let Some(reason) = &o.reason {
            text.push_str(&format!(" ({reason})"));
        }
        let show_detail = self.dry_run || self.verbosity == Verbosity::Verbose;
        if let (true, Some(change)) = (show_detail, &o.change) {
            match &change.detail {
                Detail::Diff { text: diff } => {
                    for l in diff.lines() {
                        text.push_str(&format!("\n    {l}"));
                    }
                }
                Detail::Redacted { lines_changed } => text.push_str(&format!(
                    "\n    [diff redacted: holds a secret; {lines_changed} lines changed]"
                )),
                Detail::Items { items } => {
                    for i in items {
                        text.push_str(&format!("\n    - {i}"));
                    }
                }
                Detail::None => {}
            }
        }
        self.line(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(escape("a\u{1b}[31mb\rc\u{7}"), "a\\u{1b}[31mb\\rc\\u{7}");
        assert_eq!(escape("\u{202e}evil"), "\\u{202e}evil");
        assert_eq!(escape("plain: ünïcode ok"), "plain: ünïcode ok");
        // Multi-line text keeps its lines and tabs; only what would act on the terminal is escaped.
        assert_eq!(escape_lines("one\n\ttwo\u{1b}"), "one\n\ttwo\\u{1b}");
    }

    #[test]
    fn a_closed_pipe_is_reported_as_such() {
        struct Closed;
        impl std::io::Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let err = write_line(&mut Closed, "x").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    }
}
