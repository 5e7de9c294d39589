//! Remembered answers of deterministic plugins.
//!
//! A plugin that declares itself deterministic (the SDK's `declare_deterministic!`, a
//! `switchyard:deterministic` custom section) promises that a call's outcome depends only on its
//! configuration and on what it reads through the host. So while a call of a router, request
//! filter or response filter runs, the host notes every question the plugin asks ([`Question`]:
//! the method, a header, the client address, a response header…) with the answer it got, and
//! every change it makes ([`Edit`]: set a header, rewrite the path, set a context value…).
//!
//! The outcome is remembered in a tree of questions: a deterministic plugin asks the same first
//! question on every call, and which question comes next depends only on the answers so far. A
//! later call is answered by walking the tree with the request's own answers; when the walk ends
//! on a remembered outcome, the plugin, run on this request, would have asked the same, changed
//! the same and answered the same. The host then makes the noted changes itself and gives the
//! noted answer, without calling the plugin. A walk costs one hash lookup per question; nothing is
//! copied out of the request.
//!
//! A call that does anything besides reading and changing the heads (logs, counts, uses the
//! clock, random numbers or the key-value store), or that reads something it changed earlier in
//! the same call, is never remembered. The memo is bounded: [`MAX_ENTRIES`] outcomes per plugin
//! and role; when full, it starts over. Remembering costs a little (about 1 µs a call on a hot
//! cache), so when the memo filled up while most lookups missed (paths that rarely repeat, such
//! as ones with an id in them, or a policy that reads every client's address behind a CDN), it
//! rests for [`REST_CALLS`] calls: the plugin is simply called. It belongs to one loaded plugin,
//! so a reload that changes the plugin or its configuration starts with an empty one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;

use super::head::{self, RequestView};

/// The most outcomes remembered per plugin and role; a full memo is emptied and starts over.
pub const MAX_ENTRIES: usize = 8192;

/// How many calls are made without the memo after it filled up while mostly missing.
pub const REST_CALLS: u64 = 1 << 16;

/// Something a plugin can ask the host about the request (or, in a response filter, the
/// response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question {
    Method,
    Scheme,
    Host,
    Path,
    Query,
    Header(Box<str>),
    HeaderAll(Box<str>),
    HeaderNames,
    ClientIp,
    ServerPort,
    Context(Box<str>),
    Status,
    ResponseHeader(Box<str>),
    ResponseHeaderAll(Box<str>),
}

/// Writes `value` with its length first, so that a list of values has one encoding.
fn push_counted(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fn push_optional(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(v);
        }
    }
}

/// A header's first value as raw bytes: plugins get a lossless or lossy text of exactly these
/// bytes, so equal bytes mean an equal answer.
fn first_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get(name).map(|v| v.as_bytes())
}

fn all_values(out: &mut Vec<u8>, headers: &HeaderMap, name: &str) {
    for value in headers.get_all(name) {
        push_counted(out, value.as_bytes());
    }
}

impl Question {
    /// Writes the answer `request` (and `response`) give to this question into `out`, in an
    /// encoding where equal bytes mean the plugin would get the same answer.
    pub fn answer(&self, request: &RequestView, response: Option<&ResponseHeader>, out: &mut Vec<u8>) {
        let headers = &request.head.headers;
        match self {
            Question::Method => out.extend_from_slice(request.method().as_bytes()),
            Question::Scheme => out.push(request.https as u8),
            Question::Host => {
                let start = out.len();
                out.extend_from_slice(request.host_unnormalized().as_bytes());
                out[start..].make_ascii_lowercase();
            }
            Question::Path => out.extend_from_slice(request.path().as_bytes()),
            Question::Query => push_optional(out, request.query().map(str::as_bytes)),
            Question::Header(name) => push_optional(out, first_value(headers, name)),
            Question::HeaderAll(name) => all_values(out, headers, name),
            Question::HeaderNames => headers.keys().for_each(|k| push_counted(out, k.as_str().as_bytes())),
            Question::ClientIp => match request.client_ip {
                None => out.push(0),
                Some(IpAddr::V4(v4)) => {
                    out.push(4);
                    out.extend_from_slice(&v4.octets());
                }
                Some(IpAddr::V6(v6)) => {
                    out.push(6);
                    out.extend_from_slice(&v6.octets());
                }
            },
            Question::ServerPort => out.extend_from_slice(&request.server_port.to_le_bytes()),
            Question::Context(key) => push_optional(out, request.context(key).map(str::as_bytes)),
            Question::Status => out.extend_from_slice(&response.map_or(0, |r| r.status.as_u16()).to_le_bytes()),
            Question::ResponseHeader(name) => push_optional(out, response.and_then(|r| first_value(&r.headers, name))),
            Question::ResponseHeaderAll(name) => {
                if let Some(response) = response {
                    all_values(out, &response.headers, name);
                }
            }
        }
    }
}

