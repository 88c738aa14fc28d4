//! Reading a fly.toml (or its JSON and YAML forms): the decoder chosen by extension, the
//! legacy patches, then typing with every unknown key remembered and every wrong value
//! reported by key, line and column.
//!
//! Semantic checks are not here; see [`crate::validate`].

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::diagnostic::{Diagnostic, Location};
use crate::model::AppConfig;
use crate::patch;

/// The three forms a config may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
    Yaml,
}

impl Format {
    /// `*.json` is JSON, `*.yaml`/`*.yml` YAML, anything else TOML, as flyctl decides.
    pub fn for_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            Some("yaml") | Some("yml") => Format::Yaml,
            _ => Format::Toml,
        }
    }
}

/// Why a config could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("read {path}: {error}; pass the app's config with -c PATH (a file, or a directory holding fly.toml)")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostic),
}

/// A config as read, with what was noticed along the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: AppConfig,
    /// The file it came from, when it came from one.
    pub path: Option<PathBuf>,
    /// Keys Hangar does not know (warnings; errors under `--strict`).
    pub unknown_keys: Vec<Diagnostic>,
    source: Source,
}

impl Loaded {
    /// Where `key` (`services[0].internal_port`) was written, when that can be told.
    pub fn locate(&self, key: &str) -> Option<Location> {
        self.source.locate(key)
    }

    /// Fills in the line and column of each diagnostic from its key.
    pub fn place(&self, mut d: Vec<Diagnostic>) -> Vec<Diagnostic> {
        for diag in &mut d {
            if diag.location.is_none() {
                if let Some(k) = &diag.key {
                    diag.location = self.locate(k);
                }
            }
        }
        d
    }
}

/// The text a config came from, kept for locating keys.
#[derive(Debug, Clone)]
enum Source {
    Toml(String),
    Other,
}

/// `-c PATH`: a directory means `PATH/fly.toml`.
pub fn resolve(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("fly.toml")
    } else {
        path.to_path_buf()
    }
}

/// Reads and types the config at `path` (a directory means its fly.toml).
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let path = resolve(path);
    let text = std::fs::read_to_string(&path).map_err(|error| LoadError::Read {
        path: path.clone(),
        error,
    })?;
    let mut loaded = parse(&text, Format::for_path(&path))?;
    loaded.path = Some(path);
    Ok(loaded)
}

/// Types a config from text in the given format.
pub fn parse(text: &str, format: Format) -> Result<Loaded, LoadError> {
    let (doc, source) = match format {
        Format::Toml => (toml_value(text)?, Source::Toml(text.to_string())),
        Format::Json => (
            serde_json::from_str::<Value>(text).map_err(|e| {
                LoadError::Invalid(
                    Diagnostic::error(format!("invalid JSON: {e}")).at(Location {
                        line: e.line(),
                        column: e.column(),
                    }),
                )
            })?,
            Source::Other,
        ),
        Format::Yaml => (
            serde_yaml::from_str::<Value>(text).map_err(|e| {
                let d = Diagnostic::error(format!("invalid YAML: {e}"));
                LoadError::Invalid(match e.location() {
                    Some(l) => d.at(Location {
                        line: l.line(),
                        column: l.column(),
                    }),
                    None => d,
                })
            })?,
            Source::Other,
        ),
    };
    from_document(doc, source)
}

/// Types an already-decoded document (a release's stored definition, for one).
pub fn from_value(doc: Value) -> Result<Loaded, LoadError> {
    from_document(doc, Source::Other)
}

fn from_document(doc: Value, source: Source) -> Result<Loaded, LoadError> {
    let Value::Object(mut obj) = doc else {
        return Err(LoadError::Invalid(Diagnostic::error(
            "the config must be a table of keys (app = \"name\", [http_service], ...)",
        )));
    };
    let placed = |d: Diagnostic| match d.key.as_deref().and_then(|k| source.locate(k)) {
        Some(l) => d.at(l),
        None => d,
    };
    patch::apply(&mut obj)
        .map_err(|e| LoadError::Invalid(placed(Diagnostic::error(e.message).key(&e.path))))?;
    let mut unknown = Vec::new();
    let mut note = |p: serde_ignored::Path| unknown.push(path_string(&p));
    let de = serde_ignored::Deserializer::new(Value::Object(obj), &mut note);
    let config: AppConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner().to_string();
        LoadError::Invalid(placed(
            Diagnostic::error(format!("invalid value: {inner}")).key(&key),
        ))
    })?;
    let unknown_keys = unknown
        .into_iter()
        .map(|k| {
            let d = Diagnostic::warning(
                "unknown key, ignored; check its spelling against the fly.toml reference",
            )
            .key(&k);
            match source.locate_key(&k) {
                Some(l) => d.at(l),
                None => d,
            }
        })
        .collect();
    Ok(Loaded {
        config,
        path: None,
        unknown_keys,
        source,
    })
}

