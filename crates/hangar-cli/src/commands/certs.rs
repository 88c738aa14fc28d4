//! `hangar certs add|show|check|list|remove|ca`, as flyctl has them (plus `ca`, which
//! prints the development CA's root for a trust store).

use anyhow::Result;
use clap::Subcommand;
use hangar_types::edge::{CertificateDetail, ImportCertificateRequest};

use super::{confirm, AppArg};
use crate::{config, output};

#[derive(Subcommand)]
pub enum CertsCmd {
    /// Add a hostname to the app and issue its certificate
    #[command(alias = "create")]
    Add {
        hostname: String,
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        json: bool,
    },
    /// Use your own certificate for a hostname (PEM files)
    Import {
        hostname: String,
        #[command(flatten)]
        app: AppArg,
        /// The certificate chain, leaf first
        #[arg(long)]
        fullchain: std::path::PathBuf,
        /// The certificate's private key
        #[arg(long)]
        private_key: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Show a hostname's certificate
    Show {
        hostname: String,
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        json: bool,
    },
    /// Validate a hostname again and show its certificate
    Check {
        hostname: String,
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        json: bool,
    },
    /// List the app's hostnames and their certificates
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        json: bool,
    },
    /// Remove a hostname and its certificate
    #[command(alias = "delete")]
    Remove {
        hostname: String,
        #[command(flatten)]
        app: AppArg,
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Print the development CA's root certificate (PEM), to trust HTTPS to apps
    Ca,
}

fn status_label(status: &str) -> &'static str {
    match status {
        "active" => "Issued",
        _ => "Awaiting certificates",
    }
}

/// flyctl's list status: `Verified` for an active imported certificate.
fn list_label(status: &str, custom: bool) -> &'static str {
    if custom && status == "active" {
        "Verified"
    } else {
        status_label(status)
    }
}

fn print_detail(d: &CertificateDetail) {
    println!("Hostname                  = {}", d.hostname);
    println!("Status                    = {}", status_label(&d.status));
    for c in &d.certificates {
        println!(
            "Certificate Authority     = {}",
            c.issued
                .first()
                .map_or("-", |i| i.certificate_authority.as_str())
        );
        println!(
            "Issuer                    = {}",
            c.issuer.as_deref().unwrap_or("-")
        );
        println!(
            "Expires                   = {}",
            c.expires_at.as_deref().unwrap_or("-")
        );
    }
    if !d.dns_requirements.a.is_empty() || !d.dns_requirements.aaaa.is_empty() {
        println!(
            "DNS                       = A {} / AAAA {} (or CNAME {})",
            d.dns_requirements.a.join(", "),
            d.dns_requirements.aaaa.join(", "),
            d.dns_requirements.cname
        );
    }
    for e in &d.validation_errors {
        println!("Validation error          = {}", e.message);
        println!("  fix: {}", e.remediation);
    }
    if d.status == "active" {
        println!("\nCertificate is verified and active");
    } else {
        println!(
            "\nThe certificate is being issued; run `hangar certs check {}` to follow it",
            d.hostname
        );
    }
}

fn detail(d: CertificateDetail, json: bool) -> Result<()> {
    if json {
        return output::json(&d);
    }
    print_detail(&d);
    Ok(())
}

pub async fn run(cmd: CertsCmd) -> Result<()> {
    let client = config::client()?;
    match cmd {
        CertsCmd::Add {
            hostname,
            app,
            json,
        } => detail(client.add_certificate(&app.name()?, &hostname).await?, json)?,
        CertsCmd::Import {
            hostname,
            app,
            fullchain,
            private_key,
            json,
        } => {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
            };
            let req = ImportCertificateRequest {
                hostname,
                fullchain: read(&fullchain)?,
                private_key: read(&private_key)?,
            };
            detail(client.import_certificate(&app.name()?, &req).await?, json)?
        }
        CertsCmd::Show {
            hostname,
            app,
            json,
        } => detail(client.certificate(&app.name()?, &hostname).await?, json)?,
        CertsCmd::Check {
            hostname,
            app,
            json,
        } => detail(
            client.check_certificate(&app.name()?, &hostname).await?,
            json,
        )?,
        CertsCmd::List { app, json } => {
            let list = client.list_certificates(&app.name()?).await?;
            if json {
                return output::json(&list.certificates);
            }
            let rows: Vec<Vec<String>> = list
                .certificates
                .iter()
                .map(|c| {
                    vec![
                        c.hostname.clone(),
                        c.created_at.clone(),
                        list_label(&c.status, c.has_custom_certificate).to_string(),
                    ]
                })
                .collect();
            output::table(&["HOST NAME", "ADDED", "STATUS"], &rows);
        }
        CertsCmd::Remove { hostname, app, yes } => {
            let name = app.name()?;
            confirm(
                &format!("Remove certificate {hostname} from app {name}?"),
                yes,
            )?;
            client.remove_certificate(&name, &hostname).await?;
            println!("Certificate {hostname} deleted from app {name}");
        }
        CertsCmd::Ca => print!("{}", client.dev_ca().await?),
    }
    Ok(())
}
