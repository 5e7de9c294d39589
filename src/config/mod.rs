//! The configuration file: TOML types ([`model`]), a recovering parser ([`parse`]), semantic
//! checks ([`validate`]) and diagnostics that name file:line:col for every problem at once.

pub mod diagnostics;
pub mod model;
mod parse;
mod validate;

use std::path::Path;

pub use diagnostics::{Collector, Diagnostic, Diagnostics, SourceFile};
pub use model::ConfigFile;
pub use validate::{in_range, is_token, resolve_address};

/// Reads and checks a configuration file; returns the parsed file or every problem found.
pub fn load_file(path: &Path) -> Result<(SourceFile, ConfigFile), Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        }])
    })?;
    let source = SourceFile::new(path, text);
    let config = load_source(&source)?;
    Ok((source, config))
}

/// Parses and checks configuration text.
pub fn load_source(source: &SourceFile) -> Result<ConfigFile, Diagnostics> {
    let mut c = Collector::new(source);
    let config = parse::parse(source, &mut c)?;
    validate::validate(&config, &mut c);
    c.finish()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match load_source(&SourceFile::new("c.toml", text)) {
            Ok(_) => Vec::new(),
            Err(d) => d.0.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn a_valid_file_has_no_problems() {
        let text = "[server]\nlisten = [\"127.0.0.1:1\"]\n[[upstream]]\nname = \"u\"\nbackends = [{ address = \"127.0.0.1:2\", weight = 3, tags = [\"a\"] }]\n[[site]]\nhosts = [\"a.test\", \"*.b.test\", \"*\"]\n[[site.route]]\npath_prefix = \"/x\"\nmethods = [\"GET\"]\nheaders = { x-a = \"1\", x-b = true }\nupstream = \"u\"\n";
        assert_eq!(problems(text), Vec::<String>::new());
    }

    #[test]
    fn references_names_and_ranges_are_checked() {
        let text = r#"[[upstream]]
name = "u"
backends = []
[[upstream]]
name = "u"
backends = [{ address = "127.0.0.1:1", weight = 0 }]
[[site]]
hosts = ["bad host", "a.test", "A.test"]
[[site.route]]
path_prefix = "x"
upstream = "u"
split = "nope"
[[plugin]]
name = "p"
sha256 = "abc"
timeout_ms = 0
"#;
        let found = problems(text);
        let expected = [
            "c.toml:3:12: upstream `u` has no backends",
            "c.toml:5:8: upstream `u` is already defined on line 2",
            "c.toml:6:49: backend weight must be at least 1",
            "c.toml:8:10: invalid host `bad host`",
            "c.toml:8:32: host `a.test` is already used on line 8",
            "c.toml:10:15: path_prefix must start with '/'",
            "c.toml:12:9: unknown split plugin `nope`",
            "c.toml:13:1: plugin `p` needs `path` (a component file) or `builtin`",
            "c.toml:15:10: sha256 must be 64 hexadecimal digits",
            "c.toml:16:14: timeout_ms must be between 1 and 60000",
        ];
        for e in expected {
            assert!(found.iter().any(|f| f.starts_with(e)), "missing {e:?} in {found:#?}");
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }

    #[test]
    fn lifecycle_and_admin_settings_are_checked() {
        let text = "[server]\nlisten = [\"127.0.0.1:8080\"]\ngrace_period_s = 7200\npid_file = \"\"\nwatch = true\n[admin]\nlisten = \"0.0.0.0:9901\"\n";
        let found = problems(text);
        let expected = ["c.toml:3:18: grace_period_s must be at most 3600", "c.toml:4:12: the path must not be empty"];
        // A public admin listener without a token is refused when the generation is built
        // (the token may come from the environment): tests/admin_api.rs.
        for e in expected {
            assert!(found.iter().any(|f| f.starts_with(e)), "missing {e:?} in {found:#?}");
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        let shared = "[server]\nlisten = [\"127.0.0.1:8080\"]\n[admin]\nlisten = \"127.0.0.1:8080\"\nport = 1\n";
        let found = problems(shared);
        assert!(found.iter().any(|f| f.contains("cannot share the proxy listener")), "{found:#?}");
        assert!(found.iter().any(|f| f.starts_with("c.toml:5:1: unknown key `port` in [admin]")), "{found:#?}");
    }

    #[test]
    fn tcp_routes_are_checked() {
        let text = "[server]\nlisten = [\"127.0.0.1:8080\"]\n[[tcp]]\nname = \"db\"\nlisten = \"127.0.0.1:8080\"\nupstream = \"nowhere\"\n[[tcp]]\nname = \"db\"\nlisten = \"localhost\"\nupstream = \"nowhere\"\nport = 1\n";
        let found = problems(text);
        let expected = [
            "c.toml:5:10: 127.0.0.1:8080 is already a listener of this configuration",
            "c.toml:6:12: unknown upstream `nowhere`",
            "c.toml:11:1: unknown key `port` in [[tcp]]",
        ];
        for e in expected {
            assert!(found.iter().any(|f| f.starts_with(e)), "missing {e:?} in {found:#?}");
        }
        let fixed = "[[tcp]]\nname = \"db\"\nlisten = \"localhost\"\nupstream = \"nowhere\"\n[[tcp]]\nname = \"db\"\nlisten = \"127.0.0.1:5432\"\nupstream = \"u\"\n[[upstream]]\nname = \"u\"\nbackends = [{ address = \"127.0.0.1:5433\" }]\n";
        let found = problems(fixed);
        for e in [
            "c.toml:3:10: tcp listen address `localhost` is not ip:port",
            "c.toml:4:12: unknown upstream `nowhere`",
            "c.toml:6:8: tcp route name `db` is used twice",
        ] {
            assert!(found.iter().any(|f| f.starts_with(e)), "missing {e:?} in {found:#?}");
        }
    }

    #[test]
    fn an_unreadable_upstream_is_not_reported_again_where_it_is_used() {
        let text = "[[upstream]]\nname = \"u\"\nbackends = \"oops\"\n[[site]]\nhosts = [\"*\"]\n[[site.route]]\nupstream = \"u\"\n";
        let found = problems(text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].starts_with("c.toml:3:12: [[upstream]]: invalid type"), "{found:#?}");
    }
}