fn toml_value(text: &str) -> Result<Value, LoadError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let location = e.span().map(|s| offset_location(text, s.start));
        let message = format!("invalid TOML: {}", e.message());
        let d = Diagnostic::error(message);
        LoadError::Invalid(match location {
            Some(l) => d.at(l),
            None => d,
        })
    })?;
    serde_json::to_value(table).map_err(|e| {
        LoadError::Invalid(Diagnostic::error(format!(
            "the TOML holds a value JSON cannot (a date?): {e}"
        )))
    })
}

fn path_string(p: &serde_ignored::Path) -> String {
    use serde_ignored::Path as P;
    match p {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", path_string(parent)),
        P::Map { parent, key } => {
            let parent = path_string(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            path_string(parent)
        }
    }
}

/// 1-based line and column of a byte offset.
fn offset_location(text: &str, offset: usize) -> Location {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    Location { line, column }
}

impl Source {
    /// Where the key itself (not its value) was written.
    fn locate_key(&self, key: &str) -> Option<Location> {
        let Source::Toml(text) = self else {
            return None;
        };
        let (parent, last) = match key.rsplit_once('.') {
            Some((p, l)) => (p, l),
            None => ("", key),
        };
        let doc = toml_edit::ImDocument::parse(text.as_str()).ok()?;
        let mut item: &toml_edit::Item = doc.as_item();
        for seg in segments(parent) {
            item = match seg {
                Segment::Key(k) => item.get(k.as_str())?,
                Segment::Index(i) => item.get(i)?,
            };
        }
        let (k, _) = item.as_table_like()?.get_key_value(last)?;
        k.span()
            .map(|s| offset_location(text, s.start))
            .or_else(|| self.locate(key))
    }

    fn locate(&self, key: &str) -> Option<Location> {
        let Source::Toml(text) = self else {
            return None;
        };
        let doc = toml_edit::ImDocument::parse(text.as_str()).ok()?;
        let mut best = None;
        let mut item: &toml_edit::Item = doc.as_item();
        for seg in segments(key) {
            let next = match seg {
                Segment::Key(k) => item.get(k.as_str()).or_else(|| {
                    // Keys a legacy patch renamed or moved.
                    let alias = match k.as_str() {
                        "build-target" => "build_target",
                        "vm" => "compute",
                        "mounts" => "mount",
                        "metrics" => "metric",
                        _ => return None,
                    };
                    item.get(alias)
                }),
                Segment::Index(i) => match item {
                    toml_edit::Item::ArrayOfTables(a) => a.get(i).map(|_| ()).and(item.get(i)),
                    toml_edit::Item::Value(toml_edit::Value::Array(_)) => item.get(i),
                    // A single table written where a list is expected: index 0 is itself.
                    _ if i == 0 => Some(item),
                    _ => None,
                },
            };
            let Some(next) = next else { break };
            if let Some(span) = item_span(next) {
                best = Some(offset_location(text, span));
            }
            item = next;
        }
        best
    }
}

fn item_span(item: &toml_edit::Item) -> Option<usize> {
    match item {
        toml_edit::Item::Value(v) => v.span().map(|s| s.start),
        toml_edit::Item::Table(t) => t.span().map(|s| s.start),
        toml_edit::Item::ArrayOfTables(a) => a.span().map(|s| s.start),
        toml_edit::Item::None => None,
    }
}

enum Segment {
    Key(String),
    Index(usize),
}

fn segments(key: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let (name, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Segment::Key(name.to_string()));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Segment::Index(i));
            }
        }
    }
    out
}
