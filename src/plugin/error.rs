//! How plugin calls fail, and what a request gets when they do.

use std::sync::Arc;
use std::time::Duration;

/// What a request gets when a plugin on its path fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// The request fails: 500 (503 for a balancer).
    #[default]
    Closed,
    /// The plugin is skipped as if it had not been configured.
    Open,
}

/// Why a plugin call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum PluginFailure {
    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access…).
    Trap(String),
    /// The call overran its deadline and was interrupted.
    Timeout(Duration),
    /// The guest tried to grow its memory past the plugin's cap.
    MemoryLimit,
    /// The guest answered something the host cannot use (an out-of-range index…).
    InvalidAnswer(String),
    /// No instance could be created for the call.
    Unavailable(String),
}

/// A failed plugin call, naming the plugin and carrying its failure policy.
#[derive(Debug, Clone)]
pub struct PluginError {
    pub plugin: Arc<str>,
    pub kind: PluginFailure,
    pub policy: FailurePolicy,
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plugin = &self.plugin;
        match &self.kind {
            PluginFailure::Trap(m) => write!(f, "plugin {plugin} trapped: {m}"),
            PluginFailure::Timeout(d) => write!(f, "plugin {plugin} overran its {} ms deadline", d.as_millis()),
            PluginFailure::MemoryLimit => write!(f, "plugin {plugin} exceeded its memory limit"),
            PluginFailure::InvalidAnswer(m) => {
                write!(f, "plugin {plugin} gave an invalid answer: {m}")
            }
            PluginFailure::Unavailable(m) => {
                write!(f, "plugin {plugin} has no usable instance: {m}")
            }
        }
    }
}

impl std::error::Error for PluginError {}
