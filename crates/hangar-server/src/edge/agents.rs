//! What the proxies of agents in processes of their own have applied: each agent's
//! wait on the change feed says the revision (and the ACME board's version) its proxy
//! serves from, and edge writes wait for every agent heard from lately to reach their
//! commit, so a hostname added or an address released through the API is served (or
//! gone) on every host when the call returns, and a CA is told to validate only once
//! every proxy it may reach holds the answer. An agent that has gone quiet is not
//! waited for; it reloads the edge when it comes back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How long after its last word an agent still counts as serving.
const FRESH: Duration = Duration::from_secs(30);
/// How long a writer waits for the agents before it goes on (and says so).
const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
struct Applied {
    revision: i64,
    challenges: u64,
    heard: Instant,
}

/// Every agent's applied view, by the address it registered.
#[derive(Default)]
pub struct AgentViews {
    views: watch::Sender<BTreeMap<String, Applied>>,
}

impl AgentViews {
    /// Counts a registered agent as serving: until its proxy says what it has applied,
    /// writes wait for it (up to the usual bound) rather than go by it unseen.
    pub fn registered(&self, agent: &str) {
        let now = Instant::now();
        self.views.send_modify(|v| {
            v.entry(agent.to_string())
                .and_modify(|a| a.heard = now)
                .or_insert(Applied {
                    revision: -1,
                    challenges: 0,
                    heard: now,
                });
        });
    }

    /// Records what `agent`'s proxy serves from now.
    pub fn applied(&self, agent: &str, revision: i64, challenges: u64) {
        let now = Instant::now();
        self.views.send_modify(|v| {
            v.insert(
                agent.to_string(),
                Applied {
                    revision,
                    challenges,
                    heard: now,
                },
            );
        });
    }

    /// Waits until every agent heard from lately serves at least feed `revision`.
    pub async fn reach_revision(&self, revision: i64) {
        self.wait("revision", revision, |a| a.revision >= revision)
            .await
    }

    /// Waits until every agent heard from lately holds the ACME answers of board
    /// version `version`.
    pub async fn reach_challenges(&self, version: u64) {
        self.wait("ACME answers", version as i64, |a| a.challenges >= version)
            .await
    }

    async fn wait(&self, what: &str, at: i64, reached: impl Fn(&Applied) -> bool) {
        let mut rx = self.views.subscribe();
        let done = |views: &BTreeMap<String, Applied>| {
            views
                .values()
                .all(|a| a.heard.elapsed() > FRESH || reached(a))
        };
        if tokio::time::timeout(WAIT, rx.wait_for(done)).await.is_err() {
            let behind: Vec<String> = self
                .views
                .borrow()
                .iter()
                .filter(|(_, a)| a.heard.elapsed() <= FRESH && !reached(a))
                .map(|(agent, _)| agent.clone())
                .collect();
            tracing::warn!(%what, at, agents = ?behind, "agents' proxies have not caught up yet");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn no_agents_means_no_wait() {
        let views = AgentViews::default();
        tokio::time::timeout(Duration::from_millis(100), views.reach_revision(7))
            .await
            .expect("nothing to wait for");
    }

    #[tokio::test]
    async fn a_wait_ends_when_the_agent_applies_the_revision() {
        let views = Arc::new(AgentViews::default());
        views.applied("http://a", 3, 0);
        let waiter = tokio::spawn({
            let views = views.clone();
            async move { views.reach_revision(5).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the agent is still at revision 3");
        views.applied("http://a", 5, 0);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("the wait ends once the agent is at 5")
            .unwrap();
    }

    #[tokio::test]
    async fn a_registered_agent_is_waited_for_before_it_says_anything() {
        let views = Arc::new(AgentViews::default());
        views.registered("http://a");
        let waiter = tokio::spawn({
            let views = views.clone();
            async move { views.reach_revision(1).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the agent has applied nothing yet");
        views.applied("http://a", 1, 0);
        views.registered("http://a");
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("the wait ends once the agent is at 1")
            .unwrap();
    }

    #[tokio::test]
    async fn challenges_are_waited_for_on_their_own() {
        let views = AgentViews::default();
        views.applied("http://a", 9, 2);
        tokio::time::timeout(Duration::from_millis(100), views.reach_challenges(2))
            .await
            .expect("version 2 is held");
        tokio::time::timeout(Duration::from_millis(100), views.reach_revision(9))
            .await
            .expect("revision 9 is held");
    }
}
