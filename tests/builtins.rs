//! The embedded built-ins are exactly the crates under `plugins/`, and every built-in name
//! instantiates through the real linker with its starting configuration and exports the roles it
//! is for.

mod common;

use switchyard::plugin::{BUILTIN_COMPONENTS, BUILTIN_PLUGINS, LoadedPlugin, PluginSettings, Role};

#[test]
fn embedded_components_match_the_plugins_folder() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
    let mut crates: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    crates.sort();
    let mut embedded: Vec<String> = BUILTIN_COMPONENTS.iter().map(|(n, _)| n.to_string()).collect();
    embedded.sort();
    assert_eq!(embedded, crates);
    let mut names: Vec<&str> = BUILTIN_PLUGINS.iter().map(|b| b.name).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "a built-in name is served by two components");
    for expected in
        ["router", "round-robin", "weighted", "least-connections", "random", "p2c", "hash", "headers", "split"]
    {
        assert!(names.contains(&expected), "no built-in named {expected}: {names:?}");
    }
}

#[test]
fn every_builtin_instantiates_and_exports_its_roles() {
    let engine = common::engine();
    for builtin in BUILTIN_PLUGINS {
        let (roles, config): (&[Role], serde_json::Value) = match builtin.component {
            "router" => (&[Role::Router], serde_json::json!({})),
            "balancers" => (&[Role::Balancer], serde_json::json!({})),
            "headers" => (&[Role::RequestFilter, Role::ResponseFilter], serde_json::json!({})),
            // A split needs its variants.
            "split" => (&[Role::ResponseFilter, Role::Split], serde_json::json!({"variants": [{"tag": "a"}]})),
            other => panic!("built-in component {other} has no expected roles in this test; add it"),
        };
        let mut merged: serde_json::Value = serde_json::from_str(builtin.config).unwrap_or_else(|e| panic!("{e}"));
        if let serde_json::Value::Object(extra) = config {
            switchyard::generation::merge_json(&mut merged, &extra);
        }
        let settings = PluginSettings {
            name: builtin.name.to_string(),
            config_json: merged.to_string(),
            failure: Default::default(),
            timeout: std::time::Duration::from_millis(50),
            memory_limit_bytes: 16 << 20,
            pool_size: 1,
        };
        let name = builtin.name;
        let plugin = LoadedPlugin::load(&engine, builtin.bytes, settings).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(plugin.roles(), roles, "{name}");
        assert_eq!(plugin.shared().stats.snapshot().instances_created, 1, "{name}: one configured instance at load");
    }
}
