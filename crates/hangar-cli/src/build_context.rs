//! The build context the CLI sends to the server: the app's directory as a gzipped tar,
//! without what `.dockerignore` excludes (Docker's rules: paths relative to the context,
//! `*`, `?`, `**`, `!` to re-include, the last matching line wins, an excluded directory
//! excludes everything in it).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use globset::GlobMatcher;

/// One `.dockerignore` line.
struct Rule {
    matcher: GlobMatcher,
    include: bool,
}

/// What `.dockerignore` says.
pub struct Ignore {
    rules: Vec<Rule>,
}

impl Ignore {
    pub fn parse(text: &str) -> Result<Ignore> {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (include, pattern) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let pattern = pattern.trim_start_matches("./").trim_start_matches('/');
            let pattern = pattern.trim_end_matches('/');
            if pattern.is_empty() {
                continue;
            }
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .with_context(|| format!(".dockerignore: invalid pattern {line:?}"))?;
            rules.push(Rule {
                matcher: glob.compile_matcher(),
                include,
            });
        }
        Ok(Ignore { rules })
    }

    /// Whether `rel` (a path relative to the context, `/`-separated) is left out.
    pub fn excludes(&self, rel: &str) -> bool {
        let mut excluded = false;
        for rule in &self.rules {
            // A pattern naming a directory covers what is inside it.
            let mut hit = rule.matcher.is_match(rel);
            let mut parent = Path::new(rel).parent();
            while !hit {
                match parent {
                    Some(p) if !p.as_os_str().is_empty() => {
                        hit = rule.matcher.is_match(p);
                        parent = p.parent();
                    }
                    _ => break,
                }
            }
            if hit {
                excluded = !rule.include;
            }
        }
        excluded
    }
}

/// The context directory as tar.gz bytes; `ignore_file` defaults to `.dockerignore`.
pub fn pack(dir: &Path, ignore_file: Option<&Path>) -> Result<Vec<u8>> {
    let ignore_path = ignore_file
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join(".dockerignore"));
    let ignore = match std::fs::read_to_string(&ignore_path) {
        Ok(text) => Ignore::parse(&text)?,
        Err(_) => Ignore { rules: Vec::new() },
    };
    let gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let abs = dir.join(&rel_dir);
        let mut entries: Vec<_> = std::fs::read_dir(&abs)
            .with_context(|| format!("read {}", abs.display()))?
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let rel = rel_dir.join(entry.file_name());
            let rel_str = rel.to_string_lossy().replace('\\', "/");
            // The Dockerfile and .dockerignore always go, as Docker sends them.
            let always = rel_str == "Dockerfile" || rel_str == ".dockerignore";
            if !always && ignore.excludes(&rel_str) {
                continue;
            }
            let ft = entry.file_type()?;
            if ft.is_dir() {
                tar.append_dir(&rel, entry.path())
                    .with_context(|| format!("add {rel_str} to the build context"))?;
                stack.push(rel);
            } else {
                tar.append_path_with_name(entry.path(), &rel)
                    .with_context(|| format!("add {rel_str} to the build context"))?;
            }
        }
    }
    let gz = tar.into_inner().context("finish the build context")?;
    gz.finish().context("compress the build context")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules() {
        let i = Ignore::parse("# comment\nnode_modules\n*.log\n!keep.log\n**/secret.txt\ntmp/\n")
            .expect("parses");
        assert!(i.excludes("node_modules"));
        assert!(i.excludes("node_modules/a/b.js"));
        assert!(i.excludes("debug.log"));
        assert!(!i.excludes("keep.log"));
        assert!(!i.excludes("sub/debug.log"), "* does not cross directories");
        assert!(i.excludes("a/b/secret.txt"));
        assert!(i.excludes("tmp/x"));
        assert!(!i.excludes("src/main.rs"));
    }
}
