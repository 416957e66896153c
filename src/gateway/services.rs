//! GEPA's background services on a Pingora server: the proposer, the store's restore
//! after start-up, and the hand-over of the session API during a graceful upgrade or stop.
//! A service that cannot go on (a store that cannot be opened) reports a [`FatalError`]
//! instead of ending the process: the server wiring decides what that means.

use async_trait::async_trait;
use pingora_core::server::{
    ExecutionPhase, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch, UnixShutdownSignalWatch,
};
use pingora_core::services::background::BackgroundService;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use tokio::sync::{broadcast, Notify};

use super::state::GatewayState;

/// The first fatal error of a GEPA service, kept for the process's exit status. Waiting on
/// it ([`ShutdownOnFatal`]) lets the server stop at once instead of serving 503s forever.
#[derive(Clone, Default)]
pub struct FatalError {
    error: Arc<OnceLock<String>>,
    raised: Arc<Notify>,
}

impl FatalError {
    /// Records `message` (the first one wins) and wakes whoever waits for it.
    pub fn raise(&self, message: String) {
        log::error!("{message}");
        let _ = self.error.set(message);
        // A stored permit: a waiter that starts later still wakes.
        self.raised.notify_one();
    }

    /// The error, once one was raised.
    pub fn get(&self) -> Option<&str> {
        self.error.get().map(String::as_str)
    }
}

/// Pingora's Unix signals (SIGQUIT upgrade, SIGTERM graceful stop, SIGINT fast stop), plus
/// a fast stop when a GEPA service raises a [`FatalError`]. Pass it in `RunArgs`.
pub struct ShutdownOnFatal {
    pub fatal: FatalError,
}

#[async_trait]
impl ShutdownSignalWatch for ShutdownOnFatal {
    async fn recv(&self) -> ShutdownSignal {
        if self.fatal.get().is_some() {
            return ShutdownSignal::FastShutdown;
        }
        tokio::select! {
            signal = UnixShutdownSignalWatch.recv() => signal,
            _ = self.fatal.raised.notified() => ShutdownSignal::FastShutdown,
        }
    }
}

/// Opens the durable store after Pingora has forked, restores every session from it, and
/// only then lets GEPA serve state (`/readyz` turns 200). A store that cannot be opened is
/// a [`FatalError`], whose message names the path.
pub(super) struct StoreLoader {
    pub state: Arc<GatewayState>,
    /// Started with `-u`: wait for the old process to hand the database over.
    pub take_over: bool,
    pub fatal: FatalError,
}

#[async_trait]
impl BackgroundService for StoreLoader {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some(store) = self.state.sqlite.clone() else {
            return;
        };
        let started = std::time::Instant::now();
        let take_over = self.take_over;
        let loaded = tokio::task::spawn_blocking(move || {
            store.open(take_over)?;
            store.restore()
        })
        .await;
        match loaded {
            Ok(Ok(sessions)) => {
                let n = self.state.sessions.restore(sessions);
                self.state.ready.store(true, Ordering::Release);
                log::info!(
                    "store: restored {n} sessions in {:.1} ms",
                    started.elapsed().as_secs_f64() * 1000.0
                );
            }
            Ok(Err(e)) => self.fatal.raise(format!("store: {}", e.0)),
            Err(e) => self.fatal.raise(format!("store: restoring failed: {e}")),
        }
    }
}

/// Hands the session API and the database over when Pingora starts a graceful upgrade
/// (SIGQUIT: the listeners go to the new process) or a graceful shutdown (SIGTERM).
///
/// Pingora keeps the old process accepting for a few seconds after it sent its listeners,
/// and serving kept-alive connections through the grace period, so both processes run
/// at once. From the hand-over on, the old process answers the session API with 503 and
/// `Connection: close` (the client retries on a new connection, which reaches the new
/// process), commits what it already acknowledged, and releases the database, which the
/// new process waits for before it restores. Proxied calls go on being served.
pub(super) struct Handover {
    pub state: Arc<GatewayState>,
    pub phases: parking_lot::Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
}

#[async_trait]
impl BackgroundService for Handover {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut phases) = self.phases.lock().take() else {
            return;
        };
        loop {
            let phase = tokio::select! {
                p = phases.recv() => p,
                _ = shutdown.changed() => break,
            };
            match phase {
                Ok(ExecutionPhase::GracefulUpgradeTransferringFds)
                | Ok(ExecutionPhase::GracefulTerminate) => break,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
        self.state.handed_over.store(true, Ordering::Release);
        log::info!("handing over: the session API now answers 503 here");
        if let Some(store) = &self.state.sqlite {
            store.hand_over().await;
        }
    }
}
