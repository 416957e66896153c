//! gepa-gateway: an edge gateway for online prompt optimization (GEPA), built on Pingora.
//!
//! Run it as a gateway of its own (the `gepa-gateway` binary, [`server::run`]), or add GEPA
//! to a Pingora proxy you already run with [`Gepa`]: build it from a `gateway` config
//! section ([`config`]), call [`Gepa::request_filter`] first in your
//! `ProxyHttp::request_filter` with a [`RequestCtx`] kept in your context, and add its
//! background services to your `Server` with [`Gepa::add_services`]. `examples/embed.rs`
//! is such a proxy. [`rewrite`] is the chat-body splicer GEPA uses, usable on its own.
//!
//! Everything else is internal. The modules form layers, each importing only from the
//! layers below it (checked by `tests/layers.rs`, described in `docs/architecture.md`):
//!
//! 1. foundations: `config` (the YAML file into a validated model), `routes` (the route
//!    table and the URLs built from it), `rewrite` (the chat-body scanner and splicer),
//!    `reply` (the assistant's reply in a completion), `json_object`, `format`;
//! 2. the domain, `gepa`: sessions, candidates, rollouts, rewards and the optimizer, with
//!    the port (`gepa::store`) through which it persists;
//! 3. persistence, `store`: the memory and SQLite stores behind that port;
//! 4. the edges: `errors` (every error a client sees, and the one map to HTTP), the
//!    request's state and body (`request`) and local responses (`respond`), `proxy` (with
//!    `upstream` and reply `capture`), the session API `admin` (guarded by `auth`), the
//!    `proposer` service, `metrics` and `logging`;
//! 5. the Pingora application, `gateway` ([`Gepa`] and the standalone gateway), and the
//!    process wiring, `server`;
//! 6. `main`.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

/// Declares internal modules: private to the crate, and public only with the `internals`
/// feature, which the crate's own benches and tests enable (see Cargo.toml).
macro_rules! internal {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        pub(crate) mod $name;
    )*};
}

// 1. foundations
pub mod config;
pub mod rewrite;
internal!(format, json_object, reply, routes);

// 2. the domain
internal!(gepa);

// 3. persistence
internal!(store);

// 4. the edges
pub mod request;
internal!(admin, auth, capture, errors, logging, metrics, proposer, proxy, respond, upstream);

// 5. the application and its wiring
pub mod gateway;
pub mod server;

pub use gateway::Gepa;
pub use request::RequestCtx;
