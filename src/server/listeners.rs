//! The gateway's listening sockets: a listener on port 0 is bound here and its address
//! logged, so that whoever started the gateway (the tests, the simulator) can find it.

use async_trait::async_trait;
use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::{ServiceReadyNotifier, ServiceWithDependents};
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, IntoRawFd};

use crate::gateway::FatalError;

/// The log target of the lines that say where each listener is: one line per listener,
/// `{what} listening on {address}`, `what` being `proxy` or `metrics`.
pub const LISTEN_LOG_TARGET: &str = "listen";

/// One of the gateway's listening sockets, as Pingora knows it.
#[derive(Clone)]
pub(super) struct Listener {
    /// `proxy` or `metrics`, for the log line.
    what: &'static str,
    /// The configured address; port 0 lets the system pick a free port.
    addr: SocketAddr,
    /// The socket's name in Pingora: the key of its table of listening sockets, which a
    /// zero-downtime upgrade hands to the new process, and the address Pingora binds when
    /// the table has no socket of that name.
    pub(super) key: String,
}

impl Listener {
    /// The key is the address, as in any Pingora server, unless `taken` already names a
    /// socket: only possible for two listeners on port 0 of one IP (the config refuses
    /// other clashes). Pingora looks sockets up by key, so two services with one key would
    /// accept on one socket: the proxy would answer `/metrics` and the reverse.
    pub(super) fn new(what: &'static str, addr: SocketAddr, taken: Option<&str>) -> Listener {
        let mut key = addr.to_string();
        if taken == Some(key.as_str()) {
            key = format!("{key}#{what}");
        }
        Listener { what, addr, key }
    }
}

/// Makes the address of every listener known, and binds those on port 0, before the
/// services that accept on them start (they depend on this one).
///
/// A Pingora service binds its listeners when it starts and keeps their addresses to
/// itself (`ListenerEndpoint::local_addr` exists only in Pingora's own tests), so a
/// listener on port 0 would never say which port it got. This service binds such a
/// listener itself and puts the socket into Pingora's table under the listener's key,
/// where Pingora's bind looks first (pingora-core 0.9 `listeners/l4.rs`,
/// `ListenerEndpointBuilder::listen`) and takes the socket as it takes one inherited in
/// an upgrade. After an upgrade the socket is already in the table, inherited: same port.
/// Either way its bound address is logged (target [`LISTEN_LOG_TARGET`]); this is how the
/// tests learn the ports of a gateway they start on port 0. Listeners on a fixed port are
/// left to Pingora (which retries for 30 s while the port is in use) and logged as
/// configured.
pub(super) struct BindListeners {
    pub listeners: Vec<Listener>,
    /// A socket that cannot be bound stops the server through this.
    pub fatal: FatalError,
}

#[async_trait]
impl ServiceWithDependents for BindListeners {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        _shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
        ready: ServiceReadyNotifier,
    ) {
        for listener in &self.listeners {
            match bound_address(listener, fds.as_ref()) {
                Ok(addr) => log::info!(
                    target: LISTEN_LOG_TARGET,
                    "{} listening on {addr}",
                    listener.what
                ),
                Err(e) => {
                    let (addr, what) = (listener.addr, listener.what);
                    self.fatal
                        .raise(format!("cannot listen on {addr} ({what}): {e}"));
                    return;
                }
            }
        }
        ready.notify_ready();
    }

    fn name(&self) -> &str {
        "listeners"
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }

    /// Claims no socket of its own: the services that accept name theirs, so Pingora still
    /// closes inherited sockets that no service claims.
    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(Vec::new())
    }
}

/// Where `listener` is bound: its configured address on a fixed port; on port 0, the
/// address of the socket in Pingora's table (inherited), or of one bound here and added.
fn bound_address(listener: &Listener, fds: Option<&ListenFds>) -> std::io::Result<SocketAddr> {
    if listener.addr.port() != 0 {
        return Ok(listener.addr);
    }
    // Pingora passes its table to every service on Unix (`Server::run_service`).
    let Some(fds) = fds else {
        return Err(std::io::Error::other("no table of listening sockets"));
    };
    let mut table = fds.lock();
    if let Some(&fd) = table.get(&listener.key) {
        // SAFETY: the table holds open listening sockets, and none is closed while it is
        // locked; the borrow ends here.
        let inherited = unsafe { BorrowedFd::borrow_raw(fd) };
        return std::net::TcpListener::from(inherited.try_clone_to_owned()?).local_addr();
    }
    // std sets SO_REUSEADDR, as Pingora's bind does (Pingora then sets its own backlog).
    // Pingora's tokio listener needs the socket non-blocking, and owns it from here on.
    let socket = std::net::TcpListener::bind(listener.addr)?;
    socket.set_nonblocking(true)?;
    let addr = socket.local_addr()?;
    table.add(listener.key.clone(), socket.into_raw_fd());
    Ok(addr)
}

/// The address a log line (one JSON object) reports for the `what` listener, if it is a
/// [`LISTEN_LOG_TARGET`] line about that listener: for programs that start the gateway on
/// port 0 and read its stderr (the tests, `benches/simulate.rs`).
pub fn reported_address(log_line: &str, what: &str) -> Option<SocketAddr> {
    let line: serde_json::Value = serde_json::from_str(log_line).ok()?;
    if line["target"] != LISTEN_LOG_TARGET {
        return None;
    }
    line["message"]
        .as_str()?
        .strip_prefix(what)?
        .strip_prefix(" listening on ")?
        .parse()
        .ok()
}
