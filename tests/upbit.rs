//! The Upbit source (`feed.kind = "upbit"`) against a local server that speaks Upbit's
//! WebSocket format (these machines cannot reach Upbit): the subscription request, trades
//! in binary and text frames, out of order, duplicated within a connection and across
//! reconnects, late, malformed; a dropped connection; a silent one, which must show as
//! stalled in `/readyz` and `/metrics` and be dialled again; and a node SIGKILLed and
//! restarted, whose source's re-sent snapshot must not duplicate a stored trade.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Cluster, Node, eventually, metric};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

/// Upbit's `sequential_id`s are about 1.7e16: past 2^53, so they must never pass a float.
const SEQ0: u64 = 17_000_000_000_000_000;

/// An Upbit trade message for sequence `SEQ0 + k`, at a price that names `k`, its numbers
/// written as Upbit writes them (float literals).
fn trade(k: u64) -> String {
    let (ts, price, seq) = (1_700_000_000_000u64 + k, 140_000_000 + k * 1000, SEQ0 + k);
    let side = if k.is_multiple_of(2) { "ASK" } else { "BID" };
    format!(
        r#"{{"type":"trade","code":"KRW-BTC","timestamp":{ts},"trade_date":"2023-11-14","trade_time":"22:13:20","trade_timestamp":{ts},"trade_price":{price}.0,"trade_volume":0.0001,"ask_bid":"{side}","prev_closing_price":139000000.0,"change":"RISE","change_price":1000.0,"sequential_id":{seq},"stream_type":"REALTIME"}}"#
    )
}

fn binary(text: String) -> Message {
    Message::binary(text.into_bytes())
}

/// What each connection the server accepts does, in order: script `n` for the `n`th, but
/// never past `last` (the test moves it on), so an extra dial repeats a script instead of
/// running the next one early.
async fn serve(
    listener: TcpListener,
    requests: mpsc::UnboundedSender<String>,
    last: watch::Receiver<usize>,
    third_released: watch::Receiver<bool>,
) {
    for count in 1.. {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let n = count.min(*last.borrow());
        if n == 3 {
            // The third script waits in the handshake until the test has seen the stall.
            let mut released = third_released.clone();
            if released.wait_for(|r| *r).await.is_err() {
                return;
            }
        }
        let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
            continue;
        };
        let Some(Ok(Message::Text(request))) = ws.next().await else {
            continue;
        };
        let _ = requests.send(request.to_string());
        let frames: Vec<Message> = match n {
            // Out of order, a duplicate, bad messages, Upbit's status answer; then the
            // connection drops without a close frame.
            1 => vec![
                binary(trade(1)),
                binary(trade(3)),
                binary(trade(2)),
                binary(trade(2)),
                binary("not json".into()),
                binary(trade(4).replace("KRW-BTC", "KRW-NOPE")),
                binary(trade(4).replace("140004000.0", "-140004000.0")),
                binary(trade(4).replace("140004000.0", "140004500.0")),
                binary(r#"{"status":"UP"}"#.into()),
            ],
            // The snapshot of the last trade (a duplicate across the reconnect), two new
            // ones as text frames, and one older than what was stored (late); then silence.
            2 => vec![
                binary(trade(3)),
                Message::text(trade(4)),
                Message::text(trade(5)),
            ],
            3 => vec![binary(trade(5)), binary(trade(6))],
            // After the restart: the snapshot again, and one more.
            _ => vec![binary(trade(6)), binary(trade(7))],
        };
        for f in frames {
            if ws.send(f).await.is_err() {
                break;
            }
        }
        match n {
            1 => {
                tokio::time::sleep(Duration::from_millis(800)).await;
                drop(ws);
            }
            2 => {
                tokio::time::sleep(Duration::from_millis(800)).await;
                let _ = ws.send(binary(trade(0))).await;
                // Silent from here: nothing is read, so no ping is answered either.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(120)).await;
                    drop(ws);
                });
            }
            _ => {
                tokio::spawn(async move { while ws.next().await.is_some() {} });
            }
        }
    }
}

fn prices(node: &Node) -> Vec<String> {
    let (status, trades) = node.get("/api/v1/trades/KRW-BTC?limit=50");
    assert_eq!(status, 200, "{trades}");
    let mut p: Vec<String> = trades
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["price"].as_str().unwrap().to_string())
        .collect();
    p.reverse();
    p
}

fn expected(upto: u64) -> Vec<String> {
    (1..=upto)
        .map(|k| (140_000_000 + k * 1000).to_string())
        .collect()
}

fn feed(node: &Node) -> Value {
    let (status, ready) = node.get("/readyz");
    assert_eq!(status, 200, "{ready}");
    ready["feed"].clone()
}

