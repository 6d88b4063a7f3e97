//! A small client for Synapse's admin API on loopback: shared-secret registration, login, registration
//! tokens and users. Every call goes through a [`Transport`] (HTTP in production, [`FakeTransport`] in
//! tests). A call that gets no answer says Synapse is down; an HTTP error says what Synapse answered.
//!
//! [`Session`] holds the provisioner's own admin credentials (`/var/lib/matrix-provision/admin.json`) and
//! logs in again when Synapse refuses the stored access token.

mod credentials;
#[cfg(any(test, feature = "fake"))]
mod fake;
mod mac;
mod session;

use std::fmt;

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};

pub use credentials::Credentials;
#[cfg(any(test, feature = "fake"))]
pub use fake::FakeTransport;
pub use mac::registration_mac;
pub use session::{NewToken, RegistrationToken, Session, TurnOffer, UserInfo};

use crate::http::Reply;
use crate::secrets::Secret;

/// Where Synapse's client listener answers (never anything but loopback).
pub const SYNAPSE_ADDR: &str = crate::layout::SYNAPSE_ADDR;
/// The provisioner's admin credentials: user id, password, access token (0600 root).
pub const CREDENTIALS_PATH: &str = crate::layout::ADMIN_CREDENTIALS;
/// Written by the secret step of playbooks/20-synapse.toml; Synapse reads it through
/// `registration_shared_secret_path`.
pub const SHARED_SECRET_PATH: &str = crate::layout::SYNAPSE_REGISTRATION_SECRET;

/// One HTTP exchange with Synapse. `Err` only when Synapse gave no answer at all.
pub trait Transport {
    fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply>;
}

/// The real transport: plain HTTP to Synapse on loopback, short timeouts (an admin command should fail
/// fast when Synapse hangs, not wait a quarter of an hour).
pub struct HttpTransport {
    base: String,
    opts: crate::http::Options,
}

impl HttpTransport {
    pub fn loopback() -> HttpTransport {
        HttpTransport::at(&format!("http://{SYNAPSE_ADDR}"))
    }

    /// Another base URL (a test Synapse on another loopback port).
    pub fn at(base: &str) -> HttpTransport {
        HttpTransport {
            base: base.trim_end_matches('/').to_string(),
            opts: crate::http::Options {
                connect_timeout: std::time::Duration::from_secs(5),
                read_timeout: std::time::Duration::from_secs(60),
                total_timeout: std::time::Duration::from_secs(120),
                max_bytes: 16 * 1024 * 1024,
                ..crate::http::Options::default()
            },
        }
    }
}

impl Transport for HttpTransport {
    fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply> {
        let json = body.map(serde_json::to_vec).transpose()?;
        crate::http::request(
            method,
            &format!("{}{path}", self.base),
            token,
            json.as_deref(),
            &self.opts,
        )
    }
}

/// What Synapse answered when it said no: the HTTP status and its Matrix error code and message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// What we asked for, e.g. "POST /_synapse/admin/v1/register".
    pub request: String,
    pub status: u16,
    pub errcode: String,
    pub message: String,
}

impl ApiError {
    fn from_reply(request: String, reply: &Reply) -> ApiError {
        #[derive(Deserialize, Default)]
        struct Body {
            #[serde(default)]
            errcode: String,
            #[serde(default)]
            error: String,
        }
        let body: Body = serde_json::from_slice(&reply.body).unwrap_or_default();
        let message = if body.error.is_empty() {
            String::from_utf8_lossy(&reply.body)
                .chars()
                .take(200)
                .collect()
        } else {
            body.error
        };
        ApiError {
            request,
            status: reply.status,
            errcode: body.errcode,
            message,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: Synapse answered HTTP {}", self.request, self.status)?;
        if !self.errcode.is_empty() {
            write!(f, " {}", self.errcode)?;
        }
        if !self.message.trim().is_empty() {
            write!(f, ": {}", self.message.trim())?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// Is `err` Synapse's answer with this HTTP status?
pub fn is_status(err: &anyhow::Error, status: u16) -> bool {
    err.downcast_ref::<ApiError>()
        .is_some_and(|e| e.status == status)
}

/// Is `err` Synapse's answer with this Matrix error code (e.g. "M_USER_IN_USE")?
pub fn is_errcode(err: &anyhow::Error, errcode: &str) -> bool {
    err.downcast_ref::<ApiError>()
        .is_some_and(|e| e.errcode == errcode)
}

/// A fresh account or login: who, and the access token that acts as them.
#[derive(Debug, Clone)]
pub struct Login {
    pub user_id: String,
    pub access_token: Option<Secret>,
}

/// Calls that need no access token, and the plumbing every call shares.
pub struct Client<'a> {
    transport: &'a dyn Transport,
}

impl<'a> Client<'a> {
    pub fn new(transport: &'a dyn Transport) -> Client<'a> {
        Client { transport }
    }

    /// Send and return the JSON body of a 2xx answer; anything else is an [`ApiError`].
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&Secret>,
        body: Option<&Value>,
    ) -> Result<Value> {
        let request = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let reply = self
            .transport
            .send(method, path, token.map(Secret::expose), body)
            .map_err(|e| {
                anyhow!(
                    "Synapse does not answer on {SYNAPSE_ADDR}: is matrix-synapse running? \
                     systemctl status matrix-synapse ({e:#})"
                )
            })?;
        if !reply.ok() {
            return Err(ApiError::from_reply(request, &reply).into());
        }
        if reply.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&reply.body)
            .with_context(|| format!("{request}: Synapse's answer is not JSON"))
    }

    /// GET /_synapse/admin/v1/register: a one-time nonce for shared-secret registration.
    pub fn nonce(&self) -> Result<String> {
        let v = self.call("GET", "/_synapse/admin/v1/register", None, None)?;
        v["nonce"]
            .as_str()
            .map(str::to_string)
            .context("GET /_synapse/admin/v1/register: the answer has no nonce")
    }

    /// Create `localpart` through shared-secret registration (no prompt, no admin token needed).
    pub fn register(
        &self,
        shared_secret: &Secret,
        localpart: &str,
        password: &Secret,
        admin: bool,
    ) -> Result<Login> {
        let nonce = self.nonce()?;
        let mac = registration_mac(
            shared_secret.expose(),
            &nonce,
            localpart,
            password.expose(),
            admin,
        );
        let body = json!({
            "nonce": nonce,
            "username": localpart,
            "password": password.expose(),
            "admin": admin,
            "mac": mac,
        });
        let v = self
            .call("POST", "/_synapse/admin/v1/register", None, Some(&body))
            .map_err(|e| match e.downcast_ref::<ApiError>() {
                Some(api) if api.status == 403 && api.message.contains("HMAC") => e.context(format!(
                    "Synapse rejects the shared secret: it must match the file {SHARED_SECRET_PATH} \
                     named by registration_shared_secret_path (restart matrix-synapse after changing it)"
                )),
                _ => e,
            })?;
        login_from(&v, localpart)
    }

    /// POST /_matrix/client/v3/login with a password.
    pub fn login(&self, user: &str, password: &Secret) -> Result<Login> {
        let body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password.expose(),
            "initial_device_display_name": "matrix-provision",
        });
        let v = self.call("POST", "/_matrix/client/v3/login", None, Some(&body))?;
        let login = login_from(&v, user)?;
        if login.access_token.is_none() {
            anyhow::bail!("POST /_matrix/client/v3/login: the answer has no access_token");
        }
        Ok(login)
    }
}

