//! Batches: several queries in one request, each answered on its own (not
//! atomic across keys). The node the batch entered at groups the queries by
//! owner (its routing table) and sends each owner its group in one `Batch`
//! call; the owner runs every query of it through [`Node::execute`], so a
//! stale table costs a forward, never a wrong answer. A group whose call could
//! not be delivered (the owner unreachable) is run query by query instead, each
//! finding its own way; one that failed otherwise (it may have been applied)
//! fails for each of its queries.

use super::{Answer, Node, NodeError, Query, RouteTaken};
use crate::proto::dht;
use crate::ring::Member;
use crate::store::Version;
use futures_util::future::join_all;
use std::collections::HashMap;
use tonic::Status;

/// The most queries one batch may hold.
pub const MAX_BATCH: usize = 1000;

impl Node {
    /// Answers `queries`, each on its own, in order.
    pub async fn batch(&self, queries: Vec<Query>) -> Vec<Result<Answer, NodeError>> {
        if queries.len() > MAX_BATCH {
            let e = || NodeError::BadBatch(format!("a batch holds at most {MAX_BATCH} queries"));
            return queries.iter().map(|_| Err(e())).collect();
        }
        let me = self.me();
        let mut groups: HashMap<String, (Member, Vec<usize>)> = HashMap::new();
        {
            let table = self.routes();
            for (i, q) in queries.iter().enumerate() {
                let owner = table.owner(q.position).clone();
                groups
                    .entry(owner.addr.clone())
                    .or_insert((owner, Vec::new()))
                    .1
                    .push(i);
            }
        }
        let (queries, me) = (&queries, &me);
        let answered = join_all(groups.into_values().map(|(owner, indices)| async move {
            let answers = if owner == *me {
                join_all(indices.iter().map(|&i| self.execute(queries[i].clone()))).await
            } else {
                self.send_batch(&owner, queries, &indices).await
            };
            indices.into_iter().zip(answers).collect::<Vec<_>>()
        }))
        .await;
        let mut out: Vec<Option<Result<Answer, NodeError>>> =
            queries.iter().map(|_| None).collect();
        for (i, answer) in answered.into_iter().flatten() {
            out[i] = Some(answer);
        }
        out.into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    Err(NodeError::RingWalk("a batch query went unanswered".into()))
                })
            })
            .collect()
    }

    /// Sends the queries at `indices` to `owner` in one call; if the call
    /// fails as a whole, runs them one by one.
    async fn send_batch(
        &self,
        owner: &Member,
        queries: &[Query],
        indices: &[usize],
    ) -> Vec<Result<Answer, NodeError>> {
        self.metrics.batch_sent();
        let request = dht::BatchRequest {
            queries: indices.iter().map(|&i| queries[i].to_forward()).collect(),
        };
        let reply = self
            .peers
            .call(owner, |mut c| async move { c.batch(request).await })
            .await;
        let failed = |e: &NodeError| -> Vec<Result<Answer, NodeError>> {
            let status = || Status::new(e.code(), e.to_string());
            indices
                .iter()
                .map(|_| Err(NodeError::Peer(status())))
                .collect()
        };
        match reply {
            Ok(reply) if reply.answers.len() == indices.len() => reply
                .answers
                .into_iter()
                .zip(indices)
                .map(|(a, &i)| answer_from_wire(a, &queries[i]))
                .collect(),
            Ok(reply) => failed(&NodeError::RingWalk(format!(
                "{} answered {} of {} batch queries",
                owner.addr,
                reply.answers.len(),
                indices.len()
            ))),
            // Never delivered: each query finds its own way.
            Err(NodeError::Unreachable { .. }) => {
                join_all(indices.iter().map(|&i| self.execute(queries[i].clone()))).await
            }
            // It may have been applied: not sent again (as a single query
            // that timed out is not).
            Err(e) => failed(&e),
        }
    }

    /// A peer's `Batch`: every query answered through [`Node::execute`].
    pub(super) async fn accept_batch(
        &self,
        request: dht::BatchRequest,
    ) -> Result<dht::BatchReply, Status> {
        if request.queries.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "a batch holds at most {MAX_BATCH} queries; this one holds {}",
                request.queries.len()
            )));
        }
        let limits = self.config.limits;
        let answers = join_all(request.queries.into_iter().map(|q| async move {
            match Query::from_forward(q, &limits) {
                Ok(query) => self.execute(query).await,
                Err(e) => Err(e),
            }
        }))
        .await;
        Ok(dht::BatchReply {
            answers: answers.into_iter().map(answer_to_wire).collect(),
        })
    }
}

/// One answer of a `Batch` reply.
fn answer_to_wire(answer: Result<Answer, NodeError>) -> dht::BatchAnswer {
    match answer {
        Ok(a) => dht::BatchAnswer {
            result: Some((&a).into()),
            hops: a.route.hops,
            owner: a.route.owner.as_ref().map(Into::into),
            ..dht::BatchAnswer::default()
        },
        Err(e) => dht::BatchAnswer {
            code: e.code() as i32,
            current_version: match &e {
                NodeError::PreconditionFailed { current } => {
                    Some(current.map_or_else(|| "-".to_string(), |v| v.token()))
                }
                _ => None,
            },
            message: e.to_string(),
            ..dht::BatchAnswer::default()
        },
    }
}

/// The answer one `Batch` answer gives for `query`.
fn answer_from_wire(a: dht::BatchAnswer, query: &Query) -> Result<Answer, NodeError> {
    match tonic::Code::from_i32(a.code) {
        tonic::Code::Ok => {
            let route = RouteTaken {
                hops: a.hops,
                owner: a.owner.map(Member::from),
            };
            Ok(Answer::from_result(
                a.result.unwrap_or_default(),
                &query.op,
                route,
            ))
        }
        tonic::Code::FailedPrecondition if a.current_version.is_some() => {
            Err(NodeError::PreconditionFailed {
                current: a.current_version.as_deref().and_then(Version::from_token),
            })
        }
        code => Err(NodeError::Peer(Status::new(code, a.message))),
    }
}
