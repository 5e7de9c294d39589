//! The management side of the process: reloading ([`reload`]) and what triggers it (SIGHUP,
//! file changes, the API), what triggers an upgrade (SIGUSR2, the API), the management listener
//! ([`api`]) and the metrics it serves, and the `reload`/`upgrade` commands' end ([`client`]).

pub mod api;
pub mod client;
pub mod metrics;
pub mod reload;
pub mod signals;
pub mod watch;

pub use api::AdminApi;
pub use metrics::Metrics;
pub use reload::{ReloadOutcome, ReloadRefused, Reloader};
