//! Reads a TOML file into [`ConfigFile`], collecting every problem instead of stopping at the
//! first: syntax errors (the parser recovers), then each section and each array element
//! deserialized on its own, with unknown keys reported rather than fatal.

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::diagnostics::{Collector, Diagnostics, SourceFile};
use super::model::{
    AdminSection, ConfigFile, LogSection, PluginSection, RouteSection, ServerSection, SiteSection, TcpSection,
    TlsSection, UpstreamSection,
};

/// One step of a path into a TOML value.
enum Step {
    Key(String),
    Index(usize),
}

fn steps(path: &serde_ignored::Path<'_>, out: &mut Vec<Step>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            steps(parent, out);
            out.push(Step::Index(*index));
        }
        Path::Map { parent, key } => {
            steps(parent, out);
            out.push(Step::Key(key.clone()));
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => steps(parent, out),
    }
}

/// The span of the key (or element) a path ends at, as close as the value tree allows.
fn locate(value: &Spanned<DeValue<'_>>, path: &[Step]) -> std::ops::Range<usize> {
    let Some((first, rest)) = path.split_first() else {
        return value.span();
    };
    match (value.get_ref(), first) {
        (DeValue::Table(table), Step::Key(key)) => match table.get_key_value(key.as_str()) {
            Some((k, _)) if rest.is_empty() => k.span(),
            Some((_, v)) => locate(v, rest),
            None => value.span(),
        },
        (DeValue::Array(array), Step::Index(i)) => match array.get(*i) {
            Some(v) => locate(v, rest),
            None => value.span(),
        },
        _ => value.span(),
    }
}

fn path_text(path: &[Step]) -> String {
    path.iter()
        .map(|s| match s {
            Step::Key(k) => k.clone(),
            Step::Index(i) => i.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Deserializes one part of the file on its own; reports its unknown keys and its first type
/// error, and returns `None` if it could not be read.
fn read_part<T: DeserializeOwned>(value: &Spanned<DeValue<'_>>, what: &str, c: &mut Collector<'_>) -> Option<T> {
    let mut unknown: Vec<Vec<Step>> = Vec::new();
    let result: Result<T, toml::de::Error> =
        serde_ignored::deserialize(ValueDeserializer::from(value.clone()), |path| {
            let mut s = Vec::new();
            steps(&path, &mut s);
            unknown.push(s);
        });
    for path in &unknown {
        c.error(locate(value, path), format!("unknown key `{}` in {what}", path_text(path)));
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            let span = e.span().unwrap_or_else(|| value.span());
            c.error(span, format!("{what}: {}", e.message().trim_end()));
            None
        }
    }
}

fn elements<'a, 'i>(value: &'a Spanned<DeValue<'i>>, what: &str, c: &mut Collector<'_>) -> &'a [Spanned<DeValue<'i>>] {
    match value.get_ref() {
        DeValue::Array(array) => array,
        _ => {
            c.error(value.span(), format!("`{what}` must be an array of tables ([[{what}]])"));
            &[]
        }
    }
}

/// The `name` of a table that failed to deserialize, so references to it are not reported as
/// unknown on top of its own problem.
fn name_of(element: &Spanned<DeValue<'_>>) -> Option<String> {
    let DeValue::Table(table) = element.get_ref() else {
        return None;
    };
    match table.get("name")?.get_ref() {
        DeValue::String(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Parses `source` into a [`ConfigFile`]. Syntax errors end the parse; problems inside
/// sections are recorded in `c` and the rest of the file is still read, so validation can
/// report its own findings alongside.
pub fn parse(source: &SourceFile, c: &mut Collector<'_>) -> Result<ConfigFile, Diagnostics> {
    let (document, syntax_errors) = DeTable::parse_recoverable(&source.text);
    if !syntax_errors.is_empty() {
        for e in syntax_errors {
            c.error(e.span().unwrap_or(0..0), e.message().trim_end().to_string());
        }
        let mut syntax = Collector::new(source);
        std::mem::swap(&mut syntax.found, &mut c.found);
        return Err(syntax.finish().err().unwrap_or_default());
    }
    let mut config = ConfigFile::default();
    for (key, value) in document.get_ref().iter() {
        match key.get_ref().as_ref() {
            "server" => {
                if let Some(server) = read_part::<ServerSection>(value, "[server]", c) {
                    config.server = server;
                }
            }
            "admin" => {
                if let Some(admin) = read_part::<AdminSection>(value, "[admin]", c) {
                    config.admin = admin;
                }
            }
            "upstream" => {
                for element in elements(value, "upstream", c) {
                    match read_part::<UpstreamSection>(element, "[[upstream]]", c) {
                        Some(u) => config.upstreams.push(Spanned::new(element.span(), u)),
                        None => config.unreadable_names.extend(name_of(element)),
                    }
                }
            }
            "site" => {
                for element in elements(value, "site", c) {
                    if let Some(site) = read_site(element, c) {
                        config.sites.push(Spanned::new(element.span(), site));
                    }
                }
            }
            "plugin" => {
                for element in elements(value, "plugin", c) {
                    match read_part::<PluginSection>(element, "[[plugin]]", c) {
                        Some(p) => config.plugins.push(Spanned::new(element.span(), p)),
                        None => config.unreadable_names.extend(name_of(element)),
                    }
                }
            }
            "log" => {
                if let Some(log) = read_part::<LogSection>(value, "[log]", c) {
                    config.log = log;
                }
            }
            "tls" => {
                if let Some(tls) = read_part::<TlsSection>(value, "[tls]", c) {
                    config.tls = tls;
                }
            }
            "tcp" => {
                for element in elements(value, "tcp", c) {
                    if let Some(t) = read_part::<TcpSection>(element, "[[tcp]]", c) {
                        config.tcp_routes.push(Spanned::new(element.span(), t));
                    }
                }
            }
            other => c.error(
                key.span(),
                format!("unknown section `{other}` (expected server, admin, tls, log, upstream, site, plugin or tcp)"),
            ),
        }
    }
    Ok(config)
}

/// A `[[site]]` element: its routes are read one by one so each reports its own problems.
fn read_site(element: &Spanned<DeValue<'_>>, c: &mut Collector<'_>) -> Option<SiteSection> {
    let DeValue::Table(table) = element.get_ref() else {
        c.error(element.span(), "[[site]] must be a table");
        return None;
    };
    let mut without_routes = table.clone();
    let routes_value = without_routes.remove("route");
    let site_value = Spanned::new(element.span(), DeValue::Table(without_routes));
    let site = read_part::<SiteSection>(&site_value, "[[site]]", c);
    let mut routes = Vec::new();
    if let Some(routes_value) = &routes_value {
        for route in elements(routes_value, "site.route", c) {
            if let Some(r) = read_part::<RouteSection>(route, "[[site.route]]", c) {
                routes.push(Spanned::new(route.span(), r));
            }
        }
    }
    site.map(|mut s| {
        s.routes = routes;
        s
    })
}
