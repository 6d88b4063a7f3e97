//! The first admin account, created once through Synapse's shared-secret registration (no prompt). Its
//! credentials file is the record that it exists: present → in sync, and the account is never recreated
//! or changed by later runs, even if the admin changes its password.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::admin::{self, Client, Credentials, Transport, CREDENTIALS_PATH, SHARED_SECRET_PATH};
use crate::engine::{Change, Ctx, Step};
use crate::secrets::Secret;

pub struct AdminUserStep {
    pub localpart: String,
    pub server_name: String,
    /// Synapse on loopback (a fake in tests).
    pub transport: Box<dyn Transport>,
}

impl AdminUserStep {
    fn user_id(&self) -> String {
        admin::user_id(&self.localpart, &self.server_name)
    }
}

impl Step for AdminUserStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        match Credentials::load(ctx.sys)? {
            Some(c) if c.access_token.is_some() => Ok(Change::in_sync()),
            // Written just before registering: a run stopped in between; apply finishes the job.
            Some(c) => Ok(Change::create(format!(
                "finish creating admin account {} (credentials in {CREDENTIALS_PATH})",
                c.user_id
            ))),
            None => Ok(Change::create(format!(
                "create admin account {} (credentials in {CREDENTIALS_PATH}, mode 0600)",
                self.user_id()
            ))),
        }
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        let shared = ctx
            .sys
            .read(Path::new(SHARED_SECRET_PATH))?
            .map(|b| Secret::from_stored(String::from_utf8_lossy(&b).trim()))
            .filter(|s| !s.expose().is_empty())
            .with_context(|| {
                format!("{SHARED_SECRET_PATH} is missing or empty (the secret step writes it)")
            })?;
        let client = Client::new(self.transport.as_ref());
        // The password goes to disk before the account exists, so it is never lost to a crash.
        let (mut creds, resumed) = match Credentials::load(ctx.sys)? {
            Some(c) if c.access_token.is_some() => return Ok(()),
            Some(c) => (c, true),
            None => {
                let c = Credentials {
                    user_id: self.user_id(),
                    password: Secret::generate(),
                    access_token: None,
                };
                c.save(ctx.sys)?;
                (c, false)
            }
        };
        // From here on no error message or report line may show them.
        ctx.secrets.remember(&creds.password);
        let localpart = creds
            .user_id
            .trim_start_matches('@')
            .split(':')
            .next()
            .unwrap_or(&self.localpart)
            .to_string();
        let login = match client.register(&shared, &localpart, &creds.password, true) {
            Ok(login) => login,
            Err(e) if admin::is_errcode(&e, "M_USER_IN_USE") && resumed => {
                // Registered by the interrupted run: the stored password is the account's.
                client.login(&creds.user_id, &creds.password)?
            }
            Err(e) if admin::is_errcode(&e, "M_USER_IN_USE") => {
                ctx.sys.remove(Path::new(CREDENTIALS_PATH))?;
                bail!(
                    "{} already exists, but matrix-provision did not create it and will not touch it: \
                     unset synapse.admin_user, or write its credentials to {CREDENTIALS_PATH} as \
                     {{\"user_id\": …, \"password\": …}} (mode 0600)",
                    creds.user_id
                );
            }
            Err(e) => return Err(e.context(format!("creating admin account {}", creds.user_id))),
        };
        let token = match login.access_token {
            Some(t) => t,
            None => client
                .login(&creds.user_id, &creds.password)?
                .access_token
                .context("login returned no access token")?,
        };
        ctx.secrets.remember(&token);
        creds.user_id = login.user_id;
        creds.access_token = Some(token);
        creds.save(ctx.sys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::FakeTransport;
    use crate::secrets::SecretStore;
    use crate::system::FakeSystem;
    use std::rc::Rc;

    /// Lets the test keep a handle on the transport the step owns.
    struct Shared(Rc<FakeTransport>);
    impl Transport for Shared {
        fn send(
            &self,
            method: &str,
            path: &str,
            token: Option<&str>,
            body: Option<&serde_json::Value>,
        ) -> Result<crate::http::Reply> {
            self.0.send(method, path, token, body)
        }
    }

    fn step(t: &Rc<FakeTransport>) -> AdminUserStep {
        AdminUserStep {
            localpart: "admin".into(),
            server_name: "example.org".into(),
            transport: Box::new(Shared(t.clone())),
        }
    }

    const REGISTER: &str = "/_synapse/admin/v1/register";

    #[test]
    fn absent_file_means_create_and_present_file_means_in_sync() {
        let sys = FakeSystem::new();
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let t = Rc::new(FakeTransport::new());
        let change = step(&t).check(&ctx).unwrap();
        assert_eq!(change.kind, crate::engine::ChangeKind::Create);
        assert!(
            change.summary.contains("@admin:example.org")
                && change.summary.contains(CREDENTIALS_PATH),
            "{}",
            change.summary
        );
        sys.put(
            CREDENTIALS_PATH,
            r#"{"user_id":"@admin:example.org","password":"p","access_token":"t"}"#,
        );
        assert!(step(&t).check(&ctx).unwrap().is_in_sync());
        assert!(t.sent().is_empty(), "check never talks to Synapse");
    }

    #[test]
    fn apply_registers_an_admin_and_stores_password_and_token() {
        let sys = FakeSystem::new();
        sys.put(SHARED_SECRET_PATH, "shh\n");
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let t = Rc::new(FakeTransport::new());
        t.reply("GET", REGISTER, 200, r#"{"nonce":"n"}"#);
        t.reply(
            "POST",
            REGISTER,
            200,
            r#"{"user_id":"@admin:example.org","access_token":"tok"}"#,
        );
        let s = step(&t);
        let change = s.check(&ctx).unwrap();
        s.apply(&ctx, &change).unwrap();
        assert!(s.check(&ctx).unwrap().is_in_sync());
        let creds = Credentials::load(&sys).unwrap().unwrap();
        assert_eq!(creds.access_token.unwrap().expose(), "tok");
        let body = t.sent()[1].body.clone().unwrap();
        assert_eq!(body["username"], "admin");
        assert_eq!(body["admin"], true);
        assert_eq!(body["password"], creds.password.expose());
        assert_eq!(
            body["mac"],
            admin::registration_mac("shh", "n", "admin", creds.password.expose(), true)
        );
        // The summary names where the credentials are, never the password.
        assert!(!change.summary.contains(creds.password.expose()));
        // And both are redacted from everything reported after they were made.
        let shown = format!("pw {} bearer tok", creds.password.expose());
        assert_eq!(secrets.redact(&shown), "pw [redacted] bearer [redacted]");
    }

    #[test]
    fn an_interrupted_creation_logs_in_with_the_stored_password() {
        let sys = FakeSystem::new();
        sys.put(SHARED_SECRET_PATH, "shh\n");
        sys.put(
            CREDENTIALS_PATH,
            r#"{"user_id":"@admin:example.org","password":"kept"}"#,
        );
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let t = Rc::new(FakeTransport::new());
        t.reply("GET", REGISTER, 200, r#"{"nonce":"n"}"#);
        t.reply(
            "POST",
            REGISTER,
            400,
            r#"{"errcode":"M_USER_IN_USE","error":"User ID already taken."}"#,
        );
        t.reply(
            "POST",
            "/_matrix/client/v3/login",
            200,
            r#"{"user_id":"@admin:example.org","access_token":"tok2"}"#,
        );
        let s = step(&t);
        let change = s.check(&ctx).unwrap();
        assert!(
            change.summary.starts_with("finish creating"),
            "{}",
            change.summary
        );
        s.apply(&ctx, &change).unwrap();
        let creds = Credentials::load(&sys).unwrap().unwrap();
        assert_eq!(creds.password.expose(), "kept");
        assert_eq!(creds.access_token.unwrap().expose(), "tok2");
    }

    #[test]
    fn an_account_made_by_someone_else_is_left_alone() {
        let sys = FakeSystem::new();
        sys.put(SHARED_SECRET_PATH, "shh\n");
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let t = Rc::new(FakeTransport::new());
        t.reply("GET", REGISTER, 200, r#"{"nonce":"n"}"#);
        t.reply(
            "POST",
            REGISTER,
            400,
            r#"{"errcode":"M_USER_IN_USE","error":"User ID already taken."}"#,
        );
        let s = step(&t);
        let err = s
            .apply(&ctx, &s.check(&ctx).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not create it"), "{err}");
        assert!(
            sys.get(CREDENTIALS_PATH).is_none(),
            "no file for an account we do not know the password of"
        );
    }

    #[test]
    fn synapse_down_fails_with_the_hint() {
        let sys = FakeSystem::new();
        sys.put(SHARED_SECRET_PATH, "shh\n");
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        let t = Rc::new(FakeTransport::down());
        let s = step(&t);
        let err = format!("{:#}", s.apply(&ctx, &s.check(&ctx).unwrap()).unwrap_err());
        assert!(err.contains("systemctl status matrix-synapse"), "{err}");
    }

    fn graph_ids(host_toml: &str) -> Vec<(String, Vec<String>)> {
        let config = crate::config::parse(host_toml, "host.toml").unwrap();
        let sys = FakeSystem::new();
        let inputs = crate::playbook::Inputs {
            config_path: "/etc/matrix-provision/host.toml".into(),
            self_exe: "/usr/local/bin/matrix-provision".into(),
        };
        crate::playbook::build(&config, &inputs, &sys, true)
            .unwrap()
            .nodes
            .into_iter()
            .map(|n| (n.id, n.after))
            .collect()
    }

    #[test]
    fn the_playbook_adds_the_step_only_when_admin_user_is_set() {
        let base = "server_name = \"example.org\"\n[acme]\nemail = \"a@example.org\"\n";
        let without = graph_ids(base);
        assert!(without.iter().all(|(id, _)| id != "admin-user"));
        let with = graph_ids(&format!("{base}[synapse]\nadmin_user = \"boss\"\n"));
        let (_, after) = with.iter().find(|(id, _)| id == "admin-user").unwrap();
        assert_eq!(after, &vec!["synapse-service".to_string()]);
    }
}
