//! Answers to the host's read-only questions (`systemctl show`, `dpkg-query`, `ss`, `sshd -T`,
//! `pg_lsclusters`), kept for the rest of a run until the run changes anything. On a converged host nothing
//! changes, so each question costs one process however many steps ask it, and the unit states of the whole
//! graph come from one `systemctl show` (see [`Memo::units_batch`]). The first write, or any command that is
//! not such a question, drops every answer for good: from then on each check asks the host again, so a
//! check never sees what the host looked like before a change of this run.

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex};

use anyhow::Result;

use super::{Cmd, CmdOutput};

type Key = (String, Vec<String>);

#[derive(Default)]
struct State {
    /// Set by the first change of this run; never cleared.
    changed: bool,
    answers: HashMap<Key, CmdOutput>,
    /// Questions a batch is answering right now: wait for it rather than ask again.
    pending: HashSet<Key>,
}

#[derive(Default)]
pub struct Memo {
    state: Mutex<State>,
    answered: Condvar,
}

/// A question whose answer only a change can alter: same command, same answer, until then.
fn is_query(cmd: &Cmd) -> bool {
    if cmd.stdin.is_some() || !cmd.env.is_empty() {
        return false;
    }
    let first = cmd.args.first().map(String::as_str);
    match cmd.program.as_str() {
        "dpkg-query" | "ss" | "pg_lsclusters" => true,
        "systemctl" => first == Some("show"),
        "sshd" => cmd.args == ["-T"],
        "apt-cache" => first == Some("policy"),
        _ => false,
    }
}

/// Run as an unprivileged user (setpriv --reuid=… other than root): psql as postgres, the Element job as
/// the tree's owner. Such a process cannot change a unit, a package, sshd or a socket nginx holds.
fn unprivileged(cmd: &Cmd) -> bool {
    cmd.program == "setpriv"
        && cmd.args.iter().take_while(|a| *a != "--").any(|a| {
            a.strip_prefix("--reuid=")
                .is_some_and(|u| u != "0" && u != "root")
        })
}

fn key(cmd: &Cmd) -> Key {
    (cmd.program.clone(), cmd.args.clone())
}

impl Memo {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This run changed (or is about to change) the host: every answer so far may be stale.
    pub fn changed(&self) {
        let mut s = self.lock();
        s.changed = true;
        s.answers.clear();
        s.pending.clear();
        self.answered.notify_all();
    }

    /// Run `cmd` through `live`, or answer it from an earlier identical question of this run.
    pub fn run(&self, cmd: &Cmd, live: impl Fn(&Cmd) -> Result<CmdOutput>) -> Result<CmdOutput> {
        if !is_query(cmd) {
            if !unprivileged(cmd) {
                self.changed();
            }
            return live(cmd);
        }
        let key = key(cmd);
        {
            let mut s = self.lock();
            loop {
                if s.changed {
                    break;
                }
                if let Some(answer) = s.answers.get(&key) {
                    return Ok(answer.clone());
                }
                if !s.pending.contains(&key) {
                    break;
                }
                s = self.answered.wait(s).unwrap_or_else(|e| e.into_inner());
            }
        }
        let out = live(cmd)?;
        let mut s = self.lock();
        // Asked while a change began: the answer may predate it, so it is not kept.
        if out.ok() && !s.changed {
            s.answers.insert(key, out.clone());
        }
        Ok(out)
    }

    /// One `systemctl show` for all of `units`, stored as the answers to the one-unit questions
    /// `one(unit)` asks; those asked meanwhile wait for it. Call [`Batch::fetch`] (on any thread).
    pub fn units_batch<'m>(
        &'m self,
        units: &[String],
        one: impl Fn(&str) -> Cmd,
        all: Cmd,
    ) -> Batch<'m> {
        let keys: Vec<Key> = units.iter().map(|u| key(&one(u))).collect();
        let mut s = self.lock();
        if !s.changed {
            s.pending.extend(keys.iter().cloned());
        }
        Batch {
            memo: self,
            keys,
            all,
        }
    }
}

pub struct Batch<'m> {
    memo: &'m Memo,
    keys: Vec<Key>,
    all: Cmd,
}

