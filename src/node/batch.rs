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
use crate::routing::RoutingTable;
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
        let groups = by_owner(&self.routes(), &queries);
        let (queries, me) = (&queries, &me);
        let answered = join_all(groups.into_iter().map(|(owner, indices)| async move {
            let answers = if owner == *me {
                join_all(indices.iter().map(|&i| self.execute(queries[i].clone()))).await
            } else {
                self.send_batch(&owner, queries, &indices).await
            };
            indices.into_iter().zip(answers).collect::<Vec<_>>()
        }))
        .await;
        // Every query is in exactly one group, answered once: back in order.
        let mut answered: Vec<(usize, Result<Answer, NodeError>)> =
            answered.into_iter().flatten().collect();
        answered.sort_by_key(|(i, _)| *i);
        answered.into_iter().map(|(_, answer)| answer).collect()
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
            Ok(reply) => failed(&NodeError::Peer(Status::internal(format!(
                "{} answered {} of {} batch queries",
                owner.addr,
                reply.answers.len(),
                indices.len()
            )))),
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

/// The queries (by index) each owner owns, as `table` says, in the order
/// owners first appear.
fn by_owner(table: &RoutingTable, queries: &[Query]) -> Vec<(Member, Vec<usize>)> {
    let mut groups: Vec<(Member, Vec<usize>)> = Vec::new();
    let mut of: HashMap<String, usize> = HashMap::new();
    for (i, q) in queries.iter().enumerate() {
        let owner = table.owner(q.position);
        let g = *of.entry(owner.addr.clone()).or_insert_with(|| {
            groups.push((owner.clone(), Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    groups
}

/// One answer of a `Batch` reply.
pub(super) fn answer_to_wire(answer: Result<Answer, NodeError>) -> dht::BatchAnswer {
    match answer {
        Ok(a) => dht::BatchAnswer {
            hops: a.route.hops,
            owner: a.route.owner.as_ref().map(Into::into),
            result: Some(a.into()),
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
pub(super) fn answer_from_wire(a: dht::BatchAnswer, query: &Query) -> Result<Answer, NodeError> {
    result_from_wire(a).map(|(result, route)| Answer::from_result(result, &query.op, route))
}

/// The result and route one `Batch` (or `ForwardBatch`) answer gives, or its
/// query's failure, as a single query's call would have failed.
pub(super) fn result_from_wire(
    a: dht::BatchAnswer,
) -> Result<(dht::QueryResult, RouteTaken), NodeError> {
    match tonic::Code::from_i32(a.code) {
        tonic::Code::Ok => {
            let route = RouteTaken {
                hops: a.hops,
                owner: a.owner.map(Member::from),
            };
            Ok((a.result.unwrap_or_default(), route))
        }
        tonic::Code::FailedPrecondition if a.current_version.is_some() => {
            Err(NodeError::PreconditionFailed {
                current: a.current_version.as_deref().and_then(Version::from_token),
            })
        }
        code => Err(NodeError::Peer(Status::new(code, a.message))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Limits, Operation};
    use crate::ring::Position;

    #[test]
    fn each_query_goes_to_exactly_one_owner_group() {
        let mut table = RoutingTable::new(Member::new(Position(0), "http://a"));
        table.insert(Member::new(Position(u64::MAX / 2), "http://b"));
        let queries: Vec<Query> = (0..40)
            .map(|i| {
                Query::new(
                    Operation::Get,
                    format!("k{i}").into_bytes(),
                    &Limits::default(),
                )
                .unwrap()
            })
            .collect();
        let groups = by_owner(&table, &queries);
        let mut all: Vec<usize> = groups.iter().flat_map(|(_, ix)| ix.clone()).collect();
        all.sort();
        assert_eq!(all, (0..40).collect::<Vec<_>>());
        assert_eq!(groups.len(), 2, "40 hashed keys fall on both halves");
        for (owner, ix) in &groups {
            assert!(
                ix.iter()
                    .all(|&i| table.owner(queries[i].position) == owner)
            );
        }
    }
}
