//! The restic repository backups go to: created once with the password apply generated, and from then on
//! only opened. A repository the password does not open (a new host replacing one that backed up there)
//! is an error naming the file to put the stored password in, never a new repository beside it.

use anyhow::{bail, Result};

use crate::backup::{RepoState, Restic, PASSWORD_FILE, STATE_FILE};
use crate::config::Backup;
use crate::engine::{Change, Ctx, ExpectedBackup, ExpectedState, Step};

pub struct BackupRepoStep {
    pub backup: Backup,
}

impl Step for BackupRepoStep {
    fn check(&self, ctx: &Ctx) -> Result<Change> {
        let restic = Restic::new(ctx.sys, &self.backup)?;
        match restic.probe()? {
            RepoState::Ready => Ok(Change::in_sync()),
            RepoState::Missing => Ok(Change::create(format!(
                "create restic repository {} (password in {PASSWORD_FILE})",
                restic.repository()
            ))),
            RepoState::WrongPassword => bail!(
                "the restic repository {} exists, but the password in {PASSWORD_FILE} does not open it. \
                 If this host replaces one that backed up there, write the password you stored off that \
                 host into {PASSWORD_FILE} (one line, chmod 0600) and run apply again",
                restic.repository()
            ),
        }
    }

    fn apply(&self, ctx: &Ctx, _change: &Change) -> Result<()> {
        let restic = Restic::new(ctx.sys, &self.backup)?;
        restic.init()?;
        ctx.warn(format!(
            "created the backup repository {}; its password is in {PASSWORD_FILE} on this host only. \
             Store a copy OFF this host (a password manager): no backup can be read without it, and no \
             backup contains it",
            restic.repository()
        ));
        Ok(())
    }

    fn expect(&self, state: &mut ExpectedState) {
        state.backup = Some(ExpectedBackup {
            state_file: STATE_FILE.into(),
            unit: format!("{}.service", crate::layout::BACKUP_UNIT),
            schedule: self.backup.schedule.clone(),
            max_age_seconds: self.backup.max_age_secs(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretStore;
    use crate::system::{CmdOutput, FakeSystem};

    fn step() -> BackupRepoStep {
        BackupRepoStep {
            backup: Backup {
                enabled: true,
                repository: Some("/srv/backup/repo".into()),
                schedule: "daily".into(),
                keep_daily: 7,
                keep_weekly: 4,
                keep_monthly: 6,
            },
        }
    }

    fn answer(sys: &FakeSystem, status: i32, stderr: &'static str) {
        sys.on(move |c| {
            (c.program == "restic" && c.args == ["cat", "config"]).then(|| CmdOutput {
                status,
                stdout: String::new(),
                stderr: stderr.into(),
            })
        });
    }

    #[test]
    fn a_missing_repository_is_created_and_the_password_location_is_told() {
        let sys = FakeSystem::new();
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        // restic 0.14's words (Debian 12), exit 1.
        answer(&sys, 1, "Fatal: unable to open config file: stat /srv/backup/repo/config: no such file or directory\nIs there a repository at the following location?\n/srv/backup/repo\n");
        sys.on_cmd(
            "restic init",
            0,
            "created restic repository 2e4f90672b at /srv/backup/repo\n",
        );
        let change = step().check(&ctx).unwrap();
        assert!(
            change
                .summary
                .contains("create restic repository /srv/backup/repo"),
            "{}",
            change.summary
        );
        step().apply(&ctx, &change).unwrap();
        let warnings = ctx.warnings().join("\n");
        assert!(
            warnings.contains(PASSWORD_FILE) && warnings.contains("OFF this host"),
            "{warnings}"
        );
        let init = sys
            .ran
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.args == ["init"])
            .cloned()
            .unwrap();
        // The repository and the password file come through the environment; no secret in argv.
        assert!(init
            .env
            .contains(&("RESTIC_PASSWORD_FILE".into(), PASSWORD_FILE.into())));
        assert!(init
            .env
            .contains(&("RESTIC_REPOSITORY".into(), "/srv/backup/repo".into())));
        answer(&sys, 0, "");
        assert!(step().check(&ctx).unwrap().is_in_sync());
    }

    #[test]
    fn a_repository_the_password_does_not_open_is_an_error_naming_the_file() {
        let sys = FakeSystem::new();
        let secrets = SecretStore::new();
        let ctx = Ctx::new(&sys, &secrets);
        answer(&sys, 12, "Fatal: wrong password or no key found\n");
        let err = step().check(&ctx).unwrap_err().to_string();
        assert!(
            err.contains(PASSWORD_FILE) && err.contains("stored off that host"),
            "{err}"
        );
        // An unreachable repository is an error too, with restic's words.
        answer(&sys, 1, "Fatal: unable to open repository: ssh: connect to host b port 22: Connection refused\n");
        let err = step().check(&ctx).unwrap_err().to_string();
        assert!(err.contains("Connection refused"), "{err}");
    }

    #[test]
    fn doctor_learns_where_the_state_is_and_how_old_it_may_get() {
        let mut state = ExpectedState::default();
        step().expect(&mut state);
        let b = state.backup.unwrap();
        assert_eq!(b.state_file, std::path::PathBuf::from(STATE_FILE));
        assert_eq!(b.max_age_seconds, 30 * 3600);
    }
}