fn login_from(v: &Value, who: &str) -> Result<Login> {
    Ok(Login {
        user_id: v["user_id"]
            .as_str()
            .with_context(|| format!("Synapse's answer for {who} has no user_id"))?
            .to_string(),
        access_token: v["access_token"].as_str().map(Secret::from_stored),
    })
}

/// `@localpart:server_name`, or the input unchanged when it already is a full user id.
pub fn user_id(name: &str, server_name: &str) -> String {
    if name.starts_with('@') {
        name.to_string()
    } else {
        format!("@{name}:{server_name}")
    }
}

/// Percent-encode one path segment (user ids hold `@` and `:`).
pub fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synapse_down_is_named_with_the_fix() {
        let t = FakeTransport::down();
        let err = Client::new(&t).nonce().unwrap_err().to_string();
        assert!(
            err.contains("Synapse does not answer on 127.0.0.1:8008")
                && err.contains("systemctl status matrix-synapse"),
            "{err}"
        );
    }

    #[test]
    fn registration_sends_the_mac_over_the_nonce_and_uses_the_returned_token() {
        let t = FakeTransport::new();
        t.reply(
            "GET",
            "/_synapse/admin/v1/register",
            200,
            r#"{"nonce":"n1"}"#,
        );
        t.reply(
            "POST",
            "/_synapse/admin/v1/register",
            200,
            r#"{"user_id":"@admin:example.org","access_token":"tok","device_id":"D"}"#,
        );
        let login = Client::new(&t)
            .register(
                &Secret::from_stored("s3cret"),
                "admin",
                &Secret::from_stored("pw"),
                true,
            )
            .unwrap();
        assert_eq!(login.user_id, "@admin:example.org");
        assert_eq!(login.access_token.unwrap().expose(), "tok");
        let sent = t.sent();
        let body = sent[1].body.as_ref().unwrap();
        assert_eq!(body["nonce"], "n1");
        assert_eq!(body["admin"], true);
        assert_eq!(
            body["mac"],
            registration_mac("s3cret", "n1", "admin", "pw", true)
        );
    }

    #[test]
    fn a_wrong_shared_secret_says_which_file() {
        let t = FakeTransport::new();
        t.reply(
            "GET",
            "/_synapse/admin/v1/register",
            200,
            r#"{"nonce":"n1"}"#,
        );
        t.reply(
            "POST",
            "/_synapse/admin/v1/register",
            403,
            r#"{"errcode":"M_FORBIDDEN","error":"HMAC incorrect"}"#,
        );
        let err = Client::new(&t)
            .register(
                &Secret::from_stored("x"),
                "admin",
                &Secret::from_stored("pw"),
                true,
            )
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains(SHARED_SECRET_PATH) && text.contains("HMAC incorrect"),
            "{text}"
        );
    }

    #[test]
    fn encodes_user_ids_for_paths() {
        assert_eq!(encode_segment("@a.b:ex-1.org"), "%40a.b%3Aex-1.org");
        assert_eq!(user_id("alice", "ex.org"), "@alice:ex.org");
        assert_eq!(user_id("@bob:other.org", "ex.org"), "@bob:other.org");
    }
}
