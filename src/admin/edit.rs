//! Changes the admin API makes, as edits of the configuration file's TOML document
//! (`toml_edit` keeps the operator's comments and layout around what changed). The file stays
//! the one source of truth: an edit is validated by building a generation from the edited text,
//! then written and swapped in by [`super::reload::Reloader::apply_edit`].
//!
//! Lists of tables may be written either way TOML allows (`[[site]]` blocks or an inline
//! `site = [{ … }]`); both are edited in place.
//!
//! Request bodies are JSON objects with the configuration's own keys (a site is a `[[site]]`
//! table, its routes under `route`), so anything the file can say the API can say.

use serde_json::{Map, Value as Json};
use toml_edit::{ArrayOfTables, DocumentMut, InlineTable, Item, Table, TableLike, Value};

/// Why an edit was not made: each maps to an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditError {
    /// 404: the domain, backend or route named does not exist.
    NotFound(String),
    /// 409: it exists already, or conflicts with what exists.
    Conflict(String),
    /// 422: the request itself is wrong.
    Invalid(String),
}

impl std::fmt::Display for EditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EditError::NotFound(m) | EditError::Conflict(m) | EditError::Invalid(m) => f.write_str(m),
        }
    }
}

type EditResult<T> = Result<T, EditError>;

fn invalid(message: impl Into<String>) -> EditError {
    EditError::Invalid(message.into())
}

/// A JSON value as a TOML value (objects become inline tables). TOML has no null.
pub fn json_to_value(value: &Json, at: &str) -> EditResult<Value> {
    Ok(match value {
        Json::Null => return Err(invalid(format!("{at}: null has no TOML form; leave the key out"))),
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(_)) if n.is_u64() => return Err(invalid(format!("{at}: {n} is too large"))),
            (None, Some(f)) => Value::from(f),
            (None, None) => return Err(invalid(format!("{at}: {n} is not a TOML number"))),
        },
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => {
            let mut array = toml_edit::Array::new();
            for (i, item) in items.iter().enumerate() {
                array.push(json_to_value(item, &format!("{at}[{i}]"))?);
            }
            Value::Array(array)
        }
        Json::Object(map) => Value::InlineTable(json_to_inline_table(map, at)?),
    })
}

fn json_to_inline_table(map: &Map<String, Json>, at: &str) -> EditResult<InlineTable> {
    let mut table = InlineTable::new();
    for (key, value) in map {
        table.insert(key, json_to_value(value, &format!("{at}.{key}"))?);
    }
    Ok(table)
}

/// A JSON object as a standard table; `array_table_keys` (like a site's `route`) become
/// arrays of tables (`[[site.route]]`) instead of inline arrays.
fn json_to_table(map: &Map<String, Json>, at: &str, array_table_keys: &[&str]) -> EditResult<Table> {
    let mut table = Table::new();
    for (key, value) in map {
        let place = format!("{at}.{key}");
        match value {
            Json::Array(items) if array_table_keys.contains(&key.as_str()) => {
                let mut tables = ArrayOfTables::new();
                for (i, item) in items.iter().enumerate() {
                    let Json::Object(inner) = item else {
                        return Err(invalid(format!("{place}[{i}] must be an object")));
                    };
                    tables.push(json_to_table(inner, &format!("{place}[{i}]"), &[])?);
                }
                table.insert(key, Item::ArrayOfTables(tables));
            }
            _ => {
                table.insert(key, Item::Value(json_to_value(value, &place)?));
            }
        }
    }
    Ok(table)
}

/// The tables of a list written as `[[x]]` blocks or as an inline array of tables.
fn tables_mut(item: &mut Item) -> Vec<&mut dyn TableLike> {
    match item {
        Item::ArrayOfTables(tables) => tables.iter_mut().map(|t| t as &mut dyn TableLike).collect(),
        Item::Value(Value::Array(array)) => {
            array.iter_mut().filter_map(|v| v.as_inline_table_mut().map(|t| t as &mut dyn TableLike)).collect()
        }
        _ => Vec::new(),
    }
}

