//! Host bindings to the `switchyard:plugin` WIT package, generated from the `host-view` world.
//!
//! This is the only module that names generated items; the rest of the runtime works with the
//! typed per-role export indices (`*::GuestIndices`) and the host traits implemented in
//! `host_state`.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "wit",
    world: "switchyard:plugin/host-view@0.1.0",
    with: {
        "switchyard:plugin/types.request": crate::plugin::host_state::RequestResource,
        "switchyard:plugin/types.response": crate::plugin::host_state::ResponseResource,
    },
});

pub use self::exports::switchyard::plugin::{balancer, request_filter, response_filter, router, split};
pub use self::switchyard::plugin::{host, types};
