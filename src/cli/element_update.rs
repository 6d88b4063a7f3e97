//! `matrix-provision element-update --config FILE [--version vX] [--check] [--rollback]`:
//! what the daily timer runs, and what an admin runs by hand.

use std::path::PathBuf;

use anyhow::Result;

use crate::config::HostConfig;
use crate::element::{self, ElementSource, Installation, Job, Wanted};
use crate::system::{RealSystem, System};

/// Exit status when `--check` finds work to do (the documented "changes pending" code).
pub const EXIT_PENDING: u8 = 2;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// host.toml to read sources and [element] from.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Release to install instead of element.version: a tag such as v1.11.85, or "latest".
    #[arg(long = "version", value_name = "TAG")]
    pub version: Option<String>,
    /// Only report what would happen; exit 2 when an update (or rollback) is pending, 0 when not.
    #[arg(long)]
    pub check: bool,
    /// Switch back to the newest unpacked release older than the live one.
    #[arg(long, conflicts_with = "version")]
    pub rollback: bool,
    /// Element install root (nginx serves ROOT/current).
    #[arg(long, value_name = "DIR", default_value = element::DEFAULT_ROOT, hide = true)]
    pub root: PathBuf,
}

/// Runs the command against an already loaded and validated host.toml.
/// Returns the process exit code: 0 done or nothing to do, 2 pending (`--check`); errors are 1.
pub fn execute(args: &Args, config: &HostConfig) -> Result<u8> {
    execute_on(&RealSystem::new("/"), args, config)
}

/// [`execute`] on a given host.
pub fn execute_on(sys: &dyn System, args: &Args, config: &HostConfig) -> Result<u8> {
    if !config.element.enabled {
        println!("Element is disabled in host.toml (element.enabled = false); nothing to do");
        return Ok(0);
    }
    // Absolute: when root hands the work to the tree's owner, that process starts elsewhere.
    let root = std::path::absolute(&args.root)?;
    let inst = Installation::new(root, config.element.keep_releases);
    let source = ElementSource::from_config(config);

    if args.rollback {
        if args.check {
            let plan = element::plan_rollback(sys, &inst)?;
            println!("{plan}");
            return Ok(EXIT_PENDING);
        }
        let outcome = element::rollback(sys, &inst)?;
        println!("{outcome}");
        if config.element.auto_update && config.element.version == "latest" {
            println!(
                "note: the daily update timer will install the latest release again; \
                 set element.version = \"{}\" in host.toml to stay on it",
                outcome.version
            );
        }
        return Ok(0);
    }

    let wanted = Wanted::parse(args.version.as_deref().unwrap_or(&config.element.version))?;
    if args.check {
        let plan = element::plan_update(sys, &inst, &source, &wanted)?;
        println!("{plan}");
        return Ok(if plan.is_change() { EXIT_PENDING } else { 0 });
    }
    let outcome = element::update(sys, &inst, &source, &wanted)?;
    println!("{outcome}");
    for w in &outcome.warnings {
        eprintln!("warning: {w}");
    }
    Ok(0)
}

/// The hidden `element-job` subcommand: the unprivileged half of an Element update root started (see
/// `element::update`). Reads a [`Job`] on stdin, prints its result as JSON; errors go to stderr, exit 1.
pub fn execute_job() -> Result<u8> {
    let mut input = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut input)?;
    let job: Job = serde_json::from_slice(&input)
        .map_err(|e| anyhow::anyhow!("element-job: reading the job on stdin: {e}"))?;
    let result = element::run_job(&RealSystem::new("/"), &job)?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(0)
}
