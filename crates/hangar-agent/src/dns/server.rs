//! One machine's resolver on the wire: hickory-server's request handler that answers
//! each query from the current [`View`] of the asking machine's org (the socket the
//! query came in on says who asks) and sends every public name upstream. UDP answers
//! too large for the asker's buffer go out truncated, and the asker retries over TCP.

use std::net::Ipv6Addr;
use std::sync::{Arc, RwLock};

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{AAAA, SOA, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::names::{Answer, Kind, TTL};
use super::upstream::{Recursed, Upstream};
use super::view::View;

/// What every machine's resolver shares: the current view and the upstream.
pub struct Shared {
    pub view: RwLock<Arc<View>>,
    pub upstream: Option<Upstream>,
}

impl Shared {
    fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The resolver as one machine sees it.
pub struct MachineResolver {
    pub shared: Arc<Shared>,
    pub machine_id: String,
    pub org: u16,
}

/// A character-string holds at most 255 bytes: a longer text goes in several.
fn txt_strings(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(255);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        out.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    out
}

/// The SOA that negative answers for private names carry (so askers cache a "no" for
/// the same 5 s as a "yes").
fn private_soa(zone: &str) -> Record {
    let origin = Name::from_ascii(zone).unwrap_or_else(|_| Name::root());
    let mname = Name::from_ascii("ns.internal.").unwrap_or_else(|_| Name::root());
    let rname = Name::from_ascii("hostmaster.internal.").unwrap_or_else(|_| Name::root());
    Record::from_rdata(
        origin,
        TTL,
        RData::SOA(SOA::new(mname, rname, 1, 3600, 600, 86400, TTL)),
    )
}

impl MachineResolver {
    /// The records for a private name, or `None` when it is not one.
    fn private(
        &self,
        name: &Name,
        kind: RecordType,
    ) -> Option<(ResponseCode, Vec<Record>, Vec<Record>)> {
        let view = self.shared.view();
        let asked = name.to_ascii();
        let ask = match kind {
            RecordType::AAAA => Kind::Aaaa,
            RecordType::TXT => Kind::Txt,
            _ => Kind::Other,
        };
        let region = view.regions.get(&self.machine_id).map(String::as_str);
        let answer = match view.networks.get(&self.org) {
            Some(network) => network.answer(&asked, ask, region),
            None => super::names::Network::default().answer(&asked, ask, region),
        };
        let zone = if asked.trim_end_matches('.').ends_with(".flycast") {
            "flycast."
        } else {
            "internal."
        };
        Some(match answer {
            Answer::Elsewhere => return None,
            Answer::Aaaa(addresses) => (
                ResponseCode::NoError,
                addresses
                    .into_iter()
                    .map(|a: Ipv6Addr| Record::from_rdata(name.clone(), TTL, RData::AAAA(AAAA(a))))
                    .collect(),
                Vec::new(),
            ),
            Answer::Txt(text) => (
                ResponseCode::NoError,
                vec![Record::from_rdata(
                    name.clone(),
                    TTL,
                    RData::TXT(TXT::new(txt_strings(&text))),
                )],
                Vec::new(),
            ),
            Answer::NoData => (ResponseCode::NoError, Vec::new(), vec![private_soa(zone)]),
            Answer::NxDomain => (ResponseCode::NXDomain, Vec::new(), vec![private_soa(zone)]),
        })
    }
}

#[async_trait::async_trait]
impl RequestHandler for MachineResolver {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let mut edns = None;
        if let Some(asked) = request.edns.as_ref() {
            let mut e = Edns::new();
            e.set_max_payload(asked.max_payload().max(512));
            edns = Some(e);
        }
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let query = match request.request_info() {
            Ok(info) if request.metadata.op_code == OpCode::Query => info.query,
            Ok(_) => {
                let reply = builder.error_msg(&request.metadata, ResponseCode::NotImp);
                return send(&mut response, reply, request).await;
            }
            Err(_) => {
                let reply = builder.error_msg(&request.metadata, ResponseCode::FormErr);
                return send(&mut response, reply, request).await;
            }
        };
        let name: Name = query.original().name().clone();
        let kind = query.query_type();
        let (code, answers, authorities) = match self.private(&name, kind) {
            Some(private) => {
                metadata.authoritative = true;
                private
            }
            None => match &self.shared.upstream {
                None => (ResponseCode::Refused, Vec::new(), Vec::new()),
                Some(upstream) => match upstream.resolve(name.clone(), kind).await {
                    Recursed::Answer(records) => (ResponseCode::NoError, records, Vec::new()),
                    Recursed::Negative { code, soa } => {
                        (code, Vec::new(), soa.into_iter().map(|soa| *soa).collect())
                    }
                    Recursed::Failed => (ResponseCode::ServFail, Vec::new(), Vec::new()),
                },
            },
        };
        metadata.response_code = code;
        let reply = builder.build(metadata, answers.iter(), authorities.iter(), [], []);
        send(&mut response, reply, request).await
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    reply: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Request,
) -> ResponseInfo {
    match response.send_response(reply).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, src = %request.src(), "cannot send a DNS answer");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            hickory_server::proto::op::Header {
                metadata,
                counts: Default::default(),
            }
            .into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_split_into_character_strings() {
        let text = "x".repeat(600);
        let parts = txt_strings(&text);
        assert_eq!(
            parts.iter().map(String::len).collect::<Vec<_>>(),
            [255, 255, 90]
        );
        assert_eq!(parts.concat(), text);
        assert!(txt_strings("").is_empty());
    }
}