/// Appends a table (from a JSON object) to a list in the list's own style; an absent list
/// becomes `[[key]]` blocks, or an inline array when `inline`.
fn push_table(
    parent: &mut dyn TableLike,
    key: &str,
    map: &Map<String, Json>,
    array_table_keys: &[&str],
    inline: bool,
) -> EditResult<()> {
    let item = parent.entry(key).or_insert(if inline {
        Item::Value(Value::Array(toml_edit::Array::new()))
    } else {
        Item::ArrayOfTables(ArrayOfTables::new())
    });
    match item {
        Item::ArrayOfTables(tables) => tables.push(json_to_table(map, key, array_table_keys)?),
        Item::Value(Value::Array(array)) => {
            let mut table = json_to_inline_table(map, key)?;
            table.fmt();
            array.push(table);
            array.fmt();
        }
        _ => return Err(EditError::Conflict(format!("`{key}` in the configuration is not a list of tables"))),
    }
    Ok(())
}

fn remove_at(item: &mut Item, index: usize) {
    match item {
        Item::ArrayOfTables(tables) => {
            tables.remove(index);
        }
        Item::Value(Value::Array(array)) => {
            array.remove(index);
            array.fmt();
        }
        _ => {}
    }
}

fn string_at<'a>(table: &'a dyn TableLike, key: &str) -> Option<&'a str> {
    table.get(key)?.as_str()
}

