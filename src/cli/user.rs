//! `user add|list|reset-password|deactivate`: accounts through the admin API on loopback.

use std::io::Read;

use anyhow::{bail, Context, Result};

use super::token::{with_session, ConfigArg};
use crate::admin::{self, UserInfo};
use crate::secrets::Secret;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Create an account; prints its generated password once.
    Add {
        /// Localpart (alice) or full user id (@alice:example.com).
        name: String,
        /// Make it a server admin.
        #[arg(long)]
        admin: bool,
        /// Read the password from stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List accounts (deactivated ones too).
    List {
        /// One JSON array on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Give an account a new password (prints it once) and log it out everywhere.
    ResetPassword {
        name: String,
        /// Read the password from stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Deactivate an account (it can no longer log in; its messages stay).
    Deactivate {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// The password from stdin (one line, trailing newline dropped) or a generated one. `true`: generated.
fn password(from_stdin: bool) -> Result<(Secret, bool)> {
    if !from_stdin {
        return Ok((Secret::generate(), true));
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading the password from stdin")?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        bail!("--password-stdin: stdin held no password");
    }
    Ok((Secret::from_stored(&line), false))
}

/// The table `user list` prints. Names come from Synapse, display names from any user: both are
/// escaped, so a display name cannot carry terminal control sequences or fake extra rows.
pub fn table(users: &[UserInfo]) -> String {
    use crate::report::escape;
    let names: Vec<String> = users.iter().map(|u| escape(&u.name)).collect();
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!(
        "{:width$}  {:5}  {:11}  DISPLAY NAME\n",
        "USER", "ADMIN", "STATE"
    );
    for (u, name) in users.iter().zip(&names) {
        out.push_str(&format!(
            "{:width$}  {:5}  {:11}  {}\n",
            name,
            if u.admin { "yes" } else { "no" },
            if u.deactivated {
                "deactivated"
            } else {
                "active"
            },
            escape(u.displayname.as_deref().unwrap_or(""))
        ));
    }
    out
}

pub fn execute(args: &Args) -> Result<u8> {
    match &args.action {
        Action::Add {
            name,
            admin,
            password_stdin,
            config,
        } => {
            let id = admin::user_id(name, &config.server_name()?);
            let (pw, generated) = password(*password_stdin)?;
            with_session(|s| s.user_create(&id, &pw, *admin))?;
            eprintln!(
                "created {id}{}",
                if *admin { " (server admin)" } else { "" }
            );
            if generated {
                eprintln!("its password (shown only now):");
                println!("{}", pw.expose());
            }
        }
        Action::List { json, config } => {
            config.server_name()?;
            let users = with_session(|s| s.users())?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                print!("{}", table(&users));
            }
        }
        Action::ResetPassword {
            name,
            password_stdin,
            config,
        } => {
            let id = admin::user_id(name, &config.server_name()?);
            let (pw, generated) = password(*password_stdin)?;
            with_session(|s| s.reset_password(&id, &pw))?;
            eprintln!("new password set for {id}; its sessions were logged out");
            if generated {
                eprintln!("the new password (shown only now):");
                println!("{}", pw.expose());
            }
        }
        Action::Deactivate { name, config } => {
            let id = admin::user_id(name, &config.server_name()?);
            with_session(|s| s.deactivate(&id))?;
            println!("deactivated {id}");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Action, clap::Error> {
        let cli =
            Cli::try_parse_from(std::iter::once("matrix-provision").chain(args.iter().copied()))?;
        match cli.command {
            Command::User(a) => Ok(a.action),
            _ => panic!("not a user command"),
        }
    }

    #[test]
    fn add_reset_deactivate_and_list_parse() {
        match parse(&["user", "add", "alice", "--admin", "--password-stdin"]).unwrap() {
            Action::Add {
                name,
                admin,
                password_stdin,
                ..
            } => assert!(name == "alice" && admin && password_stdin),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["user", "reset-password", "bob", "--config", "h.toml"]).unwrap(),
            Action::ResetPassword { name, password_stdin: false, config } if name == "bob" && config.config.to_str() == Some("h.toml")
        ));
        assert!(matches!(
            parse(&["user", "deactivate", "@eve:ex.org"]).unwrap(),
            Action::Deactivate { name, .. } if name == "@eve:ex.org"
        ));
        assert!(matches!(
            parse(&["user", "list", "--json"]).unwrap(),
            Action::List { json: true, .. }
        ));
        assert!(parse(&["user", "add"]).is_err(), "add needs a name");
        assert!(parse(&["user", "remove", "x"]).is_err());
    }

    #[test]
    fn the_table_marks_admins_and_deactivated_accounts() {
        let users = vec![
            UserInfo {
                name: "@admin:ex.org".into(),
                displayname: None,
                admin: true,
                deactivated: false,
            },
            UserInfo {
                name: "@old:ex.org".into(),
                displayname: Some("Old".into()),
                admin: false,
                deactivated: true,
            },
        ];
        let t = table(&users);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[1].contains("yes") && lines[1].contains("active"),
            "{t}"
        );
        assert!(
            lines[2].contains("deactivated") && lines[2].ends_with("Old"),
            "{t}"
        );
    }

    #[test]
    fn display_names_from_synapse_reach_the_terminal_escaped() {
        let users = vec![UserInfo {
            name: "@eve:ex.org".into(),
            displayname: Some("Eve\u{1b}[2J\n@admin:ex.org  yes    active\u{202e}".into()),
            admin: false,
            deactivated: false,
        }];
        let t = table(&users);
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(!t.contains('\u{1b}') && !t.contains('\u{202e}'), "{t:?}");
        assert!(t.contains("Eve\\u{1b}[2J\\n@admin"), "{t}");
    }
}
