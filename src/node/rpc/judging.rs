//! The registry's side of the leases in wire form, for the protocol code
//! that asks: a heartbeat (saying how many verdicts on this node it heard,
//! answered with a root lease or the verdicts, `crate::registry::Verdicts`)
//! and a question whether the nodes of a taken arc are dead (`JudgeDead`).
//! The decisions are the leases' (`crate::lease`); here only the messages.

use super::wire::{self, RootAnswer};
use crate::node::Node;
use crate::proto::registry as pb;
use crate::registry::Verdict;
use crate::ring::{Arc, Position};
use std::time::Duration;

/// What the registry answered, as the leases need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::node) enum Asked<T> {
    /// Its answer.
    Answered(T),
    /// It does not know the call, or answered without the metadata: a
    /// registry of an earlier version, which judges no deaths.
    NotJudging,
    /// No answer (or no registry): why.
    Failed(String),
}

impl Node {
    /// Heartbeats, saying this node heard of `seen` verdicts on itself: what
    /// the answer says of its root lease.
    pub(in crate::node) async fn heartbeat_call(&self, seen: u64) -> Asked<RootAnswer> {
        let request = wire::heartbeat(&self.me(), seen);
        let answer = self
            .ask_registry(
                |mut r| async move { r.heartbeat(request).await.map(tonic::Response::new) },
            )
            .await;
        match answer {
            Some(Ok(response)) => match wire::root_answer(response.metadata()) {
                Some(root) => Asked::Answered(root),
                None => Asked::NotJudging,
            },
            Some(Err(e)) => Asked::Failed(e.to_string()),
            None => Asked::Failed("no registry".into()),
        }
    }

    /// Whether the nodes in `arc` (from the node this one, `asker`,
    /// declared dead, to its new `next`) are dead (`JudgeDead`). A wait
    /// that does not fit a `Duration` is the longest one.
    pub(in crate::node) async fn judge_call(&self, arc: Arc, asker: Position) -> Asked<Verdict> {
        let question = pb::DeathQuestion {
            from: arc.start.0,
            to: arc.end.0,
            asker: Some(asker.0),
        };
        let answer = self
            .ask_registry(|mut r| async move { r.judge_dead(question).await })
            .await;
        match answer {
            Some(Ok(verdict)) if verdict.dead => Asked::Answered(Verdict::Dead {
                others: verdict.others,
            }),
            Some(Ok(verdict)) => Asked::Answered(Verdict::NotBefore(Duration::from_millis(
                verdict.retry_after_ms,
            ))),
            Some(Err(e)) if e.code() == tonic::Code::Unimplemented => Asked::NotJudging,
            Some(Err(e)) => Asked::Failed(e.to_string()),
            None => Asked::Failed("no registry".into()),
        }
    }
}
