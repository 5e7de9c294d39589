//! A request or response head seen as the header map the policy edits: reads go straight to the
//! head, and a change the host refuses is logged at `warn` instead of failing the request.
//!
//! Configuration validation already rules out the changes the host refuses (protected names,
//! invalid values), so a refusal here comes from request data, such as an incoming `Host` value
//! that cannot be copied into `X-Forwarded-Host`. Dropping one header is better than failing
//! the request over it.

use switchyard_sdk::{LogLevel, RequestHead, ResponseHead, host};

/// The head the policy is working on.
#[derive(Clone, Copy)]
pub(crate) enum Target<'a> {
    /// The request on its way to the upstream.
    Request(&'a dyn RequestHead),
    /// The response on its way to the client.
    Response(&'a dyn ResponseHead),
}

impl Target<'_> {
    fn side(&self) -> &'static str {
        match self {
            Target::Request(_) => "request",
            Target::Response(_) => "response",
        }
    }

    /// The first value of header `name`.
    pub(crate) fn first(&self, name: &str) -> Option<String> {
        match self {
            Target::Request(req) => req.header(name),
            Target::Response(resp) => resp.header(name),
        }
    }

    /// Every value of header `name`, in order.
    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        match self {
            Target::Request(req) => req.header_all(name),
            Target::Response(resp) => resp.header_all(name),
        }
    }

    /// Replaces every value of `name` with `value`.
    pub(crate) fn set(&self, name: &str, value: &str) {
        let result = match self {
            Target::Request(req) => req.set_header(name, value),
            Target::Response(resp) => resp.set_header(name, value),
        };
        self.report("set", name, result);
    }

    /// Adds one more value of `name`.
    pub(crate) fn append(&self, name: &str, value: &str) {
        let result = match self {
            Target::Request(req) => req.append_header(name, value),
            Target::Response(resp) => resp.append_header(name, value),
        };
        self.report("add", name, result);
    }

    /// Removes every value of `name`.
    pub(crate) fn remove(&self, name: &str) {
        let result = match self {
            Target::Request(req) => req.remove_header(name),
            Target::Response(resp) => resp.remove_header(name),
        };
        self.report("remove", name, result);
    }

    fn report(&self, operation: &str, name: &str, result: Result<(), String>) {
        if let Err(reason) = result {
            let side = self.side();
            host::log(LogLevel::Warn, &format!("header policy: could not {operation} {side} header {name}: {reason}"));
        }
    }
}
