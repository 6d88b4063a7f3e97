//! The admin client against a real Synapse on loopback. Ignored by default (it needs a running Synapse):
//!
//!   MP_SYNAPSE_URL=http://127.0.0.1:18008 MP_SYNAPSE_SECRET=<registration_shared_secret> \
//!   MP_SERVER_NAME=test.local [MP_TURN_ADDR=127.0.0.1:3478] \
//!   cargo test --test synapse_live -- --ignored --test-threads=1
//!
//! Synapse must allow registration with tokens (enable_registration + registration_requires_token).
//! Files go under a temp dir (RealSystem rooted there), never to the host's /var/lib.

use matrix_provision::admin::{
    self, Client, Credentials, HttpTransport, NewToken, Session, Transport, CREDENTIALS_PATH,
    SHARED_SECRET_PATH,
};
use matrix_provision::engine::{ChangeKind, Ctx, Step};
use matrix_provision::secrets::{Secret, SecretStore};
use matrix_provision::steps::admin_user::AdminUserStep;
use matrix_provision::system::RealSystem;
use serde_json::json;

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("set {key} (see the top of this file)"))
}

/// Register through the client API with a registration token (user-interactive auth: the first POST
/// answers 401 with a session, then each stage is completed in turn).
fn register_with_token(url: &str, user: &str, password: &str, token: &str) -> anyhow::Result<()> {
    let t = HttpTransport::at(url);
    let post = |body: serde_json::Value| -> anyhow::Result<(u16, serde_json::Value)> {
        let r = t.send("POST", "/_matrix/client/v3/register", None, Some(&body))?;
        Ok((r.status, serde_json::from_slice(&r.body)?))
    };
    let (status, body) = post(json!({"username": user, "password": password}))?;
    assert_eq!(
        status, 401,
        "registration must ask for the token first: {body}"
    );
    let session = body["session"].as_str().expect("a UIA session").to_string();
    let mut auth =
        json!({"type": "m.login.registration_token", "token": token, "session": session});
    for _ in 0..3 {
        let (status, body) = post(json!({"username": user, "password": password, "auth": auth}))?;
        if status == 200 {
            return Ok(());
        }
        let done = body["completed"].to_string();
        if status == 401 && done.contains("m.login.registration_token") {
            auth = json!({"type": "m.login.dummy", "session": session});
            continue;
        }
        anyhow::bail!("register {user}: HTTP {status} {body}");
    }
    anyhow::bail!("register {user}: too many stages")
}