/// A change a plugin made to the request or response head during a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    SetHeader(Box<str>, Box<str>),
    AppendHeader(Box<str>, Box<str>),
    RemoveHeader(Box<str>),
    SetPathAndQuery(Box<str>),
    SetContext(Box<str>, Box<str>),
    SetStatus(u16),
    SetResponseHeader(Box<str>, Box<str>),
    AppendResponseHeader(Box<str>, Box<str>),
    RemoveResponseHeader(Box<str>),
}

impl Edit {
    /// Whether this change can alter the answer to `question` (asked after it in the same call).
    fn affects(&self, question: &Question) -> bool {
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        match self {
            Edit::SetHeader(name, _) | Edit::AppendHeader(name, _) | Edit::RemoveHeader(name) => match question {
                Question::Header(asked) | Question::HeaderAll(asked) => same(name, asked),
                Question::HeaderNames => true,
                Question::Host => same(name, "host"),
                _ => false,
            },
            Edit::SetPathAndQuery(_) => matches!(question, Question::Path | Question::Query | Question::Host),
            Edit::SetContext(key, _) => matches!(question, Question::Context(asked) if asked == key),
            Edit::SetStatus(_) => matches!(question, Question::Status),
            Edit::SetResponseHeader(name, _)
            | Edit::AppendResponseHeader(name, _)
            | Edit::RemoveResponseHeader(name) => {
                matches!(question, Question::ResponseHeader(asked) | Question::ResponseHeaderAll(asked) if same(name, asked))
            }
        }
    }

    /// The change in the form a replay makes it: a header change is checked now, once, since
    /// the host's checks depend only on the change. A change the host refused in the call is
    /// refused again (the plugin saw that refusal and answered for it then): it does nothing.
    fn to_replay(&self) -> Replay {
        use switchyard_sdk::testkit::HeaderChange::{Append, Remove, Set};
        let with_value = |name: &str, value: &str, change, is_request| match head::checked_header(
            name,
            Some(value),
            change,
            is_request,
        ) {
            Ok((name, Some(value))) => Some((name, value)),
            _ => None,
        };
        let removed = |name: &str, is_request| head::checked_header(name, None, Remove, is_request).ok().map(|c| c.0);
        let replay = match self {
            Edit::SetHeader(name, value) => with_value(name, value, Set, true).map(|(n, v)| Replay::SetHeader(n, v)),
            Edit::AppendHeader(name, value) => {
                with_value(name, value, Append, true).map(|(n, v)| Replay::AppendHeader(n, v))
            }
            Edit::RemoveHeader(name) => removed(name, true).map(Replay::RemoveHeader),
            Edit::SetResponseHeader(name, value) => {
                with_value(name, value, Set, false).map(|(n, v)| Replay::SetResponseHeader(n, v))
            }
            Edit::AppendResponseHeader(name, value) => {
                with_value(name, value, Append, false).map(|(n, v)| Replay::AppendResponseHeader(n, v))
            }
            Edit::RemoveResponseHeader(name) => removed(name, false).map(Replay::RemoveResponseHeader),
            Edit::SetPathAndQuery(target) => Some(Replay::SetPathAndQuery(target.clone())),
            Edit::SetContext(key, value) => Some(Replay::SetContext(key.clone(), value.clone())),
            Edit::SetStatus(status) => Some(Replay::SetStatus(*status)),
        };
        replay.unwrap_or(Replay::Refused)
    }
}

