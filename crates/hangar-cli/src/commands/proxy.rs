//! `hangar proxy LOCAL[:REMOTE] [HOST] -a APP`: forwards a local TCP port to a host on
//! the app's private network (`<app>.internal` by default), as `fly proxy` does. Each
//! local connection becomes one tunnel through the Hangar API with the user's token,
//! so it works wherever the API port is reachable; many run at once.
//!
//! Before listening it asks the API where the host leads, so a forward that cannot
//! work (unknown app, no started machine, a name of another org) fails at once and
//! leaves nothing listening. Dialling the service happens per connection.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use clap::Args;
use hangar_client::Client;
use tokio::net::{TcpListener, TcpStream};

use super::AppArg;
use crate::config;

/// Bytes moved per read each way between a local connection and its tunnel.
const BUFFER: usize = 256 * 1024;

#[derive(Args)]
pub struct ProxyArgs {
    /// Ports as LOCAL[:REMOTE] (REMOTE defaults to LOCAL)
    pub ports: String,
    /// The private host to reach: <app>.internal (default), <id>.vm.<app>.internal,
    /// <region>.<app>.internal, a machine id or a 6PN address
    pub host: Option<String>,
    #[command(flatten)]
    pub app: AppArg,
    /// Local address to listen on
    #[arg(short = 'b', long = "bind-addr", default_value = "127.0.0.1")]
    pub bind_addr: String,
    /// Pick the machine to reach from the app's started machines
    #[arg(short = 's', long = "select")]
    pub select: bool,
    /// Stop when standard input closes
    #[arg(long = "watch-stdin")]
    pub watch_stdin: bool,
    /// Print nothing but errors
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
}

/// `LOCAL[:REMOTE]` as two ports.
fn ports(spec: &str) -> Result<(u16, u16)> {
    let port = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .with_context(|| {
                format!("{s:?} is not a port (1-65535): give LOCAL[:REMOTE], as in 15432:5432")
            })
    };
    match spec.split_once(':') {
        Some((local, remote)) => Ok((port(local)?, port(remote)?)),
        None => {
            let p = port(spec)?;
            Ok((p, p))
        }
    }
}

/// Asks which started machine to reach: its private name.
async fn select_machine(client: &Client, app: &str) -> Result<String> {
    let started = super::started_machines(client, app).await?;
    let pick = super::choose_machine(
        started,
        &format!("name the machine as HOST instead (<id>.vm.{app}.internal)"),
    )?;
    Ok(format!("{}.vm.{app}.internal", pick.id))
}

/// Carries one local connection through its own tunnel.
async fn forward(client: Client, app: String, host: String, port: u16, mut local: TcpStream) {
    let _ = local.set_nodelay(true);
    match client.open_tunnel(&app, Some(&host), port).await {
        Ok(mut tunnel) => {
            let _ =
                tokio::io::copy_bidirectional_with_sizes(&mut local, &mut tunnel, BUFFER, BUFFER)
                    .await;
        }
        Err(e) => eprintln!("Error: {e}"),
    }
}

pub async fn run(args: ProxyArgs) -> Result<()> {
    let (local_port, remote_port) = ports(&args.ports)?;
    let app = args.app.name()?;
    let client = config::client()?;
    let host = match (&args.host, args.select) {
        (Some(_), true) => bail!("give HOST or --select, not both"),
        (Some(h), false) => h.clone(),
        (None, true) => select_machine(&client, &app).await?,
        (None, false) => format!("{app}.internal"),
    };
    let bind: std::net::IpAddr = args
        .bind_addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .with_context(|| format!("--bind-addr {:?} is not an IP address", args.bind_addr))?;
    let target = client
        .resolve_private(&app, Some(&host), remote_port)
        .await?;
    let listener = TcpListener::bind(SocketAddr::from((bind, local_port)))
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
                "local port {local_port} is already in use on {bind}: pick another, as in `hangar proxy {}:{remote_port} -a {app}`",
                local_port.wrapping_add(1).max(1)
            ),
            _ => anyhow::anyhow!("cannot listen on {bind}:{local_port}: {e}"),
        })?;
    if !args.quiet {
        println!(
            "Proxying local port {local_port} to remote [{}]:{remote_port}",
            target.host
        );
    }
    let stdin_closed = async {
        if args.watch_stdin {
            // A thread of its own: a read of stdin cannot be cancelled, and the runtime
            // would wait for it on the way out.
            let (closed, wait) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
                let _ = closed.send(());
            });
            let _ = wait.await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(stdin_closed);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (local, _) = accepted.context("accept a local connection")?;
                tokio::spawn(forward(client.clone(), app.clone(), target.host.clone(), remote_port, local));
            }
            _ = &mut stdin_closed => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ports;

    #[test]
    fn ports_are_local_and_remote() {
        assert_eq!(ports("5432").unwrap(), (5432, 5432));
        assert_eq!(ports("15432:5432").unwrap(), (15432, 5432));
        assert!(ports("0").is_err());
        assert!(ports("abc:5432")
            .unwrap_err()
            .to_string()
            .contains("LOCAL[:REMOTE]"));
    }
}