/// A host name as sites compare them.
pub fn normalize_host(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn site_hosts(site: &dyn TableLike) -> Vec<String> {
    site.get("hosts")
        .and_then(Item::as_array)
        .map(|a| a.iter().filter_map(|h| h.as_str()).map(normalize_host).collect())
        .unwrap_or_default()
}

/// The index of the `[[site]]` that lists `host`.
fn find_site(doc: &mut DocumentMut, host: &str) -> Option<usize> {
    let host = normalize_host(host);
    let sites = doc.as_table_mut().get_mut("site")?;
    tables_mut(sites).iter().position(|s| site_hosts(&**s).contains(&host))
}

fn site_object(body: &Json) -> EditResult<&Map<String, Json>> {
    body.as_object().ok_or_else(|| invalid("the body must be a JSON object: a [[site]] table (hosts, route, …)"))
}

fn body_hosts(site: &Map<String, Json>) -> EditResult<Vec<String>> {
    match site.get("hosts") {
        Some(Json::Array(hosts)) => hosts
            .iter()
            .map(|h| h.as_str().map(normalize_host).ok_or_else(|| invalid("hosts must be a list of strings")))
            .collect(),
        Some(_) => Err(invalid("hosts must be a list of strings")),
        None => Ok(Vec::new()),
    }
}

/// Refuses hosts that another site (not `except`) already serves.
fn check_hosts_free(doc: &mut DocumentMut, hosts: &[String], except: Option<usize>) -> EditResult<()> {
    let Some(sites) = doc.as_table_mut().get_mut("site") else { return Ok(()) };
    for (i, site) in tables_mut(sites).iter().enumerate() {
        if Some(i) == except {
            continue;
        }
        if let Some(taken) = hosts.iter().find(|h| site_hosts(&**site).contains(h)) {
            return Err(EditError::Conflict(format!("{taken} is already served by another site")));
        }
    }
    Ok(())
}

/// Adds a site (`POST /domains`): `body` is a `[[site]]` table with at least one host, none of
/// them served already.
pub fn create_site(doc: &mut DocumentMut, body: &Json) -> EditResult<Vec<String>> {
    let site = site_object(body)?;
    let hosts = body_hosts(site)?;
    if hosts.is_empty() {
        return Err(invalid("a new site needs hosts, e.g. {\"hosts\": [\"shop.example\"], \"route\": [...]}"));
    }
    check_hosts_free(doc, &hosts, None)?;
    push_table(doc.as_table_mut(), "site", site, &["route"], false)?;
    Ok(hosts)
}

/// Replaces the site serving `host` with `body` (`PUT /domains/{host}`), or adds it; `true` when
/// added. Without `hosts`, the site gets just `host`; with them, they must include it.
pub fn put_site(doc: &mut DocumentMut, host: &str, body: &Json) -> EditResult<bool> {
    let mut site = site_object(body)?.clone();
    let host = normalize_host(host);
    let mut hosts = body_hosts(&site)?;
    if hosts.is_empty() {
        site.insert("hosts".into(), Json::Array(vec![Json::String(host.clone())]));
        hosts.push(host.clone());
    } else if !hosts.contains(&host) {
        return Err(invalid(format!("the site's hosts must include {host}, the domain being replaced")));
    }
    let existing = find_site(doc, &host);
    check_hosts_free(doc, &hosts, existing)?;
    match existing {
        None => {
            push_table(doc.as_table_mut(), "site", &site, &["route"], false)?;
            Ok(true)
        }
        Some(index) => {
            let Some(item) = doc.as_table_mut().get_mut("site") else { return Ok(false) };
            match item {
                Item::ArrayOfTables(tables) => {
                    if let Some(table) = tables.get_mut(index) {
                        // Keep the block where it was (and the comments above it).
                        let decor = table.decor().clone();
                        *table = json_to_table(&site, "site", &["route"])?;
                        *table.decor_mut() = decor;
                    }
                }
                Item::Value(Value::Array(array)) => {
                    let mut table = json_to_inline_table(&site, "site")?;
                    table.fmt();
                    array.replace(index, table);
                }
                _ => {}
            }
            Ok(false)
        }
    }
}

/// What `DELETE /domains/{host}` removed.
#[derive(Debug, PartialEq, Eq)]
pub enum Deleted {
    /// The site had only this host, so the whole site went.
    Site,
    /// The host was removed from a site that keeps its other hosts.
    Host,
}

/// Stops serving `host`: removes it from its site, or the site when it was the site's only host.
pub fn delete_host(doc: &mut DocumentMut, host: &str) -> EditResult<Deleted> {
    let host = normalize_host(host);
    let index = find_site(doc, &host).ok_or_else(|| EditError::NotFound(format!("no site serves {host}")))?;
    let Some(sites) = doc.as_table_mut().get_mut("site") else { return Err(EditError::NotFound(host)) };
    let mut tables = tables_mut(sites);
    let site = &mut tables[index];
    if site_hosts(&**site).len() > 1 {
        if let Some(array) = site.get_mut("hosts").and_then(Item::as_array_mut) {
            array.retain(|h| h.as_str().map(normalize_host).as_deref() != Some(host.as_str()));
            array.fmt();
        }
        return Ok(Deleted::Host);
    }
    drop(tables);
    remove_at(sites, index);
    Ok(Deleted::Site)
}

/// `POST /domains/{host}/switch`: `{"tag": "b"}` sends all of the site's new assignments to the
/// variant named or tagged `b` (weight 100, the others 0), adding the variant — or, on a route
/// without a split, a split with just that tag — where the route's upstream has backends tagged
/// `b`; `{"weights": {"a": 90, "b": 10}}` sets the named variants' weights. `"route"` limits it
/// to one route (by name).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchRequest {
    pub tag: Option<String>,
    pub weights: Option<std::collections::BTreeMap<String, u32>>,
    pub route: Option<String>,
}