/// A remembered change, ready to be made again (see [`Edit::to_replay`]).
#[derive(Debug)]
enum Replay {
    /// The host refused the change in the call: a replay does nothing.
    Refused,
    SetHeader(HeaderName, HeaderValue),
    AppendHeader(HeaderName, HeaderValue),
    RemoveHeader(HeaderName),
    SetResponseHeader(HeaderName, HeaderValue),
    AppendResponseHeader(HeaderName, HeaderValue),
    RemoveResponseHeader(HeaderName),
    /// Path, context and status changes go through the same operations as in a call.
    SetPathAndQuery(Box<str>),
    SetContext(Box<str>, Box<str>),
    SetStatus(u16),
}

impl Replay {
    fn apply(&self, request: &mut RequestView, response: Option<&mut ResponseHeader>) {
        let _ = match self {
            Replay::Refused => Ok(()),
            Replay::SetHeader(name, value) => request.set_checked_header(name.clone(), value.clone()),
            Replay::AppendHeader(name, value) => request.append_checked_header(name.clone(), value.clone()),
            Replay::RemoveHeader(name) => {
                request.head.remove_header(name);
                Ok(())
            }
            Replay::SetResponseHeader(name, value) => {
                response.map_or(Ok(()), |r| head::response::set_checked_header(r, name.clone(), value.clone()))
            }
            Replay::AppendResponseHeader(name, value) => {
                response.map_or(Ok(()), |r| head::response::append_checked_header(r, name.clone(), value.clone()))
            }
            Replay::RemoveResponseHeader(name) => {
                if let Some(r) = response {
                    r.remove_header(name);
                }
                Ok(())
            }
            Replay::SetPathAndQuery(target) => request.set_path_and_query(target),
            Replay::SetContext(key, value) => {
                request.set_context(key, value);
                Ok(())
            }
            Replay::SetStatus(status) => response.map_or(Ok(()), |r| head::response::set_status(r, *status)),
        };
    }
}

/// What the host noted during one call.
#[derive(Debug, Default)]
pub struct CallTrace {
    /// The questions asked, each once, in order, with their encoded answers.
    reads: Vec<(Question, Box<[u8]>)>,
    /// The changes made, in order.
    edits: Vec<Edit>,
    /// Whether the call did something that cannot be given again from memory.
    acted: bool,
}

impl CallTrace {
    /// Notes that the plugin asked `question` of `request` (and `response`). A question whose
    /// answer an earlier change of the same call may have altered makes the call unrememberable:
    /// a remembered outcome is looked up with the answers of the unchanged request.
    pub fn read(&mut self, question: Question, request: &RequestView, response: Option<&ResponseHeader>) {
        if self.acted {
            return;
        }
        if self.edits.iter().any(|e| e.affects(&question)) {
            self.acted = true;
            return;
        }
        if self.reads.iter().any(|(asked, _)| *asked == question) {
            return;
        }
        let answer = ANSWER.with_borrow_mut(|answer| {
            answer.clear();
            question.answer(request, response, answer);
            Box::<[u8]>::from(answer.as_slice())
        });
        self.reads.push((question, answer));
    }

    /// Notes a change to a head.
    pub fn edit(&mut self, edit: Edit) {
        if !self.acted {
            self.edits.push(edit);
        }
    }

    /// Notes that the call did something besides reading and changing the heads: its outcome
    /// is not remembered.
    pub fn acted(&mut self) {
        self.acted = true;
    }

    /// Whether the call did something that cannot be given again from memory.
    pub fn has_acted(&self) -> bool {
        self.acted
    }

    /// The questions noted, in order.
    #[cfg(test)]
    pub(crate) fn questions(&self) -> Vec<&Question> {
        self.reads.iter().map(|(q, _)| q).collect()
    }

    /// The changes noted, in order.
    #[cfg(test)]
    pub(crate) fn edits(&self) -> &[Edit] {
        &self.edits
    }
}

/// A remembered outcome: the changes the call made and what it answered.
#[derive(Debug)]
pub struct Remembered<O> {
    /// What the call answered.
    pub value: O,
    changes: Box<[Replay]>,
}

