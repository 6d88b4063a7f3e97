//! Admin calls as the provisioner's own admin account. A refused access token (HTTP 401) is replaced by
//! logging in again with the stored password, saved, and the call retried once.

use std::cell::RefCell;

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use super::{encode_segment, is_status, Client, Credentials, Transport, CREDENTIALS_PATH};
use crate::secrets::Secret;
use crate::system::System;

pub struct Session<'a> {
    client: Client<'a>,
    sys: &'a dyn System,
    creds: RefCell<Credentials>,
}

/// TURN servers and credentials as Synapse offers them to clients (empty `uris`: no TURN configured).
#[derive(Debug, Clone)]
pub struct TurnOffer {
    pub uris: Vec<String>,
    pub username: String,
    pub password: Secret,
}

/// A registration token as Synapse lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrationToken {
    pub token: String,
    /// None: unlimited.
    pub uses_allowed: Option<u64>,
    /// Registrations started with the token and not finished yet (they hold a use).
    #[serde(default)]
    pub pending: u64,
    #[serde(default)]
    pub completed: u64,
    /// Milliseconds since the epoch; None: never expires.
    pub expiry_time: Option<i64>,
}

impl RegistrationToken {
    /// None: unlimited.
    pub fn uses_left(&self) -> Option<u64> {
        self.uses_allowed
            .map(|n| n.saturating_sub(self.pending + self.completed))
    }
}

/// What `token create` asks for; every field is optional (Synapse picks a random 16-character token).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewToken {
    pub token: Option<String>,
    pub uses_allowed: Option<u64>,
    pub expiry_time_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    #[serde(default)]
    pub displayname: Option<String>,
    // Older Synapse versions send 0/1 for these flags.
    #[serde(default, deserialize_with = "flag")]
    pub admin: bool,
    #[serde(default, deserialize_with = "flag")]
    pub deactivated: bool,
}

fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => b,
        Value::Number(n) => n.as_i64().unwrap_or(0) != 0,
        _ => false,
    })
}

