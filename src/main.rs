use std::process::ExitCode;

fn main() -> ExitCode {
    matrix_provision::cli::main()
}
