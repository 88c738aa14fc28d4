//! fly.toml, the app configuration a Fly user already has: reading it in any of its
//! forms (TOML, JSON, YAML, and the legacy v1 shapes), checking it with errors that name
//! the key, line and column, scoping it to process groups, and turning it into the
//! machine config of each group.
//!
//! The crate does no I/O beyond reading the config file (and files it names); it knows
//! nothing of the API, the store or deploys. Its reference is
//! `flytoml-and-deploys.md` §1–6.

pub mod compute;
mod diagnostic;
mod load;
pub mod machine;
mod model;
pub mod patch;
mod scope;
mod validate;

pub use diagnostic::{Diagnostic, Location, Severity};
pub use load::{from_value, load, parse, resolve, Format, LoadError, Loaded};
pub use machine::ConversionError;
pub use model::*;

impl AppConfig {
    /// The config as fly.toml text, with the header flyctl writes; an error when a
    /// value has no TOML form (a JSON `null` inside a table, for one).
    pub fn to_toml(&self, generated_at: &str) -> Result<String, String> {
        let body = toml::to_string_pretty(self)
            .map_err(|e| format!("the config cannot be written as TOML: {e}"))?;
        Ok(format!(
            "# fly.toml app configuration file generated for {} on {generated_at}\n#\n# See https://fly.io/docs/reference/configuration/ for information about how to use this file.\n#\n\n{body}",
            self.app
        ))
    }

    /// The deploy strategy: `[deploy] strategy`, else rolling.
    pub fn strategy(&self) -> String {
        self.deploy
            .as_ref()
            .and_then(|d| d.strategy.clone())
            .unwrap_or_else(|| "rolling".into())
    }
}