fn metrics(node: &Node) -> String {
    node.get("/metrics")
        .1
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn upbit_trades_arrive_once_in_order_through_drops_stalls_and_a_sigkill() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, mut requests) = mpsc::unbounded_channel();
    let (last, last_rx) = watch::channel(3usize);
    let (release_third, third_released) = watch::channel(false);
    rt.spawn(serve(listener, tx, last_rx, third_released));

    let config = format!(
        "[feed]\nkind = \"upbit\"\n[upbit]\nurl = \"ws://127.0.0.1:{port}\"\ncodes = [\"KRW-BTC\"]\nreorder_ms = 300\nstall_after_s = 2\n"
    );
    let mut node = Node::start("upbit", &config);

    let request: Value =
        serde_json::from_str(&rt.block_on(requests.recv()).expect("a subscription")).unwrap();
    assert_eq!(request[1], json!({"type": "trade", "codes": ["KRW-BTC"]}));
    assert_eq!(request[2], json!({"format": "DEFAULT"}));
    assert!(
        request[0]["ticket"].as_str().is_some_and(|t| !t.is_empty()),
        "{request}"
    );

    // Through the drop and the second connection: 1..5 once each, in sequence order.
    eventually(20, "trades 1..5 stored", || {
        (prices(&node) == expected(5)).then_some(())
    });
    assert!(rt.block_on(requests.recv()).is_some(), "dialled again");

    // The second connection falls silent: stalled, in /readyz and /metrics, while the
    // third dial hangs in its handshake.
    let stalled = eventually(20, "the source marked stalled", || {
        let f = feed(&node);
        (f["state"] == "stalled").then_some(f)
    });
    assert_eq!(stalled["kind"], "upbit");
    assert_eq!(stalled["codes"], json!(["KRW-BTC"]));
    assert!(
        stalled["silent_ms"].as_u64().is_some_and(|ms| ms >= 2000),
        "{stalled}"
    );
    let text = metrics(&node);
    assert_eq!(metric(&text, "bourse_feed_stalled"), Some(1.0));
    assert_eq!(metric(&text, "bourse_feed_connected"), Some(0.0));
    release_third.send_replace(true);
    assert!(
        rt.block_on(requests.recv()).is_some(),
        "dialled a third time"
    );
    eventually(20, "trade 6 stored", || {
        (prices(&node) == expected(6)).then_some(())
    });
    let live = feed(&node);
    assert_eq!(live["state"], "live", "{live}");
    assert!(
        live["reconnects"].as_u64().is_some_and(|n| n >= 2),
        "{live}"
    );

    let text = metrics(&node);
    for (sample, at_least) in [
        ("bourse_feed_rejected_total{reason=\"not_json\"}", 1.0),
        ("bourse_feed_rejected_total{reason=\"unknown_symbol\"}", 1.0),
        ("bourse_feed_rejected_total{reason=\"negative\"}", 1.0),
        ("bourse_feed_rejected_total{reason=\"off_tick\"}", 1.0),
        // 2 again within the first connection; 3 after the reconnect; 5 after the stall.
        ("bourse_feed_trades_total{outcome=\"duplicate\"}", 3.0),
        ("bourse_feed_trades_total{outcome=\"late\"}", 1.0),
        ("bourse_feed_trades_total{outcome=\"applied\"}", 6.0),
        ("bourse_feed_reconnects_total", 2.0),
    ] {
        let got = metric(&text, sample).unwrap_or_else(|| panic!("no {sample}"));
        assert!(
            got >= at_least,
            "{sample} = {got}, expected at least {at_least}"
        );
    }
    assert_eq!(metric(&text, "bourse_feed_stalled"), Some(0.0));
    assert_eq!(metric(&text, "bourse_feed_connected"), Some(1.0));
    node.assert_logged("skipping a bad upbit message");

    // A SIGKILL: the restarted node subscribes again, and the re-sent last trade is not
    // stored twice.
    while requests.try_recv().is_ok() {}
    node.kill9();
    last.send_replace(4);
    node.restart();
    node.wait_ready();
    assert!(
        rt.block_on(requests.recv()).is_some(),
        "the restarted node subscribed"
    );
    eventually(20, "trade 7 stored after the restart", || {
        (prices(&node) == expected(7)).then_some(())
    });
}

/// `wss://`, as Upbit is reached: the node verifies the server against the system's trusted
/// roots, here a test CA named by `SSL_CERT_FILE`.
#[test]
fn upbit_is_followed_over_tls() {
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::crypto::aws_lc_rs;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs = common::temp_dir("upbit-certs");
    common::certs(&certs, &["upbit=127.0.0.1"]);
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(certs.join("upbit.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(certs.join("upbit.key")).unwrap();
    let tls = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                if let Some(Ok(Message::Text(_))) = ws.next().await {
                    for k in 1..=3 {
                        let _ = ws.send(binary(trade(k))).await;
                    }
                    while ws.next().await.is_some() {}
                }
            });
        }
    });
    let config = format!(
        "[feed]\nkind = \"upbit\"\n[upbit]\nurl = \"wss://127.0.0.1:{port}\"\ncodes = [\"KRW-BTC\"]\nreorder_ms = 0\n"
    );
    let env = vec![(
        "SSL_CERT_FILE".to_string(),
        certs.join("ca.pem").display().to_string(),
    )];
    let node = Node::start_env("upbit-tls", &config, env, true);
    eventually(20, "trades 1..3 stored over wss", || {
        (prices(&node) == expected(3)).then_some(())
    });
    assert_eq!(feed(&node)["state"], "live");
    // Without the CA among its roots, a node refuses the server: verification is on.
    let stranger = Node::start("upbit-untrusting", &config);
    eventually(20, "the untrusted server refused", || {
        stranger
            .full_log()
            .contains("invalid peer certificate")
            .then_some(())
    });
    assert_ne!(feed(&stranger)["state"], "live");
    assert!(
        prices(&stranger).is_empty(),
        "nothing stored from an untrusted server"
    );
    let _ = std::fs::remove_dir_all(&certs);
}

