//! Process groups: which groups a config defines, which is the default, and the view of
//! the config one group sees (flytoml-and-deploys.md §4).
//!
//! Items without `processes` belong to the default group only — except `[[vm]]`, which
//! applies to every group, and `[env]`/`[[statics]]`, which are never scoped.

use crate::model::{AppConfig, Compute};

impl AppConfig {
    /// The groups, sorted; `["app"]` when `[processes]` is absent or empty.
    pub fn groups(&self) -> Vec<String> {
        if self.processes.is_empty() {
            vec!["app".to_string()]
        } else {
            self.processes.keys().cloned().collect()
        }
    }

    /// `app` when defined, else the alphabetically first group.
    pub fn default_group(&self) -> String {
        let groups = self.groups();
        if groups.iter().any(|g| g == "app") {
            "app".into()
        } else {
            groups.into_iter().next().unwrap_or_else(|| "app".into())
        }
    }

    /// Whether an item scoped to `processes` applies to `group`.
    pub fn applies(&self, processes: &[String], group: &str) -> bool {
        if processes.is_empty() {
            group == self.default_group()
        } else {
            processes.iter().any(|p| p == group)
        }
    }

    /// The config as `group` sees it.
    pub fn for_group(&self, group: &str) -> AppConfig {
        let mut c = self.clone();
        c.processes.retain(|g, _| g == group);
        c.checks.retain(|_, ch| self.applies(&ch.processes, group));
        if let Some(h) = &c.http_service {
            if !self.applies(&h.processes, group) {
                c.http_service = None;
            }
        }
        c.services.retain(|s| self.applies(&s.processes, group));
        c.mounts.retain(|m| self.applies(&m.processes, group));
        c.files.retain(|f| self.applies(&f.processes, group));
        c.metrics.retain(|m| self.applies(&m.processes, group));
        c.restart.retain(|r| self.applies(&r.processes, group));
        c.vm = self.compute_for(group).into_iter().cloned().collect();
        c
    }

    /// The one `[[vm]]` section for `group`: one naming it, else one naming no group.
    pub fn compute_for(&self, group: &str) -> Option<&Compute> {
        self.vm
            .iter()
            .find(|c| c.processes.iter().any(|p| p == group))
            .or_else(|| self.vm.iter().find(|c| c.processes.is_empty()))
    }

    /// Whether the group takes traffic (has `[http_service]` or `[[services]]`).
    pub fn group_has_services(&self, group: &str) -> bool {
        let g = self.for_group(group);
        g.http_service.is_some() || !g.services.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use crate::{parse, Format};

    fn cfg(text: &str) -> crate::AppConfig {
        parse(text, Format::Toml).expect("parses").config
    }

    #[test]
    fn default_group_is_app_or_first() {
        assert_eq!(cfg("app='x'").default_group(), "app");
        let c = cfg("[processes]\nzzz='a'\nbar='b'\nfoo='c'");
        assert_eq!(c.default_group(), "bar");
        let c = cfg("[processes]\nzzz='a'\napp='b'");
        assert_eq!(c.default_group(), "app");
    }

    #[test]
    fn unscoped_items_go_to_the_default_group_except_vm() {
        let c = cfg(r#"
[processes]
app = "run"
back = "back"
hola = "hola"
[[mounts]]
source = "data"
destination = "/data"
[[mounts]]
source = "trash"
destination = "/trash"
processes = ["back"]
[[vm]]
size = "shared-cpu-2x"
"#);
        assert_eq!(c.for_group("app").mounts[0].source, "data");
        assert_eq!(c.for_group("back").mounts[0].source, "trash");
        assert!(c.for_group("hola").mounts.is_empty());
        assert_eq!(c.for_group("hola").vm.len(), 1);
    }
}