/// Which places a switch changed (`route:<name>` or `plugin:<name>` for a shared split).
pub fn switch(doc: &mut DocumentMut, host: &str, request: &SwitchRequest) -> EditResult<Vec<String>> {
    if request.tag.is_some() == request.weights.is_some() {
        return Err(invalid("give either \"tag\" (switch everything to it) or \"weights\" (per variant)"));
    }
    let host = normalize_host(host);
    let index = find_site(doc, &host).ok_or_else(|| EditError::NotFound(format!("no site serves {host}")))?;
    let tagged = upstream_tags(doc);
    let mut shared_plugins: Vec<(String, String)> = Vec::new();
    let mut changed = Vec::new();
    let mut skipped = Vec::new();
    {
        let Some(sites) = doc.as_table_mut().get_mut("site") else { return Err(EditError::NotFound(host)) };
        let mut tables = tables_mut(sites);
        let site = &mut tables[index];
        let site_name = string_at(&**site, "name")
            .map(str::to_string)
            .unwrap_or_else(|| site_hosts(&**site).first().cloned().unwrap_or_default());
        let Some(routes) = site.get_mut("route") else {
            return Err(EditError::NotFound(format!("site {site_name} has no routes")));
        };
        for (i, route) in tables_mut(routes).into_iter().enumerate() {
            let name = string_at(&*route, "name").map_or_else(|| format!("{site_name}/{i}"), str::to_string);
            if request.route.as_ref().is_some_and(|r| *r != name) {
                continue;
            }
            let upstream = string_at(&*route, "upstream").unwrap_or_default().to_string();
            match route.get_mut("split") {
                Some(item) if item.as_str().is_some() => {
                    let plugin = item.as_str().unwrap_or_default().to_string();
                    if !shared_plugins.iter().any(|(p, _)| *p == plugin) {
                        shared_plugins.push((plugin, upstream));
                    }
                }
                Some(item) => match item.as_table_like_mut() {
                    Some(split) => match edit_variants(split, request, tagged.get(&upstream)) {
                        Ok(()) => changed.push(format!("route:{name}")),
                        Err(why) => skipped.push(format!("route {name}: {why}")),
                    },
                    None => skipped.push(format!("route {name}: its split is neither a name nor a table")),
                },
                None => match &request.tag {
                    Some(tag) if tagged.get(&upstream).is_some_and(|tags| tags.contains(tag)) => {
                        let mut split = InlineTable::new();
                        split.insert("sticky", "none".into());
                        let mut variant = InlineTable::new();
                        variant.insert("tag", tag.as_str().into());
                        let mut variants = toml_edit::Array::new();
                        variants.push(variant);
                        split.insert("variants", Value::Array(variants));
                        route.insert("split", Item::Value(Value::InlineTable(split)));
                        changed.push(format!("route:{name}"));
                    }
                    Some(tag) => {
                        skipped.push(format!("route {name}: upstream `{upstream}` has no backend tagged {tag}"))
                    }
                    None => skipped.push(format!("route {name} has no split")),
                },
            }
        }
    }
    for (plugin, upstream) in shared_plugins {
        let Some(plugins) = doc.as_table_mut().get_mut("plugin") else { continue };
        let Some(table) = tables_mut(plugins).into_iter().find(|p| string_at(&**p, "name") == Some(plugin.as_str()))
        else {
            skipped.push(format!("split plugin {plugin} is not a [[plugin]] of this file"));
            continue;
        };
        let Some(config) = table.get_mut("config").and_then(Item::as_table_like_mut) else {
            skipped.push(format!("split plugin {plugin} has no config table"));
            continue;
        };
        match edit_variants(config, request, tagged.get(&upstream)) {
            Ok(()) => changed.push(format!("plugin:{plugin}")),
            Err(why) => skipped.push(format!("split plugin {plugin}: {why}")),
        }
    }
    if changed.is_empty() {
        let what = match &request.route {
            Some(route) if skipped.is_empty() => format!("site {host} has no route named {route}"),
            _ => format!("nothing to switch on {host}: {}", skipped.join("; ")),
        };
        return Err(EditError::Invalid(what));
    }
    Ok(changed)
}

/// Each upstream's backend tags, read from the document.
fn upstream_tags(doc: &mut DocumentMut) -> std::collections::HashMap<String, Vec<String>> {
    let mut out = std::collections::HashMap::new();
    let Some(upstreams) = doc.as_table_mut().get_mut("upstream") else { return out };
    for u in tables_mut(upstreams) {
        let Some(name) = string_at(&*u, "name").map(str::to_string) else { continue };
        let mut tags = Vec::new();
        if let Some(backends) = u.get_mut("backends") {
            for b in tables_mut(backends) {
                if let Some(list) = b.get("tags").and_then(Item::as_array) {
                    tags.extend(list.iter().filter_map(|t| t.as_str().map(str::to_string)));
                }
            }
        }
        out.insert(name, tags);
    }
    out
}

