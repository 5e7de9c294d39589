//! The built-in plugins embedded in the binary (the crates under `plugins/`, compiled to
//! components in `plugins/dist/`).

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// The component bytes of the built-in `name`.
pub fn builtin_plugin(name: &str) -> Option<&'static [u8]> {
    BUILTIN_PLUGINS.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}

/// The names of all built-ins.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN_PLUGINS.iter().map(|(n, _)| *n)
}
