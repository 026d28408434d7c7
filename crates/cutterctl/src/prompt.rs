//! Reading the secret key's passphrase: from a file, or from the terminal
//! with echo off. Never from argv.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, bail};
use cutter_core::decrypt::Password;
use rustix::termios::{LocalModes, OptionalActions, isatty, tcgetattr, tcsetattr};
use zeroize::Zeroizing;

/// The first line of `path`. The text read is wiped once it is inside the
/// [`Password`] (which keeps it encrypted in memory).
pub fn from_file(path: &Path) -> anyhow::Result<Password> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading passphrase file {}", path.display()))?,
    );
    Ok(Password::from(text.lines().next().unwrap_or("").as_bytes()))
}

/// Asks on the terminal without echoing what is typed.
pub fn no_echo(question: &str) -> anyhow::Result<Password> {
    let stdin = std::io::stdin();
    if !isatty(&stdin) {
        bail!(
            "the secret key is protected and stdin is not a terminal: pass --passphrase-file FILE"
        );
    }
    let saved = tcgetattr(&stdin).context("reading terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    eprint!("{question}");
    std::io::stderr().flush()?;
    tcsetattr(&stdin, OptionalActions::Now, &quiet).context("turning echo off")?;
    let mut line = Zeroizing::new(String::new());
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, OptionalActions::Now, &saved);
    eprintln!();
    read.context("reading the passphrase")?;
    Ok(Password::from(
        line.trim_end_matches(['\n', '\r']).as_bytes(),
    ))
}
