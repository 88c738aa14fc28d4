//! `hangar auth whoami | token | login | logout`: who the current token is, printing
//! it, and keeping one in the CLI config. A token is stored only after the server it
//! is meant for has accepted it.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use crate::config;

#[derive(Subcommand)]
pub enum AuthCmd {
    /// Show the identity of the current token
    Whoami {
        #[arg(long)]
        json: bool,
    },
    /// Print the current token
    Token,
    /// Check a token against the server and keep it in the CLI config
    Login {
        /// The token (else read from standard input, or asked for on a terminal)
        #[arg(short = 't', long)]
        access_token: Option<String>,
        /// The server's API URL, kept with the token
        #[arg(long)]
        api_url: Option<String>,
    },
    /// Forget the token kept in the CLI config
    Logout,
}

/// Reads a token from standard input: asked for without echo on a terminal, else the
/// first line of what is piped in.
fn read_token() -> Result<String> {
    let stdin = std::io::stdin();
    let line = if stdin.is_terminal() {
        eprint!("Access token: ");
        let _ = std::io::stderr().flush();
        let line = without_echo(|| {
            let mut l = String::new();
            stdin.lock().read_line(&mut l).map(|_| l)
        })?;
        eprintln!();
        line
    } else {
        let mut l = String::new();
        stdin
            .lock()
            .read_line(&mut l)
            .context("read the token from standard input")?;
        l
    };
    let token = line.trim().to_string();
    if token.is_empty() {
        bail!("no token given: pass --access-token T, or give it on standard input");
    }
    Ok(token)
}

/// Runs `f` with the terminal's echo off, restoring it after.
fn without_echo<T>(f: impl FnOnce() -> std::io::Result<T>) -> Result<T> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).context("read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turn off echo")?;
    let out = f();
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    out.context("read the token")
}

pub async fn run(cmd: AuthCmd) -> Result<()> {
    match cmd {
        AuthCmd::Whoami { json } => {
            let v = config::client()?.whoami().await?;
            if json {
                return crate::output::json(&v);
            }
            let t = &v["tokens"][0];
            println!("{}", t["user"].as_str().unwrap_or("unknown"));
        }
        AuthCmd::Token => {
            let cfg = config::load()?;
            let (token, _) = config::token(&cfg)
                .context("no token: run `hangar auth login`, or set HANGAR_API_TOKEN")?;
            println!("{token}");
        }
        AuthCmd::Login {
            access_token,
            api_url,
        } => {
            let mut cfg = config::load()?;
            let token = match access_token.filter(|t| !t.trim().is_empty()) {
                Some(t) => t.trim().to_string(),
                None => read_token()?,
            };
            let url = api_url
                .clone()
                .unwrap_or_else(|| config::api_url(&cfg))
                .trim_end_matches('/')
                .to_string();
            let who = hangar_client::Client::new(&url, &token)
                .whoami()
                .await
                .map_err(|e| {
                    anyhow::anyhow!("{url} did not accept the token, so it was not kept: {e}")
                })?;
            cfg.access_token = Some(token);
            if api_url.is_some() {
                cfg.api_url = Some(url.clone());
            }
            let path = config::save(&cfg)?;
            let user = who["tokens"][0]["user"].as_str().unwrap_or("unknown");
            println!(
                "Logged in to {url} as {user} (token kept in {})",
                path.display()
            );
            if std::env::var_os("HANGAR_API_TOKEN").is_some() {
                eprintln!("Note: HANGAR_API_TOKEN is set and is used instead of the kept token");
            }
        }
        AuthCmd::Logout => {
            let mut cfg = config::load()?;
            if cfg.access_token.take().is_none() {
                println!("No token is kept in {}", config::config_path().display());
            } else {
                let path = config::save(&cfg)?;
                println!("Logged out: the token is gone from {}", path.display());
            }
            for var in ["HANGAR_API_TOKEN", "FLY_API_TOKEN"] {
                if std::env::var_os(var).is_some() {
                    eprintln!("Note: {var} is still set and is used by every command");
                }
            }
        }
    }
    Ok(())
}
