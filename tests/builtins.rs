//! The embedded built-ins are exactly the crates under `plugins/`, and each one instantiates
//! through the real linker with its default configuration and exports the role it is for.

mod common;

use switchyard::plugin::{BUILTIN_PLUGINS, LoadedPlugin, PluginSettings, Role};

#[test]
fn embedded_builtins_match_the_plugins_folder() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
    let mut crates: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    crates.sort();
    let mut embedded: Vec<String> = BUILTIN_PLUGINS.iter().map(|(n, _)| n.to_string()).collect();
    embedded.sort();
    assert_eq!(embedded, crates);
}

#[test]
fn every_builtin_instantiates_and_exports_its_role() {
    let engine = common::engine();
    for (name, bytes) in BUILTIN_PLUGINS {
        let settings = PluginSettings {
            name: name.to_string(),
            config_json: "{}".to_string(),
            failure: Default::default(),
            timeout: std::time::Duration::from_millis(50),
            memory_limit_bytes: 16 << 20,
            pool_size: 1,
        };
        let plugin = LoadedPlugin::load(&engine, bytes, settings).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let expected = match *name {
            "router" => Role::Router,
            "round-robin" => Role::Balancer,
            other => panic!("built-in {other} has no expected role in this test; add it"),
        };
        assert_eq!(plugin.roles(), &[expected], "{name}");
        assert_eq!(plugin.shared().stats.snapshot().instances_created, 1, "{name}: one configured instance at load");
    }
}