/// The default markets and a price on each one's tick.
const MARKETS: [(&str, &str); 8] = [
    ("KRW-BTC", "140000000"),
    ("KRW-ETH", "5000000"),
    ("KRW-XRP", "3000"),
    ("KRW-SOL", "250000"),
    ("KRW-DOGE", "300"),
    ("KRW-ADA", "1000"),
    ("KRW-AVAX", "40000"),
    ("KRW-LINK", "25000"),
];

/// Each node follows the symbols it owns: two nodes split the codes between them, and when
/// one is SIGKILLed the survivor subscribes to all of them; trades of every code land.
#[test]
fn each_node_follows_the_symbols_it_owns_and_takes_over_a_dead_nodes() {
    /// Per node, its newest connection's number and codes.
    type Latest = Arc<Mutex<BTreeMap<String, (u64, BTreeSet<String>)>>>;
    let latest: Latest = Arc::default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(SEQ0));
    let seen = latest.clone();
    rt.spawn(async move {
        for conn in 1u64.. {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (seen, seq) = (seen.clone(), seq.clone());
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                let Some(Ok(Message::Text(request))) = ws.next().await else { return };
                let request: Value = serde_json::from_str(&request).unwrap_or_default();
                let ticket = request[0]["ticket"].as_str().unwrap_or_default();
                // bourse-<node>-<n>
                let node = ticket.split('-').nth(1).unwrap_or_default().to_string();
                let codes: BTreeSet<String> = request[1]["codes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str().map(String::from))
                    .collect();
                seen.lock().unwrap().insert(node, (conn, codes.clone()));
                for code in &codes {
                    // A price that names the connection (1000 is on every market's tick).
                    let base: u64 = MARKETS
                        .iter()
                        .find(|m| m.0 == code)
                        .map_or(1000, |m| m.1.parse().unwrap());
                    let price = base + conn * 1000;
                    let n = seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let msg = format!(
                        r#"{{"type":"trade","code":"{code}","trade_price":{price}.0,"trade_volume":1.0,"ask_bid":"BID","sequential_id":{n}}}"#
                    );
                    if ws.send(Message::text(msg)).await.is_err() {
                        return;
                    }
                }
                while ws.next().await.is_some() {}
            });
        }
    });
    let config = format!("[feed]\nkind = \"upbit\"\n[upbit]\nurl = \"ws://127.0.0.1:{port}\"\n");
    let mut cluster = Cluster::start("upbit-ring", 2, &config);
    let all: BTreeSet<String> = MARKETS.iter().map(|m| m.0.to_string()).collect();
    let split = eventually(30, "the two nodes split the codes", || {
        let l = latest.lock().unwrap();
        let (a, b) = (&l.get("node1")?.1, &l.get("node2")?.1);
        let union: BTreeSet<String> = a.union(b).cloned().collect();
        (a.is_disjoint(b) && union == all && !a.is_empty() && !b.is_empty())
            .then(|| (a.clone(), b.clone()))
    });
    for (i, codes) in [&split.0, &split.1].into_iter().enumerate() {
        let f = feed(&cluster.nodes[i]);
        assert_eq!(f["state"], "live", "{f}");
        let shown: BTreeSet<String> = f["codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        assert_eq!(&shown, codes, "node{} shows what it follows", i + 1);
    }
    cluster.nodes[1].kill9();
    let conn = eventually(30, "the survivor follows every code", || {
        let l = latest.lock().unwrap();
        let (conn, codes) = l.get("node1")?;
        (codes == &all).then_some(*conn)
    });
    // Each symbol has the trade of the survivor's new connection, those node2 followed too.
    for (symbol, base) in MARKETS {
        let price = (base.parse::<u64>().unwrap() + conn * 1000).to_string();
        eventually(
            20,
            &format!("the survivor stored {symbol} at {price}"),
            || {
                let (status, trades) =
                    cluster.nodes[0].get(&format!("/api/v1/trades/{symbol}?limit=5"));
                (status == 200
                    && trades
                        .as_array()
                        .is_some_and(|t| t.iter().any(|t| t["price"] == price.as_str())))
                .then_some(())
            },
        );
    }
}
