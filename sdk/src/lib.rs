//! The SDK for writing Switchyard plugins in Rust.
//!
//! A plugin is a type implementing one or more role traits ([`Router`], [`RequestFilter`],
//! [`ResponseFilter`], [`Split`], [`Balancer`]) and exported with [`export_plugin!`]. Build it for
//! `wasm32-unknown-unknown`, turn the module into a component with `switchyard-componentize`, and
//! point a `[[plugin]]` table at it.
//!
//! The same code compiles natively, where the [`testkit`] stands in for the proxy: requests are
//! [`testkit::TestRequest`]s and the [`host`] functions (log, metrics, clock, random, key-value
//! store) are served by a per-thread [`testkit::TestHost`]. So plugin logic is unit-tested with a
//! plain `cargo test`.
//!
//! ```ignore
//! use switchyard_sdk::{export_plugin, RequestHead, RouteDecision, Router};
//!
//! struct Everything { upstream: String }
//!
//! impl Router for Everything {
//!     fn configure(config: &str) -> Result<Self, String> {
//!         #[derive(serde::Deserialize)]
//!         struct Config { upstream: String }
//!         let config: Config = switchyard_sdk::parse_config(config)?;
//!         Ok(Everything { upstream: config.upstream })
//!     }
//!     fn route(&self, _req: &dyn RequestHead) -> Option<RouteDecision> {
//!         Some(RouteDecision { name: "all".into(), upstream: self.upstream.clone(), rewrite: None })
//!     }
//! }
//!
//! export_plugin!(Everything: router);
//! ```

#[doc(hidden)]
pub mod bindings;
pub mod cookies;
mod head;
pub mod host;
pub mod stable_hash;
pub mod testkit;

pub use bindings::types::{Candidate, FilterAction, Header, LocalResponse, LogLevel, RouteDecision, SplitChoice};
pub use head::{RequestHead, ResponseHead, RoutedRequest};

/// The context key under which the host records the variant chosen by the split role.
pub const SPLIT_VARIANT_CONTEXT_KEY: &str = "split.variant";

/// Parses a plugin's JSON configuration into `T`, with an error message that names the problem.
///
/// A plugin configured without a `config` table receives `{}`.
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, String> {
    serde_json::from_str(config).map_err(|e| format!("invalid plugin config: {e}"))
}

/// The router role: maps a request to a route. See the WIT `router` interface.
pub trait Router: Sized + 'static {
    /// Builds the plugin from its JSON configuration, once per instance. An error fails the
    /// configuration load that asked for the plugin, never a request.
    fn configure(config: &str) -> Result<Self, String>;
    /// Returns the route for `req`, or `None` when nothing matches (the client gets 404).
    fn route(&self, req: &dyn RequestHead) -> Option<RouteDecision>;
}

/// The request-filter role: may change the request or answer it. See the WIT `request-filter`.
pub trait RequestFilter: Sized + 'static {
    /// Builds the plugin from its JSON configuration, once per instance.
    fn configure(config: &str) -> Result<Self, String>;
    /// Returns [`FilterAction::Continue`] to go on, or a local reply that ends the request.
    fn on_request(&self, req: &dyn RequestHead) -> FilterAction;
}

/// The response-filter role: may change the response head. See the WIT `response-filter`.
pub trait ResponseFilter: Sized + 'static {
    /// Builds the plugin from its JSON configuration, once per instance.
    fn configure(config: &str) -> Result<Self, String>;
    /// Called with the request as sent upstream (read-only by then) and the response head.
    fn on_response(&self, req: &dyn RequestHead, resp: &dyn ResponseHead);
}

/// The split role: puts a request into a variant. See the WIT `split` interface.
pub trait Split: Sized + 'static {
    /// Builds the plugin from its JSON configuration, once per instance.
    fn configure(config: &str) -> Result<Self, String>;
    /// Returns the variant for `req` bound for `upstream`, or `None` to leave it unchanged.
    fn choose(&self, req: &dyn RequestHead, upstream: &str) -> Option<SplitChoice>;
}

/// The balancer role: picks one backend. See the WIT `balancer` interface.
pub trait Balancer: Sized + 'static {
    /// Builds the plugin from its JSON configuration, once per instance.
    fn configure(config: &str) -> Result<Self, String>;
    /// Returns an index into `candidates` (at least two: the host does not ask when there is
    /// only one). `None` or an out-of-range index is a plugin failure and gets the plugin's
    /// failure policy.
    fn pick(&self, req: &dyn RequestHead, upstream: &str, candidates: &[Candidate]) -> Option<u32>;
}

/// Exports a type as a Switchyard plugin for the listed roles.
///
/// `export_plugin!(MyPlugin: router)` or `export_plugin!(MyPlugin: request_filter,
/// response_filter)`. The roles are `router`, `request_filter`, `response_filter`, `split` and
/// `balancer`; the type implements the matching traits. Each role gets its own configured value
/// of the type (the host calls every exported role's `configure` with the same JSON).
///
/// Use it once per crate, at the crate root. Natively (for tests) it expands to nothing.
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty : $($role:ident),+ $(,)?) => {
        $( $crate::__export_role!($role, $ty); )+
    };
}

/// The custom section by which a component declares its decisions deterministic (see
/// [`declare_deterministic!`]).
pub const DETERMINISTIC_SECTION: &str = "switchyard:deterministic";

