//! Batches: several queries in one request, each answered on its own (not
//! atomic across keys). The node the batch entered at groups the queries by
//! owner (its routing table) and sends each owner its group in one `Batch`
//! call; the owner runs every query of it through [`Node::execute`], so a
//! stale table costs a forward, never a wrong answer. A group whose call could
//! not be delivered (the owner unreachable) is run query by query instead, each
//! finding its own way; one that failed otherwise (it may have been applied)
//! fails for each of its queries. The requests and answers in wire form, and
//! a peer's `Batch` served, are `rpc::queries`'.

use super::rpc::queries::{answer_from_wire, batch_request};
use super::{Answer, Node, NodeError, Query};
use crate::ring::Member;
use crate::routing::RoutingTable;
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
        let request = batch_request(indices.iter().map(|&i| &queries[i]));
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
