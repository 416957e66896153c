//! `gateway.metrics`: where Prometheus metrics are served, if anywhere.

use std::net::SocketAddr;

use super::validate::parse_listen;
use super::Problems;
use crate::config::error::Problem;
use crate::config::model::DEFAULT_METRICS_LISTEN;
use crate::config::raw::RawMetrics;

const LISTEN: &str = "gateway.metrics.listen";

/// The metrics address (`Some(None)`: `""`, metrics disabled). `listen` is the gateway's
/// own address, `None` when it was bad (and the two are not compared).
pub(super) fn resolve(
    raw: RawMetrics,
    listen: Option<SocketAddr>,
    p: &mut Problems,
) -> Option<Option<SocketAddr>> {
    match raw
        .listen
        .as_deref()
        .unwrap_or(DEFAULT_METRICS_LISTEN)
        .trim()
    {
        "" => Some(None),
        s => {
            let addr = p.take(parse_listen(LISTEN, s))?;
            if let Some(listen) = listen {
                p.take(apart_from(addr, listen))?;
            }
            Some(Some(addr))
        }
    }
}

/// Both servers cannot bind one port (port 0 asks for a free one, so never clashes).
fn apart_from(addr: SocketAddr, listen: SocketAddr) -> Result<(), Problem> {
    let same_ip =
        addr.ip() == listen.ip() || addr.ip().is_unspecified() || listen.ip().is_unspecified();
    if addr.port() != 0 && addr.port() == listen.port() && same_ip {
        return Err(Problem::new(
            LISTEN,
            "conflicts with gateway.listen (same port); use another port or \"\" to disable \
             metrics",
        ));
    }
    Ok(())
}
