//! The shipped code on turmoil's simulated network: a [`Listener`] over a
//! turmoil listener, a [`Dial`] that opens turmoil streams, and the wall clock
//! read from the simulation's virtual time.

use crustyring::transport::{Dial, Dialling, Listener, Network};
use std::io;

/// A turmoil listener as the server's [`Listener`].
pub struct SimListener(turmoil::net::TcpListener);

impl SimListener {
    /// Listens on `port` of the current host.
    pub async fn bind(port: u16) -> io::Result<Self> {
        turmoil::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port))
            .await
            .map(Self)
    }
}

impl Listener for SimListener {
    type Io = turmoil::net::TcpStream;

    async fn accept(&self) -> io::Result<Self::Io> {
        self.0.accept().await.map(|(stream, _)| stream)
    }

    fn port(&self) -> io::Result<u16> {
        Ok(self.0.local_addr()?.port())
    }
}

/// Dials turmoil hosts by name.
struct SimDial;

impl Dial for SimDial {
    fn dial(&self, host: &str, port: u16) -> Dialling {
        let addr = format!("{host}:{port}");
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr).await?;
            Ok(Box::new(stream) as Box<dyn crustyring::transport::Stream>)
        })
    }
}

/// The simulated network, for nodes' [`crustyring::node::NodeConfig::network`]
/// and the simulation's clients.
pub fn network() -> Network {
    Network::dialled_by(SimDial)
}

/// Readies this thread for a run: the process's wall clock becomes the
/// simulation's (once per process; the simulations of one test binary all
/// read it), this thread's request IDs are numbered from 0, and Tokio's task
/// numbers are aligned (a run, and every host in it, runs on one thread).
///
/// Both numberings are process-wide state that would otherwise make a run
/// depend on the runs before it: request IDs ride in headers, whose size
/// their digits set; and a current-thread runtime keeps its tasks in 4 lists
/// by task number, so a run depends on its first task's number modulo 4
/// (spawning one task before a run changed seed 3's history; four did not;
/// the likeliest way is a crashed host's runtime dropping its tasks list by
/// list). With both set, each seed of a
/// `SIM_SEEDS` batch runs as `SIM_SEED` replays it alone. Tests running side
/// by side in one binary still interleave task numbers: a replay runs one
/// test.
pub fn prepare_run() {
    crustyring::request_id::RequestId::number_this_thread();
    align_task_numbers();
    crustyring::clock::set_wall_clock(|| {
        turmoil::since_epoch()
            .map_or_else(crustyring::clock::system_micros, |d| d.as_micros() as u64)
    });
}

/// Spawns empty tasks until Tokio's next task number is a multiple of 64 (of
/// any shard count Tokio uses up to 64).
fn align_task_numbers() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime for aligning task numbers");
    runtime.block_on(async {
        loop {
            let number: u64 = tokio::spawn(async {})
                .id()
                .to_string()
                .parse()
                .expect("a task ID is a number");
            if number % 64 == 63 {
                break;
            }
        }
    });
}
