//! `cargo run --release --example generate-assets -- DIR`: the man pages (one per subcommand, section 8,
//! gzipped as Debian wants them) and the bash/zsh/fish completions, generated from the very clap
//! definitions the binary parses with, so they can never drift from the real options.
//!
//! An example rather than a hidden subcommand or a build.rs: a build script cannot use the crate it
//! builds (the definitions live in it), and as an example the generators stay dev-dependencies instead of
//! riding along in every installed binary. packaging/build-deb runs it before cargo-deb.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use flate2::{write::GzEncoder, Compression};
use matrix_provision::cli::Cli;

const BIN: &str = "matrix-provision";

fn main() -> Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: generate-assets OUT_DIR")?,
    );
    let man = out.join("man");
    fs::create_dir_all(&man)?;
    let mut cmd = Cli::command().bin_name(BIN);
    cmd.build();
    let pages = man_pages(&cmd, BIN, &man)?;

    for (shell, dir, file) in [
        (Shell::Bash, "bash", BIN.to_string()),
        (Shell::Zsh, "zsh", format!("_{BIN}")),
        (Shell::Fish, "fish", format!("{BIN}.fish")),
    ] {
        let dir = out.join("completions").join(dir);
        fs::create_dir_all(&dir)?;
        let mut f = fs::File::create(dir.join(file))?;
        clap_complete::generate(shell, &mut Cli::command(), BIN, &mut f);
    }
    println!("{pages} man pages and 3 completions in {}", out.display());
    Ok(())
}

/// One page for CMD (named NAME, e.g. matrix-provision-token-create) and one per visible subcommand below it.
fn man_pages(cmd: &clap::Command, name: &str, dir: &Path) -> Result<usize> {
    // clap takes &'static names (without its "string" feature); this program ends right after.
    let page = cmd
        .clone()
        .name(&*Box::leak(name.to_string().into_boxed_str()));
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .section("8")
        .manual("matrix-provision")
        .source(format!("matrix-provision {}", env!("CARGO_PKG_VERSION")))
        .render(&mut roff)?;
    // -n semantics: no name or mtime in the header, so the package is reproducible.
    let mut gz = GzEncoder::new(
        fs::File::create(dir.join(format!("{name}.8.gz")))?,
        Compression::best(),
    );
    gz.write_all(&roff)?;
    gz.finish()?;
    let mut n = 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        n += man_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(n)
}
