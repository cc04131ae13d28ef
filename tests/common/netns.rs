//! Hosts made of Linux network namespaces: one "switch" namespace holding a
//! bridge, and per host a namespace joined to it by a veth pair, with an address
//! of its own in a private /24 and `lo` up. Nothing is created in the test's own
//! namespace (each veth pair is made inside the switch namespace), and every name
//! includes this process's ID, so parallel runs do not clash. Dropping the
//! [`Network`] deletes its namespaces, which takes their interfaces and the bridge
//! with them. Needs root and `ip` (iproute2).

use super::Proc;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The command-line client, run inside a client host.
const CLI: &str = env!("CARGO_BIN_EXE_crustyring");
/// Each wait for a cluster across hosts to reach a state.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Set to `1` (CI does), a missing namespace capability fails the test instead
/// of skipping it.
pub const REQUIRE: &str = "CRUSTY_REQUIRE_NETNS";

/// The namespaces of one run; deleted when dropped.
pub struct Network {
    /// Prefix of every namespace name: `crh<pid>n<network>`.
    prefix: String,
    /// The first three octets of the run's subnet, e.g. `10.123.45`.
    subnet: String,
    /// The switch namespace (holds the bridge `br0`).
    switch: String,
    /// Namespaces created so far, the switch first.
    created: Vec<String>,
    /// Hosts added so far (the next one gets `.<len + 1>`).
    hosts: usize,
}

/// One host: its namespace and its address.
#[derive(Clone, Debug)]
pub struct Host {
    /// The namespace's name.
    pub ns: String,
    /// Its IPv4 address on the bridge.
    pub ip: String,
}

/// Runs `ip` with `args`; `Err` with its stderr if it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// This process's effective user ID (from `/proc/self/status`).
fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

impl Network {
    /// A switch namespace with a bridge, for hosts in a /24 derived from this
    /// process's ID. `Err` says why namespaces are not available here (not root,
    /// no `ip`, `ip netns add` refused).
    pub fn new() -> Result<Network, String> {
        match euid() {
            Some(0) => {}
            Some(uid) => return Err(format!("not root (effective uid {uid})")),
            None => return Err("not root (no effective uid in /proc/self/status)".into()),
        }
        // Tests of one binary run side by side: each network of the process
        // is numbered. (Subnets may repeat: each network's bridge is in its
        // own namespace.)
        static NETWORKS: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let run = NETWORKS.fetch_add(1, Ordering::Relaxed);
        let mut net = Network {
            prefix: format!("crh{pid}n{run}"),
            subnet: format!("10.{}.{}", 100 + (pid >> 8) % 150, pid % 256),
            switch: format!("crh{pid}n{run}s"),
            created: Vec::new(),
            hosts: 0,
        };
        let switch = net.switch.clone();
        net.add_namespace(&switch)?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        Ok(net)
    }

    /// A network, or `None` after printing why the caller should skip; panics
    /// instead when `CRUSTY_REQUIRE_NETNS=1`.
    pub fn or_skip(test: &str) -> Option<Network> {
        match Network::new() {
            Ok(net) => Some(net),
            Err(why) if std::env::var(REQUIRE).as_deref() == Ok("1") => {
                panic!("{test}: network namespaces unavailable ({why}) and {REQUIRE}=1")
            }
            Err(why) => {
                println!(
                    "SKIPPED {test}: needs root and `ip netns` (iproute2): {why}; \
                     set {REQUIRE}=1 to fail instead"
                );
                None
            }
        }
    }

    /// The hosts of a ring under test: one for the registry (`r`), one for
    /// the client (`c`), and `nodes` for nodes (`n1`, `n2`, ...).
    pub fn ring_hosts(&mut self, nodes: usize) -> (Host, Host, Vec<Host>) {
        let registry = self.host("r").expect("registry host");
        let client = self.host("c").expect("client host");
        let hosts = (1..=nodes)
            .map(|i| self.host(&format!("n{i}")).expect("node host"))
            .collect();
        (registry, client, hosts)
    }

    /// Creates namespace `ns` with `lo` up, remembering it for deletion.
    fn add_namespace(&mut self, ns: &str) -> Result<(), String> {
        ip(&["netns", "add", ns])?;
        self.created.push(ns.to_string());
        ip(&["-n", ns, "link", "set", "lo", "up"])
    }

