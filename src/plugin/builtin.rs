//! The built-in plugins embedded in the binary: the crates under `plugins/`, compiled to
//! components in `plugins/dist/`. One component may serve several built-in names, each with the
//! configuration it starts from (the balancers component is `round-robin`, `weighted`, `hash`…).

/// A built-in plugin name.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// The name configurations use.
    pub name: &'static str,
    /// The crate directory under `plugins/` that builds the component.
    pub component: &'static str,
    /// The component.
    pub bytes: &'static [u8],
    /// The JSON configuration this name starts from; the user's keys are merged over it.
    pub config: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// The built-in called `name`.
pub fn builtin_plugin(name: &str) -> Option<&'static Builtin> {
    BUILTIN_PLUGINS.iter().find(|b| b.name == name)
}

/// The names of all built-ins.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN_PLUGINS.iter().map(|b| b.name)
}
