//! The flags that say how a host runs machines, shared by `hangar server` and
//! `hangar agent`: the driver and containerd, registries, volumes and their
//! snapshots, private DNS's upstream resolvers and the WireGuard gateway; and the
//! settings the agent gets from them. What the server alone takes is in `server.rs`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::server::{overcommit, DriverKind};

/// How this host runs machines (`hangar server` and `hangar agent`).
#[derive(Args)]
pub struct DriverArgs {
    /// How machines run
    #[arg(long, env = "HANGAR_DRIVER", value_enum, default_value = "auto")]
    pub driver: DriverKind,
    /// Use the containerd listening here instead of starting a private one
    #[arg(long, env = "HANGAR_CONTAINERD_SOCKET")]
    pub containerd_socket: Option<PathBuf>,
    /// A registry (host[:port]) to reach over plain HTTP; loopback ones always are
    #[arg(
        long = "insecure-registry",
        env = "HANGAR_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
    /// How many times the host disk's free space volumes may be promised, as a ratio:
    /// their images are sparse and take only what is written (1.0 promises no more
    /// than is free)
    #[arg(long, env = "HANGAR_VOLUME_OVERCOMMIT", default_value_t = 1.0)]
    pub volume_overcommit: f64,
    /// When volumes are encrypted at rest: auto (where the kernel has AES in hardware),
    /// always (wherever ext4 can, however slow), never
    #[arg(
        long,
        env = "HANGAR_VOLUME_ENCRYPTION",
        value_enum,
        default_value = "auto"
    )]
    pub volume_encryption: VolumeEncryption,
    /// Keep volume snapshots in this S3-compatible bucket, as s3://BUCKET[/PREFIX]
    /// (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY); without it they
    /// stay under the data dir
    #[arg(
        long,
        env = "HANGAR_SNAPSHOT_BUCKET",
        value_name = "s3://BUCKET[/PREFIX]"
    )]
    pub snapshot_bucket: Option<String>,
    /// The bucket's S3 endpoint, for a server other than AWS (MinIO, Ceph, Garage, R2…)
    #[arg(long, env = "HANGAR_SNAPSHOT_ENDPOINT", value_name = "URL")]
    pub snapshot_endpoint: Option<String>,
    /// The bucket's region (what request signatures name)
    #[arg(long, env = "HANGAR_SNAPSHOT_REGION", default_value = "us-east-1")]
    pub snapshot_region: String,
    /// A resolver (IP[:PORT]) machines' private DNS asks for every name that is not
    /// private; repeat for more. Without it, those of the host's /etc/resolv.conf
    #[arg(
        long = "dns-upstream",
        env = "HANGAR_DNS_UPSTREAM",
        value_delimiter = ',',
        value_name = "IP[:PORT]",
        value_parser = parse_resolver
    )]
    pub dns_upstream: Vec<std::net::SocketAddr>,
    /// The UDP port WireGuard peers (`hangar wireguard create`) send to on this host
    #[arg(long, env = "HANGAR_WIREGUARD_PORT", default_value_t = hangar_net::wireguard::DEFAULT_PORT)]
    pub wireguard_port: u16,
    /// The name of this host's WireGuard gateway interface (it starts with `hangar`)
    #[arg(long, env = "HANGAR_WIREGUARD_INTERFACE", default_value = hangar_net::wireguard::DEFAULT_INTERFACE, value_parser = parse_interface)]
    pub wireguard_interface: String,
}

/// A gateway interface name: `hangar` and up to nine letters, digits or dashes (an
/// interface name holds 15 bytes; the host's rules cover `hangar*`).
fn parse_interface(s: &str) -> Result<String, String> {
    let ok = s.starts_with("hangar")
        && s.len() <= 15
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a gateway interface name: give `hangar` and up to nine letters, digits or dashes, such as hangar-wg"))
    }
}

/// `IP` or `IP:PORT` (`[IPv6]:PORT`), port 53 when none is given.
fn parse_resolver(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok((ip, 53).into());
    }
    s.parse()
        .map_err(|_| format!("{s:?} is not a resolver address: give IP or IP:PORT ([IPv6]:PORT)"))
}

impl DriverArgs {
    /// Where this host's WireGuard gateway listens, its state under `data_dir`.
    pub fn gateway_settings(
        &self,
        data_dir: &std::path::Path,
    ) -> hangar_agent::gateway::GatewaySettings {
        hangar_agent::gateway::GatewaySettings {
            interface: self.wireguard_interface.clone(),
            port: self.wireguard_port,
            dir: data_dir.join("wireguard"),
        }
    }

    /// Where private DNS sends public names.
    pub fn dns_settings(&self) -> hangar_agent::dns::DnsSettings {
        hangar_agent::dns::DnsSettings {
            upstream: self.dns_upstream.clone(),
        }
    }

    /// How volumes are kept, from the flags, checked.
    pub fn volume_settings(&self) -> Result<hangar_agent::volumes::VolumeSettings> {
        let snapshot_bucket = match &self.snapshot_bucket {
            Some(_) if hangar_agent::volumes::snapshot::s3::Credentials::from_env().is_none() => {
                anyhow::bail!("--snapshot-bucket needs the bucket's credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")
            }
            Some(bucket) => Some(
                hangar_agent::volumes::snapshot::s3::S3Config::parse(
                    bucket,
                    self.snapshot_endpoint.as_deref(),
                    &self.snapshot_region,
                )
                .map_err(|e| anyhow::anyhow!("--snapshot-bucket: {e}"))?,
            ),
            None if self.snapshot_endpoint.is_some() => {
                anyhow::bail!("--snapshot-endpoint needs --snapshot-bucket s3://BUCKET[/PREFIX]")
            }
            None => None,
        };
        Ok(hangar_agent::volumes::VolumeSettings {
            overcommit: overcommit("volume-overcommit", self.volume_overcommit)?,
            encryption: self.volume_encryption.into(),
            snapshot_bucket,
        })
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum VolumeEncryption {
    Auto,
    Always,
    Never,
}

impl From<VolumeEncryption> for hangar_agent::volumes::fscrypt::Encryption {
    fn from(v: VolumeEncryption) -> Self {
        match v {
            VolumeEncryption::Auto => Self::Auto,
            VolumeEncryption::Always => Self::Always,
            VolumeEncryption::Never => Self::Never,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_interfaces_are_hangar_names_that_fit() {
        assert_eq!(parse_interface("hangar-wg").unwrap(), "hangar-wg");
        assert!(parse_interface("hangar-wg1234").is_ok());
        for bad in ["wg0", "hangar-wg-too-long", "hangar wg"] {
            assert!(
                parse_interface(bad)
                    .unwrap_err()
                    .contains("gateway interface"),
                "{bad}"
            );
        }
    }

    #[test]
    fn resolvers_default_to_port_53() {
        assert_eq!(parse_resolver("1.1.1.1").unwrap().port(), 53);
        assert_eq!(parse_resolver("[::1]:5353").unwrap().port(), 5353);
        assert!(parse_resolver("dns.example").is_err());
    }
}
