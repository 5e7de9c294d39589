#![no_main]
//! Fuzzes the boundary between plugins and the host (`switchyard::plugin`).
//!
//! The first input byte chooses the half:
//!
//! - even: the host side of the WIT `request` resource. The rest of the input is a script of
//!   operations (an opcode byte, then length-prefixed strings) run on one `RequestView`:
//!   `set_header`, `append_header`, `remove_header`, `set_path_and_query`, `set_context` and
//!   `checked_response_header`. None may panic; a name or value with CR, LF or NUL is refused
//!   (so is a path, before any `#fragment`, which is dropped);
//!   protected (framing, hop-by-hop) headers never change and `host` is only ever replaced;
//!   what a successful change wrote reads back unchanged.
//! - odd: the rest of the input is the configuration JSON of one built-in plugin (chosen by the
//!   second byte), loaded through the real wasm runtime (`LoadedPlugin::load_hashed`, which
//!   instantiates the component and calls every role's `configure`). The input is used as is, or
//!   merged over the built-in's own configuration as the proxy does when it parses as a JSON
//!   object. The host must answer `Ok` or `Err`, never panic; and a built-in refuses a bad
//!   configuration with an error rather than trapping (a trap is a panic inside the plugin).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use switchyard::plugin::{
    BUILTIN_PLUGINS, Builtin, LoadedPlugin, PluginEngine, PluginSettings, RequestView, checked_response_header,
    sha256_hex,
};
use switchyard_sdk::testkit::PROTECTED_HEADERS;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        request_view_script(rest);
    } else {
        configure_builtin(rest);
    }
});

/// Reads the script's strings: a length byte, then that many bytes (lossy UTF-8).
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn string(&mut self) -> Option<String> {
        let len = usize::from(self.byte()?).min(self.0.len());
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(String::from_utf8_lossy(s).into_owned())
    }
}