/// Applies a switch to a split table's `variants`. A variant answers to its `name`, else its
/// `tag` or `upstream`.
fn edit_variants(split: &mut dyn TableLike, request: &SwitchRequest, tags: Option<&Vec<String>>) -> Result<(), String> {
    let Some(variants) = split.get_mut("variants") else { return Err("its split has no variants".into()) };
    let names: Vec<String> = tables_mut(variants)
        .iter()
        .map(|v| {
            string_at(&**v, "name")
                .or_else(|| string_at(&**v, "tag"))
                .or_else(|| string_at(&**v, "upstream"))
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let set_weight = |v: &mut dyn TableLike, w: i64| {
        v.insert("weight", Item::Value(Value::from(w)));
    };
    match (&request.tag, &request.weights) {
        (Some(tag), _) => {
            let chosen = names.iter().position(|n| n == tag);
            if chosen.is_none() {
                if !tags.is_some_and(|t| t.contains(tag)) {
                    return Err(format!("no variant {tag}, and no backend tagged {tag}"));
                }
                let mut variant = Map::new();
                variant.insert("tag".into(), Json::String(tag.clone()));
                variant.insert("weight".into(), Json::from(100));
                let inline = matches!(variants, Item::Value(_));
                push_table(split, "variants", &variant, &[], inline).map_err(|e| e.to_string())?;
            }
            // A variant added above is the last one.
            let target = chosen.unwrap_or(names.len());
            let Some(variants) = split.get_mut("variants") else { return Ok(()) };
            for (i, v) in tables_mut(variants).into_iter().enumerate() {
                set_weight(v, if i == target { 100 } else { 0 });
            }
        }
        (None, Some(weights)) => {
            if let Some(unknown) = weights.keys().find(|k| !names.contains(k)) {
                return Err(format!("no variant {unknown} (variants: {})", names.join(", ")));
            }
            for (v, name) in tables_mut(variants).into_iter().zip(&names) {
                if let Some(w) = weights.get(name) {
                    set_weight(v, i64::from(*w));
                }
            }
        }
        (None, None) => {}
    }
    Ok(())
}

/// A backend's id in the API: `<upstream>@<address>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendId {
    pub upstream: String,
    pub address: String,
}

impl BackendId {
    /// Reads `<upstream>@<address>`.
    pub fn parse(id: &str) -> EditResult<BackendId> {
        match id.rsplit_once('@') {
            Some((upstream, address)) if !upstream.is_empty() && !address.is_empty() => {
                Ok(BackendId { upstream: upstream.to_string(), address: address.to_string() })
            }
            _ => Err(EditError::NotFound(format!("`{id}` is not a backend id (<upstream>@<address>)"))),
        }
    }
}

impl std::fmt::Display for BackendId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.upstream, self.address)
    }
}

/// The keys a backend body may carry.
const BACKEND_KEYS: [&str; 4] = ["address", "weight", "tags", "drain"];

fn backend_body(body: &Json, extra: &[&str]) -> EditResult<Map<String, Json>> {
    let map = body.as_object().ok_or_else(|| invalid("the body must be a JSON object"))?;
    if let Some(key) = map.keys().find(|k| !BACKEND_KEYS.contains(&k.as_str()) && !extra.contains(&k.as_str())) {
        return Err(invalid(format!("unknown key `{key}` (a backend has {})", BACKEND_KEYS.join(", "))));
    }
    Ok(map.clone())
}

/// Finds the upstream named `name`.
fn upstream_mut<'a>(doc: &'a mut DocumentMut, name: &str) -> Option<&'a mut dyn TableLike> {
    let upstreams = doc.as_table_mut().get_mut("upstream")?;
    tables_mut(upstreams).into_iter().find(|u| string_at(&**u, "name") == Some(name))
}

