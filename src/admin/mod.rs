//! The management side of the process: reloading ([`reload`]) and what triggers it (SIGHUP,
//! file changes, the API), what triggers an upgrade (SIGUSR2, the API), the management listener
//! ([`api`]: its access rules in [`auth`], its changes in [`edit`], its read-only answers in
//! [`views`]), what it reports ([`metrics`], [`traffic`], [`logs`]), and the `reload`/`upgrade`
//! commands' end ([`client`]).

pub mod api;
pub mod auth;
pub mod certs;
pub mod client;
pub mod edit;
pub mod logs;
pub mod metrics;
pub mod reload;
pub mod signals;
pub mod traffic;
pub mod views;
pub mod watch;

pub use api::AdminApi;
pub use metrics::Metrics;
pub use reload::{ReloadOutcome, ReloadRefused, Reloader};
