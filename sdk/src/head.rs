//! The request and response heads a plugin sees, as traits: the wasm resources implement them
//! inside the proxy, and the [`crate::testkit`] types implement them in native tests.

use std::borrow::Cow;

use crate::bindings::types::{Request, Response};

/// The head of the client's request, owned by the proxy. See the WIT `request` resource for the
/// exact semantics of each method; every getter copies only what it returns.
pub trait RequestHead {
    /// The method, e.g. `GET`.
    fn method(&self) -> String;
    /// `http` or `https`.
    fn scheme(&self) -> String;
    /// The requested host, lowercased, without port; empty when the client sent none.
    /// Borrowed when the value is already in the guest (a router's call brings it along).
    fn host(&self) -> Cow<'_, str>;
    /// The path of the request target, without the query. Borrowed like [`Self::host`].
    fn path(&self) -> Cow<'_, str>;
    /// The query string without `?`, if the target has one.
    fn query(&self) -> Option<String>;
    /// The first value of header `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<String>;
    /// Every value of header `name`, in order.
    fn header_all(&self, name: &str) -> Vec<String>;
    /// The lowercased names of all headers present.
    fn header_names(&self) -> Vec<String>;
    /// The client's IP address as text, or empty if unknown.
    fn client_ip(&self) -> String;
    /// The port of the proxy listener the client connected to, or 0 if unknown.
    fn server_port(&self) -> u16;
    /// Replaces every value of header `name`; errors on invalid or protected headers.
    fn set_header(&self, name: &str, value: &str) -> Result<(), String>;
    /// Adds one more value of header `name`; errors on invalid or protected headers, and on
    /// `host` (a request carries exactly one; replace it with [`Self::set_header`]).
    fn append_header(&self, name: &str, value: &str) -> Result<(), String>;
    /// Removes every value of header `name`; errors on protected headers and on `host`.
    fn remove_header(&self, name: &str) -> Result<(), String>;
    /// Replaces the path and query (must start with `/`).
    fn set_path_and_query(&self, path_and_query: &str) -> Result<(), String>;
    /// A value an earlier plugin left for this request.
    fn context(&self, key: &str) -> Option<String>;
    /// Leaves a value for later plugins of this request and for the access log.
    fn set_context(&self, key: &str, value: &str);
}

/// The head of the response on its way back to the client, owned by the proxy.
pub trait ResponseHead {
    /// The status code.
    fn status(&self) -> u16;
    /// Changes the status code (100–999).
    fn set_status(&self, status: u16) -> Result<(), String>;
    /// The first value of header `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<String>;
    /// Every value of header `name`, in order.
    fn header_all(&self, name: &str) -> Vec<String>;
    /// Replaces every value of header `name`.
    fn set_header(&self, name: &str, value: &str) -> Result<(), String>;
    /// Adds one more value of header `name`.
    fn append_header(&self, name: &str, value: &str) -> Result<(), String>;
    /// Removes every value of header `name`.
    fn remove_header(&self, name: &str) -> Result<(), String>;
}

impl RequestHead for Request {
    fn method(&self) -> String {
        Request::method(self)
    }
    fn scheme(&self) -> String {
        Request::scheme(self)
    }
    fn host(&self) -> Cow<'_, str> {
        Cow::Owned(Request::host(self))
    }
    fn path(&self) -> Cow<'_, str> {
        Cow::Owned(Request::path(self))
    }
    fn query(&self) -> Option<String> {
        Request::query(self)
    }
    fn header(&self, name: &str) -> Option<String> {
        Request::header(self, name)
    }
    fn header_all(&self, name: &str) -> Vec<String> {
        Request::header_all(self, name)
    }
    fn header_names(&self) -> Vec<String> {
        Request::header_names(self)
    }
    fn client_ip(&self) -> String {
        Request::client_ip(self)
    }
    fn server_port(&self) -> u16 {
        Request::server_port(self)
    }
    fn set_header(&self, name: &str, value: &str) -> Result<(), String> {
        Request::set_header(self, name, value)
    }
    fn append_header(&self, name: &str, value: &str) -> Result<(), String> {
        Request::append_header(self, name, value)
    }
    fn remove_header(&self, name: &str) -> Result<(), String> {
        Request::remove_header(self, name)
    }
    fn set_path_and_query(&self, path_and_query: &str) -> Result<(), String> {
        Request::set_path_and_query(self, path_and_query)
    }
    fn context(&self, key: &str) -> Option<String> {
        Request::context(self, key)
    }
    fn set_context(&self, key: &str, value: &str) {
        Request::set_context(self, key, value)
    }
}

impl ResponseHead for Response {
    fn status(&self) -> u16 {
        Response::status(self)
    }
    fn set_status(&self, status: u16) -> Result<(), String> {
        Response::set_status(self, status)
    }
    fn header(&self, name: &str) -> Option<String> {
        Response::header(self, name)
    }
    fn header_all(&self, name: &str) -> Vec<String> {
        Response::header_all(self, name)
    }
    fn set_header(&self, name: &str, value: &str) -> Result<(), String> {
        Response::set_header(self, name, value)
    }
    fn append_header(&self, name: &str, value: &str) -> Result<(), String> {
        Response::append_header(self, name, value)
    }
    fn remove_header(&self, name: &str) -> Result<(), String> {
        Response::remove_header(self, name)
    }
}

/// The request a router sees: the proxy's request, with the host and path that came with the
/// call answered locally instead of by a call into the host.
pub struct RoutedRequest<'a> {
    inner: &'a Request,
    host: String,
    path: String,
}

impl<'a> RoutedRequest<'a> {
    #[doc(hidden)]
    pub fn new(inner: &'a Request, host: String, path: String) -> Self {
        RoutedRequest { inner, host, path }
    }
}

impl RequestHead for RoutedRequest<'_> {
    fn method(&self) -> String {
        self.inner.method()
    }
    fn scheme(&self) -> String {
        self.inner.scheme()
    }
    fn host(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.host)
    }
    fn path(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.path)
    }
    fn query(&self) -> Option<String> {
        self.inner.query()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.inner.header(name)
    }
    fn header_all(&self, name: &str) -> Vec<String> {
        self.inner.header_all(name)
    }
    fn header_names(&self) -> Vec<String> {
        self.inner.header_names()
    }
    fn client_ip(&self) -> String {
        self.inner.client_ip()
    }
    fn server_port(&self) -> u16 {
        self.inner.server_port()
    }
    fn set_header(&self, name: &str, value: &str) -> Result<(), String> {
        self.inner.set_header(name, value)
    }
    fn append_header(&self, name: &str, value: &str) -> Result<(), String> {
        self.inner.append_header(name, value)
    }
    fn remove_header(&self, name: &str) -> Result<(), String> {
        self.inner.remove_header(name)
    }
    fn set_path_and_query(&self, path_and_query: &str) -> Result<(), String> {
        self.inner.set_path_and_query(path_and_query)
    }
    fn context(&self, key: &str) -> Option<String> {
        self.inner.context(key)
    }
    fn set_context(&self, key: &str, value: &str) {
        self.inner.set_context(key, value)
    }
}
