//! The caveats Hangar mints and checks, with Fly's type numbers and encodings: as
//! msgpack inside a token (written as Go's encoder writes them — smallest integers,
//! sorted map keys — so flyctl re-encodes them to the same bytes) and as the JSON of
//! `tokens debug` / `tokens attenuate -f`; and what each says of an [`Access`].

use std::collections::BTreeMap;

use rmpv::Value;
use serde_json::{json, Value as Json};

use crate::access::{Access, Action, Verdict};
use crate::TokenError;

const ORGANIZATION: u64 = 0;
const VOLUMES: u64 = 2;
const APPS: u64 = 3;
const VALIDITY_WINDOW: u64 = 4;
const FEATURE_SET: u64 = 5;
const MUTATIONS: u64 = 6;
const MACHINES: u64 = 7;
const IS_USER: u64 = 10;
const IF_PRESENT: u64 = 13;
const MACHINE_FEATURE_SET: u64 = 14;
const CLUSTERS: u64 = 16;
const IS_MEMBER: u64 = 22;
const ACTION: u64 = 26;
const COMMANDS: u64 = 27;
const APP_FEATURE_SET: u64 = 28;

/// How deep `IfPresent` may nest.
const MAX_DEPTH: usize = 4;

/// A command a `Commands` caveat allows: exactly these words, or starting with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub args: Vec<String>,
    pub exact: bool,
}

/// One restriction of a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Caveat {
    /// Only this org (`0`: any), only these actions on it.
    Organization {
        id: u64,
        mask: Action,
    },
    /// Only these apps, by numeric id (`0` alone: every app), each with its actions.
    Apps(BTreeMap<u64, Action>),
    Volumes(BTreeMap<String, Action>),
    Machines(BTreeMap<String, Action>),
    FeatureSet(BTreeMap<String, Action>),
    MachineFeatureSet(BTreeMap<String, Action>),
    AppFeatureSet(BTreeMap<String, Action>),
    Clusters(BTreeMap<String, Action>),
    /// Valid from `not_before` to `not_after`, Unix seconds.
    ValidityWindow {
        not_before: i64,
        not_after: i64,
    },
    Mutations(Vec<String>),
    Commands(Vec<Command>),
    /// The caveats in `ifs` where the request names what they are about; `otherwise`
    /// the actions allowed when it names none of them.
    IfPresent {
        ifs: Vec<Caveat>,
        otherwise: Action,
    },
    /// Only these actions.
    Action(Action),
    /// Who the token was made for; restricts nothing.
    IsUser(u64),
    /// No admin features (Fly's `NoAdminFeatures`).
    IsMember,
    /// A caveat this crate does not know: it denies everything.
    Unknown {
        kind: u64,
        body: Value,
    },
}

/// The resource-set caveats: type number, JSON name, JSON body key.
const STRING_SETS: [(u64, &str, &str); 6] = [
    (VOLUMES, "Volumes", "volumes"),
    (MACHINES, "Machines", "machines"),
    (FEATURE_SET, "FeatureSet", "features"),
    (MACHINE_FEATURE_SET, "MachineFeatureSet", "features"),
    (APP_FEATURE_SET, "AppFeatureSet", "features"),
    (CLUSTERS, "Clusters", "clusters"),
];

/// The resource-set caveat of type `kind` (one of [`STRING_SETS`]) over `set`.
fn string_set_caveat(kind: u64, set: BTreeMap<String, Action>) -> Caveat {
    match kind {
        VOLUMES => Caveat::Volumes(set),
        MACHINES => Caveat::Machines(set),
        FEATURE_SET => Caveat::FeatureSet(set),
        MACHINE_FEATURE_SET => Caveat::MachineFeatureSet(set),
        APP_FEATURE_SET => Caveat::AppFeatureSet(set),
        _ => Caveat::Clusters(set),
    }
}

fn bad(why: impl Into<String>) -> TokenError {
    TokenError::BadCaveat(why.into())
}

fn uint(v: &Value) -> Result<u64, TokenError> {
    v.as_u64()
        .ok_or_else(|| bad("expected an unsigned integer"))
}

fn array(v: &Value) -> Result<&[Value], TokenError> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| bad("expected an array"))
}

fn string(v: &Value) -> Result<String, TokenError> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| bad("expected a string"))
}