impl<O> Remembered<O> {
    /// Makes the call's changes to `request` (and `response`), as the call made them.
    pub fn replay(&self, request: &mut RequestView, mut response: Option<&mut ResponseHeader>) {
        for change in &self.changes {
            change.apply(request, response.as_deref_mut());
        }
    }
}

/// Up to this many answers to one question are kept in a list; more in a hash map. Most
/// questions after the one that tells requests apart (the client address, say) have one answer
/// per branch, and a list of one costs a fraction of a map.
const FEW_ANSWERS: usize = 8;

/// Where each answer to a question leads.
#[derive(Debug)]
enum Answers<O> {
    Few(Vec<(Box<[u8]>, Node<O>)>),
    Many(HashMap<Box<[u8]>, Node<O>, foldhash::fast::RandomState>),
}

impl<O> Answers<O> {
    fn get(&self, answer: &[u8]) -> Option<&Node<O>> {
        match self {
            Answers::Few(few) => few.iter().find(|(a, _)| **a == *answer).map(|(_, node)| node),
            Answers::Many(many) => many.get(answer),
        }
    }

    /// The node an answer leads to, [`Node::Unknown`] when new.
    fn entry(&mut self, answer: Box<[u8]>) -> &mut Node<O> {
        if let Answers::Few(few) = self
            && few.len() >= FEW_ANSWERS
            && !few.iter().any(|(a, _)| *a == answer)
        {
            *self = Answers::Many(std::mem::take(few).into_iter().collect());
        }
        match self {
            Answers::Few(few) => {
                let at = match few.iter().position(|(a, _)| *a == answer) {
                    Some(at) => at,
                    None => {
                        few.push((answer, Node::Unknown));
                        few.len() - 1
                    }
                };
                &mut few[at].1
            }
            Answers::Many(many) => many.entry(answer).or_insert(Node::Unknown),
        }
    }
}

#[derive(Debug)]
enum Node<O> {
    /// Nothing remembered here yet.
    Unknown,
    /// The question asked next, and where each answer leads.
    Ask { question: Question, answers: Answers<O> },
    /// The outcome after these answers.
    Done(Arc<Remembered<O>>),
}

