//! Switchyard: a reverse proxy on Pingora whose every traffic decision is a WebAssembly plugin.

pub mod admin;
pub mod config;
pub mod demo;
pub mod files;
pub mod generation;
pub mod plugin;
pub mod proxy;
pub mod tls;
pub mod upstream;
