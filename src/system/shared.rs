//! One run of a command for several callers that need it at once: the way a database commits several
//! transactions with one fsync. Each caller gets the outcome of a run that *started after it asked*, so it
//! judges the host as it was after its own change; callers that ask while a run is under way share the next
//! one. Steps validating one service's config (Synapse's check imports all of Synapse, ~5 s a start) write
//! their fragments side by side and are judged by one or two checks instead of one each. Runs of one
//! command never overlap, so a validator that writes something (Synapse's --generate-keys) never races itself.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

use anyhow::Result;

use super::{Cmd, CmdOutput};

#[derive(Default)]
struct Slot {
    started: u64,
    finished: u64,
    running: bool,
    /// The newest finished run's outcome (an error as its message: anyhow's is not Clone).
    last: Option<std::result::Result<CmdOutput, String>>,
}

#[derive(Default)]
pub struct Shared {
    slots: Mutex<HashMap<Cmd, Slot>>,
    done: Condvar,
}

impl Shared {
    pub fn run(&self, cmd: &Cmd, live: impl Fn(&Cmd) -> Result<CmdOutput>) -> Result<CmdOutput> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        // The first run that starts after this call: one under way now may predate our change.
        let want = slots.entry(cmd.clone()).or_default().started + 1;
        loop {
            let slot = slots.get_mut(cmd).expect("entry made above");
            if slot.finished >= want {
                let last = slot.last.clone().expect("a finished run left its outcome");
                return last.map_err(anyhow::Error::msg);
            }
            if !slot.running {
                slot.running = true;
                slot.started += 1;
                let me = slot.started;
                drop(slots);
                let out = live(cmd);
                let shared = out.as_ref().map(Clone::clone).map_err(|e| format!("{e:#}"));
                let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
                let slot = slots.get_mut(cmd).expect("entry made above");
                slot.running = false;
                slot.finished = me;
                slot.last = Some(shared);
                self.done.notify_all();
                return out;
            }
            slots = self.done.wait(slots).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn callers_during_a_run_share_the_next_one_and_runs_never_overlap() {
        let shared = Shared::default();
        let cmd = Cmd::new("validate");
        let (runs, inside) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let live = |_: &Cmd| {
            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two runs at once");
            let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
            std::thread::sleep(Duration::from_millis(100));
            inside.fetch_sub(1, Ordering::SeqCst);
            Ok(CmdOutput {
                status: 0,
                stdout: format!("run {n}"),
                stderr: String::new(),
            })
        };
        std::thread::scope(|s| {
            let first = s.spawn(|| shared.run(&cmd, live).unwrap().stdout);
            std::thread::sleep(Duration::from_millis(30));
            // Asked while run 1 is under way: run 1 may not see their files, so all five get run 2.
            let later: Vec<_> = (0..5)
                .map(|_| s.spawn(|| shared.run(&cmd, live).unwrap().stdout))
                .collect();
            assert_eq!(first.join().unwrap(), "run 1");
            for l in later {
                assert_eq!(l.join().unwrap(), "run 2");
            }
        });
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // Nothing under way: a new caller gets a run of its own.
        assert_eq!(shared.run(&cmd, live).unwrap().stdout, "run 3");
    }

    #[test]
    fn a_failed_run_fails_every_caller_that_shared_it() {
        let shared = Shared::default();
        let cmd = Cmd::new("validate");
        let live = |_: &Cmd| -> Result<CmdOutput> {
            std::thread::sleep(Duration::from_millis(60));
            anyhow::bail!("could not start")
        };
        std::thread::scope(|s| {
            let first = s.spawn(|| shared.run(&cmd, live));
            std::thread::sleep(Duration::from_millis(20));
            let (a, b) = (
                s.spawn(|| shared.run(&cmd, live)),
                s.spawn(|| shared.run(&cmd, live)),
            );
            assert!(first.join().unwrap().is_err());
            for r in [a.join().unwrap(), b.join().unwrap()] {
                assert!(r.unwrap_err().to_string().contains("could not start"));
            }
        });
    }
}