    /// A new host `name` (a few letters: the namespace is `crh<pid>n<network><name>`),
    /// plugged into the bridge with the next address of the subnet.
    pub fn host(&mut self, name: &str) -> Result<Host, String> {
        self.hosts += 1;
        let ns = format!("{}{name}", self.prefix);
        let ip_addr = format!("{}.{}", self.subnet, self.hosts);
        self.add_namespace(&ns)?;
        let sw = self.switch.as_str();
        // The switch end is named after the host (names are per namespace, at
        // most 15 bytes); the host end moves into the host as `eth0`.
        let port = format!("p-{name}");
        ip(&[
            "-n", sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["-n", sw, "link", "set", &port, "master", "br0", "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip_addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        Ok(Host { ns, ip: ip_addr })
    }
}

impl Host {
    /// `ip netns exec <ns> <bin> <args>...` as argument list for
    /// [`super::Proc::start`] (`ip netns exec` execs `bin`, so the process's PID
    /// is the binary's own).
    pub fn exec_args<'a>(&'a self, bin: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["netns", "exec", self.ns.as_str(), bin];
        all.extend_from_slice(args);
        all
    }

    /// Drops every packet between this host and `others`, both ways (a route
    /// to nowhere on each side), as if the links between them were cut;
    /// every other host still reaches both.
    pub fn cut_off_from(&self, others: &[&Host]) -> Result<(), String> {
        self.blackholes("add", others)
    }

    /// Undoes [`Host::cut_off_from`].
    pub fn reconnect_to(&self, others: &[&Host]) -> Result<(), String> {
        self.blackholes("del", others)
    }

    /// Adds or deletes (`verb`) the routes to nowhere between this host and
    /// each of `others`, on both sides.
    fn blackholes(&self, verb: &str, others: &[&Host]) -> Result<(), String> {
        for other in others {
            for (from, to) in [(self, *other), (*other, self)] {
                let dest = format!("{}/32", to.ip);
                ip(&["-n", &from.ns, "route", verb, "blackhole", &dest])?;
            }
        }
        Ok(())
    }

    /// Starts a registry in this host on port 50000, with a data directory
    /// of its own; ready when it prints its address.
    pub fn start_registry(&self, name: &str) -> Proc {
        let dir = super::TempDir::new(name);
        let bin = env!("CARGO_BIN_EXE_registry");
        let path = dir.path();
        let args = ["--host", &self.ip, "--data-dir", &path];
        let mut registry = Proc::start("ip", &self.exec_args(bin, &args), "listening on");
        registry.dir = Some(dir);
        assert_runs(&registry, "registry");
        registry
    }

    /// Runs `bin` with `args` inside this host to completion, killing it (by
    /// its PID) after `limit`: its output.
    pub fn run(&self, bin: &str, args: &[&str], limit: Duration) -> Output {
        let child = Command::new("ip")
            .args(self.exec_args(bin, args))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip netns exec starts");
        let pid = child.id().to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait_with_output()));
        match rx.recv_timeout(limit) {
            Ok(output) => output.expect("output"),
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                panic!("{bin} {args:?} in {} took over {limit:?}", self.ns);
            }
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Hosts first, then the switch: each deletion takes the namespace's
        // interfaces (veth pairs, the bridge) with it.
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// The process is the binary itself: `ip netns exec` execs it, so its PID (the
/// one Drop and `signal` kill) is not the PID of a wrapper.
pub fn assert_runs(proc: &Proc, bin: &str) {
    let exe = std::fs::read_link(format!("/proc/{}/exe", proc.child.id())).unwrap();
    assert!(
        exe.to_string_lossy().contains(&format!("/{bin}")),
        "PID {} is {exe:?}",
        proc.child.id()
    );
}

/// Runs the CLI inside `host`: its trimmed stdout, or `Err` with its stderr.
/// (A read through a node that may not serve waits the request timeout, then
/// the client relearns the ring and asks again: up to twice that and a walk.)
pub fn cli(host: &Host, args: &[&str]) -> Result<String, String> {
    let out = host.run(CLI, args, Duration::from_secs(30));
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    }
}

/// One line of `crustyring ring`.
#[derive(Debug, PartialEq)]
pub struct Row {
    pub id: String,
    pub addr: String,
    pub state: String,
    pub owned: u64,
    pub replicas: u64,
    pub prev: String,
    pub next: String,
}

/// The ring as walked from `node` (by `crustyring ring`, run in `host`), sorted
/// by ID.
pub fn ring_view(host: &Host, node: &str) -> Result<Vec<Row>, String> {
    let out = cli(host, &["ring", "--node", node])?;
    let rows = out
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("largest share"))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            Row {
                id: w[0].into(),
                addr: w[1].into(),
                state: w[2].into(),
                owned: w[3].parse().unwrap(),
                replicas: w[4].parse().unwrap(),
                prev: w[6].into(),
                next: w.get(7).copied().unwrap_or_default().into(),
            }
        })
        .collect();
    Ok(rows)
}

/// Every node at `addrs` walks the same ring: exactly these nodes, all serving,
/// each one's `next` and `prev` its neighbours by ID.
pub fn ring_agreed(host: &Host, addrs: &[String]) -> Result<(), String> {
    let mut expected = addrs.to_vec();
    expected.sort();
    let mut first: Option<Vec<Row>> = None;
    for addr in addrs {
        let view = ring_view(host, addr)?;
        let mut listed: Vec<String> = view.iter().map(|r| r.addr.clone()).collect();
        listed.sort();
        if listed != expected {
            return Err(format!("{addr} sees {listed:?}"));
        }
        let n = view.len();
        for (i, row) in view.iter().enumerate() {
            if row.state != "serving" {
                return Err(format!("{} is {}", row.addr, row.state));
            }
            if row.next != view[(i + 1) % n].id || row.prev != view[(i + n - 1) % n].id {
                return Err(format!("{addr} sees {row:?}"));
            }
        }
        // The same IDs from everywhere (key counts may differ mid-walk).
        let ids = |v: &[Row]| v.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        match &first {
            Some(f) if ids(f) != ids(&view) => return Err(format!("{addr} differs")),
            Some(_) => {}
            None => first = Some(view),
        }
    }
    Ok(())
}

/// Polls `check` every 50 ms until it holds; panics with its last complaint after
/// [`LIMIT`].
pub fn poll(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let started = Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if started.elapsed() > LIMIT => {
                panic!("{what} did not hold within {LIMIT:?}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
