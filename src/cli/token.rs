//! `token create|list|revoke`: registration tokens through the admin API on loopback.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::admin::{HttpTransport, NewToken, RegistrationToken, Session};
use crate::config::{HostConfig, Registration};
use crate::system::RealSystem;

/// host.toml of this server (for server_name): HOST_TOML, by default the copy apply keeps.
pub use super::HostToml as ConfigArg;

/// Tokens only matter when Synapse asks for them; say so instead of letting the admin wonder.
fn registration_note(config: &HostConfig) -> Option<String> {
    match config.synapse.registration {
        Registration::Token => None,
        Registration::Closed => Some(
            "note: synapse.registration = \"closed\" in host.toml, so nobody can register with a token; \
             set it to \"token\" and run apply"
                .into(),
        ),
        Registration::Open => Some(
            "note: synapse.registration = \"open\" in host.toml, so registration needs no token at all"
                .into(),
        ),
    }
}

/// Run `f` with a session as the provisioner's admin account on the real host.
pub fn with_session<T>(f: impl FnOnce(&Session) -> Result<T>) -> Result<T> {
    let sys = RealSystem::new("/");
    let transport = HttpTransport::loopback();
    let session = Session::open(&sys, &transport)?;
    f(&session)
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Create a registration token and print it.
    Create {
        /// How many accounts may register with it. One by default: a token handed to one person
        /// should not let a crowd in if it leaks.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        uses: u64,
        /// No limit on the number of registrations (instead of --uses).
        #[arg(long, conflicts_with = "uses")]
        unlimited: bool,
        /// Valid for this long: 30m, 12h, 7d, 2w (default: forever).
        #[arg(long, value_parser = parse_duration)]
        expires: Option<Duration>,
        /// The token itself (A-Z a-z 0-9 . _ ~ -, up to 64); default: 16 random characters.
        #[arg(long)]
        token: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List registration tokens with their uses left and expiry.
    List {
        /// One JSON array on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Delete a registration token; accounts already made with it stay.
    Revoke {
        token: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// "30m", "12h", "7d", "2w" (a bare number is days).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "d"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}`: expected a number and a unit, e.g. 7d"))?;
    let unit_secs = match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("`{s}`: unit must be m, h, d or w (e.g. 7d)")),
    };
    if n == 0 {
        return Err(format!("`{s}`: must be longer than zero"));
    }
    Ok(Duration::from_secs(n * unit_secs))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the epoch as "2026-11-29 14:05 UTC".
pub fn format_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

fn describe_expiry(expiry: Option<i64>, now: i64) -> String {
    match expiry {
        None => "never".into(),
        Some(ms) if ms <= now => format!("expired {}", format_utc(ms)),
        Some(ms) => format!("{} (in {})", format_utc(ms), human_span(ms - now)),
    }
}

fn human_span(ms: i64) -> String {
    let mins = ms / 60_000;
    match mins {
        m if m < 120 => format!("{m} min"),
        m if m < 48 * 60 => format!("{} h", m / 60),
        m => format!("{} days", m / (24 * 60)),
    }
}

fn uses(t: &RegistrationToken) -> String {
    match (t.uses_left(), t.uses_allowed) {
        (Some(left), Some(all)) => format!("{left} of {all}"),
        _ => "unlimited".into(),
    }
}

/// The table `token list` prints.
pub fn table(tokens: &[RegistrationToken], now: i64) -> String {
    let width = tokens
        .iter()
        .map(|t| t.token.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut out = format!(
        "{:width$}  {:12}  {:>4}  {:>7}  EXPIRES\n",
        "TOKEN", "USES LEFT", "USED", "PENDING"
    );
    for t in tokens {
        out.push_str(&format!(
            "{:width$}  {:12}  {:>4}  {:>7}  {}\n",
            t.token,
            uses(t),
            t.completed,
            t.pending,
            describe_expiry(t.expiry_time, now)
        ));
    }
    out
}

pub fn execute(args: &Args) -> Result<u8> {
    match &args.action {
        Action::Create {
            uses: n,
            unlimited,
            expires,
            token,
            config,
        } => {
            let config = config.load()?;
            let new = NewToken {
                token: token.clone(),
                uses_allowed: (!*unlimited).then_some(*n),
                expiry_time_ms: expires.map(|d| now_ms() + d.as_millis() as i64),
            };
            let t = with_session(|s| s.token_create(&new))?;
            println!("{}", t.token);
            eprintln!(
                "registration token created: uses {}, expires {}",
                uses(&t),
                describe_expiry(t.expiry_time, now_ms())
            );
            if let Some(note) = registration_note(&config) {
                eprintln!("{note}");
            }
        }
        Action::List { json, config } => {
            config.server_name()?;
            let tokens = with_session(|s| s.token_list())?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else if tokens.is_empty() {
                eprintln!(
                    "no registration tokens (create one with `matrix-provision token create`)"
                );
            } else {
                print!("{}", table(&tokens, now_ms()));
            }
        }
        Action::Revoke { token, config } => {
            config.server_name()?;
            with_session(|s| s.token_delete(token))?;
            println!("revoked registration token {token}");
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
            Command::Token(a) => Ok(a.action),
            _ => panic!("not a token command"),
        }
    }

    #[test]
    fn create_takes_uses_expiry_name_and_config() {
        match parse(&[
            "token",
            "create",
            "--uses",
            "5",
            "--expires",
            "7d",
            "--token",
            "party",
            "/tmp/h.toml",
        ])
        .unwrap()
        {
            Action::Create {
                uses,
                unlimited,
                expires,
                token,
                config,
            } => {
                assert_eq!(uses, 5);
                assert!(!unlimited);
                assert_eq!(expires, Some(Duration::from_secs(7 * 86_400)));
                assert_eq!(token.as_deref(), Some("party"));
                assert_eq!(config.path(), std::path::Path::new("/tmp/h.toml"));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["token", "list"]).unwrap() {
            Action::List { json, config } => {
                assert!(!json);
                assert_eq!(
                    config.path(),
                    std::path::Path::new(crate::layout::HOST_CONFIG)
                );
            }
            other => panic!("{other:?}"),
        }
        // The old flag still works (timers and scripts written before HOST_TOML was positional).
        match parse(&["token", "revoke", "abc", "--config", "/tmp/old.toml"]).unwrap() {
            Action::Revoke { token, config } => {
                assert_eq!(token, "abc");
                assert_eq!(config.path(), std::path::Path::new("/tmp/old.toml"));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["token", "revoke", "abc", "/tmp/h.toml"]).unwrap() {
            Action::Revoke { config, .. } => {
                assert_eq!(config.path(), std::path::Path::new("/tmp/h.toml"))
            }
            other => panic!("{other:?}"),
        }
        assert!(
            parse(&["token", "list", "/a.toml", "--config", "/b.toml"]).is_err(),
            "one host.toml, not two"
        );
    }

    #[test]
    fn a_token_is_single_use_unless_asked_otherwise() {
        match parse(&["token", "create"]).unwrap() {
            Action::Create {
                uses, unlimited, ..
            } => assert_eq!((uses, unlimited), (1, false)),
            other => panic!("{other:?}"),
        }
        match parse(&["token", "create", "--unlimited"]).unwrap() {
            Action::Create { unlimited, .. } => assert!(unlimited),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&["token", "create", "--expires", "7x"]).is_err());
        assert!(parse(&["token", "create", "--uses", "-1"]).is_err());
        assert!(parse(&["token", "create", "--uses", "0"]).is_err());
        assert!(parse(&["token", "create", "--uses", "2", "--unlimited"]).is_err());
        assert!(
            parse(&["token", "revoke"]).is_err(),
            "revoke needs the token"
        );
    }

    #[test]
    fn tokens_without_token_registration_get_a_note() {
        let mut c = crate::config::parse(
            "server_name = \"ex.org\"\n[acme]\nemail = \"a@ex.org\"\n",
            "host.toml",
        )
        .unwrap();
        assert_eq!(registration_note(&c), None, "token is the default");
        c.synapse.registration = Registration::Closed;
        assert!(registration_note(&c).unwrap().contains("closed"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3 * 86_400)));
        assert!(parse_duration("0d").is_err());
        assert!(parse_duration("d").is_err());
    }

    #[test]
    fn dates_and_the_table() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        // 2024-02-29 12:34 UTC (a leap day)
        assert_eq!(format_utc(1_709_210_040_000), "2024-02-29 12:34 UTC");
        let now = 1_709_210_040_000;
        let tokens = vec![
            RegistrationToken {
                token: "abc".into(),
                uses_allowed: Some(5),
                pending: 1,
                completed: 2,
                expiry_time: Some(now + 3 * 86_400_000),
            },
            RegistrationToken {
                token: "open-ended".into(),
                uses_allowed: None,
                pending: 0,
                completed: 9,
                expiry_time: Some(now - 1),
            },
        ];
        let t = table(&tokens, now);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[1].starts_with("abc")
                && lines[1].contains("2 of 5")
                && lines[1].contains("2024-03-03 12:34 UTC (in 3 days)"),
            "{t}"
        );
        assert!(
            lines[2].contains("unlimited") && lines[2].contains("expired"),
            "{t}"
        );
    }
}
