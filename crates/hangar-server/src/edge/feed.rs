//! The proxy's tables follow the change feed: a task reads every entry about apps,
//! addresses and certificates after its cursor and brings the address map and the
//! hostname table in line with the rows they name, whichever control plane (or
//! process) committed them; when it fell behind what the feed keeps, it reloads them
//! whole. Writers on this edge wait for it to pass their commit ([`Edge::caught_up`]),
//! and for agents' proxies to say they have (`agents.rs`), so a hostname added through
//! the API is served when the call returns.
//!
//! Machines in the feed are not the edge's: the proxy routes to the live instances the
//! host's agent publishes.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hangar_store::{FeedEntry, FeedKind, FeedRead};

use super::{Edge, EdgeError};

/// How long a writer waits for the follower before it goes on (and says so).
const CATCH_UP: Duration = Duration::from_secs(5);

impl Edge {
    /// Loads the address map and the hostname table whole, then follows the feed from
    /// the revision taken before the load, so nothing committed meanwhile is missed.
    pub(super) async fn load_and_follow(self: &Arc<Self>) -> Result<(), EdgeError> {
        let head = self.store.call(|db| db.feed_head()).await?;
        self.publish_addresses().await?;
        self.load_certificates().await?;
        self.applied.send_replace(head);
        let follower = self.store.follow(head);
        tokio::spawn(follow(Arc::downgrade(self), follower));
        Ok(())
    }

    /// Waits until the proxy's tables, and those of agents heard from lately, reflect
    /// every commit so far.
    pub(super) async fn caught_up(&self) -> Result<(), EdgeError> {
        let head = self.store.call(|db| db.feed_head()).await?;
        let mut applied = self.applied.subscribe();
        if tokio::time::timeout(CATCH_UP, applied.wait_for(|r| *r >= head))
            .await
            .is_err()
        {
            tracing::warn!(
                revision = head,
                "the proxy's tables have not caught up with the change feed yet"
            );
        }
        self.agents.reach_revision(head).await;
        Ok(())
    }

    /// Brings the tables in line with what `entries` name.
    async fn apply_entries(&self, entries: &[FeedEntry]) -> Result<(), EdgeError> {
        let mut addresses = false;
        let mut hostnames = BTreeSet::new();
        for e in entries {
            match e.kind {
                FeedKind::Ip => addresses = true,
                FeedKind::Certificate => {
                    hostnames.insert(e.subject.clone());
                }
                FeedKind::App => {
                    // A deleted app's rows went by cascade, without entries of their own.
                    let app = e.app_name.clone();
                    if self.store.call(move |db| db.app(&app)).await?.is_none() {
                        self.certs.remove_app(&e.app_name);
                        addresses = true;
                    }
                }
                FeedKind::Machine => {}
            }
        }
        if addresses {
            self.publish_addresses().await?;
        }
        for h in hostnames {
            let hh = h.clone();
            match self.store.call(move |db| db.certificate(&hh)).await? {
                Some(row) => self.publish(&row),
                None => self.certs.remove_host(&h),
            }
        }
        Ok(())
    }

    /// Replaces both tables with what the store holds now.
    async fn reload(&self) -> Result<(), EdgeError> {
        self.publish_addresses().await?;
        let all = self.store.call(|db| db.all_certificates()).await?;
        let known: BTreeSet<String> = all.iter().map(|r| r.hostname.clone()).collect();
        self.certs.retain_hosts(|h| known.contains(h));
        for r in &all {
            self.publish(r);
        }
        Ok(())
    }
}

/// Follows the feed for as long as the edge exists.
async fn follow(edge: Weak<Edge>, mut follower: hangar_store::Follower) {
    // Set when entries were read but not applied: only a reload makes up for them.
    let mut failing = false;
    loop {
        let read = follower.next().await;
        let Some(edge) = edge.upgrade() else { return };
        let applied = match read {
            Err(e) => Err(e.into()),
            Ok(_) if failing => edge.reload().await,
            Ok(FeedRead::Entries(entries)) => edge.apply_entries(&entries).await,
            Ok(FeedRead::Reload { head }) => {
                tracing::info!(
                    revision = head,
                    "the proxy's tables fell behind the change feed; reloading them"
                );
                edge.reload().await
            }
        };
        match applied {
            Ok(()) => {
                failing = false;
                edge.applied.send_replace(follower.cursor());
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot follow the change feed; the proxy serves from what it knows");
                }
                failing = true;
                drop(edge);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
