//! WebSockets through the proxy: a real client and a real echo server (tokio-tungstenite), the
//! upgrade going through routing and the balancer, then text and binary messages both ways.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket server that echoes every message, prefixing text with its name.
async fn echo_server(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                while let Some(Ok(message)) = ws.next().await {
                    let reply = match message {
                        Message::Text(t) => Message::text(format!("{name}:{t}")),
                        Message::Binary(b) => Message::Binary(b),
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if ws.send(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_text_and_binary_messages_echo_through_the_proxy() {
    let (a, b) = (echo_server("a").await, echo_server("b").await);
    let toml = format!(
        "[[upstream]]\nname = \"ws\"\nbackends = [{{ address = \"{a}\" }}, {{ address = \"{b}\" }}]\n[[site]]\nhosts = [\"*\"]\n[[site.route]]\npath_prefix = \"/ws\"\nupstream = \"ws\"\n"
    );
    let proxy = common::proxy(common::must_build(&toml)).await;
    let mut served_by = Vec::new();
    // Two connections: the round-robin balancer picks each one's backend at the upgrade.
    for _ in 0..2 {
        let url = format!("ws://{}/ws/chat", proxy.local_addr);
        let (mut ws, response) =
            tokio_tungstenite::connect_async(&url).await.unwrap_or_else(|e| panic!("connect: {e}"));
        assert_eq!(response.status(), 101);
        let mut name = String::new();
        for i in 0..500 {
            ws.send(Message::text(format!("message {i}"))).await.unwrap_or_else(|e| panic!("send: {e}"));
            let reply = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
            let Ok(Some(Ok(Message::Text(text)))) = reply else { panic!("reply to text {i}: {reply:?}") };
            let (from, echoed) = text.split_once(':').unwrap_or_else(|| panic!("{text}"));
            assert_eq!(echoed, format!("message {i}"));
            name = from.to_string();

            let bytes: Vec<u8> = (0..(i % 300 + 1)).map(|j| (i * 7 + j) as u8).collect();
            ws.send(Message::binary(bytes.clone())).await.unwrap_or_else(|e| panic!("send: {e}"));
            let reply = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
            let Ok(Some(Ok(Message::Binary(echoed)))) = reply else { panic!("reply to binary {i}: {reply:?}") };
            assert_eq!(echoed.as_ref(), &bytes[..]);
        }
        ws.close(None).await.unwrap_or_else(|e| panic!("close: {e}"));
        served_by.push(name);
    }
    served_by.sort();
    assert_eq!(served_by, ["a", "b"], "each connection went to one backend, in turn");
}
