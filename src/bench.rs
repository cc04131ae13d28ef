//! The load tool: keeps N `QueryDht` requests in flight against one node for a
//! while and reports throughput, latency percentiles and errors.

use crate::client::{self, ClientError};
use crate::proto::dht::OperationType;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    /// The node to load.
    pub node: String,
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
            "{:.0} ops/s, p50 {:.3} ms, p99 {:.3} ms, {} ok, {} errors in {:.1} s",
            self.ops_per_sec(),
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.ok,
            self.errors,
            self.elapsed.as_secs_f64()
        )
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("bench-{i}").into_bytes()
}

/// Runs the plan. Each worker holds its own connection, so requests really are in
/// flight at once rather than queued behind one HTTP/2 stream limit.
pub async fn run(plan: &BenchPlan) -> Result<BenchReport, ClientError> {
    let keys = plan.keys.max(1);
    let value = vec![b'x'; plan.value_bytes];
    let concurrency = plan.concurrency.max(1);
    if plan.op == OperationType::Get {
        // Write every key first, spread over the same number of connections.
        let mut writers = Vec::new();
        for w in 0..concurrency.min(keys) {
            let mut c = client::connect(&plan.node).await?;
            let value = value.clone();
            writers.push(tokio::spawn(async move {
                for i in (w..keys).step_by(concurrency) {
                    client::query(&mut c, OperationType::Set, &key(i), Some(&value)).await?;
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
    let start = Instant::now();
    let stop_at = start + plan.duration;
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let mut c = client::connect(&plan.node).await?;
        let (op, value) = (plan.op, value.clone());
        workers.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            let mut i = w;
            while Instant::now() < stop_at {
                let v = (op == OperationType::Set).then_some(value.as_slice());
                let t = Instant::now();
                match client::query(&mut c, op, &key(i % keys), v).await {
                    Ok(_) => latencies.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
                i += 7919;
            }
            (latencies, errors)
        }));
    }
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for w in workers {
        if let Ok((l, e)) = w.await {
            latencies.extend(l);
            errors += e;
        }
    }
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
    })
}
