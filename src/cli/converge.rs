//! `plan` and `apply`: load host.toml, build the graph, run the engine, report, pick the exit code.

use std::fs::OpenOptions;
use std::path::PathBuf;

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

use crate::engine::{self, Ctx};
use crate::playbook::{self, Inputs};
use crate::report::{Reporter, Verbosity};
use crate::system::RealSystem;

#[derive(clap::Args)]
pub struct PlanArgs {
    /// Path to host.toml.
    file: PathBuf,
    /// Print the plan as one JSON document on stdout (nothing else goes there).
    #[arg(long)]
    json: bool,
    /// Treat this directory as / for files (for inspection; commands still run on this host).
    #[arg(long, default_value = "/", hide = true)]
    root: PathBuf,
    /// Run up to N independent steps at once (1: one after another, in the order the plan lists them).
    #[arg(long, value_name = "N", default_value_t = engine::DEFAULT_JOBS as u16,
          value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,
}

#[derive(clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    common: PlanArgs,
    /// Only show what would change (same as `plan`).
    #[arg(long)]
    dry_run: bool,
    /// Exit 2 (not 0) when apply changed something, like Puppet's --detailed-exitcodes.
    #[arg(long)]
    detailed_exitcodes: bool,
}

impl ApplyArgs {
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }
}

pub fn plan(args: &PlanArgs, verbosity: Verbosity) -> Result<u8> {
    converge(args, true, false, verbosity)
}

pub fn apply(args: &ApplyArgs, verbosity: Verbosity) -> Result<u8> {
    converge(
        &args.common,
        args.dry_run,
        args.detailed_exitcodes,
        verbosity,
    )
}

const LOCK: &str = crate::layout::RUN_LOCK;

/// `apply FILE` as another command's step (restore): same lock, same report, default jobs.
pub fn apply_file(file: &std::path::Path, verbosity: Verbosity) -> Result<u8> {
    let args = PlanArgs {
        file: file.to_path_buf(),
        json: false,
        root: PathBuf::from("/"),
        jobs: engine::DEFAULT_JOBS as u16,
    };
    converge(&args, false, false, verbosity)
}

fn converge(args: &PlanArgs, dry_run: bool, detailed: bool, verbosity: Verbosity) -> Result<u8> {
    let config = match crate::config::load(&args.file) {
        Ok(c) => c,
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"error": "invalid host.toml", "config_errors": e.errors()})
                );
            } else {
                eprintln!("{e}\nnothing was changed.");
            }
            return Ok(1);
        }
    };
    // One run at a time: two applies interleaving apt, certbot and restarts would be chaos.
    let _lock = if dry_run {
        None
    } else {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK)
            .with_context(|| format!("opening {LOCK} (apply must run as root)"))?;
        Some(Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
            anyhow::anyhow!("another matrix-provision apply is running (lock {LOCK}); wait for it to finish")
        })?)
    };
    let sys = RealSystem::new(&args.root);
    let inputs = Inputs {
        config_path: std::fs::canonicalize(&args.file)
            .with_context(|| format!("resolving {}", args.file.display()))?,
        self_exe: std::env::current_exe().context("finding this program's path")?,
    };
    let graph = playbook::build(&config, &inputs, &sys, dry_run)?;
    let ctx = Ctx::new(&sys, &graph.secrets);
    if !dry_run {
        // Under the lock: no writer of ours is mid-write, so every temp file left is a killed run's.
        for path in graph.sweep_leftovers(&sys)? {
            ctx.warn(format!(
                "removed {}, a temp file an interrupted run left behind",
                path.display()
            ));
        }
    }
    let mut reporter = Reporter::new(verbosity, args.json, dry_run, &graph.secrets);
    reporter.begin(&config.server_name);
    // Every unit the graph looks at, asked of systemd at once while preflight runs.
    let units: Vec<String> = graph
        .expected_state()
        .units
        .into_iter()
        .map(|u| u.unit)
        .collect();
    let batch = sys.units_batch(&units);
    let report = std::thread::scope(|s| {
        s.spawn(|| sys.fetch(batch));
        engine::run_jobs(
            &graph.nodes,
            &ctx,
            dry_run,
            usize::from(args.jobs),
            &mut reporter,
        )
    })?;
    reporter.end(&report);
    Ok(if report.failed() {
        1
    } else if report.has_changes() && (dry_run || detailed) {
        2
    } else {
        0
    })
}