/// The index of a backend in its upstream's list.
fn backend_index(upstream: &mut dyn TableLike, address: &str) -> Option<usize> {
    let backends = upstream.get_mut("backends")?;
    tables_mut(backends).iter().position(|b| string_at(&**b, "address") == Some(address))
}

/// Adds a backend (`POST /backends`): `{"upstream", "address", "weight"?, "tags"?, "drain"?}`.
/// An upstream that does not exist yet is created with it (round-robin, default policies).
pub fn add_backend(doc: &mut DocumentMut, body: &Json) -> EditResult<BackendId> {
    let mut backend = backend_body(body, &["upstream"])?;
    let upstream = match backend.remove("upstream") {
        Some(Json::String(u)) if !u.is_empty() => u,
        _ => return Err(invalid("`upstream` (the upstream's name) is required")),
    };
    let address = match backend.get("address") {
        Some(Json::String(a)) if !a.is_empty() => a.clone(),
        _ => return Err(invalid("`address` (host:port) is required")),
    };
    let id = BackendId { upstream: upstream.clone(), address };
    match upstream_mut(doc, &upstream) {
        Some(table) => {
            if backend_index(table, &id.address).is_some() {
                return Err(EditError::Conflict(format!("backend {id} exists already")));
            }
            push_table(table, "backends", &backend, &[], true)?;
        }
        None => {
            let mut new = Map::new();
            new.insert("name".into(), Json::String(upstream));
            new.insert("backends".into(), Json::Array(vec![Json::Object(backend)]));
            push_table(doc.as_table_mut(), "upstream", &new, &[], false)?;
        }
    }
    Ok(id)
}

/// Changes a backend's keys (`PUT /backends/{id}`); the keys not given keep their values.
/// Returns its id, which changes with its address.
pub fn update_backend(doc: &mut DocumentMut, id: &BackendId, body: &Json) -> EditResult<BackendId> {
    let changes = backend_body(body, &[])?;
    let not_found = || EditError::NotFound(format!("no backend {id}"));
    let upstream = upstream_mut(doc, &id.upstream).ok_or_else(not_found)?;
    let index = backend_index(upstream, &id.address).ok_or_else(not_found)?;
    let mut new_id = id.clone();
    if let Some(address) = changes.get("address") {
        let address = address.as_str().filter(|a| !a.is_empty()).ok_or_else(|| invalid("address must be host:port"))?;
        if address != id.address && backend_index(upstream, address).is_some() {
            return Err(EditError::Conflict(format!("backend {}@{address} exists already", id.upstream)));
        }
        new_id.address = address.to_string();
    }
    let Some(backends) = upstream.get_mut("backends") else { return Err(not_found()) };
    let mut tables = tables_mut(backends);
    let backend = &mut tables[index];
    for (key, value) in &changes {
        backend.insert(key, Item::Value(json_to_value(value, key)?));
    }
    Ok(new_id)
}

/// Removes a backend (`DELETE /backends/{id}`).
pub fn delete_backend(doc: &mut DocumentMut, id: &BackendId) -> EditResult<()> {
    let not_found = || EditError::NotFound(format!("no backend {id}"));
    let upstream = upstream_mut(doc, &id.upstream).ok_or_else(not_found)?;
    let index = backend_index(upstream, &id.address).ok_or_else(not_found)?;
    if let Some(backends) = upstream.get_mut("backends") {
        remove_at(backends, index);
    }
    Ok(())
}