fn has_forbidden_byte(s: &str) -> bool {
    s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

fn request_view_script(data: &[u8]) {
    let mut view = RequestView::default();
    assert!(view.set_header("host", "example.test").is_ok());
    let mut script = Script(data);
    while let Some(op) = script.byte() {
        let Some(name) = script.string() else { break };
        let value = script.string().unwrap_or_default();
        let lower = name.to_ascii_lowercase();
        let protected = PROTECTED_HEADERS.contains(&lower.as_str());
        match op % 6 {
            0 => {
                let before = view.header_all(&name);
                let result = view.set_header(&name, &value);
                if has_forbidden_byte(&name) || has_forbidden_byte(&value) || protected {
                    assert!(result.is_err(), "set_header({name:?}, {value:?}) was accepted");
                }
                match result {
                    Ok(()) => {
                        assert_eq!(view.header(&name).as_deref(), Some(value.as_str()), "set_header({name:?})");
                        assert_eq!(view.header_all(&name), std::slice::from_ref(&value), "set_header({name:?})");
                    }
                    Err(_) => assert_eq!(view.header_all(&name), before, "a refused set_header({name:?}) changed it"),
                }
            }
            1 => {
                let before = view.header_all(&name);
                let result = view.append_header(&name, &value);
                if has_forbidden_byte(&name) || has_forbidden_byte(&value) || protected || lower == "host" {
                    assert!(result.is_err(), "append_header({name:?}, {value:?}) was accepted");
                }
                let after = view.header_all(&name);
                match result {
                    Ok(()) => {
                        assert_eq!(after.len(), before.len() + 1, "append_header({name:?})");
                        assert_eq!(after.last(), Some(&value), "append_header({name:?})");
                        assert_eq!(after[..before.len()], before[..], "append_header({name:?}) changed earlier values");
                    }
                    Err(_) => assert_eq!(after, before, "a refused append_header({name:?}) changed it"),
                }
            }
            2 => {
                let before = view.header_all(&name);
                let result = view.remove_header(&name);
                if has_forbidden_byte(&name) || protected || lower == "host" {
                    assert!(result.is_err(), "remove_header({name:?}) was accepted");
                }
                match result {
                    Ok(()) => assert_eq!(view.header(&name), None, "remove_header({name:?})"),
                    Err(_) => {
                        assert_eq!(view.header_all(&name), before, "a refused remove_header({name:?}) changed it")
                    }
                }
            }
            3 => match checked_response_header(&name, &value) {
                Ok((n, v)) => {
                    assert!(
                        !has_forbidden_byte(&name) && !has_forbidden_byte(&value) && !protected,
                        "{name:?}: {value:?}"
                    );
                    assert_eq!(n.as_str(), lower, "checked_response_header name");
                    assert_eq!(v.as_bytes(), value.as_bytes(), "checked_response_header value");
                }
                Err(message) => assert!(!message.is_empty()),
            },
            4 => {
                let before = (view.path().to_string(), view.query().map(str::to_string));
                let result = view.set_path_and_query(&name);
                // The `http` crate drops a `#fragment` without looking at its bytes: only the
                // part before `#` must be clean (the target sent upstream never has a fragment).
                let kept = name.split('#').next().unwrap_or_default();
                if has_forbidden_byte(kept) || !name.starts_with('/') {
                    assert!(result.is_err(), "set_path_and_query({name:?}) was accepted");
                }
                let after = (view.path().to_string(), view.query().map(str::to_string));
                match result {
                    Ok(()) => {
                        let rebuilt = match &after.1 {
                            Some(q) => format!("{}?{q}", after.0),
                            None => after.0.clone(),
                        };
                        assert_eq!(rebuilt, kept, "set_path_and_query({name:?}) reads back differently");
                        assert!(rebuilt.starts_with('/') && !has_forbidden_byte(&rebuilt), "{rebuilt:?}");
                    }
                    Err(_) => assert_eq!(after, before, "a refused set_path_and_query({name:?}) changed the target"),
                }
            }
            _ => {
                view.set_context(&name, &value);
                assert_eq!(view.context(&name), Some(value.as_str()), "set_context({name:?})");
            }
        }
        assert_eq!(view.header_all("host").len(), 1, "the request lost its Host or got a second one");
        for protected in PROTECTED_HEADERS {
            assert!(view.header(protected).is_none(), "a plugin change added {protected}");
        }
        let names = view.header_names();
        assert!(names.iter().all(|n| *n == n.to_ascii_lowercase() && view.header(n).is_some()), "{names:?}");
    }
}

/// One engine for the process (it reserves address space for its instance pool) and the
/// built-ins' hashes, computed once.
struct Fixture {
    engine: Arc<PluginEngine>,
    builtins: Vec<(&'static Builtin, String)>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Compiled components stay in memory: nothing is written to the user's cache.
        let engine = PluginEngine::with_cache_dir(None).unwrap_or_else(|e| panic!("engine: {e:#}"));
        let builtins = BUILTIN_PLUGINS.iter().map(|b| (b, sha256_hex(b.bytes))).collect();
        Fixture { engine, builtins }
    })
}

fn configure_builtin(data: &[u8]) {
    let fixture = fixture();
    let Some((&choice, config)) = data.split_first() else { return };
    let (builtin, sha256) = &fixture.builtins[usize::from(choice >> 1) % fixture.builtins.len()];
    let text = String::from_utf8_lossy(config).into_owned();
    let config_json = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(user)) if choice & 1 == 0 => {
            let mut merged: serde_json::Value = serde_json::from_str(builtin.config).unwrap_or_default();
            switchyard::generation::merge_json(&mut merged, &user);
            merged.to_string()
        }
        _ => text,
    };
    let settings = PluginSettings {
        name: builtin.name.to_string(),
        config_json,
        failure: Default::default(),
        timeout: Duration::from_millis(5),
        memory_limit_bytes: 32 << 20,
        pool_size: 1,
    };
    match LoadedPlugin::load_hashed(&fixture.engine, builtin.bytes, sha256.clone(), settings) {
        Ok(plugin) => assert_eq!(plugin.name(), builtin.name),
        Err(e) => {
            let message = format!("{e:#}");
            assert!(
                !message.contains("trapped while configuring"),
                "built-in {} trapped on configuration {:?}: {message}",
                builtin.name,
                String::from_utf8_lossy(config)
            );
        }
    }
}
