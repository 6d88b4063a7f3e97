//! Command line: one file per subcommand; `main` maps a Result to the documented exit code.
//!
//! Exit codes: 0 = converged / nothing to do, 1 = error (bad host.toml, failed step), 2 = `plan` has
//! changes pending, or `apply --detailed-exitcodes` changed something.

mod converge;
mod doctor;
pub mod element_update;
mod token;
mod user;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "matrix-provision",
    version,
    about = "Converge a Debian 12 host to a Matrix homeserver (Synapse, PostgreSQL, coturn, nginx, certbot, Element)"
)]
pub struct Cli {
    /// More detail (-v: diffs of every change in apply too).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors and the closing summary.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Check host.toml and print every problem with its line and a fix. Touches nothing.
    Validate(validate::Args),
    /// Show exactly what apply would change (same as `apply --dry-run`). Writes nothing.
    Plan(converge::PlanArgs),
    /// Converge the host to host.toml. Running it again changes nothing.
    Apply(converge::ApplyArgs),
    /// Install or update Element Web from a signed release (what the daily timer runs).
    ElementUpdate(element_update::Args),
    /// Internal: the unprivileged half of an Element update started by root (job on stdin).
    #[command(hide = true)]
    ElementJob,
    /// Read-only health report: services, /health, certificates, firewall, database, disk. Exit 1 on any ✗.
    Doctor(doctor::Args),
    /// Registration tokens: create, list, revoke (admin API on loopback).
    Token(token::Args),
    /// Accounts: add, list, reset-password, deactivate (admin API on loopback).
    User(user::Args),
}

/// How loud the reporter is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Rust ignores SIGPIPE, so printing into a closed pipe (`plan | head`) panics. Commands that only
    // report end quietly when their reader goes away, as other Unix tools do; apply keeps converging
    // (the reporter stops writing instead): dying halfway through a change would be far worse.
    let converging = matches!(&cli.command, Command::Apply(a) if !a.is_dry_run());
    if !converging {
        // SAFETY: restoring the default disposition before any thread exists.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    let verbosity = match (cli.quiet, cli.verbose) {
        (true, _) => Verbosity::Quiet,
        (false, 0) => Verbosity::Normal,
        _ => Verbosity::Verbose,
    };
    let result = match cli.command {
        Command::Validate(args) => validate::execute(&args),
        Command::Plan(args) => converge::plan(&args, verbosity),
        Command::Apply(args) => converge::apply(&args, verbosity),
        Command::ElementUpdate(args) => match crate::config::load(&args.config) {
            Ok(config) => element_update::execute(&args, &config),
            Err(e) => {
                eprintln!("{e}");
                Ok(1)
            }
        },
        Command::ElementJob => element_update::execute_job(),
        Command::Doctor(args) => doctor::execute(&args),
        Command::Token(args) => token::execute(&args),
        Command::User(args) => user::execute(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", crate::report::escape_lines(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}