impl<'a> Session<'a> {
    /// Use the stored credentials; without them, say how to get them.
    pub fn open(sys: &'a dyn System, transport: &'a dyn Transport) -> Result<Session<'a>> {
        let Some(creds) = Credentials::load(sys)? else {
            bail!(
                "no admin credentials at {CREDENTIALS_PATH}: set synapse.admin_user in host.toml and run \
                 `matrix-provision apply host.toml`, which creates the admin account and that file"
            );
        };
        Ok(Session::with(sys, transport, creds))
    }

    pub fn with(
        sys: &'a dyn System,
        transport: &'a dyn Transport,
        creds: Credentials,
    ) -> Session<'a> {
        Session {
            client: Client::new(transport),
            sys,
            creds: RefCell::new(creds),
        }
    }

    /// The admin account this session acts as.
    pub fn admin_user_id(&self) -> String {
        self.creds.borrow().user_id.clone()
    }

    /// Log in with the stored password and store the new access token.
    fn renew(&self) -> Result<Secret> {
        let (user, password) = {
            let c = self.creds.borrow();
            (c.user_id.clone(), c.password.clone())
        };
        let login = self.client.login(&user, &password).map_err(|e| {
            if is_status(&e, 403) || is_status(&e, 401) {
                e.context(format!(
                    "the stored access token was refused and logging in as {user} with the password in \
                     {CREDENTIALS_PATH} failed: if that password was changed, write the current one there"
                ))
            } else {
                e
            }
        })?;
        let token = login
            .access_token
            .ok_or_else(|| anyhow!("login as {user} returned no access token"))?;
        self.creds.borrow_mut().access_token = Some(token.clone());
        self.creds.borrow().save(self.sys)?;
        Ok(token)
    }

    /// An authenticated call; a 401 triggers one renewal and one retry.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let stored = self.creds.borrow().access_token.clone();
        let token = match stored {
            Some(t) => t,
            None => self.renew()?,
        };
        match self.client.call(method, path, Some(&token), body) {
            Err(e) if is_status(&e, 401) => {
                let token = self.renew()?;
                self.client
                    .call(method, path, Some(&token), body)
                    .map_err(|e| self.explain(e))
            }
            other => other.map_err(|e| self.explain(e)),
        }
    }

    fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        if is_status(&e, 403) {
            let user = self.admin_user_id();
            e.context(format!(
                "{user} (from {CREDENTIALS_PATH}) is not allowed to do this: is it still a server admin?"
            ))
        } else if is_status(&e, 401) {
            e.context(format!(
                "Synapse refuses even a fresh access token for {}",
                self.admin_user_id()
            ))
        } else {
            e
        }
    }

    /// What Synapse hands a calling client (GET /_matrix/client/v3/voip/turnServer): the TURN URIs and
    /// short-lived credentials derived from turn_shared_secret.
    pub fn turn_server(&self) -> Result<TurnOffer> {
        let v = self.call("GET", "/_matrix/client/v3/voip/turnServer", None)?;
        Ok(TurnOffer {
            uris: v["uris"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|u| u.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            username: v["username"].as_str().unwrap_or_default().to_string(),
            password: Secret::from_stored(v["password"].as_str().unwrap_or_default()),
        })
    }

    pub fn token_create(&self, new: &NewToken) -> Result<RegistrationToken> {
        let mut body = serde_json::Map::new();
        if let Some(t) = &new.token {
            body.insert("token".into(), json!(t));
        }
        if let Some(n) = new.uses_allowed {
            body.insert("uses_allowed".into(), json!(n));
        }
        if let Some(ms) = new.expiry_time_ms {
            body.insert("expiry_time".into(), json!(ms));
        }
        let v = self.call(
            "POST",
            "/_synapse/admin/v1/registration_tokens/new",
            Some(&Value::Object(body)),
        )?;
        Ok(serde_json::from_value(v)?)
    }

    pub fn token_list(&self) -> Result<Vec<RegistrationToken>> {
        let v = self.call("GET", "/_synapse/admin/v1/registration_tokens", None)?;
        Ok(serde_json::from_value(v["registration_tokens"].clone())?)
    }

    /// Revoke a token. Unknown tokens are an error that names the token.
    pub fn token_delete(&self, token: &str) -> Result<()> {
        let path = format!(
            "/_synapse/admin/v1/registration_tokens/{}",
            encode_segment(token)
        );
        match self.call("DELETE", &path, None) {
            Err(e) if is_status(&e, 404) => Err(e.context(format!(
                "there is no registration token `{token}` (see `matrix-provision token list`)"
            ))),
            other => other.map(|_| ()),
        }
    }

    /// Delete cached copies of remote media last accessed before `before_ms` (ms since the epoch); how many.
    pub fn purge_media_cache(&self, before_ms: i64) -> Result<u64> {
        let v = self.call(
            "POST",
            &format!("/_synapse/admin/v1/purge_media_cache?before_ts={before_ms}"),
            Some(&json!({})),
        )?;
        Ok(v["deleted"].as_u64().unwrap_or(0))
    }

    /// Every account, deactivated ones included, following Synapse's pagination.
    pub fn users(&self) -> Result<Vec<UserInfo>> {
        let mut out = Vec::new();
        let mut from = "0".to_string();
        loop {
            let v = self.call(
                "GET",
                &format!(
                    "/_synapse/admin/v2/users?from={}&limit=100&guests=false&deactivated=true",
                    encode_segment(&from)
                ),
                None,
            )?;
            let page: Vec<UserInfo> = serde_json::from_value(v["users"].clone())?;
            out.extend(page);
            match &v["next_token"] {
                Value::String(s) => from = s.clone(),
                Value::Number(n) => from = n.to_string(),
                _ => return Ok(out),
            }
        }
    }

    /// None when the account does not exist.
    pub fn user(&self, user_id: &str) -> Result<Option<UserInfo>> {
        let path = format!("/_synapse/admin/v2/users/{}", encode_segment(user_id));
        match self.call("GET", &path, None) {
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(e),
            Ok(v) => Ok(Some(serde_json::from_value(v)?)),
        }
    }

    /// Create an account (PUT /_synapse/admin/v2/users/<id>). Refuses an existing one: PUT would modify it.
    pub fn user_create(&self, user_id: &str, password: &Secret, admin: bool) -> Result<()> {
        if self.user(user_id)?.is_some() {
            bail!("{user_id} already exists (use `matrix-provision user reset-password` to give it a new password)");
        }
        let path = format!("/_synapse/admin/v2/users/{}", encode_segment(user_id));
        let body = json!({"password": password.expose(), "admin": admin});
        self.call("PUT", &path, Some(&body)).map(|_| ())
    }

    /// Set a new password and log the account out everywhere.
    pub fn reset_password(&self, user_id: &str, password: &Secret) -> Result<()> {
        let path = format!(
            "/_synapse/admin/v1/reset_password/{}",
            encode_segment(user_id)
        );
        let body = json!({"new_password": password.expose(), "logout_devices": true});
        self.call("POST", &path, Some(&body))
            .map_err(|e| not_found(e, user_id))?;
        if user_id == self.admin_user_id() {
            // Our own account: keep the file in step, or the next renewal would fail.
            let mut c = self.creds.borrow_mut();
            c.password = password.clone();
            c.access_token = None;
            c.save(self.sys)?;
        }
        Ok(())
    }

    /// Deactivate (not erase) an account. The provisioner's own admin account is refused.
    pub fn deactivate(&self, user_id: &str) -> Result<()> {
        if user_id == self.admin_user_id() {
            bail!("{user_id} is the account matrix-provision itself uses (see {CREDENTIALS_PATH}); it cannot deactivate it");
        }
        let path = format!("/_synapse/admin/v1/deactivate/{}", encode_segment(user_id));
        self.call("POST", &path, Some(&json!({"erase": false})))
            .map(|_| ())
            .map_err(|e| not_found(e, user_id))
    }
}

