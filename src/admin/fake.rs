//! A Synapse for tests: answers scripted per method and path (query string ignored), in order when one
//! request is scripted several times (the last answer repeats), and records every request.

use std::collections::HashMap;

use anyhow::{bail, Result};
use serde_json::Value;

use super::Transport;
use crate::http::Reply;

#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub method: String,
    pub path: String,
    pub token: Option<String>,
    pub body: Option<Value>,
}

#[derive(Default)]
pub struct FakeTransport {
    down: bool,
    replies: std::sync::Mutex<HashMap<(String, String), Vec<Reply>>>,
    sent: std::sync::Mutex<Vec<Sent>>,
}

impl FakeTransport {
    pub fn new() -> FakeTransport {
        FakeTransport::default()
    }

    /// Nothing listens: every request fails like a refused connection.
    pub fn down() -> FakeTransport {
        FakeTransport {
            down: true,
            ..FakeTransport::default()
        }
    }

    pub fn reply(&self, method: &str, path: &str, status: u16, body: &str) {
        self.replies
            .lock()
            .unwrap()
            .entry((method.to_string(), path.to_string()))
            .or_default()
            .push(Reply {
                status,
                body: body.as_bytes().to_vec(),
            });
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }
}

impl Transport for FakeTransport {
    fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply> {
        self.sent.lock().unwrap().push(Sent {
            method: method.to_string(),
            path: path.to_string(),
            token: token.map(str::to_string),
            body: body.cloned(),
        });
        if self.down {
            bail!(
                "{method} {}{path}: connection refused (nothing listens there)",
                crate::layout::SYNAPSE_URL
            );
        }
        let key = (
            method.to_string(),
            path.split('?').next().unwrap_or(path).to_string(),
        );
        let mut replies = self.replies.lock().unwrap();
        match replies.get_mut(&key) {
            Some(queue) if queue.len() > 1 => Ok(queue.remove(0)),
            Some(queue) if !queue.is_empty() => Ok(queue[0].clone()),
            _ => Ok(Reply {
                status: 404,
                body: br#"{"errcode":"M_UNRECOGNIZED","error":"not scripted"}"#.to_vec(),
            }),
        }
    }
}