#[test]
#[ignore = "needs a running Synapse (see the top of this file)"]
fn admin_account_tokens_and_users_against_real_synapse() {
    let url = env("MP_SYNAPSE_URL");
    let server_name = env("MP_SERVER_NAME");
    let root = tempfile::tempdir().unwrap();
    let sys = RealSystem::new(root.path());
    let secret_file = sys.map(std::path::Path::new(SHARED_SECRET_PATH));
    std::fs::create_dir_all(secret_file.parent().unwrap()).unwrap();
    std::fs::write(&secret_file, format!("{}\n", env("MP_SYNAPSE_SECRET"))).unwrap();
    // A RealSystem rooted elsewhere looks accounts up in its own /etc: "root" is whoever runs the test.
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    std::fs::write(
        root.path().join("etc/passwd"),
        format!("root:x:{uid}:{gid}::/root:/bin/sh\n"),
    )
    .unwrap();
    std::fs::write(root.path().join("etc/group"), format!("root:x:{gid}:\n")).unwrap();
    let suffix = std::process::id();
    let admin_name = format!("mpadmin{suffix}");

    // 1. The first admin: created once, in sync afterwards.
    let secrets = SecretStore::new();
    let ctx = Ctx::new(&sys, &secrets);
    let step = AdminUserStep {
        localpart: admin_name.clone(),
        server_name: server_name.clone(),
        transport: Box::new(HttpTransport::at(&url)),
    };
    let change = step.check(&ctx).unwrap();
    assert_eq!(change.kind, ChangeKind::Create);
    step.apply(&ctx, &change).unwrap();
    assert!(step.check(&ctx).unwrap().is_in_sync());
    let creds = Credentials::load(&sys).unwrap().unwrap();
    assert_eq!(creds.user_id, format!("@{admin_name}:{server_name}"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(sys.map(std::path::Path::new(CREDENTIALS_PATH)))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let transport = HttpTransport::at(&url);
    let session = Session::open(&sys, &transport).unwrap();

    // 2. A token is created, used by a client to register, and shows as used.
    let expiry = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 86_400_000) as i64;
    let token = session
        .token_create(&NewToken {
            token: Some(format!("mp-test-{suffix}")),
            uses_allowed: Some(2),
            expiry_time_ms: Some(expiry),
        })
        .unwrap();
    assert_eq!(token.uses_left(), Some(2));
    assert_eq!(token.expiry_time, Some(expiry));
    let client = Client::new(&transport);
    let carol = format!("carol{suffix}");
    register_with_token(&url, &carol, "carol-password-1", &token.token).unwrap();
    let listed = session.token_list().unwrap();
    let t = listed.iter().find(|t| t.token == token.token).unwrap();
    assert_eq!((t.completed, t.uses_left()), (1, Some(1)), "{t:?}");

    // 3. Users: add, list, reset password (the new one logs in), deactivate.
    let bob = admin::user_id(&format!("bob{suffix}"), &server_name);
    session
        .user_create(&bob, &Secret::from_stored("bob-password-1"), false)
        .unwrap();
    assert!(session
        .user_create(&bob, &Secret::from_stored("x"), false)
        .unwrap_err()
        .to_string()
        .contains("already exists"));
    let users = session.users().unwrap();
    assert!(users
        .iter()
        .any(|u| u.name == bob && !u.admin && !u.deactivated));
    assert!(users.iter().any(|u| u.name == creds.user_id && u.admin));
    session
        .reset_password(&bob, &Secret::from_stored("bob-password-2"))
        .unwrap();
    client
        .login(&bob, &Secret::from_stored("bob-password-2"))
        .unwrap();
    assert!(client
        .login(&bob, &Secret::from_stored("bob-password-1"))
        .is_err());
    session.deactivate(&bob).unwrap();
    assert!(session.user(&bob).unwrap().unwrap().deactivated);

    // 4. A revoked access token is renewed by logging in again, and the new one is stored.
    let old = Credentials::load(&sys)
        .unwrap()
        .unwrap()
        .access_token
        .unwrap();
    client
        .call(
            "POST",
            "/_matrix/client/v3/logout",
            Some(&old),
            Some(&json!({})),
        )
        .unwrap();
    let fresh = Session::open(&sys, &transport).unwrap();
    assert!(fresh
        .token_list()
        .unwrap()
        .iter()
        .any(|t| t.token == token.token));
    let renewed = Credentials::load(&sys)
        .unwrap()
        .unwrap()
        .access_token
        .unwrap();
    assert_ne!(renewed.expose(), old.expose());

    // 5. Revoke; revoking again names the token.
    fresh.token_delete(&token.token).unwrap();
    let again = format!("{:#}", fresh.token_delete(&token.token).unwrap_err());
    assert!(again.contains("no registration token"), "{again}");

    // 6. TURN: the test Synapse has turn_uris and a turn_shared_secret.
    let offer = fresh.turn_server().unwrap();
    assert!(
        !offer.uris.is_empty() && !offer.username.is_empty(),
        "{offer:?}"
    );
    // With MP_TURN_ADDR (a coturn sharing the test Synapse's turn_shared_secret): allocate a relay.
    if let Ok(addr) = std::env::var("MP_TURN_ADDR") {
        use matrix_provision::doctor::turn::{allocate, TurnCredentials};
        let addr = addr.parse().unwrap();
        let creds = TurnCredentials {
            username: offer.username.clone(),
            password: offer.password.expose().to_string(),
        };
        let relayed = allocate(addr, &creds, std::time::Duration::from_secs(2)).unwrap();
        eprintln!("coturn relayed via {relayed}");
        let wrong = TurnCredentials {
            username: offer.username.clone(),
            password: "not-the-password".into(),
        };
        let err = allocate(addr, &wrong, std::time::Duration::from_secs(2))
            .unwrap_err()
            .to_string();
        assert!(err.contains("static-auth-secret"), "{err}");
    }
}
