//! gepa-gateway: an edge gateway for online prompt optimization (GEPA), built on Pingora.
//!
//! The request path: [`gateway`] routes every request ([`routes`]); proxied calls go
//! through [`proxy`] (body check and [`rewrite`], rollout assignment in [`sessions`] via
//! [`selection`], the upstream exchange over [`upstream`], reply [`capture`]); the session
//! API is [`admin`], guarded by [`auth`]. [`config`] turns the YAML file into a validated
//! model; [`server`] wires it all into a Pingora server.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod admin;
pub mod allocation;
pub mod auth;
pub mod capture;
pub mod config;
pub mod errors;
pub mod gateway;
pub mod json_object;
pub mod logging;
pub mod metrics;
pub mod pareto;
pub mod proposer;
pub mod proxy;
pub mod reflection;
pub mod respond;
pub mod rewrite;
pub mod routes;
pub mod selection;
pub mod server;
pub mod sessions;
pub mod store;
pub mod upstream;