/// The single field of a one-field struct body.
fn only(v: &Value) -> Result<&Value, TokenError> {
    match array(v)? {
        [one] => Ok(one),
        _ => Err(bad("expected a one-field body")),
    }
}

fn string_set(v: &Value) -> Result<BTreeMap<String, Action>, TokenError> {
    let map = only(v)?
        .as_map()
        .ok_or_else(|| bad("expected a map of ids to actions"))?;
    map.iter()
        .map(|(k, a)| Ok((string(k)?, Action(uint(a)?))))
        .collect()
}

fn set_value<K: Clone + Into<Value>>(set: &BTreeMap<K, Action>) -> Value {
    Value::Array(vec![Value::Map(
        set.iter()
            .map(|(k, a)| (k.clone().into(), Value::from(a.0)))
            .collect(),
    )])
}

impl Caveat {
    /// The caveat's type number and msgpack body.
    pub fn to_msgpack(&self) -> (u64, Value) {
        match self {
            Caveat::Organization { id, mask } => (
                ORGANIZATION,
                Value::Array(vec![Value::from(*id), Value::from(mask.0)]),
            ),
            Caveat::Apps(apps) => (APPS, set_value(apps)),
            Caveat::Volumes(s) => (VOLUMES, set_value(s)),
            Caveat::Machines(s) => (MACHINES, set_value(s)),
            Caveat::FeatureSet(s) => (FEATURE_SET, set_value(s)),
            Caveat::MachineFeatureSet(s) => (MACHINE_FEATURE_SET, set_value(s)),
            Caveat::AppFeatureSet(s) => (APP_FEATURE_SET, set_value(s)),
            Caveat::Clusters(s) => (CLUSTERS, set_value(s)),
            Caveat::ValidityWindow {
                not_before,
                not_after,
            } => (
                VALIDITY_WINDOW,
                Value::Array(vec![Value::from(*not_before), Value::from(*not_after)]),
            ),
            Caveat::Mutations(m) => (
                MUTATIONS,
                Value::Array(vec![Value::Array(
                    m.iter().map(|s| Value::from(s.as_str())).collect(),
                )]),
            ),
            Caveat::Commands(cs) => (
                COMMANDS,
                Value::Array(
                    cs.iter()
                        .map(|c| {
                            Value::Array(vec![
                                Value::Array(
                                    c.args.iter().map(|a| Value::from(a.as_str())).collect(),
                                ),
                                Value::Boolean(c.exact),
                            ])
                        })
                        .collect(),
                ),
            ),
            Caveat::IfPresent { ifs, otherwise } => {
                let mut flat = Vec::with_capacity(ifs.len() * 2);
                for c in ifs {
                    let (kind, body) = c.to_msgpack();
                    flat.push(Value::from(kind));
                    flat.push(body);
                }
                (
                    IF_PRESENT,
                    Value::Array(vec![Value::Array(flat), Value::from(otherwise.0)]),
                )
            }
            Caveat::Action(a) => (ACTION, Value::from(a.0)),
            Caveat::IsUser(id) => (IS_USER, Value::Array(vec![Value::from(*id)])),
            Caveat::IsMember => (IS_MEMBER, Value::Array(Vec::new())),
            Caveat::Unknown { kind, body } => (*kind, body.clone()),
        }
    }

    /// The caveat of type `kind` with msgpack body `body`.
    pub fn from_msgpack(kind: u64, body: &Value) -> Result<Caveat, TokenError> {
        Self::from_msgpack_at(kind, body, 0)
    }

