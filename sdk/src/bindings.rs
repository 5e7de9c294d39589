//! Guest bindings to the `switchyard:plugin` WIT package, one module per role world.
//!
//! The `router` module owns the shared `types` and `host` interfaces; the other worlds reuse
//! them through `with`, so a request handle is the same Rust type in every role. Plugin authors
//! do not use this module directly: the traits and macros at the crate root wrap it.

#![allow(missing_docs, clippy::all)]

/// Bindings of the `router-plugin` world, and the shared `types` and `host` interfaces.
pub mod router {
    wit_bindgen::generate!({
        path: "../wit",
        world: "switchyard:plugin/router-plugin@0.1.0",
        pub_export_macro: true,
        export_macro_name: "__switchyard_export_router_world",
        default_bindings_module: "switchyard_sdk::bindings::router",
        additional_derives: [PartialEq],
        generate_all,
    });
}

macro_rules! role_world {
    ($module:ident, $world:tt, $macro_name:tt, $default_module:tt) => {
        #[doc = concat!("Bindings of the `", $world, "` world.")]
        pub mod $module {
            wit_bindgen::generate!({
                path: "../wit",
                world: $world,
                pub_export_macro: true,
                export_macro_name: $macro_name,
                default_bindings_module: $default_module,
                with: {
                    "switchyard:plugin/types@0.1.0": crate::bindings::router::switchyard::plugin::types,
                    "switchyard:plugin/host@0.1.0": crate::bindings::router::switchyard::plugin::host,
                },
            });
        }
    };
}

role_world!(
    request_filter,
    "switchyard:plugin/request-filter-plugin@0.1.0",
    "__switchyard_export_request_filter_world",
    "switchyard_sdk::bindings::request_filter"
);
role_world!(
    response_filter,
    "switchyard:plugin/response-filter-plugin@0.1.0",
    "__switchyard_export_response_filter_world",
    "switchyard_sdk::bindings::response_filter"
);
role_world!(
    split,
    "switchyard:plugin/split-plugin@0.1.0",
    "__switchyard_export_split_world",
    "switchyard_sdk::bindings::split"
);
role_world!(
    balancer,
    "switchyard:plugin/balancer-plugin@0.1.0",
    "__switchyard_export_balancer_world",
    "switchyard_sdk::bindings::balancer"
);

pub use router::switchyard::plugin::host;
pub use router::switchyard::plugin::types;