thread_local! {
    /// The answer being looked up or noted, reused across calls on a thread.
    static ANSWER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The remembered outcomes of one role of one plugin.
#[derive(Debug)]
pub struct Memo<O> {
    /// The first question, or the outcome when the plugin asks none.
    root: RwLock<Node<O>>,
    /// Outcomes remembered (changed only under the write lock).
    len: AtomicUsize,
    /// Lookups that found an outcome, and outcomes remembered, since the memo last started over.
    hits: AtomicU64,
    misses: AtomicU64,
    /// Calls still to be made without the memo before remembering again.
    resting: AtomicU64,
}

impl<O> Default for Memo<O> {
    fn default() -> Self {
        Memo {
            root: RwLock::new(Node::Unknown),
            len: AtomicUsize::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            resting: AtomicU64::new(0),
        }
    }
}

impl<O: Clone> Memo<O> {
    /// Whether the memo is in use for this call; `false` while it rests (see the module's
    /// documentation), which counts one call of the rest.
    pub fn active(&self) -> bool {
        let rest = self.resting.load(Relaxed);
        if rest == 0 {
            return true;
        }
        // Racing threads may count the same call twice; the rest is only a rough length.
        self.resting.store(rest - 1, Relaxed);
        false
    }

    /// The remembered outcome for `request` (and `response`), if the plugin's questions lead to
    /// one.
    pub fn recall(&self, request: &RequestView, response: Option<&ResponseHeader>) -> Option<Arc<Remembered<O>>> {
        let root = self.root.read().unwrap_or_else(|p| p.into_inner());
        let found = ANSWER.with_borrow_mut(|answer| {
            let mut node = &*root;
            loop {
                match node {
                    Node::Unknown => return None,
                    Node::Done(outcome) => return Some(outcome.clone()),
                    Node::Ask { question, answers } => {
                        answer.clear();
                        question.answer(request, response, answer);
                        node = answers.get(answer)?;
                    }
                }
            }
        });
        if found.is_some() {
            self.hits.fetch_add(1, Relaxed);
        }
        found
    }

    /// Remembers `value` and the changes in `trace` for calls whose questions get the answers in
    /// `trace`, unless the call did more than read and change the heads.
    pub fn remember(&self, trace: CallTrace, value: &O) {
        if trace.acted {
            return;
        }
        self.misses.fetch_add(1, Relaxed);
        let mut root = self.root.write().unwrap_or_else(|p| p.into_inner());
        if self.len.load(Relaxed) >= MAX_ENTRIES {
            *root = Node::Unknown;
            self.len.store(0, Relaxed);
            let mostly_missed = self.hits.swap(0, Relaxed) < self.misses.swap(0, Relaxed);
            if mostly_missed {
                self.resting.store(REST_CALLS, Relaxed);
                return;
            }
        }
        let mut slot = &mut *root;
        for (question, answer) in trace.reads {
            if matches!(slot, Node::Unknown) {
                *slot = Node::Ask { question: question.clone(), answers: Answers::Few(Vec::with_capacity(1)) };
            }
            slot = match slot {
                Node::Ask { question: asked, answers } if *asked == question => answers.entry(answer),
                // Another thread remembered this meanwhile, or the plugin asked something else
                // after the same answers (it is not deterministic after all): keep what is there.
                _ => return,
            };
        }
        if matches!(slot, Node::Unknown) {
            let changes = trace.edits.iter().map(Edit::to_replay).collect();
            *slot = Node::Done(Arc::new(Remembered { value: value.clone(), changes }));
            self.len.fetch_add(1, Relaxed);
        }
    }

    /// How many outcomes are remembered now.
    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::RequestHeader;

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestView {
        let mut head = RequestHeader::build(method, target.as_bytes(), None).unwrap_or_else(|e| panic!("{e}"));
        for (n, v) in headers {
            head.append_header(n.to_string(), *v).unwrap_or_else(|e| panic!("{e}"));
        }
        RequestView { head: Box::new(head), ..RequestView::default() }
    }

    /// The trace of a call that asked `questions` of `req`, then made `edits`.
    fn trace(req: &RequestView, questions: &[Question], edits: &[Edit]) -> CallTrace {
        let mut trace = CallTrace::default();
        for q in questions {
            trace.read(q.clone(), req, None);
        }
        for e in edits {
            trace.edit(e.clone());
        }
        trace
    }

    fn header(name: &str) -> Question {
        Question::Header(name.into())
    }

    fn recall<O: Clone>(memo: &Memo<O>, req: &RequestView) -> Option<O> {
        memo.recall(req, None).map(|r| r.value.clone())
    }

    #[test]
    fn an_outcome_is_given_again_only_when_every_answer_is_the_same() {
        let memo = Memo::default();
        let asked = [Question::Host, Question::Path, Question::Method, header("x-tenant")];
        let first = request("GET", "/api", &[("Host", "a.test"), ("X-Tenant", "acme")]);
        memo.remember(trace(&first, &asked, &[]), &"acme");

        let same = request("GET", "/api", &[("host", "A.TEST"), ("x-tenant", "acme"), ("accept", "*/*")]);
        assert_eq!(recall(&memo, &same), Some("acme"));
        let differing = [
            request("GET", "/api", &[("Host", "b.test"), ("X-Tenant", "acme")]),
            request("GET", "/api/x", &[("Host", "a.test"), ("X-Tenant", "acme")]),
            request("POST", "/api", &[("Host", "a.test"), ("X-Tenant", "acme")]),
            request("GET", "/api", &[("Host", "a.test"), ("X-Tenant", "other")]),
            request("GET", "/api", &[("Host", "a.test")]),
        ];
        for req in &differing {
            assert_eq!(recall(&memo, req), None, "{:?}", req.head);
        }
    }

    #[test]
    fn outcomes_branch_on_each_answer_and_share_the_questions_before() {
        let memo = Memo::default();
        let asked = [Question::Path, Question::Query];
        for (target, outcome) in [("/a?v=1", 1), ("/a?v=2", 2), ("/a", 3), ("/b", 4)] {
            let req = request("GET", target, &[]);
            memo.remember(trace(&req, &asked, &[]), &outcome);
        }
        assert_eq!(memo.len(), 4);
        for (target, outcome) in
            [("/a?v=1", Some(1)), ("/a?v=2", Some(2)), ("/a", Some(3)), ("/b", Some(4)), ("/a?v=3", None)]
        {
            assert_eq!(recall(&memo, &request("GET", target, &[])), outcome, "{target}");
        }
    }

    #[test]
    fn many_answers_to_one_question_are_all_kept() {
        let memo = Memo::default();
        let asked = [header("x-tenant"), Question::Method];
        let tenants = 3 * FEW_ANSWERS;
        for round in 0..2 {
            for i in 0..tenants {
                let req = request("GET", "/", &[("x-tenant", &format!("t{i}"))]);
                if round == 0 {
                    memo.remember(trace(&req, &asked, &[]), &i);
                }
                assert_eq!(recall(&memo, &req), Some(i), "round {round}, tenant {i}");
            }
        }
        assert_eq!(memo.len(), tenants);
        assert_eq!(recall(&memo, &request("GET", "/", &[("x-tenant", "other")])), None);
    }

    #[test]
    fn every_value_and_every_name_must_match_for_list_questions() {
        let memo = Memo::default();
        let asked = [Question::HeaderAll("x-a".into()), Question::HeaderNames];
        let req = request("GET", "/", &[("x-a", "1"), ("X-A", "2"), ("x-b", "3")]);
        memo.remember(trace(&req, &asked, &[]), &());
        assert!(recall(&memo, &req).is_some());
        for other in [
            request("GET", "/", &[("x-a", "1"), ("x-b", "3")]),
            request("GET", "/", &[("x-a", "2"), ("x-a", "1"), ("x-b", "3")]),
            request("GET", "/", &[("x-a", "12"), ("x-b", "3")]),
            request("GET", "/", &[("x-b", "3"), ("x-a", "1"), ("x-a", "2")]),
            request("GET", "/", &[("x-a", "1"), ("x-a", "2"), ("x-b", "3"), ("x-c", "")]),
        ] {
            assert!(recall(&memo, &other).is_none(), "{:?}", other.head.headers);
        }
    }

    #[test]
    fn a_recalled_outcome_makes_the_calls_changes_again() {
        let memo = Memo::default();
        let req = request("GET", "/old", &[("x-forwarded-for", "1.2.3.4")]);
        let edits = [
            Edit::SetHeader("x-forwarded-for".into(), "1.2.3.4, 127.0.0.1".into()),
            Edit::RemoveHeader("x-debug".into()),
            Edit::SetPathAndQuery("/new?x=1".into()),
            Edit::SetContext("variant".into(), "blue".into()),
            Edit::SetHeader("content-length".into(), "0".into()),
        ];
        memo.remember(trace(&req, &[Question::HeaderAll("x-forwarded-for".into())], &edits), &());

        let mut next = request("GET", "/old", &[("x-forwarded-for", "1.2.3.4"), ("x-debug", "1")]);
        let found = memo.recall(&next, None).unwrap_or_else(|| panic!("not remembered"));
        found.replay(&mut next, None);
        assert_eq!(next.header_all("x-forwarded-for"), ["1.2.3.4, 127.0.0.1"]);
        assert_eq!(next.header("x-debug"), None);
        assert_eq!((next.path(), next.query()), ("/new", Some("x=1")));
        assert_eq!(next.context("variant"), Some("blue"));
        assert_eq!(next.header("content-length"), None, "a refused change stays refused");
    }

    #[test]
    fn response_questions_and_changes_are_remembered_too() {
        let memo = Memo::default();
        let req = request("GET", "/", &[]);
        let mut resp = head::placeholder_response_head();
        let _ = resp.set_status(200);
        let mut t = CallTrace::default();
        t.read(Question::Status, &req, Some(&resp));
        t.read(Question::ResponseHeader("x-frame-options".into()), &req, Some(&resp));
        t.edit(Edit::SetResponseHeader("x-frame-options".into(), "DENY".into()));
        memo.remember(t, &());

        let found = memo.recall(&req, Some(&resp)).unwrap_or_else(|| panic!("not remembered"));
        found.replay(&mut RequestView::default(), Some(&mut resp));
        assert_eq!(head::response::header(&resp, "x-frame-options").as_deref(), Some("DENY"));
        assert!(memo.recall(&req, Some(&resp)).is_none(), "the header is there now: another answer");
        let _ = resp.set_status(404);
        let _ = resp.remove_header("x-frame-options");
        assert!(memo.recall(&req, Some(&resp)).is_none(), "another status");
    }

    #[test]
    fn reading_what_the_call_changed_and_acting_are_not_remembered() {
        let req = request("GET", "/", &[("x-a", "1")]);
        let mut read_back = trace(&req, &[header("x-a")], &[Edit::AppendHeader("X-A".into(), "2".into())]);
        read_back.read(Question::HeaderAll("x-a".into()), &req, None);
        assert!(read_back.has_acted(), "a header read after changing it");
        let mut names = trace(&req, &[], &[Edit::SetHeader("x-b".into(), "2".into())]);
        names.read(Question::HeaderNames, &req, None);
        assert!(names.has_acted(), "names read after a header change");
        let mut unrelated = trace(&req, &[], &[Edit::SetHeader("x-b".into(), "2".into())]);
        unrelated.read(header("x-a"), &req, None);
        unrelated.read(Question::Method, &req, None);
        assert!(!unrelated.has_acted(), "reads a change cannot alter");

        let memo = Memo::default();
        let mut logged = trace(&req, &[header("x-a")], &[]);
        logged.acted();
        memo.remember(logged, &1);
        memo.remember(read_back, &2);
        assert!(memo.is_empty());
        assert_eq!(recall(&memo, &req), None);
    }

    #[test]
    fn a_call_asking_nothing_is_remembered_for_every_request() {
        let memo = Memo::default();
        memo.remember(CallTrace::default(), &7);
        assert_eq!(recall(&memo, &request("PUT", "/anything", &[("x", "y")])), Some(7));
    }

    #[test]
    fn a_full_memo_starts_over() {
        let memo = Memo::default();
        for i in 0..MAX_ENTRIES {
            let req = request("GET", &format!("/{i}"), &[]);
            memo.remember(trace(&req, &[Question::Path], &[]), &i);
            for _ in 0..2 {
                assert_eq!(recall(&memo, &req), Some(i));
            }
        }
        assert_eq!(memo.len(), MAX_ENTRIES);
        let last = request("GET", "/last", &[]);
        memo.remember(trace(&last, &[Question::Path], &[]), &0);
        assert!(memo.active(), "it mostly hit: no rest");
        assert_eq!(memo.len(), 1, "emptied when full");
        assert_eq!(recall(&memo, &last), Some(0));
        assert_eq!(recall(&memo, &request("GET", "/1", &[])), None);
    }

    #[test]
    fn a_memo_that_fills_up_while_mostly_missing_rests_then_tries_again() {
        let memo = Memo::default();
        assert!(memo.active());
        for i in 0..=MAX_ENTRIES {
            let req = request("GET", &format!("/{i}"), &[]);
            memo.remember(trace(&req, &[Question::Path], &[]), &());
        }
        assert!(memo.is_empty(), "started over");
        let resting = (0..REST_CALLS).filter(|_| !memo.active()).count() as u64;
        assert_eq!(resting, REST_CALLS);
        assert!(memo.active(), "remembering again after the rest");
    }

    #[test]
    fn a_plugin_asking_differently_after_the_same_answers_keeps_the_first_outcome() {
        let memo = Memo::default();
        let req = request("GET", "/", &[("x-a", "1")]);
        memo.remember(trace(&req, &[Question::Path, header("x-a")], &[]), &1);
        memo.remember(trace(&req, &[Question::Path, Question::Method], &[]), &2);
        assert_eq!(memo.len(), 1);
        assert_eq!(recall(&memo, &req), Some(1));
    }
}
