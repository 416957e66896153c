//! gepa-gateway: an edge gateway for online prompt optimization (GEPA), built on Pingora.
//!
//! The modules form layers; each imports only from the layers below it (checked by
//! `tests/layers.rs`, described in `docs/architecture.md`):
//!
//! 1. foundations: [`config`] (the YAML file into a validated model), [`routes`] (the route
//!    table and the URLs built from it), [`rewrite`] (the chat-body scanner and splicer),
//!    [`reply`] (the assistant's reply in a completion), [`json_object`], [`format`];
//! 2. the domain, [`gepa`]: sessions, candidates, rollouts, rewards and the optimizer, with
//!    the port ([`gepa::store`]) through which it persists;
//! 3. persistence, [`store`]: the memory and SQLite stores behind that port;
//! 4. the edges: [`errors`] (every error a client sees, and the one map to HTTP), the
//!    request's state and body ([`request`]) and local responses ([`respond`]), [`proxy`]
//!    (with [`upstream`] and reply [`capture`]), the session API [`admin`] (guarded by
//!    [`auth`]), the [`proposer`] service, [`metrics`] and [`logging`];
//! 5. the Pingora application [`gateway`] and the process wiring [`server`];
//! 6. `main`.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

// 1. foundations
pub mod config;
pub mod format;
pub mod json_object;
pub mod reply;
pub mod rewrite;
pub mod routes;

// 2. the domain
pub mod gepa;

// 3. persistence
pub mod store;

// 4. the edges
pub mod admin;
pub mod auth;
pub mod capture;
pub mod errors;
pub mod logging;
pub mod metrics;
pub mod proposer;
pub mod proxy;
pub mod request;
pub mod respond;
pub mod upstream;

// 5. the application and its wiring
pub mod gateway;
pub mod server;

pub use gateway::Gepa;
pub use request::RequestCtx;
