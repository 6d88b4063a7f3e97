//! The Synapse role and database. psql (as the postgres superuser, over the local socket) is the authority.
//! The database must be UTF8 with C collation (Synapse refuses others); an existing database with another
//! collation is reported, never "fixed", because fixing means dump and restore.

use anyhow::{bail, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::engine::{Change, Ctx, ExpectedState, Step};
use crate::system::{psql, run_ok};

/// PostgreSQL's own default (scram_iterations) for SCRAM-SHA-256.
const SCRAM_ITERATIONS: u32 = 4096;

/// The SCRAM-SHA-256 verifier PostgreSQL stores in pg_authid.rolpassword (RFC 5802/7677, as in its
/// src/common/scram-common.c): `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64.
/// `ALTER ROLE … PASSWORD '<verifier>'` stores it as is, so the password itself never reaches the server.
/// Our secrets are ASCII, which PostgreSQL's SASLprep leaves unchanged.
pub fn scram_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    let (stored, server) = scram_keys(password, salt, iterations);
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        B64.encode(salt),
        B64.encode(stored),
        B64.encode(server)
    )
}

fn scram_keys(password: &str, salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
    let salted = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, iterations);
    let hmac = |key: &[u8], msg: &[u8]| -> [u8; 32] {
        let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        m.update(msg);
        m.finalize().into_bytes().into()
    };
    let client_key = hmac(&salted, b"Client Key");
    let stored: [u8; 32] = Sha256::digest(client_key).into();
    (stored, hmac(&salted, b"Server Key"))
}

/// Does a stored verifier belong to `password`? Recomputed with its own salt and iteration count; an md5
/// or plain entry (an old role) never matches, so it gets replaced by a SCRAM one.
pub fn verifier_matches(verifier: &str, password: &str) -> bool {
    let parse = || -> Option<bool> {
        let rest = verifier.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let iterations: u32 = iterations.parse().ok()?;
        let salt = B64.decode(salt).ok()?;
        let (want_stored, want_server) = scram_keys(password, &salt, iterations);
        Some(B64.decode(stored).ok()? == want_stored && B64.decode(server).ok()? == want_server)
    };
    parse().unwrap_or(false)
}

fn new_verifier(password: &str) -> Result<String> {
    if !password.chars().all(|c| c.is_ascii_graphic()) {
        bail!("the PostgreSQL password must be printable ASCII (PostgreSQL would SASLprep-normalize anything else); regenerate the secret");
    }
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    Ok(scram_verifier(password, &salt, SCRAM_ITERATIONS))
}

pub struct PostgresStep {
    pub role: String,
    pub database: String,
    /// Name of the secret holding the role's password.
    pub password_secret: String,
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

struct DbState {
    role: bool,
    /// pg_authid.rolpassword (a verifier, not the password).
    verifier: Option<String>,
    db: Option<(String, String, String, String)>,
}

impl PostgresStep {
    fn state(&self, ctx: &Ctx) -> Result<DbState> {
        let sql = format!(
            "SELECT 'role' FROM pg_roles WHERE rolname = {r};\n\
             SELECT 'pw|' || coalesce(rolpassword, '') FROM pg_authid WHERE rolname = {r};\n\
             SELECT 'db|' || pg_encoding_to_char(encoding) || '|' || datcollate || '|' || datctype || '|' || pg_get_userbyid(datdba) FROM pg_database WHERE datname = {d};\n",
            r = literal(&self.role),
            d = literal(&self.database)
        );
        let out = run_ok(ctx.sys, &psql(ctx.sys, &sql))?;
        let role = out.stdout.lines().any(|l| l == "role");
        let verifier = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("pw|"))
            .map(String::from);
        let db = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("db|"))
            .map(|l| {
                let f: Vec<&str> = l.split('|').collect();
                (
                    f[0].into(),
                    f[1].into(),
                    f[2].into(),
                    f.get(3).copied().unwrap_or("").into(),
                )
            });
        Ok(DbState { role, verifier, db })
    }

    /// Is the role's stored verifier the one of our secret? Checked here, so the check sends nothing secret.
    fn password_works(&self, ctx: &Ctx, state: &DbState) -> Result<bool> {
        let Some(pw) = ctx.secrets.get(&self.password_secret) else {
            bail!("secret `{}` not loaded", self.password_secret);
        };
        Ok(state
            .verifier
            .as_deref()
            .is_some_and(|v| verifier_matches(v, pw.expose())))
    }
}

