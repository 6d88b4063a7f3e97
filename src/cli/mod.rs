//! Command line: one file per subcommand; `main` maps a Result to the documented exit code.
pub mod element_update;

use std::process::ExitCode;

pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