impl Batch<'_> {
    pub fn fetch(self, live: impl Fn(&Cmd) -> Result<CmdOutput>) {
        let out = if self.keys.is_empty() {
            None
        } else {
            live(&self.all).ok().filter(CmdOutput::ok)
        };
        let mut s = self.memo.lock();
        if let Some(out) = out.filter(|_| !s.changed) {
            // systemctl prints one block per unit, in the order asked, a blank line between them.
            let blocks: Vec<&str> = out.stdout.trim_end_matches('\n').split("\n\n").collect();
            if blocks.len() == self.keys.len() {
                for (k, block) in self.keys.iter().zip(blocks) {
                    let answer = CmdOutput {
                        status: 0,
                        stdout: format!("{block}\n"),
                        stderr: String::new(),
                    };
                    s.answers.insert(k.clone(), answer);
                }
            }
        }
        for k in &self.keys {
            s.pending.remove(k);
        }
        self.memo.answered.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn show(unit: &str) -> Cmd {
        Cmd::new("systemctl").args(["show", "-p", "ActiveState", unit])
    }

    fn answer(text: &str) -> Result<CmdOutput> {
        Ok(CmdOutput {
            status: 0,
            stdout: text.into(),
            stderr: String::new(),
        })
    }

    #[test]
    fn a_question_is_asked_once_until_the_run_changes_something() {
        let memo = Memo::default();
        let calls = AtomicUsize::new(0);
        let live = |_: &Cmd| {
            calls.fetch_add(1, Ordering::SeqCst);
            answer("ActiveState=active\n")
        };
        for _ in 0..3 {
            assert_eq!(
                memo.run(&show("nginx"), live).unwrap().stdout,
                "ActiveState=active\n"
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // psql as postgres changes nothing these questions see; a restart does.
        let psql = Cmd::new("setpriv").args(["--reuid=postgres", "--", "psql"]);
        memo.run(&psql, live).unwrap();
        memo.run(&show("nginx"), live).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        memo.run(&Cmd::new("systemctl").args(["restart", "nginx"]), live)
            .unwrap();
        memo.run(&show("nginx"), live).unwrap();
        memo.run(&show("nginx"), live).unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            5,
            "asked live after the change"
        );
    }

    #[test]
    fn root_commands_and_questions_with_input_are_never_answered_from_memory() {
        let memo = Memo::default();
        let calls = AtomicUsize::new(0);
        let live = |_: &Cmd| {
            calls.fetch_add(1, Ordering::SeqCst);
            answer("x")
        };
        let sql = Cmd::new("setpriv").args(["--reuid=root", "--", "sh"]);
        memo.run(&sql, live).unwrap();
        assert!(memo.lock().changed, "a root command may change anything");
        let memo = Memo::default();
        let with_input = Cmd::new("dpkg-query").arg("-W").stdin("x");
        memo.run(&with_input, live).unwrap();
        memo.run(&with_input, live).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn one_batch_answers_every_unit_and_a_change_discards_it() {
        let memo = Memo::default();
        let units = vec!["nginx".to_string(), "coturn".to_string()];
        let all = Cmd::new("systemctl").args(["show", "-p", "ActiveState", "nginx", "coturn"]);
        let batch = memo.units_batch(&units, show, all.clone());
        let calls = AtomicUsize::new(0);
        std::thread::scope(|s| {
            // Asked before the batch is back: waits for it instead of running systemctl itself.
            let asked = s.spawn(|| {
                memo.run(&show("coturn"), |_| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    answer("ActiveState=failed\n")
                })
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            batch.fetch(|c| {
                assert_eq!(c, &all);
                answer("ActiveState=active\n\nActiveState=inactive\n")
            });
            assert_eq!(
                asked.join().unwrap().unwrap().stdout,
                "ActiveState=inactive\n"
            );
        });
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        let fail = |_: &Cmd| -> Result<CmdOutput> { panic!("asked live") };
        assert_eq!(
            memo.run(&show("nginx"), fail).unwrap().stdout,
            "ActiveState=active\n"
        );

        // A change during the batch: its answers are not kept.
        let memo = Memo::default();
        let batch = memo.units_batch(&units, show, all);
        memo.changed();
        batch.fetch(|_| answer("ActiveState=active\n\nActiveState=active\n"));
        assert!(memo.lock().answers.is_empty());
    }
}
