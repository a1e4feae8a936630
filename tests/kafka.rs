//! Kafka as a real part of the cluster (docs/OPERATIONS.md "Kafka"): nodes whose
//! `feed.kind` is `kafka` consume the trades topic as one group and route each trade to its
//! symbol; `bourse feed --to kafka` publishes the simulator into it.
//!
//! Each test starts its own broker, `tansu` (a Kafka-protocol broker from crates.io, which
//! `scripts/test` installs), in memory on a free port. Without the binary a test prints
//! SKIPPED, unless `BOURSE_REQUIRE_KAFKA` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bourse_actors::feed::Simulator;
use bourse_config::Settings;
use common::{Cluster, Node, WsClient, assert_continuity, free_port, limit, metric, place_acked};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `tansu` broker of this test's own, in memory, killed when dropped.
struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn binary() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("BOURSE_TANSU") {
            return Some(path.into());
        }
        let home = std::env::var_os("HOME").map(PathBuf::from)?;
        let cargo_bin = home.join(".cargo/bin/tansu");
        if cargo_bin.exists() {
            return Some(cargo_bin);
        }
        Command::new("tansu")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()
            .map(|_| PathBuf::from("tansu"))
    }

    fn start(test: &str) -> Option<Broker> {
        let Some(binary) = Broker::binary() else {
            assert!(
                std::env::var_os("BOURSE_REQUIRE_KAFKA").is_none(),
                "BOURSE_REQUIRE_KAFKA is set but no tansu binary is found"
            );
            println!("SKIPPED {test}: no tansu broker; scripts/test installs it");
            return None;
        };
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = common::temp_dir("tansu").join("tansu.log");
        let child = Command::new(&binary)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("tansu log"))
            .spawn()
            .expect("start tansu");
        let broker = Broker { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(broker)
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The TOML a node needs to ingest from this broker.
    fn node_config(&self) -> String {
        format!(
            "[feed]\nkind = \"kafka\"\n[kafka]\nbrokers = [\"{}\"]\n",
            self.address()
        )
    }

    /// Runs `bourse feed --to kafka` with `args`, to the end.
    fn feed(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_bourse"))
            .args(["feed", "--to", "kafka", "--brokers", &self.address()])
            .args(args)
            .output()
            .expect("run bourse feed")
    }

    /// `bourse feed` in the background.
    fn feed_in_background(&self, args: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_bourse"))
            .args(["feed", "--to", "kafka", "--brokers", &self.address()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start bourse feed")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The trades `bourse feed` publishes for `symbol`, first `n`, as the channel shows them.
fn simulated(symbol: &str, n: usize) -> Vec<(String, String, String)> {
    let (settings, markets) = Settings::from_sources("", std::iter::empty()).unwrap();
    let m = markets.get(symbol).unwrap();
    let mut sim = Simulator::new(settings.feed.seed, m, m.initial_price);
    (0..n)
        .map(|_| {
            let t = sim.next_trade();
            (
                m.tick.format(t.price),
                m.lot.format(t.qty),
                t.side.as_str().to_string(),
            )
        })
        .collect()
}

fn shown(trade: &Value) -> (String, String, String) {
    let s = |k: &str| trade[k].as_str().unwrap_or_default().to_string();
    (s("price"), s("qty"), s("side"))
}

/// Every trade a node stores for `symbol`, oldest first (the REST history, up to 1000).
fn stored(node: &Node, symbol: &str) -> Vec<Value> {
    let (status, v) = node.get(&format!("/api/v1/trades/{symbol}?limit=1000"));
    assert_eq!(status, 200, "{v}");
    let mut trades = v.as_array().cloned().unwrap_or_default();
    trades.reverse();
    trades
}

fn wait_stored(node: &Node, symbol: &str, n: usize, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let trades = stored(node, symbol);
        if trades.len() >= n || Instant::now() > deadline {
            return trades;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn metrics(node: &Node) -> String {
    let (status, text) = node.get("/metrics");
    assert_eq!(status, 200);
    text.as_str().unwrap_or_default().to_string()
}

#[test]
fn trades_published_to_kafka_reach_every_node_in_order_without_gaps() {
    let Some(broker) = Broker::start("trades_published_to_kafka_reach_every_node") else {
        return;
    };
    const N: usize = 150;
    let symbol = "KRW-ETH";
    let cluster = Cluster::start("kafka-order", 2, &broker.node_config());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut clients: Vec<WsClient> = rt.block_on(async {
        let mut clients = Vec::new();
        for node in &cluster.nodes {
            let mut ws = WsClient::connect(&node.ws_url()).await;
            let r = ws
                .request(
                    "subscribe",
                    json!({"channels": [format!("trades:{symbol}")]}),
                )
                .await;
            assert_eq!(r["ok"], json!(true), "{r}");
            clients.push(ws);
        }
        clients
    });

    let out = broker.feed(&["--count", &N.to_string(), "--rate", "100"]);
    assert!(
        out.status.success(),
        "bourse feed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains(&format!("published {} trades", N * 8)),
        // Eight default markets.
        "{printed}"
    );

    let want = simulated(symbol, N);
    for (i, ws) in clients.iter_mut().enumerate() {
        rt.block_on(ws.pump_until(Duration::from_secs(60), |ws| ws.events.len() >= N));
        // A duplicate or extra trade would come after the Nth.
        rt.block_on(ws.pump(Duration::from_millis(500)));
        assert_eq!(assert_continuity(&ws.events), 0, "node {i}: epoch changed");
        let got: Vec<_> = ws.events.iter().map(|e| shown(&e.data)).collect();
        assert_eq!(got.len(), N, "node {i} saw {} of {N} trades", got.len());
        assert_eq!(got, want, "node {i}: trades out of order or altered");
        let ids: Vec<u64> = ws
            .events
            .iter()
            .map(|e| e.data["trade_id"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(ids, (1..=N as u64).collect::<Vec<_>>(), "node {i}");
    }
    // Every symbol got all its trades, once, and the nodes between them counted each once.
    let (_, markets) = Settings::from_sources("", std::iter::empty()).unwrap();
    for m in markets.iter() {
        let trades = wait_stored(&cluster.nodes[1], &m.symbol, N, Duration::from_secs(30));
        assert_eq!(trades.len(), N, "{}", m.symbol);
    }
    let feed_lines = |n: &Node| -> String {
        metrics(n)
            .lines()
            .filter(|l| l.starts_with("bourse_feed"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let applied: f64 = cluster
        .nodes
        .iter()
        .map(|n| metric(&metrics(n), "bourse_feed_trades_total{outcome=\"applied\"}").unwrap())
        .sum();
    assert_eq!(
        applied as usize,
        N * markets.len(),
        "{}\n{}",
        feed_lines(&cluster.nodes[0]),
        feed_lines(&cluster.nodes[1])
    );
    // librdkafka's statistics (every 5 s) give each node's lag per partition it reads
    // (those that ever held a message): each partition on one node, read to its end.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lags: Vec<String> = cluster
            .nodes
            .iter()
            .flat_map(|n| {
                metrics(n)
                    .lines()
                    .filter(|l| l.starts_with("bourse_kafka_consumer_lag{"))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        let partitions: BTreeSet<&str> = lags.iter().filter_map(|l| l.split('"').nth(1)).collect();
        if !lags.is_empty()
            && partitions.len() == lags.len()
            && lags.iter().all(|l| l.ends_with(" 0"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "consumer lag per partition: {lags:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn bad_messages_are_counted_and_skipped_and_upbit_messages_are_read() {
    let Some(broker) = Broker::start("bad_messages_are_counted_and_skipped") else {
        return;
    };
    let node = Node::start("kafka-bad", &broker.node_config());
    // The topic is created by a first, small publish.
    let out = broker.feed(&["--count", "1", "--format", "upbit"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .create()
        .unwrap();
    let seq = u64::MAX / 2;
    let messages: Vec<(String, String)> = vec![
        ("KRW-BTC".into(), "not json at all".into()),
        ("KRW-BTC".into(), "{\"symbol\":\"KRW-BTC\"}".into()),
        (
            "KRW-NOPE".into(),
            format!(r#"{{"symbol":"KRW-NOPE","price":"1000","qty":"1","side":"buy","seq":{seq}}}"#),
        ),
        (
            "KRW-BTC".into(),
            format!(
                r#"{{"code":"KRW-BTC","trade_price":-1000,"trade_volume":1,"ask_bid":"BID","sequential_id":{seq}}}"#
            ),
        ),
        (
            "KRW-BTC".into(),
            format!(
                r#"{{"code":"KRW-BTC","trade_price":1500,"trade_volume":1,"ask_bid":"BID","sequential_id":{seq}}}"#
            ),
        ),
        // A good Upbit trade after the bad ones, and a replay of it (a duplicate).
        (
            "KRW-BTC".into(),
            format!(
                r#"{{"code":"KRW-BTC","trade_price":150000000.0,"trade_volume":0.5,"ask_bid":"ASK","sequential_id":{seq},"trade_timestamp":1}}"#
            ),
        ),
        (
            "KRW-BTC".into(),
            format!(
                r#"{{"code":"KRW-BTC","trade_price":150000000.0,"trade_volume":0.5,"ask_bid":"ASK","sequential_id":{seq},"trade_timestamp":1}}"#
            ),
        ),
    ];
    rt.block_on(async {
        for (key, payload) in &messages {
            producer
                .send(
                    FutureRecord::to("bourse.trades").key(key).payload(payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    });
    let trades = wait_stored(&node, "KRW-BTC", 2, Duration::from_secs(30));
    assert_eq!(trades.len(), 2, "{trades:?}");
    assert_eq!(
        shown(&trades[1]),
        ("150000000".into(), "0.5".into(), "sell".into())
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = metrics(&node);
        if metric(&text, "bourse_feed_trades_total{outcome=\"duplicate\"}") == Some(1.0)
            || Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for (reason, n) in [
        ("not_json", 1.0),
        ("bad_shape", 1.0),
        ("unknown_symbol", 1.0),
        ("negative", 1.0),
        ("off_tick", 1.0),
    ] {
        let sample = format!("bourse_feed_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&text, &sample), Some(n), "{sample}\n{text}");
    }
    assert_eq!(
        metric(&text, "bourse_feed_trades_total{outcome=\"duplicate\"}"),
        Some(1.0)
    );
    let log = node.log();
    assert_eq!(
        log.matches("skipping a bad feed message").count(),
        5,
        "once per kind:\n{log}"
    );
    // The node is none the worse: it still serves.
    let (status, _) = node.get("/api/v1/ticker/KRW-BTC");
    assert_eq!(status, 200);
}

#[test]
fn a_node_killed_while_consuming_loses_and_duplicates_nothing() {
    let Some(broker) = Broker::start("a_node_killed_while_consuming") else {
        return;
    };
    const N: usize = 400;
    let mut cluster = Cluster::start("kafka-kill", 2, &broker.node_config());
    // 400 trades per symbol over about eight seconds; one node dies two seconds in.
    let mut feed = broker.feed_in_background(&["--count", &N.to_string(), "--rate", "50"]);
    std::thread::sleep(Duration::from_secs(2));
    cluster.nodes[0].kill9();
    let status = feed.wait().unwrap();
    assert!(status.success(), "bourse feed failed");
    let survivor = &cluster.nodes[1];
    for symbol in ["KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL"] {
        let trades = wait_stored(survivor, symbol, N, Duration::from_secs(90));
        let got: Vec<_> = trades.iter().map(shown).collect();
        assert_eq!(
            got.len(),
            N,
            "{symbol}: {} of {N} stored; survivor's log:\n{}",
            got.len(),
            survivor.log()
        );
        assert_eq!(
            got,
            simulated(symbol, N),
            "{symbol}: lost, repeated or reordered"
        );
        let ids: Vec<u64> = trades
            .iter()
            .map(|t| t["trade_id"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(ids, (1..=N as u64).collect::<Vec<_>>(), "{symbol}");
    }
}

/// Every message of `topic` from its beginning, read until none arrived for `quiet`.
fn read_topic(broker: &Broker, topic: &str, quiet: Duration) -> Vec<Value> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", "kafka-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = md.topics()[0].partitions().len() as i32;
    assert!(partitions > 0, "{topic} has no partitions");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut out = Vec::new();
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while last.elapsed() < quiet && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            out.push(serde_json::from_slice(m.payload().unwrap()).unwrap());
            last = Instant::now();
        }
    }
    out
}

#[test]
fn the_event_topic_holds_every_acknowledged_orders_fills_once_after_deduplication() {
    let Some(broker) = Broker::start("the_event_topic_holds_every_fill") else {
        return;
    };
    let config = format!(
        "[feed]\nkind = \"none\"\n[kafka]\nbrokers = [\"{}\"]\nrelay_events = true\n",
        broker.address()
    );
    let mut node = Node::start("kafka-relay", &config);
    let (_, seller) = node.register("relay_seller");
    let (_, buyer) = node.register("relay_buyer");
    const N: usize = 12;
    let mut acked = Vec::new();
    for i in 0..N {
        acked.push(place_acked(
            &node,
            &seller,
            limit("sell", "140000000", "0.0002"),
            &format!("s{i}"),
        ));
        if i == N / 2 {
            // A SIGKILL mid-way: whatever was acknowledged is in the outbox, and the
            // restarted node relays it (perhaps again).
            node.kill9();
            node.restart();
        }
        acked.push(place_acked(
            &node,
            &buyer,
            limit("buy", "140000000", "0.0002"),
            &format!("b{i}"),
        ));
    }
    let (status, v) = node.post(
        "/api/v1/chat/KRW-BTC/messages",
        &json!({"text": "relayed"}),
        &[("Authorization", &format!("Bearer {buyer}"))],
    );
    assert_eq!(status, 201, "{v}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let (events, by_id) = loop {
        let events = read_topic(&broker, "bourse.events", Duration::from_secs(2));
        let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
        for e in &events {
            let id = e["id"].as_str().unwrap().to_string();
            if let Some(seen) = by_id.get(&id) {
                assert_eq!(seen, e, "one id, one event");
            }
            by_id.insert(id, e.clone());
        }
        let fills = by_id.values().filter(|e| e["kind"] == "fill").count();
        let chats = by_id.values().filter(|e| e["kind"] == "chat").count();
        if (fills >= N && chats >= 1) || Instant::now() > deadline {
            break (events, by_id);
        }
    };
    let fills: Vec<&Value> = by_id.values().filter(|e| e["kind"] == "fill").collect();
    assert_eq!(fills.len(), N, "one fill per crossing pair: {fills:?}");
    let trade_ids: BTreeSet<u64> = fills
        .iter()
        .map(|e| e["data"]["trade_id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(trade_ids.len(), N, "each fill once after deduplication");
    for f in &fills {
        assert_eq!(f["key"], "book/KRW-BTC");
        assert_eq!(f["data"]["price"], "140000000");
        assert_eq!(f["data"]["qty"], "0.0002");
    }
    // Every acknowledged order's last state is on the topic: each one filled.
    let mut last_status: BTreeMap<String, String> = BTreeMap::new();
    for e in by_id.values().filter(|e| e["kind"] == "order") {
        let d = &e["data"];
        if d["status"] == "filled" || !last_status.contains_key(d["order_id"].as_str().unwrap()) {
            last_status.insert(
                d["order_id"].as_str().unwrap().to_string(),
                d["status"].as_str().unwrap().to_string(),
            );
        }
    }
    for a in &acked {
        let id = a["order_id"].as_str().unwrap();
        assert_eq!(
            last_status.get(id).map(String::as_str),
            Some("filled"),
            "order {id} ({a}) is on the topic as filled"
        );
    }
    let trades = by_id.values().filter(|e| e["kind"] == "trade").count();
    assert_eq!(trades, N, "the symbol's trades too");
    let chat: Vec<&Value> = by_id.values().filter(|e| e["kind"] == "chat").collect();
    assert_eq!(chat.len(), 1);
    assert_eq!(chat[0]["data"]["text"], "relayed");
    assert!(events.len() >= by_id.len());
    let text = metrics(&node);
    assert!(
        metric(&text, "bourse_relay_events_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

#[test]
fn bench_kafka_runs_with_small_parameters() {
    let Some(broker) = Broker::start("bench_kafka_runs_with_small_parameters") else {
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_bourse"))
        .args(["bench", "kafka", "--brokers", &broker.address()])
        .args(["--trades", "20", "--nodes", "1"])
        .output()
        .expect("run bourse bench kafka");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("stored 160 of 160"), "{stdout}");
    assert!(stdout.contains("relayed 160 trade events"), "{stdout}");
}
