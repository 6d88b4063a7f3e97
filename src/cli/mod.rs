//! Command line: one file per subcommand; `main` maps a Result to the documented exit code.
//!
//! host.toml is always the positional `HOST_TOML`. `validate`, `plan` and `apply` require it (they read the
//! file being written); the commands that operate a converged host (`doctor`, `element-update`, `token`,
//! `user`) default it to the copy apply keeps, /etc/matrix-provision/host.toml ([`HostToml`]).
//!
//! Exit codes: 0 = converged / nothing to do, 1 = error (bad host.toml, failed step), 2 = `plan` has
//! changes pending, or `apply --detailed-exitcodes` changed something.

mod backup;
mod converge;
mod doctor;
mod edge_config;
pub mod element_update;
mod maintenance;
mod token;
mod user;
mod validate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::{Parser, Subcommand};

use crate::config::HostConfig;

use crate::report::Verbosity;

#[derive(Parser)]
#[command(
    name = "matrix-provision",
    version = env!("MP_LONG_VERSION"),
    about = "Converge a Debian 12 or 13 host to a Matrix homeserver (Synapse, PostgreSQL, coturn, nginx, certbot, Element)"
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
    /// Print the configuration of the edge in front of a proxied host (cloudflared, apache, haproxy, caddy).
    EdgeConfig(edge_config::Args),
    /// Registration tokens: create, list, revoke (admin API on loopback).
    Token(token::Args),
    /// Accounts: add, list, reset-password, deactivate (admin API on loopback).
    User(user::Args),
    /// Back up database, media, keys and secrets to the restic repository now (what the timer runs);
    /// `backup list` shows the backups.
    Backup(backup::Args),
    /// Restore a backup onto this host (apply runs first): refuses another server_name, an incomplete
    /// backup or a database that holds data.
    Restore(backup::RestoreArgs),
    /// Upkeep: purge cached remote media (media.purge_remote_media_days), report database size and the
    /// largest rooms (what the maintenance timer runs).
    Maintenance(maintenance::Args),
}

/// HOST_TOML of a command that operates a converged host: optional, by default the copy apply keeps.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct HostToml {
    /// host.toml of this server [default: /etc/matrix-provision/host.toml, the copy apply keeps]
    #[arg(value_name = "HOST_TOML")]
    file: Option<PathBuf>,
    /// The spelling of HOST_TOML before it was positional: hidden, so that timer units and scripts
    /// written then keep working.
    #[arg(
        long = "config",
        value_name = "HOST_TOML",
        hide = true,
        conflicts_with = "file"
    )]
    config: Option<PathBuf>,
}

impl HostToml {
    pub fn path(&self) -> PathBuf {
        self.file
            .clone()
            .or_else(|| self.config.clone())
            .unwrap_or_else(|| crate::layout::HOST_CONFIG.into())
    }

    pub fn load(&self) -> Result<HostConfig> {
        let path = self.path();
        if self.file.is_none() && self.config.is_none() && !Path::new(&path).exists() {
            return Err(anyhow!(
                "{} does not exist (apply keeps that copy of host.toml); give the path: \
                 matrix-provision <command> HOST_TOML",
                path.display()
            ));
        }
        crate::config::load(&path).map_err(|e| anyhow!("{e}"))
    }

    pub fn server_name(&self) -> Result<String> {
        self.load().map(|c| c.server_name)
    }
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
        Command::ElementUpdate(args) => args
            .host_toml
            .load()
            .and_then(|config| element_update::execute(&args, &config)),
        Command::ElementJob => element_update::execute_job(),
        Command::Doctor(args) => doctor::execute(&args),
        Command::EdgeConfig(args) => edge_config::execute(&args),
        Command::Token(args) => token::execute(&args),
        Command::User(args) => user::execute(&args),
        Command::Backup(args) => backup::execute(&args),
        Command::Restore(args) => backup::restore(&args, verbosity),
        Command::Maintenance(args) => maintenance::execute(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", crate::report::escape_lines(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn version_names_the_release_and_the_commit() {
        let v = super::Cli::command().render_version();
        assert!(
            v.starts_with(&format!("matrix-provision {} (", env!("CARGO_PKG_VERSION"))),
            "{v}"
        );
        // build.rs: "(commit <hash>)" in a checkout, else it says why there is none.
        assert!(v.contains("commit"), "{v}");
    }
}
