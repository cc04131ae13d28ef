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

/// Makes the process's wall clock the simulation's (once per process; the
/// simulations of one test binary all read it), and numbers this thread's
/// request IDs from 0 (a run, and every host in it, runs on one thread).
pub fn use_virtual_wall_clock() {
    // Request IDs ride in headers, whose size their digits set: numbered per
    // run, a run's messages keep their sizes whatever runs came before it or
    // run alongside it in the process. (Runs in one process still differ a
    // little from the same seeds run alone; the likeliest cause, from Tokio's
    // source, is its task numbering, process-wide: a crashed host's runtime
    // drops its tasks shard by shard, sharded by those numbers. A replay,
    // `SIM_SEED` with one test, runs alone.)
    crustyring::request_id::RequestId::number_this_thread();
    crustyring::clock::set_wall_clock(|| {
        turmoil::since_epoch()
            .map_or_else(crustyring::clock::system_micros, |d| d.as_micros() as u64)
    });
}
