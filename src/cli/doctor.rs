//! `doctor [HOST_TOML]`: the read-only health report. Exit 1 when any check fails.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};

use crate::admin::{HttpTransport, Session, TurnOffer};
use crate::doctor::turn::{self, TurnCredentials};
use crate::doctor::{self, Check, Doctor, Level};
use crate::element::{self, ElementSource, Wanted};
use crate::playbook::{self, Inputs};
use crate::system::RealSystem;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub host_toml: super::HostToml,
    /// Print the checks as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// Only look at this host: skip .well-known, federation on 8448 and the latest Element release.
    #[arg(long)]
    pub offline: bool,
    /// Verify this host's own HTTPS endpoints against this PEM bundle instead of the public roots
    /// (for certificates from a private ACME CA such as step-ca, or Pebble in tests).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
}

fn line(c: &Check) -> String {
    let mark = match c.level {
        Level::Ok => "✓",
        Level::Warn => "!",
        Level::Fail => "✗",
    };
    let mut s = format!("{mark} {}: {}", c.name, c.detail);
    if let Some(h) = &c.hint {
        s.push_str(&format!("\n    fix: {h}"));
    }
    s
}

pub fn execute(args: &Args) -> Result<u8> {
    let config = args.host_toml.load()?;
    let sys = RealSystem::new("/").with_ca_bundle(args.ca_file.clone());
    // What to check: the graph apply would run here, built the way `plan` builds it (nothing is written).
    let path = args.host_toml.path();
    let inputs = Inputs {
        config_path: std::fs::canonicalize(&path)
            .with_context(|| format!("resolving {}", path.display()))?,
        self_exe: std::env::current_exe().context("finding this program's path")?,
    };
    let expected = playbook::build(&config, &inputs, &sys, true)
        .context("building the step graph apply would run (run doctor as root)")?
        .expected_state();
    let transport = HttpTransport::loopback();
    let session = Session::open(&sys, &transport).ok();
    let offer = || match &session {
        Some(s) => s.turn_server(),
        None => Err(anyhow!("no admin session")),
    };
    // coturn listens on every address; loopback tests it without depending on hairpin NAT.
    let relay = |c: &TurnCredentials| {
        turn::allocate(
            (std::net::Ipv4Addr::LOCALHOST, crate::layout::TURN_PORT).into(),
            c,
            Duration::from_secs(2),
        )
    };
    let source = ElementSource::from_config(&config);
    let latest = || element::resolve(&source, &Wanted::Latest).map(|r| r.tag);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let checks = Doctor {
        config: &config,
        expected: &expected,
        sys: &sys,
        now,
        latest_element: (!args.offline).then_some(&latest as &dyn Fn() -> Result<String>),
        turn_offer: session
            .is_some()
            .then_some(&offer as &dyn Fn() -> Result<TurnOffer>),
        turn_relay: Some(&relay),
        public: !args.offline,
    }
    .run();
    let failed = doctor::failed(&checks);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"ok": !failed, "checks": checks}))?
        );
    } else {
        for c in &checks {
            println!("{}", line(c));
        }
        let count = |l| checks.iter().filter(|c| c.level == l).count();
        println!(
            "\n{} checks: {} ok, {} warnings, {} failed",
            checks.len(),
            count(Level::Ok),
            count(Level::Warn),
            count(Level::Fail)
        );
    }
    Ok(u8::from(failed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn parses_file_json_and_offline() {
        let cli = Cli::try_parse_from([
            "matrix-provision",
            "doctor",
            "h.toml",
            "--json",
            "--offline",
        ])
        .unwrap();
        match cli.command {
            Command::Doctor(a) => {
                assert_eq!(a.host_toml.path(), PathBuf::from("h.toml"));
                assert!(a.json && a.offline);
            }
            _ => panic!("not doctor"),
        }
        match Cli::try_parse_from(["matrix-provision", "doctor"])
            .unwrap()
            .command
        {
            Command::Doctor(a) => assert_eq!(
                a.host_toml.path(),
                PathBuf::from(crate::layout::HOST_CONFIG),
                "by default the copy apply keeps"
            ),
            _ => panic!("not doctor"),
        }
    }

    #[test]
    fn failures_show_their_fix() {
        let c = Check {
            name: "service coturn".into(),
            level: Level::Fail,
            detail: "inactive (dead)".into(),
            hint: Some("systemctl status coturn".into()),
        };
        assert_eq!(
            line(&c),
            "✗ service coturn: inactive (dead)\n    fix: systemctl status coturn"
        );
    }
}
