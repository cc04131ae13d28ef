//! Hosts made of Linux network namespaces: one "switch" namespace holding a
//! bridge, and per host a namespace joined to it by a veth pair, with an address
//! of its own in a private /24 and `lo` up. Nothing is created in the test's own
//! namespace (each veth pair is made inside the switch namespace), and every name
//! includes this process's ID, so parallel runs do not clash. Dropping the
//! [`Network`] deletes its namespaces, which takes their interfaces and the bridge
//! with them. Needs root and `ip` (iproute2).

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Set to `1` (CI does), a missing namespace capability fails the test instead
/// of skipping it.
pub const REQUIRE: &str = "CRUSTY_REQUIRE_NETNS";

/// The namespaces of one run; deleted when dropped.
pub struct Network {
    /// Prefix of every namespace name: `crh<pid>`.
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
        let pid = std::process::id();
        let mut net = Network {
            prefix: format!("crh{pid}"),
            subnet: format!("10.{}.{}", 100 + (pid >> 8) % 150, pid % 256),
            switch: format!("crh{pid}s"),
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

    /// Creates namespace `ns` with `lo` up, remembering it for deletion.
    fn add_namespace(&mut self, ns: &str) -> Result<(), String> {
        ip(&["netns", "add", ns])?;
        self.created.push(ns.to_string());
        ip(&["-n", ns, "link", "set", "lo", "up"])
    }

    /// A new host `name` (a few letters: the namespace is `crh<pid><name>`),
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