/// Declares that this plugin's router, request-filter and response-filter calls are
/// deterministic: a call's outcome (its answer and the changes it makes to the heads) depends only
/// on the plugin's configuration and on what the call reads through the host, and the plugin keeps
/// no state between calls that changes those outcomes (no counters, no caches that alter results,
/// no use of `random`, clocks or the key-value store in deciding them).
///
/// The proxy may then answer a router, request-filter or response-filter call from memory,
/// without calling the plugin, when a later request (or response) gives the same answers to
/// every question the plugin asked: host, path, method, a header, the query, the client address,
/// a context value, the response status or a response header. It makes the changes the
/// remembered call made (headers set, added or removed, a path rewrite, context values) itself.
/// A call that logs, counts, uses the host's clock, random numbers or key-value store, or reads
/// something it changed earlier in the same call, is never remembered (the proxy sees those calls
/// and remembers nothing for them).
///
/// Splits and balancers are always called, so the declaration says nothing about them: a plugin
/// whose split draws at random may declare its response filter deterministic (the built-in split
/// does, for the cookie it hands out).
///
/// Declaring a plugin deterministic when it is not (a router that rotates between routes on its
/// own, say) makes the proxy repeat old answers. Use it once per plugin crate, next to
/// [`export_plugin!`]; it adds a custom section named [`DETERMINISTIC_SECTION`] to the wasm
/// module and does nothing in native builds.
#[macro_export]
macro_rules! declare_deterministic {
    () => {
        #[cfg(target_family = "wasm")]
        #[unsafe(link_section = "switchyard:deterministic")]
        #[used]
        static __SWITCHYARD_DETERMINISTIC: [u8; 1] = [1];
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_role {
    (router, $ty:ty) => {
        $crate::__export_role_with! {
            $ty, Router, router, __switchyard_export_router_world,
            fn route(req: &$crate::bindings::types::Request, host: String, path: String) -> Option<$crate::RouteDecision>;
            |plugin| $crate::Router::route(plugin, &$crate::RoutedRequest::new(req, host, path))
        }
    };
    (request_filter, $ty:ty) => {
        $crate::__export_role_with! {
            $ty, RequestFilter, request_filter, __switchyard_export_request_filter_world,
            fn on_request(req: &$crate::bindings::types::Request) -> $crate::FilterAction;
            |plugin| $crate::RequestFilter::on_request(plugin, req)
        }
    };
    (response_filter, $ty:ty) => {
        $crate::__export_role_with! {
            $ty, ResponseFilter, response_filter, __switchyard_export_response_filter_world,
            fn on_response(req: &$crate::bindings::types::Request, resp: &$crate::bindings::types::Response) -> ();
            |plugin| $crate::ResponseFilter::on_response(plugin, req, resp)
        }
    };
    (split, $ty:ty) => {
        $crate::__export_role_with! {
            $ty, Split, split, __switchyard_export_split_world,
            fn choose(req: &$crate::bindings::types::Request, upstream: String) -> Option<$crate::SplitChoice>;
            |plugin| $crate::Split::choose(plugin, req, &upstream)
        }
    };
    (balancer, $ty:ty) => {
        $crate::__export_role_with! {
            $ty, Balancer, balancer, __switchyard_export_balancer_world,
            fn pick(req: &$crate::bindings::types::Request, upstream: String, candidates: Vec<$crate::Candidate>) -> Option<u32>;
            |plugin| $crate::Balancer::pick(plugin, req, &upstream, &candidates)
        }
    };
    ($other:ident, $ty:ty) => {
        compile_error!(concat!(
            "unknown Switchyard plugin role `",
            stringify!($other),
            "`; expected router, request_filter, response_filter, split or balancer"
        ));
    };
}

/// The export glue of one role: the instance's configured value in a thread-local (a wasm
/// instance is single-threaded), `configure` filling it, and the role's function calling it.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_role_with {
    ($ty:ty, $trait:ident, $module:ident, $world_macro:ident,
     fn $method:ident($($arg:ident: $arg_ty:ty),*) -> $ret:ty; |$plugin:ident| $call:expr) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            thread_local! {
                static INSTANCE: ::core::cell::RefCell<Option<$ty>> = const { ::core::cell::RefCell::new(None) };
            }
            struct RoleExport;
            impl $crate::bindings::$module::exports::switchyard::plugin::$module::Guest for RoleExport {
                fn configure(config: String) -> Result<(), String> {
                    let value = <$ty as $crate::$trait>::configure(&config)?;
                    INSTANCE.with(|slot| *slot.borrow_mut() = Some(value));
                    Ok(())
                }
                fn $method($($arg: $arg_ty),*) -> $ret {
                    INSTANCE.with(|slot| match slot.borrow().as_ref() {
                        Some($plugin) => $call,
                        None => $crate::__not_configured(),
                    })
                }
            }
            $crate::bindings::$module::$world_macro!(RoleExport with_types_in $crate::bindings::$module);
        };
    };
}

/// Called when the host invokes a role before `configure` succeeded, which the host never does.
/// Trapping is the honest answer: the host counts it and applies the failure policy.
#[doc(hidden)]
pub fn __not_configured() -> ! {
    panic!("switchyard plugin called before configure")
}
