//! Recursion for every name that is not private: asked of the host's resolvers (those
//! of its `/etc/resolv.conf`, or the servers the agent was given) through
//! hickory-resolver, whose cache answers repeated names without asking again. The
//! host's `/etc/hosts` is never consulted: a machine must not learn the host's names.

use std::net::SocketAddr;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, Record, RecordType};
use hickory_resolver::TokioResolver;

/// How many answers the cache keeps.
const CACHE_SIZE: u64 = 8192;

/// The outcome of asking upstream.
pub enum Recursed {
    Answer(Vec<Record>),
    /// `NXDOMAIN` or `NOERROR` with no records, with the zone's SOA when it came.
    Negative {
        code: ResponseCode,
        soa: Option<Box<Record>>,
    },
    /// No upstream answered.
    Failed,
}

#[derive(Clone)]
pub struct Upstream {
    resolver: TokioResolver,
}

impl Upstream {
    /// Asks `servers` (each a UDP and TCP address), or the host's resolvers when none
    /// are given.
    pub fn new(servers: &[SocketAddr]) -> Result<Upstream, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if servers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| {
                format!("cannot read the host's resolvers from /etc/resolv.conf: {e}")
            })?
        } else {
            let name_servers = servers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                    ns.connections = vec![udp, tcp];
                    ns
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), name_servers),
                provider,
            )
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.use_hosts_file = ResolveHosts::Never;
        options.cache_size = CACHE_SIZE;
        options.ndots = 0;
        let resolver = builder
            .build()
            .map_err(|e| format!("cannot set up the upstream resolver: {e}"))?;
        Ok(Upstream { resolver })
    }

    /// Resolves `name` (fully qualified) of type `kind` upstream.
    pub async fn resolve(&self, name: Name, kind: RecordType) -> Recursed {
        let mut name = name;
        name.set_fqdn(true);
        match self.resolver.lookup(name, kind).await {
            Ok(lookup) => Recursed::Answer(lookup.answers().to_vec()),
            Err(e) if e.is_no_records_found() => {
                let code = if e.is_nx_domain() {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::NoError
                };
                let soa = e.into_soa().map(|soa| Box::new(soa.into_record_of_rdata()));
                Recursed::Negative { code, soa }
            }
            Err(e) => {
                tracing::debug!(error = %e, "upstream DNS did not answer");
                Recursed::Failed
            }
        }
    }
}
