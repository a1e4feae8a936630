//! What a live feed source (Upbit) reports of itself: its state, for `/readyz`'s detail,
//! and the gauges of [`super::metrics`]. The source sets it; the gateway only reads it.

use super::metrics;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Where a live source stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// This node follows no symbol (the ring gives it none): nothing to connect to.
    Idle,
    /// Dialling or subscribing.
    Connecting,
    /// Subscribed and hearing from the source.
    Live,
    /// Silent, or not connected, for longer than the source's stall limit.
    Stalled,
}

impl State {
    /// The name in `/readyz`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Connecting => "connecting",
            State::Live => "live",
            State::Stalled => "stalled",
        }
    }
}

#[derive(Debug)]
struct Report {
    state: State,
    codes: Vec<String>,
    last_message: Option<Instant>,
    reconnects: u64,
}

/// A live source's state, shared by the source (writing) and the gateway (reading).
#[derive(Debug, Clone)]
pub struct Health {
    kind: &'static str,
    report: Arc<Mutex<Report>>,
}

impl Health {
    /// A source of `kind` (`upbit`) that has not connected yet.
    pub fn new(kind: &'static str) -> Health {
        metrics::init_live();
        Health {
            kind,
            report: Arc::new(Mutex::new(Report {
                state: State::Connecting,
                codes: Vec::new(),
                last_message: None,
                reconnects: 0,
            })),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Report) -> T) -> T {
        let mut r = self
            .report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut r)
    }

    /// The source moved to `state`, following `codes`.
    pub fn set(&self, state: State, codes: &[String]) {
        self.with(|r| {
            r.state = state;
            r.codes = codes.to_vec();
        });
        metrics::CONNECTED.set(i64::from(state == State::Live));
        metrics::STALLED.set(i64::from(state == State::Stalled));
    }

    /// The source's state now.
    pub fn state(&self) -> State {
        self.with(|r| r.state)
    }

    /// The source sent something.
    pub fn heard(&self) {
        self.with(|r| r.last_message = Some(Instant::now()));
    }

    /// The source is being dialled again.
    pub fn redialled(&self) {
        self.with(|r| r.reconnects += 1);
        metrics::RECONNECTS.inc();
    }

    /// Sets `bourse_feed_silence_seconds` to the time since the source last sent
    /// anything (0 while idle or before it ever did): read at scrape time.
    pub fn refresh_silence(&self) {
        self.with(|r| {
            metrics::SILENCE.set(match (r.state, r.last_message) {
                (State::Idle, _) | (_, None) => 0.0,
                (_, Some(t)) => t.elapsed().as_secs_f64(),
            })
        });
    }

    /// `/readyz`'s `feed` detail: `{"kind","state","codes","silent_ms","reconnects"}`
    /// (`silent_ms` null before the first message).
    pub fn view(&self) -> Value {
        self.with(|r| {
            json!({
                "kind": self.kind,
                "state": r.state.as_str(),
                "codes": r.codes,
                "silent_ms": r.last_message.map(|t| t.elapsed().as_millis() as u64),
                "reconnects": r.reconnects,
            })
        })
    }
}