fn not_found(e: anyhow::Error, user_id: &str) -> anyhow::Error {
    if is_status(&e, 404) {
        e.context(format!(
            "there is no account {user_id} (see `matrix-provision user list`)"
        ))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::FakeTransport;
    use crate::system::FakeSystem;

    fn creds(token: Option<&str>) -> Credentials {
        Credentials {
            user_id: "@admin:ex.org".into(),
            password: Secret::from_stored("pw"),
            access_token: token.map(Secret::from_stored),
        }
    }

    const TOKENS: &str = "/_synapse/admin/v1/registration_tokens";

    #[test]
    fn an_expired_token_is_renewed_saved_and_the_call_retried() {
        let sys = FakeSystem::new();
        let t = FakeTransport::new();
        t.reply(
            "GET",
            TOKENS,
            401,
            r#"{"errcode":"M_UNKNOWN_TOKEN","error":"Unknown access token"}"#,
        );
        t.reply("GET", TOKENS, 200, r#"{"registration_tokens":[{"token":"abc","uses_allowed":3,"pending":1,"completed":1,"expiry_time":null}]}"#);
        t.reply(
            "POST",
            "/_matrix/client/v3/login",
            200,
            r#"{"user_id":"@admin:ex.org","access_token":"new","device_id":"D"}"#,
        );
        let s = Session::with(&sys, &t, creds(Some("old")));
        let list = s.token_list().unwrap();
        assert_eq!(list[0].token, "abc");
        assert_eq!(list[0].uses_left(), Some(1));
        let tokens: Vec<_> = t.sent().iter().map(|r| r.token.clone()).collect();
        assert_eq!(tokens, vec![Some("old".into()), None, Some("new".into())]);
        let saved = Credentials::load(&sys).unwrap().unwrap();
        assert_eq!(saved.access_token.unwrap().expose(), "new");
    }

    #[test]
    fn a_changed_password_is_reported_with_the_file_to_fix() {
        let sys = FakeSystem::new();
        let t = FakeTransport::new();
        t.reply(
            "GET",
            TOKENS,
            401,
            r#"{"errcode":"M_UNKNOWN_TOKEN","error":"Unknown access token"}"#,
        );
        t.reply(
            "POST",
            "/_matrix/client/v3/login",
            403,
            r#"{"errcode":"M_FORBIDDEN","error":"Invalid username or password"}"#,
        );
        let s = Session::with(&sys, &t, creds(Some("old")));
        let err = format!("{:#}", s.token_list().unwrap_err());
        assert!(
            err.contains(CREDENTIALS_PATH) && err.contains("Invalid username or password"),
            "{err}"
        );
    }

    #[test]
    fn missing_credentials_say_how_to_create_them() {
        let sys = FakeSystem::new();
        let t = FakeTransport::new();
        let err = Session::open(&sys, &t).err().unwrap().to_string();
        assert!(
            err.contains("synapse.admin_user") && err.contains("apply"),
            "{err}"
        );
    }

    #[test]
    fn synapse_down_reaches_the_caller_with_the_hint() {
        let sys = FakeSystem::new();
        let t = FakeTransport::down();
        let s = Session::with(&sys, &t, creds(Some("tok")));
        let err = format!("{:#}", s.users().unwrap_err());
        assert!(err.contains("is matrix-synapse running?"), "{err}");
    }

    #[test]
    fn users_follow_pagination_and_accept_numeric_flags() {
        let sys = FakeSystem::new();
        let t = FakeTransport::new();
        t.reply("GET", "/_synapse/admin/v2/users", 200, r#"{"users":[{"name":"@a:ex.org","admin":1,"deactivated":0}],"next_token":"1","total":2}"#);
        t.reply("GET", "/_synapse/admin/v2/users", 200, r#"{"users":[{"name":"@b:ex.org","admin":false,"deactivated":true,"displayname":"B"}],"total":2}"#);
        let s = Session::with(&sys, &t, creds(Some("tok")));
        let users = s.users().unwrap();
        assert_eq!(users.len(), 2);
        assert!(users[0].admin && !users[0].deactivated);
        assert!(!users[1].admin && users[1].deactivated);
        assert!(t.sent()[1].path.contains("from=1"));
    }

    #[test]
    fn creating_an_existing_user_is_refused_before_any_put() {
        let sys = FakeSystem::new();
        let t = FakeTransport::new();
        t.reply(
            "GET",
            "/_synapse/admin/v2/users/%40bob%3Aex.org",
            200,
            r#"{"name":"@bob:ex.org","admin":false}"#,
        );
        let s = Session::with(&sys, &t, creds(Some("tok")));
        let err = s
            .user_create("@bob:ex.org", &Secret::from_stored("p"), false)
            .unwrap_err();
        assert!(err.to_string().contains("already exists"));
        assert!(t.sent().iter().all(|r| r.method != "PUT"));
    }

    #[test]
    fn revoking_an_unknown_token_names_it() {
        let sys = FakeSystem::new();
        let t = FakeTransport::new();
        let s = Session::with(&sys, &t, creds(Some("tok")));
        let err = format!("{:#}", s.token_delete("nope").unwrap_err());
        assert!(err.contains("no registration token `nope`"), "{err}");
    }

    #[test]
    fn resetting_our_own_password_updates_the_stored_file() {
        let sys = FakeSystem::new();
        let t = FakeTransport::new();
        t.reply(
            "POST",
            "/_synapse/admin/v1/reset_password/%40admin%3Aex.org",
            200,
            "{}",
        );
        let s = Session::with(&sys, &t, creds(Some("tok")));
        s.reset_password("@admin:ex.org", &Secret::from_stored("fresh"))
            .unwrap();
        let saved = Credentials::load(&sys).unwrap().unwrap();
        assert_eq!(saved.password.expose(), "fresh");
        assert!(saved.access_token.is_none());
        assert!(s.deactivate("@admin:ex.org").is_err());
    }
}
