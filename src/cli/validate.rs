use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Path to host.toml.
    file: PathBuf,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn execute(args: &Args) -> Result<u8> {
    match crate::config::load(&args.file) {
        Ok(_) if args.json => println!("{}", serde_json::json!({"valid": true, "errors": []})),
        Ok(_) => println!("{}: valid", args.file.display()),
        Err(e) if args.json => {
            println!(
                "{}",
                serde_json::json!({"valid": false, "errors": e.errors()})
            );
            return Ok(1);
        }
        Err(e) => {
            eprintln!("{e}");
            return Ok(1);
        }
    }
    Ok(0)
}
