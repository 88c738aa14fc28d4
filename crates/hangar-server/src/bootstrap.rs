//! First start on an empty data dir: the `personal` org and the admin token. The token
//! is returned once (for the binary to print), written to `<data-dir>/admin-token` with
//! mode 0600, and stored only as a digest.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use hangar_store::{OrgRecord, Store, TokenRecord};

use crate::{auth, clock, ids, ServerConfig, ServerError};

/// What bootstrap did on this start.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// The new admin token, only on the start that created it.
    pub admin_token: Option<String>,
    pub admin_token_file: std::path::PathBuf,
}

pub const PERSONAL_ORG: &str = "personal";

pub(crate) async fn run(store: &Store, config: &ServerConfig) -> Result<Bootstrap, ServerError> {
    let token_file = config.data_dir.join("admin-token");
    let env_token = config.admin_token.clone().filter(|t| !t.trim().is_empty());
    let now = clock::rfc3339_now();
    let created = store
        .call(move |db| {
            db.ensure_org(
                &OrgRecord {
                    slug: PERSONAL_ORG.into(),
                    name: "Personal".into(),
                    numeric_id: 1,
                },
                &now,
            )?;
            let fresh = db.token_count()? == 0;
            let token = match (&env_token, fresh) {
                (Some(t), _) if db.token_by_digest(&auth::digest(t))?.is_none() => {
                    t.trim().to_string()
                }
                (None, true) => ids::api_token(),
                _ => return Ok(None),
            };
            let record = TokenRecord {
                id: ids::ulid(),
                org_slug: PERSONAL_ORG.into(),
                name: "admin".into(),
                kind: "admin".into(),
            };
            db.insert_token(&record, &auth::digest(&token), &now)?;
            Ok(Some(token))
        })
        .await?;
    if let Some(token) = &created {
        write_secret_file(&token_file, token).map_err(|error| ServerError::DataDir {
            path: token_file.clone(),
            error,
        })?;
    }
    Ok(Bootstrap {
        admin_token: created,
        admin_token_file: token_file,
    })
}

fn write_secret_file(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{contents}")
}
