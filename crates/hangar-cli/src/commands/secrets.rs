//! `hangar secrets set|unset|list|import|deploy`, as flyctl has them. A change without
//! `--stage` makes a release that restarts the machines with the new values; values
//! are never printed.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use hangar_client::Client;
use hangar_types::deploy::DeployRequest;

use super::{progress, AppArg};
use crate::{config, output};

/// Largest value read from standard input.
const MAX_STDIN: usize = 64 * 1024;

#[derive(Subcommand)]
pub enum SecretsCmd {
    /// Set secrets: NAME=VALUE ... (NAME=- reads the value from standard input)
    Set {
        #[command(flatten)]
        app: AppArg,
        #[arg(required = true)]
        pairs: Vec<String>,
        /// Store the values without restarting machines
        #[arg(long)]
        stage: bool,
        /// Start the restart and return without following it
        #[arg(long)]
        detach: bool,
    },
    /// Remove secrets by name
    Unset {
        #[command(flatten)]
        app: AppArg,
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long)]
        stage: bool,
        #[arg(long)]
        detach: bool,
    },
    /// List secret names and digests (never values)
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        json: bool,
    },
    /// Read NAME=VALUE lines from standard input and set them
    Import {
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        stage: bool,
        #[arg(long)]
        detach: bool,
    },
    /// Restart machines with staged secrets
    Deploy {
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        detach: bool,
    },
}

fn read_stdin() -> Result<String> {
    if std::io::stdin().is_terminal() {
        bail!("NAME=- reads the value from standard input: pipe it in, e.g. `cat key.pem | hangar secrets set KEY=-`");
    }
    let mut buf = String::new();
    std::io::stdin()
        .take(MAX_STDIN as u64 + 1)
        .read_to_string(&mut buf)
        .context("read the value from standard input")?;
    if buf.len() > MAX_STDIN {
        bail!("the value on standard input is over {MAX_STDIN} bytes");
    }
    Ok(buf)
}

/// `NAME=VALUE` arguments; `NAME=-` takes standard input.
fn parse_pairs(pairs: &[String]) -> Result<BTreeMap<String, Option<String>>> {
    let mut out = BTreeMap::new();
    for (i, p) in pairs.iter().enumerate() {
        // The argument may be a value typed without its name: never echo it.
        let Some((k, v)) = p.split_once('=') else {
            bail!("argument {} is not NAME=VALUE", i + 1);
        };
        if k.is_empty() {
            bail!("a secret needs a name: use NAME=VALUE");
        }
        let v = if v == "-" {
            read_stdin()?
        } else {
            v.to_string()
        };
        out.insert(k.to_string(), Some(v));
    }
    Ok(out)
}

/// Parses `NAME=VALUE` lines as flyctl's import does: comments and blank lines skipped,
/// surrounding quotes removed, `"""` starting a multi-line value, and a trailing
/// `# comment` dropped when the quotes are balanced.
pub fn parse_import(text: &str) -> Result<BTreeMap<String, Option<String>>> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let Some((k, v)) = t.split_once('=') else {
            bail!("line {}: expected NAME=VALUE", n + 1);
        };
        let (k, v) = (k.trim(), v.trim());
        let value = if let Some(rest) = v.strip_prefix("\"\"\"") {
            let mut parts = vec![rest.to_string()];
            let mut closed = rest.strip_suffix("\"\"\"").map(str::to_string);
            while closed.is_none() {
                let Some((_, next)) = lines.next() else {
                    bail!("line {}: a \"\"\" value for {k} is never closed", n + 1);
                };
                match next.strip_suffix("\"\"\"") {
                    Some(last) => {
                        parts.push(last.to_string());
                        closed = Some(parts.join("\n"));
                    }
                    None => parts.push(next.to_string()),
                }
            }
            closed.unwrap_or_default()
        } else {
            let v = match v.find(" #") {
                Some(i)
                    if v[..i].matches('"').count() % 2 == 0
                        && v[..i].matches('\'').count() % 2 == 0 =>
                {
                    v[..i].trim_end()
                }
                _ => v,
            };
            let unquoted = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
                .unwrap_or(v);
            unquoted.to_string()
        };
        out.insert(k.to_string(), Some(value));
    }
    Ok(out)
}

/// After a change: a restart-only deploy, or say why the values are only staged.
async fn roll_out(client: &Client, app: &str, stage: bool, detach: bool) -> Result<()> {
    if stage {
        println!("Secrets have been staged, but not set on machines. Deploy or update machines in this app for the secrets to take effect (`hangar secrets deploy`).");
        return Ok(());
    }
    let req = DeployRequest {
        restart_only: true,
        ..Default::default()
    };
    let release = match client.deploy(app, &req).await {
        Ok(r) => r,
        Err(e)
            if e.status().map(|s| s.as_u16()) == Some(422)
                && e.to_string().starts_with("no machines available") =>
        {
            println!("Secrets are staged for the first deployment");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    println!(
        "==> Release v{} created: restarting machines with the new secrets",
        release.version
    );
    if detach {
        return Ok(());
    }
    progress::follow(client, app, &release).await
}

pub async fn run(cmd: SecretsCmd) -> Result<()> {
    let client = config::client()?;
    match cmd {
        SecretsCmd::Set {
            app,
            pairs,
            stage,
            detach,
        } => {
            let app = app.name()?;
            let values = parse_pairs(&pairs)?;
            client.update_secrets(&app, values).await?;
            roll_out(&client, &app, stage, detach).await?;
        }
        SecretsCmd::Unset {
            app,
            names,
            stage,
            detach,
        } => {
            let app = app.name()?;
            let values = names.into_iter().map(|n| (n, None)).collect();
            client.update_secrets(&app, values).await?;
            roll_out(&client, &app, stage, detach).await?;
        }
        SecretsCmd::Import { app, stage, detach } => {
            let app = app.name()?;
            if std::io::stdin().is_terminal() {
                bail!("secrets import reads NAME=VALUE lines from standard input: pipe them in, e.g. `hangar secrets import < .env`");
            }
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            let values = parse_import(&text)?;
            if values.is_empty() {
                bail!("no NAME=VALUE lines on standard input");
            }
            client.update_secrets(&app, values).await?;
            roll_out(&client, &app, stage, detach).await?;
        }
        SecretsCmd::Deploy { app, detach } => {
            let app = app.name()?;
            roll_out(&client, &app, false, detach).await?;
        }
        SecretsCmd::List { app, json } => {
            let app = app.name()?;
            let list = client.list_secrets(&app).await?;
            if json {
                return output::json(&list.secrets);
            }
            let rows: Vec<Vec<String>> = list
                .secrets
                .iter()
                .map(|s| vec![s.name.clone(), s.digest.clone(), s.updated_at.clone()])
                .collect();
            output::table(&["NAME", "DIGEST", "UPDATED AT"], &rows);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_import;

    #[test]
    fn import_reads_env_files_as_flyctl_does() {
        let text = "# comment\n\nA=1\nB=\"two words\" # trailing\nC='x'\nD=\"\"\"line1\nline2\"\"\"\nE=a#b\n";
        let v = parse_import(text).expect("parses");
        let get = |k: &str| v.get(k).cloned().flatten().unwrap_or_default();
        assert_eq!(get("A"), "1");
        assert_eq!(get("B"), "two words");
        assert_eq!(get("C"), "x");
        assert_eq!(get("D"), "line1\nline2");
        assert_eq!(get("E"), "a#b");
        assert!(parse_import("NOEQUALS\n").is_err());
    }
}