    fn from_msgpack_at(kind: u64, body: &Value, depth: usize) -> Result<Caveat, TokenError> {
        if STRING_SETS.iter().any(|(k, _, _)| *k == kind) {
            return Ok(string_set_caveat(kind, string_set(body)?));
        }
        Ok(match kind {
            ORGANIZATION => match array(body)? {
                [id, mask] => Caveat::Organization {
                    id: uint(id)?,
                    mask: Action(uint(mask)?),
                },
                _ => return Err(bad("Organization has two fields")),
            },
            APPS => {
                let map = only(body)?
                    .as_map()
                    .ok_or_else(|| bad("Apps holds a map of app ids to actions"))?;
                Caveat::Apps(
                    map.iter()
                        .map(|(k, a)| Ok((uint(k)?, Action(uint(a)?))))
                        .collect::<Result<_, TokenError>>()?,
                )
            }
            VALIDITY_WINDOW => match array(body)? {
                [nb, na] => Caveat::ValidityWindow {
                    not_before: nb.as_i64().ok_or_else(|| bad("not_before"))?,
                    not_after: na.as_i64().ok_or_else(|| bad("not_after"))?,
                },
                _ => return Err(bad("ValidityWindow has two fields")),
            },
            MUTATIONS => Caveat::Mutations(
                array(only(body)?)?
                    .iter()
                    .map(string)
                    .collect::<Result<_, _>>()?,
            ),
            COMMANDS => Caveat::Commands(
                array(body)?
                    .iter()
                    .map(|c| match array(c)? {
                        [args, exact] => Ok(Command {
                            args: array(args)?.iter().map(string).collect::<Result<_, _>>()?,
                            exact: exact.as_bool().ok_or_else(|| bad("exact"))?,
                        }),
                        _ => Err(bad("a command has two fields")),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            IF_PRESENT => {
                if depth >= MAX_DEPTH {
                    return Err(bad("IfPresent nests too deep"));
                }
                match array(body)? {
                    [ifs, otherwise] => {
                        let flat = array(ifs)?;
                        if flat.len() % 2 != 0 {
                            return Err(bad("IfPresent's caveats come in type and body pairs"));
                        }
                        Caveat::IfPresent {
                            ifs: flat
                                .chunks(2)
                                .map(|p| Self::from_msgpack_at(uint(&p[0])?, &p[1], depth + 1))
                                .collect::<Result<_, _>>()?,
                            otherwise: Action(uint(otherwise)?),
                        }
                    }
                    _ => return Err(bad("IfPresent has two fields")),
                }
            }
            ACTION => Caveat::Action(Action(uint(body)?)),
            IS_USER => Caveat::IsUser(uint(only(body)?)?),
            IS_MEMBER => Caveat::IsMember,
            kind => Caveat::Unknown {
                kind,
                body: body.clone(),
            },
        })
    }

    /// The caveat as `fly tokens debug` shows it: `{"type": …, "body": …}`.
    pub fn to_json(&self) -> Json {
        let named = |s: &BTreeMap<String, Action>| -> Json {
            s.iter()
                .map(|(k, a)| (k.clone(), Json::from(a.to_string())))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let (kind, body) = match self {
            Caveat::Organization { id, mask } => {
                ("Organization", json!({"id": id, "mask": mask.to_string()}))
            }
            Caveat::Apps(apps) => {
                let apps: serde_json::Map<String, Json> = apps
                    .iter()
                    .map(|(k, a)| (k.to_string(), Json::from(a.to_string())))
                    .collect();
                ("Apps", json!({ "apps": apps }))
            }
            Caveat::Volumes(s)
            | Caveat::Machines(s)
            | Caveat::FeatureSet(s)
            | Caveat::MachineFeatureSet(s)
            | Caveat::AppFeatureSet(s)
            | Caveat::Clusters(s) => {
                let kind = self.to_msgpack().0;
                let (_, name, key) = STRING_SETS
                    .iter()
                    .find(|(k, _, _)| *k == kind)
                    .copied()
                    .unwrap_or((kind, "Unknown", "set"));
                (name, json!({ key: named(s) }))
            }
            Caveat::ValidityWindow {
                not_before,
                not_after,
            } => (
                "ValidityWindow",
                json!({"not_before": not_before, "not_after": not_after}),
            ),
            Caveat::Mutations(m) => ("Mutations", json!({ "mutations": m })),
            Caveat::Commands(cs) => (
                "Commands",
                cs.iter()
                    .map(|c| json!({"args": c.args, "exact": c.exact}))
                    .collect::<Vec<_>>()
                    .into(),
            ),
            Caveat::IfPresent { ifs, otherwise } => (
                "IfPresent",
                json!({"ifs": ifs.iter().map(Caveat::to_json).collect::<Vec<_>>(), "else": otherwise.to_string()}),
            ),
            Caveat::Action(a) => ("Action", Json::from(a.to_string())),
            Caveat::IsUser(id) => ("IsUser", json!({ "uint64": id })),
            Caveat::IsMember => ("NoAdminFeatures", json!({})),
            Caveat::Unknown { kind, .. } => {
                return json!({"type": kind.to_string(), "body": null});
            }
        };
        json!({"type": kind, "body": body})
    }

    /// The caveat `{"type": …, "body": …}` gives (the JSON of `tokens attenuate -f`).
    pub fn from_json(v: &Json) -> Result<Caveat, TokenError> {
        let kind = v["type"]
            .as_str()
            .ok_or_else(|| bad("a caveat needs a \"type\""))?;
        let body = &v["body"];
        let action = |j: &Json| -> Result<Action, TokenError> {
            j.as_str()
                .and_then(Action::parse)
                .ok_or_else(|| bad(format!("{j} is not an action: use letters of rwcdC, or *")))
        };
        let actions = |j: &Json| -> Result<BTreeMap<String, Action>, TokenError> {
            j.as_object()
                .ok_or_else(|| bad(format!("{kind} needs a map of ids to actions")))?
                .iter()
                .map(|(k, a)| Ok((k.clone(), action(a)?)))
                .collect()
        };
        if let Some((number, _, key)) = STRING_SETS.iter().find(|(_, n, _)| *n == kind) {
            return Ok(string_set_caveat(*number, actions(&body[*key])?));
        }
        let int = |j: &Json, what: &str| {
            j.as_i64()
                .ok_or_else(|| bad(format!("{kind} needs {what}")))
        };
        Ok(match kind {
            "Organization" => Caveat::Organization {
                id: body["id"]
                    .as_u64()
                    .ok_or_else(|| bad("Organization needs an id"))?,
                mask: action(&body["mask"])?,
            },
            "Apps" => Caveat::Apps(
                actions(&body["apps"])?
                    .into_iter()
                    .map(|(k, a)| {
                        k.parse::<u64>()
                            .map(|id| (id, a))
                            .map_err(|_| bad(format!("app id {k:?} is not a number")))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "ValidityWindow" => Caveat::ValidityWindow {
                not_before: int(&body["not_before"], "not_before")?,
                not_after: int(&body["not_after"], "not_after")?,
            },
            "Mutations" => Caveat::Mutations(
                body["mutations"]
                    .as_array()
                    .ok_or_else(|| bad("Mutations needs a list"))?
                    .iter()
                    .map(|m| {
                        m.as_str()
                            .map(String::from)
                            .ok_or_else(|| bad("a mutation is a string"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "Commands" => Caveat::Commands(
                body.as_array()
                    .ok_or_else(|| bad("Commands is a list of {args, exact}"))?
                    .iter()
                    .map(|c| {
                        Ok(Command {
                            args: c["args"]
                                .as_array()
                                .ok_or_else(|| bad("a command needs args"))?
                                .iter()
                                .map(|a| {
                                    a.as_str()
                                        .map(String::from)
                                        .ok_or_else(|| bad("args are strings"))
                                })
                                .collect::<Result<_, _>>()?,
                            exact: c["exact"].as_bool().unwrap_or(false),
                        })
                    })
                    .collect::<Result<_, TokenError>>()?,
            ),
            "IfPresent" => Caveat::IfPresent {
                ifs: body["ifs"]
                    .as_array()
                    .ok_or_else(|| bad("IfPresent needs ifs"))?
                    .iter()
                    .map(Caveat::from_json)
                    .collect::<Result<_, _>>()?,
                otherwise: action(&body["else"])?,
            },
            "Action" => Caveat::Action(action(body)?),
            "IsUser" => Caveat::IsUser(
                body["uint64"]
                    .as_u64()
                    .ok_or_else(|| bad("IsUser needs uint64"))?,
            ),
            "NoAdminFeatures" | "IsMember" => Caveat::IsMember,
            other => return Err(bad(format!("unknown caveat type {other:?}"))),
        })
    }

    /// What the caveat says of `access`.
    pub fn check(&self, access: &Access) -> Verdict {
        let action = access.action;
        match self {
            Caveat::Organization { id, mask } => {
                if *id != 0 && *id != access.org_id {
                    Verdict::Denied("the token is for another org".into())
                } else {
                    within(action, *mask, "the org")
                }
            }
            Caveat::Apps(apps) => set_check(apps, access.app_id.as_ref(), &0, action, "app"),
            Caveat::Volumes(s) => {
                set_check(s, access.volume.as_ref(), &String::new(), action, "volume")
            }
            Caveat::Machines(s) => set_check(
                s,
                access.machine.as_ref(),
                &String::new(),
                action,
                "machine",
            ),
            Caveat::FeatureSet(s) => set_check(
                s,
                access.feature.as_ref(),
                &String::new(),
                action,
                "feature",
            ),
            Caveat::MachineFeatureSet(s) => set_check(
                s,
                access.machine_feature.as_ref(),
                &String::new(),
                action,
                "machine feature",
            ),
            Caveat::AppFeatureSet(s) => set_check(
                s,
                access.app_feature.as_ref(),
                &String::new(),
                action,
                "app feature",
            ),
            Caveat::Clusters(s) => set_check(
                s,
                access.cluster.as_ref(),
                &String::new(),
                action,
                "cluster",
            ),
            Caveat::ValidityWindow {
                not_before,
                not_after,
            } => {
                if access.now > *not_after {
                    Verdict::Denied("the token has expired".into())
                } else if access.now < *not_before {
                    Verdict::Denied("the token is not valid yet".into())
                } else {
                    Verdict::Allowed
                }
            }
            Caveat::Mutations(m) => match &access.mutation {
                None => Verdict::Unspecified("mutation"),
                Some(asked) if m.contains(asked) => Verdict::Allowed,
                Some(asked) => Verdict::Denied(format!("the token does not allow {asked}")),
            },
            Caveat::Commands(cs) => match &access.command {
                None => Verdict::Unspecified("command"),
                Some(argv) => {
                    let fits = cs.iter().any(|c| {
                        if c.exact {
                            c.args == *argv
                        } else {
                            argv.starts_with(&c.args)
                        }
                    });
                    if fits {
                        Verdict::Allowed
                    } else {
                        Verdict::Denied("the token does not allow this command".into())
                    }
                }
            },
            Caveat::IfPresent { ifs, otherwise } => {
                let mut relevant = false;
                for c in ifs {
                    match c.check(access) {
                        Verdict::Allowed => relevant = true,
                        Verdict::Unspecified(_) => {}
                        denied @ Verdict::Denied(_) => return denied,
                    }
                }
                if relevant {
                    Verdict::Allowed
                } else {
                    within(action, *otherwise, "what the request names")
                }
            }
            Caveat::Action(a) => within(action, *a, "the request"),
            Caveat::IsUser(_) => Verdict::Allowed,
            Caveat::IsMember => member_feature(access),
            Caveat::Unknown { kind, .. } => Verdict::Denied(format!(
                "the token has a caveat (type {kind}) this server does not check"
            )),
        }
    }
}

/// Whether a token with `caveats` may do `access`: every caveat must allow it (one
/// about something the request does not name denies it). The reason when not.
pub fn allows(caveats: &[Caveat], access: &Access) -> Result<(), String> {
    for c in caveats {
        match c.check(access) {
            Verdict::Allowed => {}
            Verdict::Unspecified(what) => {
                return Err(format!(
                    "the token is limited to a {what}, and this request is not about one"
                ))
            }
            Verdict::Denied(why) => return Err(why),
        }
    }
    Ok(())
}

fn within(asked: Action, allowed: Action, on: &str) -> Verdict {
    if asked.within(allowed) {
        Verdict::Allowed
    } else {
        Verdict::Denied(format!(
            "the token allows only {:?} on {on}",
            allowed.to_string()
        ))
    }
}

/// A resource set: the id named must be in it (or the set is the wildcard alone) with
/// the actions asked.
fn set_check<K: Ord + std::fmt::Display>(
    set: &BTreeMap<K, Action>,
    id: Option<&K>,
    wildcard: &K,
    action: Action,
    what: &'static str,
) -> Verdict {
    let Some(id) = id else {
        return Verdict::Unspecified(what);
    };
    let allowed = match set.get(wildcard) {
        Some(_) if set.len() > 1 => {
            return Verdict::Denied(format!(
                "the token's {what} caveat mixes a wildcard with ids"
            ))
        }
        Some(all) => *all,
        None => match set.get(id) {
            Some(a) => *a,
            None => return Verdict::Denied(format!("the token does not allow {what} {id}")),
        },
    };
    within(action, allowed, what)
}

/// `NoAdminFeatures`: members' features only.
fn member_feature(access: &Access) -> Verdict {
    let Some(feature) = access.feature.as_deref() else {
        return Verdict::Allowed;
    };
    let allowed = match feature {
        "wg" | "domain" | "site" | "builder" | "addon" | "checks" | "litefs-cloud" => Action::ALL,
        "membership" | "billing" | "authentication" => Action::READ,
        _ => Action::NONE,
    };
    within(access.action, allowed, "an admin feature")
}
