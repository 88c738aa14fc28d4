//! `hangar volumes create|list|show|update|extend|fork|destroy` and `hangar volumes
//! snapshots list|create` (aliases `volume`, `vol`, `v`), with flyctl's flags, columns
//! and sizes in GB.

use anyhow::{bail, Result};
use clap::Subcommand;
use hangar_types::volume::{CreateVolumeRequest, UpdateVolumeRequest, Volume};

use super::{confirm, AppArg};
use crate::{config, output};

#[derive(Subcommand)]
pub enum VolumesCmd {
    /// Create one or more volumes named NAME
    Create {
        name: String,
        #[command(flatten)]
        app: AppArg,
        /// Size in GB
        #[arg(short = 's', long, default_value_t = 1)]
        size: i64,
        #[arg(short = 'r', long)]
        region: Option<String>,
        /// How many volumes to create
        #[arg(short = 'n', long, default_value_t = 1)]
        count: u32,
        #[arg(long)]
        snapshot_id: Option<String>,
        /// Days to keep snapshots (1 to 60)
        #[arg(long, default_value_t = 5)]
        snapshot_retention: i64,
        /// Take daily snapshots
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        scheduled_snapshots: bool,
        /// Do not encrypt the volume at rest
        #[arg(long)]
        no_encryption: bool,
        /// Place same-named volumes on different hosts
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        require_unique_zone: bool,
        /// Filesystem: ext4
        #[arg(long, default_value = "ext4")]
        fs_type: String,
        /// Accepted for flyctl compatibility (creating asks nothing)
        #[arg(short = 'y', long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
    /// List the app's volumes
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        app: AppArg,
        /// Show destroyed volumes too (kept for a day)
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show a volume
    Show {
        id: String,
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        json: bool,
    },
    /// Change a volume's snapshot settings
    Update {
        id: String,
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        snapshot_retention: Option<i64>,
        #[arg(long, action = clap::ArgAction::Set)]
        scheduled_snapshots: Option<bool>,
        #[arg(long)]
        json: bool,
    },
    /// Grow a volume: -s N for N GB, or -s +N for N GB more
    Extend {
        id: String,
        #[command(flatten)]
        app: AppArg,
        #[arg(short = 's', long, allow_hyphen_values = true)]
        size: String,
        #[arg(short = 'y', long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
    /// Copy a volume into a new one (on the same host)
    Fork {
        id: String,
        #[command(flatten)]
        app: AppArg,
        /// The new volume's name (the source's by default)
        #[arg(long)]
        name: Option<String>,
        #[arg(short = 'r', long)]
        region: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List or take a volume's snapshots
    #[command(subcommand, aliases = ["snapshot", "snaps"])]
    Snapshots(SnapshotsCmd),
    /// Destroy volumes (a machine must not hold them)
    #[command(aliases = ["delete", "rm"])]
    Destroy {
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArg,
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
pub enum SnapshotsCmd {
    /// List a volume's snapshots
    #[command(alias = "ls")]
    List {
        volume: String,
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        json: bool,
    },
    /// Snapshot a volume now
    Create {
        volume: String,
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        json: bool,
    },
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}

async fn snapshots(client: &hangar_client::Client, cmd: SnapshotsCmd) -> Result<()> {
    match cmd {
        SnapshotsCmd::List { volume, app, json } => {
            let list = client.list_snapshots(&app.name()?, &volume).await?;
            if json {
                return output::json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|s| {
                    vec![
                        s.id.clone(),
                        s.status.clone(),
                        human_bytes(s.size),
                        human_bytes(s.volume_size),
                        s.created_at.clone(),
                        s.retention_days.to_string(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "ID",
                    "STATUS",
                    "STORED SIZE",
                    "VOL SIZE",
                    "CREATED AT",
                    "RETENTION DAYS",
                ],
                &rows,
            );
            let total: u64 = list.iter().map(|s| s.size).sum();
            println!("\nTotal stored size: {}", human_bytes(total));
        }
        SnapshotsCmd::Create { volume, app, json } => {
            let s = client.create_snapshot(&app.name()?, &volume).await?;
            if json {
                return output::json(&s);
            }
            println!(
                "Snapshot {} of volume {volume} created ({} stored)",
                s.id,
                human_bytes(s.size)
            );
        }
    }
    Ok(())
}

fn print_list(volumes: &[Volume]) {
    let rows: Vec<Vec<String>> = volumes
        .iter()
        .map(|v| {
            vec![
                v.id.clone(),
                v.state.clone(),
                v.name.clone(),
                format!("{}GB", v.size_gb),
                v.region.clone(),
                v.zone.clone(),
                v.encrypted.to_string(),
                v.attached_machine_id.clone().unwrap_or_default(),
                v.created_at.clone(),
            ]
        })
        .collect();
    output::table(
        &[
            "ID",
            "STATE",
            "NAME",
            "SIZE",
            "REGION",
            "ZONE",
            "ENCRYPTED",
            "ATTACHED VM",
            "CREATED AT",
        ],
        &rows,
    );
}

fn print_one(v: &Volume, app: &str) {
    let gb = |blocks: Option<u64>| match (blocks, v.block_size) {
        (Some(b), Some(size)) => format!("{:.2} GB", (b * size) as f64 / (1u64 << 30) as f64),
        _ => "-".into(),
    };
    let rows = [
        ("ID", v.id.clone()),
        ("Name", v.name.clone()),
        ("App", app.to_string()),
        ("Region", v.region.clone()),
        ("Zone", v.zone.clone()),
        ("Size GB", v.size_gb.to_string()),
        ("Encrypted", v.encrypted.to_string()),
        (
            "Attached VM",
            v.attached_machine_id.clone().unwrap_or_default(),
        ),
        ("State", v.state.clone()),
        ("Filesystem size", gb(v.blocks)),
        ("Available", gb(v.blocks_avail)),
        ("Created at", v.created_at.clone()),
        ("Snapshot retention", v.snapshot_retention.to_string()),
        ("Scheduled snapshots", v.auto_backup_enabled.to_string()),
    ];
    for (k, val) in rows {
        println!("{k:>20} = {val}");
    }
}

/// The size an extend asks for: `N` GB, or `+N` GB more than `now`.
fn extend_to(size: &str, now: u32) -> Result<i64> {
    let (relative, digits) = match size.strip_prefix('+') {
        Some(d) => (true, d),
        None => (false, size),
    };
    let Ok(n) = digits
        .trim()
        .trim_end_matches("gb")
        .trim_end_matches("GB")
        .parse::<i64>()
    else {
        bail!("invalid size {size:?}: give GB as a number (20) or more GB as +N (+5)");
    };
    Ok(if relative { i64::from(now) + n } else { n })
}

pub async fn run(cmd: VolumesCmd) -> Result<()> {
    let client = config::client()?;
    match cmd {
        VolumesCmd::Create {
            name,
            app,
            size,
            region,
            count,
            snapshot_id,
            snapshot_retention,
            scheduled_snapshots,
            no_encryption,
            require_unique_zone,
            fs_type,
            yes: _,
            json,
        } => {
            let app = app.name()?;
            let req = CreateVolumeRequest {
                name: Some(name),
                region,
                size_gb: Some(size),
                encrypted: Some(!no_encryption),
                fstype: Some(fs_type),
                require_unique_zone: Some(require_unique_zone),
                snapshot_retention: Some(snapshot_retention),
                auto_backup_enabled: Some(scheduled_snapshots),
                snapshot_id,
                ..Default::default()
            };
            let mut made = Vec::new();
            for _ in 0..count.max(1) {
                made.push(client.create_volume(&app, &req).await?);
            }
            if json {
                return output::json(&made);
            }
            for v in &made {
                print_one(v, &app);
                if !v.encrypted && !no_encryption && v.fstype == "raw" {
                    eprintln!(
                        "Note: {} is raw and not encrypted at rest: Hangar encrypts filesystems, not block devices (encrypt it inside the machine, e.g. with LUKS)",
                        v.id
                    );
                } else if !v.encrypted && !no_encryption {
                    eprintln!(
                        "Note: {} is not encrypted at rest (this host's ext4 cannot encrypt, or its source was not encrypted)",
                        v.id
                    );
                }
            }
        }
        VolumesCmd::List { app, all, json } => {
            let volumes = client.list_volumes(&app.name()?, all).await?;
            if json {
                return output::json(&volumes);
            }
            print_list(&volumes);
        }
        VolumesCmd::Show { id, app, json } => {
            let app = app.name()?;
            let v = client.get_volume(&app, &id).await?;
            if json {
                return output::json(&v);
            }
            print_one(&v, &app);
        }
        VolumesCmd::Update {
            id,
            app,
            snapshot_retention,
            scheduled_snapshots,
            json,
        } => {
            let app = app.name()?;
            let req = UpdateVolumeRequest {
                snapshot_retention,
                auto_backup_enabled: scheduled_snapshots,
            };
            let v = client.update_volume(&app, &id, &req).await?;
            if json {
                return output::json(&v);
            }
            print_one(&v, &app);
        }
        VolumesCmd::Extend {
            id,
            app,
            size,
            yes: _,
            json,
        } => {
            let app = app.name()?;
            let now = client.get_volume(&app, &id).await?;
            let to = extend_to(&size, now.size_gb)?;
            let r = client.extend_volume(&app, &id, to).await?;
            if json {
                return output::json(&r);
            }
            print_one(&r.volume, &app);
            if r.needs_restart {
                println!("You will need to stop and start the machine to see the new size");
            } else {
                println!("The filesystem has grown; no restart is needed");
            }
        }
        VolumesCmd::Fork {
            id,
            app,
            name,
            region,
            json,
        } => {
            let app = app.name()?;
            let source = client.get_volume(&app, &id).await?;
            let req = CreateVolumeRequest {
                name: Some(name.unwrap_or(source.name.clone())),
                region,
                size_gb: Some(i64::from(source.size_gb)),
                source_volume_id: Some(id),
                ..Default::default()
            };
            let v = client.create_volume(&app, &req).await?;
            if json {
                return output::json(&v);
            }
            print_one(&v, &app);
        }
        VolumesCmd::Snapshots(cmd) => snapshots(&client, cmd).await?,
        VolumesCmd::Destroy { ids, app, yes } => {
            let app = app.name()?;
            confirm(
                &format!(
                    "Destroy volume(s) {}? Their data is gone for good.",
                    ids.join(", ")
                ),
                yes,
            )?;
            for id in ids {
                let v = client.destroy_volume(&app, &id).await?;
                println!("Destroyed volume {} from {app}", v.id);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extend_sizes_absolute_or_relative() {
        assert_eq!(extend_to("20", 10).unwrap(), 20);
        assert_eq!(extend_to("+5", 10).unwrap(), 15);
        assert!(extend_to("lots", 10).is_err());
    }
}
