//! The `request` and `response` header edits (`rename`, `remove`, `set`, `add`), validated at
//! configure time and applied in that fixed order.
//!
//! The order lets one table say "move `a` to `b`, drop `c`, then pin `d`" without the result
//! depending on how the keys happen to be listed. Names are stored lowercased; the host matches
//! them case-insensitively anyway.

use crate::target::Target;

/// One side's edits, in the order they run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct HeaderEdits {
    /// `(from, to)`: every value of `from` moves to `to`, replacing what `to` had. Sources and
    /// targets are disjoint (configure rejects chains), so the order among renames is irrelevant.
    pub(crate) rename: Vec<(String, String)>,
    /// Headers removed with all their values.
    pub(crate) remove: Vec<String>,
    /// Headers whose values are replaced by one value.
    pub(crate) set: Vec<(String, String)>,
    /// Values appended to a header, in order, keeping what is already there.
    pub(crate) add: Vec<(String, String)>,
}

impl HeaderEdits {
    /// Applies the edits to `target`: rename, remove, set, add.
    pub(crate) fn apply(&self, target: &Target<'_>) {
        for (from, to) in &self.rename {
            rename(target, from, to);
        }
        for name in &self.remove {
            target.remove(name);
        }
        for (name, value) in &self.set {
            target.set(name, value);
        }
        for (name, value) in &self.add {
            target.append(name, value);
        }
    }
}

/// Moves every value of `from` to `to`; nothing happens when `from` is absent, so a rename never
/// erases a `to` the upstream or client sent on its own.
fn rename(target: &Target<'_>, from: &str, to: &str) {
    let values = target.all(from);
    let Some((first, rest)) = values.split_first() else {
        return;
    };
    target.remove(from);
    target.set(to, first);
    for value in rest {
        target.append(to, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testkit::{TestRequest, TestResponse, reset_test_host};

    fn edits() -> HeaderEdits {
        HeaderEdits {
            rename: vec![("x-old".into(), "x-new".into())],
            remove: vec!["x-drop".into()],
            set: vec![("x-pinned".into(), "yes".into())],
            add: vec![("x-list".into(), "a".into()), ("x-list".into(), "b".into())],
        }
    }

    #[test]
    fn request_edits_run_in_order_and_keep_every_renamed_value() {
        reset_test_host();
        let req = TestRequest::get("/")
            .with_header("X-Old", "1")
            .with_header("x-old", "2")
            .with_header("x-new", "stale")
            .with_header("X-Drop", "gone")
            .with_header("x-pinned", "no")
            .with_header("x-list", "first");
        edits().apply(&Target::Request(&req));
        let headers = req.headers();
        let values = |name: &str| -> Vec<&str> {
            headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
        };
        assert_eq!(values("x-old"), Vec::<&str>::new());
        assert_eq!(values("x-new"), vec!["1", "2"]);
        assert_eq!(values("x-drop"), Vec::<&str>::new());
        assert_eq!(values("x-pinned"), vec!["yes"]);
        assert_eq!(values("x-list"), vec!["first", "a", "b"]);
        assert!(reset_test_host().logs.is_empty());
    }

    #[test]
    fn renaming_an_absent_header_leaves_the_target_alone() {
        reset_test_host();
        let resp = TestResponse::new(200).with_header("x-new", "own");
        edits().apply(&Target::Response(&resp));
        assert!(resp.headers().contains(&("x-new".to_string(), "own".to_string())));
    }
}