/// Sets or clears a backend's `drain` (`POST /backends/{id}/drain`).
pub fn set_drain(doc: &mut DocumentMut, id: &BackendId, drain: bool) -> EditResult<()> {
    update_backend(doc, id, &serde_json::json!({ "drain": drain })).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FILE: &str = r#"# the shop
[[upstream]]
name = "app"   # two colours
backends = [{ address = "127.0.0.1:1", tags = ["a"] }, { address = "127.0.0.1:2", tags = ["b"] }]

[[site]]
hosts = ["shop.test", "www.shop.test"]
[[site.route]]
upstream = "app"
split = { variants = [{ tag = "a", weight = 90 }, { tag = "b", weight = 10 }] }
[[site.route]]
name = "plain"
path_prefix = "/static"
upstream = "app"
"#;

    fn doc() -> DocumentMut {
        FILE.parse().unwrap()
    }

    fn parsed(doc: &DocumentMut) -> toml::Table {
        toml::from_str(&doc.to_string()).unwrap()
    }

    #[test]
    fn a_site_is_added_as_blocks_and_comments_stay() {
        let mut d = doc();
        let body = json!({"hosts": ["new.test"], "route": [{"upstream": "app", "path_prefix": "/x"}]});
        assert_eq!(create_site(&mut d, &body).unwrap(), vec!["new.test"]);
        let text = d.to_string();
        assert!(text.contains("# the shop") && text.contains("# two colours"), "{text}");
        assert!(
            text.contains(
                "[[site]]\nhosts = [\"new.test\"]\n\n[[site.route]]\npath_prefix = \"/x\"\nupstream = \"app\""
            ),
            "{text}"
        );
        let t = parsed(&d);
        assert_eq!(t["site"].as_array().unwrap().len(), 2);
        assert_eq!(
            create_site(&mut d, &json!({"hosts": ["WWW.shop.test."]})),
            Err(EditError::Conflict("www.shop.test is already served by another site".into()))
        );
        assert!(matches!(create_site(&mut d, &json!({"route": []})), Err(EditError::Invalid(_))));
        assert!(matches!(create_site(&mut d, &json!({"hosts": ["n.test"], "x": null})), Err(EditError::Invalid(_))));
    }

    #[test]
    fn put_replaces_or_adds_and_delete_removes_a_host_then_the_site() {
        let mut d = doc();
        assert!(
            !put_site(&mut d, "shop.test", &json!({"hosts": ["shop.test"], "route": [{"upstream": "app"}]})).unwrap()
        );
        let t = parsed(&d);
        assert_eq!(t["site"][0]["hosts"].as_array().unwrap().len(), 1);
        assert_eq!(t["site"][0]["route"].as_array().unwrap().len(), 1);
        assert!(put_site(&mut d, "other.test", &json!({"route": [{"upstream": "app"}]})).unwrap());
        assert_eq!(parsed(&d)["site"][1]["hosts"][0].as_str(), Some("other.test"));
        assert!(matches!(put_site(&mut d, "x.test", &json!({"hosts": ["y.test"]})), Err(EditError::Invalid(_))));

        let mut d = doc();
        assert_eq!(delete_host(&mut d, "www.shop.test").unwrap(), Deleted::Host);
        assert_eq!(parsed(&d)["site"][0]["hosts"].as_array().unwrap().len(), 1);
        assert_eq!(delete_host(&mut d, "shop.test").unwrap(), Deleted::Site);
        assert!(parsed(&d).get("site").is_none_or(|s| s.as_array().unwrap().is_empty()));
        assert!(matches!(delete_host(&mut d, "shop.test"), Err(EditError::NotFound(_))));
    }

    #[test]
    fn a_tag_switch_moves_every_weight_and_adds_missing_splits() {
        let mut d = doc();
        let changed = switch(&mut d, "shop.test", &SwitchRequest { tag: Some("b".into()), ..Default::default() });
        assert_eq!(changed.unwrap(), vec!["route:shop.test/0", "route:plain"]);
        let t = parsed(&d);
        let variants = t["site"][0]["route"][0]["split"]["variants"].as_array().unwrap();
        assert_eq!(variants[0]["weight"].as_integer(), Some(0));
        assert_eq!(variants[1]["weight"].as_integer(), Some(100));
        let added = &t["site"][0]["route"][1]["split"];
        assert_eq!(added["variants"][0]["tag"].as_str(), Some("b"));
        assert_eq!(added["sticky"].as_str(), Some("none"));

        let weights = [("a".to_string(), 30), ("b".to_string(), 70)].into();
        let request = SwitchRequest { weights: Some(weights), route: Some("shop.test/0".into()), ..Default::default() };
        assert_eq!(switch(&mut d, "shop.test", &request).unwrap(), vec!["route:shop.test/0"]);
        let t = parsed(&d);
        assert_eq!(t["site"][0]["route"][0]["split"]["variants"][0]["weight"].as_integer(), Some(30));

        let error = switch(&mut d, "shop.test", &SwitchRequest { tag: Some("c".into()), ..Default::default() });
        assert!(matches!(&error, Err(EditError::Invalid(m)) if m.contains("no backend tagged c")), "{error:?}");
        let both = SwitchRequest { tag: Some("a".into()), weights: Some(Default::default()), route: None };
        assert!(matches!(switch(&mut d, "shop.test", &both), Err(EditError::Invalid(_))));
        assert!(matches!(switch(&mut d, "none.test", &SwitchRequest::default()), Err(EditError::Invalid(_))));
    }

    #[test]
    fn switching_to_a_tag_without_a_variant_adds_it() {
        let mut d: DocumentMut = FILE.replace("tags = [\"b\"]", "tags = [\"b\", \"c\"]").parse().unwrap();
        let request = SwitchRequest { tag: Some("c".into()), route: Some("shop.test/0".into()), ..Default::default() };
        switch(&mut d, "shop.test", &request).unwrap();
        let t = parsed(&d);
        let variants = t["site"][0]["route"][0]["split"]["variants"].as_array().unwrap();
        let weights: Vec<_> = variants.iter().map(|v| v["weight"].as_integer().unwrap()).collect();
        assert_eq!(weights, vec![0, 0, 100]);
        assert_eq!(variants[2]["tag"].as_str(), Some("c"));
    }

    #[test]
    fn backends_are_added_changed_drained_and_deleted_by_id() {
        let mut d = doc();
        let id = add_backend(&mut d, &json!({"upstream": "app", "address": "127.0.0.1:3", "tags": ["b"]})).unwrap();
        assert_eq!(id.to_string(), "app@127.0.0.1:3");
        assert_eq!(BackendId::parse("app@127.0.0.1:3").unwrap(), id);
        assert!(matches!(
            add_backend(&mut d, &json!({"upstream": "app", "address": "127.0.0.1:3"})),
            Err(EditError::Conflict(_))
        ));
        assert!(matches!(add_backend(&mut d, &json!({"upstream": "app", "port": 1})), Err(EditError::Invalid(_))));
        set_drain(&mut d, &id, true).unwrap();
        let moved = update_backend(&mut d, &id, &json!({"address": "127.0.0.1:4", "weight": 3})).unwrap();
        assert_eq!(moved.address, "127.0.0.1:4");
        let t = parsed(&d);
        let third = &t["upstream"][0]["backends"][2];
        assert_eq!((third["drain"].as_bool(), third["weight"].as_integer()), (Some(true), Some(3)));
        assert!(d.to_string().contains("name = \"app\"   # two colours"));
        delete_backend(&mut d, &moved).unwrap();
        assert_eq!(parsed(&d)["upstream"][0]["backends"].as_array().unwrap().len(), 2);
        assert!(matches!(delete_backend(&mut d, &moved), Err(EditError::NotFound(_))));

        let new = add_backend(&mut d, &json!({"upstream": "fresh", "address": "127.0.0.1:9", "weight": 2})).unwrap();
        let t = parsed(&d);
        assert_eq!(t["upstream"][1]["name"].as_str(), Some("fresh"));
        assert_eq!(t["upstream"][1]["backends"][0]["weight"].as_integer(), Some(2));
        assert_eq!(new.upstream, "fresh");
    }

    #[test]
    fn inline_lists_of_tables_are_edited_in_their_own_style() {
        let mut d: DocumentMut =
            "upstream = [{ name = \"u\", backends = [{ address = \"127.0.0.1:1\" }] }]\n".parse().unwrap();
        add_backend(&mut d, &json!({"upstream": "u", "address": "127.0.0.1:2"})).unwrap();
        let t = parsed(&d);
        assert_eq!(t["upstream"][0]["backends"].as_array().unwrap().len(), 2);
        assert!(d.to_string().starts_with("upstream = [{"), "{d}");
    }
}
