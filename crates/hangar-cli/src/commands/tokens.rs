//! `hangar tokens debug|attenuate`: what a macaroon token allows, and a narrower token
//! made from it, both offline as `fly tokens debug` and `fly tokens attenuate` work
//! (no server is asked; only the server can check a token's signature). The token is
//! `-t`, else HANGAR_API_TOKEN or FLY_API_TOKEN, else the CLI config's.

use std::io::Read;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use hangar_macaroon::{Caveat, Macaroon, LOCATION};

use crate::config;

#[derive(Subcommand)]
pub enum TokensCmd {
    /// Show the caveats of a token's macaroons
    Debug {
        /// The token (default: the one commands use)
        #[arg(short = 't', long)]
        token: Option<String>,
    },
    /// Add caveats to a token, offline: the new token can do at most what the old one can
    Attenuate {
        /// A JSON list of caveats, as `hangar tokens debug` prints them ("-": stdin)
        #[arg(short = 'f', long = "file")]
        file: String,
        /// The token to narrow (default: the one commands use)
        #[arg(short = 't', long)]
        token: Option<String>,
    },
}

/// The token given, or the one commands use, without its `FlyV1`/`Bearer` scheme.
fn token_of(given: Option<String>) -> Result<String> {
    let token = match given {
        Some(t) => t,
        None => config::token(&config::load()?)
            .map(|(t, _)| t)
            .context("no token: give -t TOKEN or set HANGAR_API_TOKEN")?,
    };
    let t = token.trim();
    let bare = ["FlyV1 ", "Bearer ", "flyv1 ", "bearer "]
        .iter()
        .find_map(|s| t.strip_prefix(s))
        .unwrap_or(t);
    Ok(bare.trim().to_string())
}

/// The macaroons of a comma-separated token list (other kinds of token are skipped).
fn macaroons(token: &str) -> Vec<(usize, Macaroon)> {
    token
        .split(',')
        .enumerate()
        .filter_map(|(i, t)| Macaroon::decode(t.trim()).ok().map(|m| (i, m)))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub async fn run(cmd: TokensCmd) -> Result<()> {
    match cmd {
        TokensCmd::Debug { token } => {
            let token = token_of(token)?;
            let found = macaroons(&token);
            if found.is_empty() {
                bail!("the token holds no macaroon (FlyV1 fm2_…): it is an opaque token, whose rights only the server knows");
            }
            let mut shown = Vec::new();
            for (_, m) in found {
                let caveats = m.caveats().with_context(|| {
                    format!("a caveat of key {} cannot be read", hex(&m.nonce.kid))
                })?;
                shown.push(serde_json::json!({
                    "location": m.location,
                    "kid": hex(&m.nonce.kid),
                    "proof": m.nonce.proof,
                    "caveats": caveats.iter().map(Caveat::to_json).collect::<Vec<_>>(),
                }));
            }
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        TokensCmd::Attenuate { file, token } => {
            let token = token_of(token)?;
            let text = if file == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("read {file}"))?
            };
            let json: serde_json::Value = serde_json::from_str(&text).with_context(|| {
                format!("{file} is not JSON: give a list of {{\"type\": …, \"body\": …}}")
            })?;
            let list = match &json {
                serde_json::Value::Array(a) => a.clone(),
                one @ serde_json::Value::Object(_) => vec![one.clone()],
                _ => bail!("{file} holds no caveats: give a list of {{\"type\": …, \"body\": …}}"),
            };
            let caveats: Vec<Caveat> = list
                .iter()
                .map(Caveat::from_json)
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
            let mut parts: Vec<String> = token.split(',').map(|t| t.trim().to_string()).collect();
            let permission = macaroons(&token)
                .into_iter()
                .filter(|(_, m)| m.location == LOCATION && !m.nonce.proof)
                .collect::<Vec<_>>();
            let [(at, m)] = permission.as_slice() else {
                bail!(
                    "the token holds {} permission macaroons; attenuate needs exactly one",
                    permission.len()
                );
            };
            let mut narrowed = m.clone();
            for c in &caveats {
                narrowed.add(c);
            }
            parts[*at] = narrowed.encode();
            println!("FlyV1 {}", parts.join(","));
        }
    }
    Ok(())
}
