//! Durable storage behind the domain's [`StateStore`] port ([`crate::gepa::store`]).
//!
//! Two stores implement it: [`MemoryStore`] keeps nothing beyond the process, and
//! [`sqlite::SqliteStore`] is the embedded durable store (`storage.path`), from which a
//! restarted gateway restores its sessions.

mod memory;
pub mod probe;
pub mod sqlite;

pub use crate::gepa::store::StateStore;
pub use memory::MemoryStore;
pub use probe::StoreProbe;
