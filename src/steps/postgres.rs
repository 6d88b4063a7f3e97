//! The Synapse role and database. psql (as the postgres superuser, over the local socket) is the authority.
//! The database must be UTF8 with C collation (Synapse refuses others); an existing database with another
//! collation is reported, never "fixed", because fixing means dump and restore.

use anyhow::{bail, Result};

use crate::engine::{Change, Ctx, ExpectedState, Step};
use crate::system::{psql, run_ok, Cmd};

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
    db: Option<(String, String, String, String)>,
}

impl PostgresStep {
    fn state(&self, ctx: &Ctx) -> Result<DbState> {
        let sql = format!(
            "SELECT 'role' FROM pg_roles WHERE rolname = {r};\n\
             SELECT 'db|' || pg_encoding_to_char(encoding) || '|' || datcollate || '|' || datctype || '|' || pg_get_userbyid(datdba) FROM pg_database WHERE datname = {d};\n",
            r = literal(&self.role),
            d = literal(&self.database)
        );
        let out = run_ok(ctx.sys, &psql(&sql))?;
        let role = out.stdout.lines().any(|l| l == "role");
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
        Ok(DbState { role, db })
    }

    /// Can the role log in over TCP (as Synapse does) with the stored password?
    fn password_works(&self, ctx: &Ctx) -> Result<bool> {
        let Some(pw) = ctx.secrets.get(&self.password_secret) else {
            bail!("secret `{}` not loaded", self.password_secret);
        };
        let out = ctx.sys.run(
            &Cmd::new("psql")
                .args([
                    "-X",
                    "-A",
                    "-t",
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    &self.role,
                    "-d",
                    &self.database,
                    "-c",
                    "SELECT 1",
                ])
                .env("PGPASSWORD", pw.expose())
                .env("PGCONNECT_TIMEOUT", "5"),
        )?;
        Ok(out.ok())
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
        if todo.is_empty() && !self.password_works(ctx)? {
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
        // The password travels on stdin, never in argv where `ps` would show it.
        let mut sql = if s.role {
            format!(
                "ALTER ROLE {role} WITH LOGIN PASSWORD {};\n",
                literal(pw.expose())
            )
        } else {
            format!(
                "CREATE ROLE {role} WITH LOGIN PASSWORD {};\n",
                literal(pw.expose())
            )
        };
        match s.db {
            None => sql.push_str(&format!(
                "CREATE DATABASE \"{}\" WITH ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0 OWNER {role};\n",
                self.database
            )),
            Some(_) => sql.push_str(&format!("ALTER DATABASE \"{}\" OWNER TO {role};\n", self.database)),
        }
        run_ok(ctx.sys, &psql(&sql))
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
        sys.on_cmd("runuser -u postgres", 0, psql_answer);
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
    fn fresh_cluster_gets_role_and_c_collated_database_with_password_on_stdin() {
        let (sys, secrets) = setup("");
        let ctx = Ctx::new(&sys, &secrets);
        let c = step().check(&ctx).unwrap();
        assert!(c.summary.contains("synapse"));
        step().apply(&ctx, &c).unwrap();
        let ran = sys.ran.borrow();
        let create = ran.iter().rev().find(|c| c.program == "runuser").unwrap();
        let sql = String::from_utf8(create.stdin.clone().unwrap()).unwrap();
        assert!(
            sql.contains("LC_COLLATE 'C'") && sql.contains("TEMPLATE template0"),
            "{sql}"
        );
        let pw = secrets.get("pg").unwrap().expose();
        assert!(sql.contains(pw));
        assert!(
            !create.display().contains(pw),
            "password must not be in argv"
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
        let (sys, secrets) = setup("role\ndb|UTF8|C|C|synapse\n");
        sys.on_cmd("psql -X -A -t -q -h 127.0.0.1", 0, "1\n");
        assert!(step()
            .check(&Ctx::new(&sys, &secrets))
            .unwrap()
            .is_in_sync());
        sys.on_cmd("psql -X -A -t -q -h 127.0.0.1", 2, "");
        let c = step().check(&Ctx::new(&sys, &secrets)).unwrap();
        assert!(format!("{:?}", c.detail).contains("set the password"));
    }
}