impl Step for PostgresStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        let s = self.state(ctx)?;
        let mut todo = Vec::new();
        if !s.role {
            todo.push(format!(
                "create role {} (password from secret `{}`)",
                self.role, self.password_secret
            ));
        }
        match &s.db {
            None => todo.push(format!(
                "create database {} (UTF8, C collation, template0, owner {})",
                self.database, self.role
            )),
            Some((enc, collate, ctype, owner)) => {
                if enc != "UTF8" || collate != "C" || ctype != "C" {
                    bail!(
                        "database `{}` exists with encoding {enc}, LC_COLLATE {collate}, LC_CTYPE {ctype}; Synapse needs UTF8 and C. \
                         Dump it, drop it and let apply recreate it, then restore (see Synapse's docs/postgres.md)",
                        self.database
                    );
                }
                if owner != &self.role {
                    todo.push(format!(
                        "make {} the owner of database {}",
                        self.role, self.database
                    ));
                }
            }
        }
        if todo.is_empty() && !self.password_works(ctx, &s)? {
            todo.push(format!(
                "set the password of role {} to the stored secret",
                self.role
            ));
        }
        if todo.is_empty() {
            return Ok(Change::in_sync());
        }
        let kind = if s.role || s.db.is_some() {
            Change::modify
        } else {
            Change::create
        };
        Ok(kind(format!("PostgreSQL role and database `{}`", self.database)).with_items(todo))
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        let s = self.state(ctx)?;
        let pw = ctx
            .secrets
            .get(&self.password_secret)
            .ok_or_else(|| anyhow::anyhow!("secret `{}` not loaded", self.password_secret))?;
        let role = format!("\"{}\"", self.role);
        // Only a verifier computed here goes to the server: no statement, log line or error holds the password.
        let verifier = literal(&new_verifier(pw.expose())?);
        let verb = if s.role { "ALTER" } else { "CREATE" };
        let mut sql = format!("{verb} ROLE {role} WITH LOGIN PASSWORD {verifier};\n");
        match s.db {
            None => sql.push_str(&format!(
                "CREATE DATABASE \"{}\" WITH ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0 OWNER {role};\n",
                self.database
            )),
            Some(_) => sql.push_str(&format!("ALTER DATABASE \"{}\" OWNER TO {role};\n", self.database)),
        }
        run_ok(ctx.sys, &psql(ctx.sys, &sql))
            .map_err(|e| anyhow::anyhow!(ctx.secrets.redact(&format!("{e:#}"))))?;
        Ok(())
    }

    fn expect(&self, state: &mut ExpectedState) {
        state.databases.push(self.database.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretStore;
    use crate::system::FakeSystem;
    use std::path::Path;

    fn setup(psql_answer: &'static str) -> (FakeSystem, SecretStore) {
        let sys = FakeSystem::new();
        sys.on_cmd("setpriv --reuid=postgres", 0, psql_answer);
        let mut secrets = SecretStore::new();
        secrets.load(&sys, "pg", Path::new("/s/pg")).unwrap();
        (sys, secrets)
    }

    fn step() -> PostgresStep {
        PostgresStep {
            role: "synapse".into(),
            database: "synapse".into(),
            password_secret: "pg".into(),
        }
    }

    #[test]
    fn fresh_cluster_gets_role_and_c_collated_database_and_only_a_scram_verifier() {
        let (sys, secrets) = setup("");
        let ctx = Ctx::new(&sys, &secrets);
        let c = step().check(&ctx).unwrap();
        assert!(c.summary.contains("synapse"));
        step().apply(&ctx, &c).unwrap();
        let ran = sys.ran.lock().unwrap();
        let create = ran.iter().rev().find(|c| c.program == "setpriv").unwrap();
        let sql = String::from_utf8(create.stdin.clone().unwrap()).unwrap();
        assert!(
            sql.contains("LC_COLLATE 'C'") && sql.contains("TEMPLATE template0"),
            "{sql}"
        );
        let pw = secrets.get("pg").unwrap().expose();
        assert!(
            !sql.contains(pw),
            "the password never travels in SQL: {sql}"
        );
        let verifier = sql
            .split('\'')
            .find(|p| p.starts_with("SCRAM-SHA-256$4096:"))
            .unwrap_or_else(|| panic!("no SCRAM verifier in {sql}"));
        assert!(verifier_matches(verifier, pw));
        assert!(!verifier_matches(verifier, "wrong"));
        assert!(
            !create.display().contains(pw),
            "password must not be in argv"
        );
    }

    #[test]
    fn verifier_is_postgres_scram_sha_256() {
        // Computed independently (Python hashlib.pbkdf2_hmac + hmac) for "pencil" and salt "0123456789abcdef".
        let want = "SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$nQpbZ77WudtqufPwikHXGRt6g2QJ4zns8bZLw273DRM=:jn2amWP1q1h+jgjy0YTO14S6/F02SV7taipOeB7ef20=";
        assert_eq!(scram_verifier("pencil", b"0123456789abcdef", 4096), want);
        assert!(verifier_matches(want, "pencil"));
        assert!(!verifier_matches(want, "pencil2"));
        assert!(!verifier_matches("md5abcdef", "pencil"));
        let a = new_verifier("pencil").unwrap();
        assert_ne!(
            a,
            new_verifier("pencil").unwrap(),
            "a random salt each time"
        );
    }

    #[test]
    fn wrong_collation_is_an_error_not_a_fix() {
        let (sys, secrets) = setup("role\ndb|UTF8|en_US.UTF-8|en_US.UTF-8|synapse\n");
        let err = step()
            .check(&Ctx::new(&sys, &secrets))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("en_US.UTF-8") && err.contains("needs UTF8 and C"),
            "{err}"
        );
    }

    #[test]
    fn converged_database_with_working_password_is_in_sync() {
        let sys = FakeSystem::new();
        let mut secrets = SecretStore::new();
        secrets.load(&sys, "pg", Path::new("/s/pg")).unwrap();
        let right = scram_verifier(secrets.get("pg").unwrap().expose(), b"salt", 4096);
        let answer = |v: &str| format!("role\npw|{v}\ndb|UTF8|C|C|synapse\n");
        sys.on_cmd("setpriv --reuid=postgres", 0, &answer(&right));
        assert!(step()
            .check(&Ctx::new(&sys, &secrets))
            .unwrap()
            .is_in_sync());
        // Another password's verifier (someone ran ALTER ROLE by hand): set ours again.
        sys.on_cmd(
            "setpriv --reuid=postgres",
            0,
            &answer(&scram_verifier("other", b"salt", 4096)),
        );
        let c = step().check(&Ctx::new(&sys, &secrets)).unwrap();
        assert!(format!("{:?}", c.detail).contains("set the password"));
        assert!(
            !sys.commands().iter().any(|c| c.starts_with("psql")),
            "the check logs in nowhere"
        );
    }
}
