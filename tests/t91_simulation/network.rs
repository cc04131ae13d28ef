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
/// simulations of one test binary all read it).
pub fn use_virtual_wall_clock() {
    // Request IDs ride in headers, whose size their digits set: a fixed start
    // keeps a replay's messages the same size.
    crustyring::request_id::RequestId::start_from(0);
    crustyring::clock::set_wall_clock(|| {
        turmoil::since_epoch()
            .map_or_else(crustyring::clock::system_micros, |d| d.as_micros() as u64)
    });
}
