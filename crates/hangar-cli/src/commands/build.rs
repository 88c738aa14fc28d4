//! Building an app's image on the server, as `hangar deploy` does it: pack the context
//! (honouring `.dockerignore`), send it, show the build's output, get the pushed image.
//! fly.toml's `[build]` wins over the flags for `dockerfile`, `ignorefile` and
//! `build-target`, as in flyctl; `--build-arg` entries win over `[build.args]`.

use std::path::Path;

use anyhow::{bail, Result};
use clap::Args;
use hangar_appconfig::AppConfig;
use hangar_client::Client;

#[derive(Args, Clone, Default)]
pub struct BuildArgs {
    /// Path to a Dockerfile (relative to the config's directory)
    #[arg(long)]
    pub dockerfile: Option<String>,
    /// Multi-stage target to build
    #[arg(long)]
    pub build_target: Option<String>,
    /// Build argument: NAME=VALUE (repeatable)
    #[arg(long = "build-arg")]
    pub build_arg: Vec<String>,
    /// A .dockerignore to use instead of the context's
    #[arg(long)]
    pub ignorefile: Option<String>,
    /// Do not use cached layers
    #[arg(long)]
    pub no_cache: bool,
    /// Tag the image `deployment-<label>` instead of a generated one
    #[arg(long)]
    pub image_label: Option<String>,
}

/// Builds `dir` on the server and returns the pushed image.
pub async fn build(
    client: &Client,
    app: &str,
    dir: &Path,
    config: &AppConfig,
    args: &BuildArgs,
) -> Result<String> {
    let b = config.build.clone().unwrap_or_default();
    let dockerfile = b
        .dockerfile
        .clone()
        .or_else(|| args.dockerfile.clone())
        .unwrap_or_else(|| "Dockerfile".into());
    let dockerfile_path = dir.join(&dockerfile);
    if !dockerfile_path.is_file() {
        bail!(
            "no Dockerfile at {}: add one, set [build] dockerfile in fly.toml, or deploy a prebuilt image with --image",
            dockerfile_path.display()
        );
    }
    let ignore = b
        .ignorefile
        .clone()
        .or_else(|| args.ignorefile.clone())
        .map(|p| dir.join(p));
    let context = crate::build_context::pack(dir, ignore.as_deref())?;
    let mut query: Vec<(&str, String)> = vec![("dockerfile", dockerfile)];
    if let Some(t) = b.build_target.clone().or_else(|| args.build_target.clone()) {
        query.push(("target", t));
    }
    let mut build_args = b.args.clone();
    for a in &args.build_arg {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                build_args.insert(k.to_string(), v.to_string());
            }
            _ => bail!("invalid --build-arg {a:?}: use NAME=VALUE"),
        }
    }
    for (k, v) in build_args {
        query.push(("arg", format!("{k}={v}")));
    }
    if args.no_cache {
        query.push(("no_cache", "true".into()));
    }
    if let Some(l) = &args.image_label {
        query.push(("label", l.clone()));
    }
    println!(
        "==> Building image with the Dockerfile {} ({} KiB of context)",
        dir.join(&query[0].1).display(),
        context.len() / 1024
    );
    let image = client
        .build(app, context, &query, |e| {
            if e.kind == "log" {
                println!("  {}", e.message);
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("build failed: {e}"))?;
    println!("==> Built and pushed image {image}");
    Ok(image)
}
