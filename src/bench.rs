//! The load tool: keeps N `QueryDht` requests in flight against a ring for a
//! while and reports throughput, latency percentiles, errors, and how many times
//! the ring forwarded each request.
//!
//! By default each worker routes itself ([`RingClient`]): it learns the ring and
//! sends every request to its key's owner. With `route` off (or against a ring
//! that does not describe itself, like the original study project's) workers
//! send to the given nodes in turn, and the ring routes.
//!
//! How the workers hold their connections is part of what is measured
//! ([`Connections`]): one per worker and node models that many separate client
//! processes, each with one request out at a time; one per node, shared by every
//! worker, models one application holding a gRPC channel per node (as gRPC
//! advises), whose requests in flight share each connection's reads and writes.
//! The first costs client and nodes a system call and a wake-up per request per
//! side; on a small machine that, not the ring, is most of the work.

use crate::client::{ClientError, RingClient};
use crate::proto::dht::OperationType;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    /// The nodes to send to (any nodes of one ring).
    pub nodes: Vec<String>,
    /// Whether workers learn the ring and send each request to its owner.
    pub route: bool,
    /// The operation: `Set` writes, `Get` reads (after a `Set` warm-up of the keys).
    pub op: OperationType,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// How long to run.
    pub duration: Duration,
    /// How many distinct keys to spread the requests over.
    pub keys: usize,
    /// Value size in bytes for `Set`.
    pub value_bytes: usize,
    /// Sent with every request (the client token, if the ring requires one).
    pub credentials: crate::security::Credentials,
    /// How the workers hold their connections.
    pub connections: Connections,
}

/// How a run's workers hold their connections to the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    /// Each worker opens its own connection to each node it sends to: as many
    /// separate clients, each with one request in flight.
    PerWorker,
    /// One connection per node, opened before the run and shared by every
    /// worker (HTTP/2 carries their requests side by side). This project's
    /// nodes take 200 requests at once per connection: beyond that, requests
    /// wait in the client, and their latency counts the wait. A connection a worker
    /// opens during the run (to a node that failed and came back, or joined)
    /// is its own.
    PerNode,
}

impl std::fmt::Display for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::PerWorker => "a connection per request in flight and node",
            Self::PerNode => "a connection per node, shared",
        })
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Requests that succeeded.
    pub ok: u64,
    /// Requests that failed (transport or status errors).
    pub errors: u64,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// The slowest successful request.
    pub max: Duration,
    /// Mean forwards per successful request, as the nodes reported them
    /// (`None`: the nodes do not report routes).
    pub forwards: Option<f64>,
    /// Members the workers routed by (0: they sent to the given nodes).
    pub members: usize,
}

impl BenchReport {
    /// Successful operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} ops/s, p50 {:.3} ms, p99 {:.3} ms, max {:.1} ms, {} ok, {} errors in {:.1} s, forwards/request {}",
            self.ops_per_sec(),
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3,
            self.ok,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.forwards
                .map_or("not reported".to_string(), |f| format!("{f:.3}"))
        )
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("bench-{i}").into_bytes()
}

/// Runs the plan.
pub async fn run(plan: &BenchPlan) -> Result<BenchReport, ClientError> {
    let keys = plan.keys.max(1);
    let value = vec![b'x'; plan.value_bytes];
    let concurrency = plan.concurrency.max(1);
    // The ring is learned once; every worker then gets a client of its own,
    // with connections of its own or the shared ones.
    let mut learned =
        RingClient::new_with(plan.nodes.clone(), plan.route, plan.credentials.clone()).await;
    if plan.connections == Connections::PerNode {
        learned.connect_all().await;
    }
    let worker = |learned: &RingClient| match plan.connections {
        Connections::PerWorker => learned.fresh(),
        Connections::PerNode => learned.clone(),
    };
    if plan.op == OperationType::Get {
        // Write every key first, spread over the same number of connections.
        let mut writers = Vec::new();
        for w in 0..concurrency.min(keys) {
            let mut c = worker(&learned);
            let value = value.clone();
            writers.push(tokio::spawn(async move {
                for i in (w..keys).step_by(concurrency) {
                    c.query(OperationType::Set, &key(i), Some(&value)).await?;
                }
                Ok::<_, ClientError>(())
            }));
        }
        for w in writers {
            if let Ok(result) = w.await {
                result?;
            }
        }
    }
    // Every worker's client (the ring learned; with a connection per worker,
    // its connections still to make) exists before the clock starts, so that
    // all of them run for the whole measured window; with a connection per
    // worker, each worker's first requests include connecting.
    let clients: Vec<RingClient> = (0..concurrency).map(|_| worker(&learned)).collect();
    let members = learned.members();
    let start = Instant::now();
    let stop_at = start + plan.duration;
    let mut workers = Vec::new();
    for (w, mut c) in clients.into_iter().enumerate() {
        let (op, value) = (plan.op, value.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut i = w;
            while Instant::now() < stop_at {
                let v = (op == OperationType::Set).then_some(value.as_slice());
                let t = Instant::now();
                match c.query(op, &key(i % keys), v).await {
                    Ok((_, hops)) => {
                        tally.latencies.push(t.elapsed());
                        if let Some(h) = hops {
                            tally.reported += 1;
                            tally.forwards += u64::from(h);
                        }
                    }
                    Err(_) => tally.errors += 1,
                }
                i += 7919;
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for w in workers {
        if let Ok(t) = w.await {
            all.latencies.extend(t.latencies);
            all.errors += t.errors;
            all.reported += t.reported;
            all.forwards += t.forwards;
        }
    }
    let Tally {
        mut latencies,
        errors,
        reported,
        forwards,
    } = all;
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(BenchReport {
        ok: latencies.len() as u64,
        errors,
        elapsed,
        p50: pick(0.50),
        p99: pick(0.99),
        max: latencies.last().copied().unwrap_or_default(),
        forwards: (reported > 0).then(|| forwards as f64 / reported as f64),
        members,
    })
}

/// What one worker counted.
#[derive(Debug, Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: u64,
    /// Successful requests whose route was reported, and their forwards.
    reported: u64,
    forwards: u64,
}
