//! `GET /sse?channels=a,b`: the same channels and events as WebSocket, as Server-Sent Events.
//! Each event is `id: <epoch>:<seq>`, `event: <channel>`, `data: <the WebSocket event JSON>`.
//! `Last-Event-ID` resumes like `since` when the stream has one channel (an id names one
//! channel's position; with several channels each starts from a fresh snapshot). A comment
//! keeps the connection alive every `sse_keepalive_s`; a client too slow for its queue has
//! its stream ended (it reconnects with `Last-Event-ID`). A connection that opens with the
//! request is served by direct.rs outside hyper; the warp route serves the others.

use crate::error::ApiError;
use crate::state::GatewayState;
use crate::subscriptions::{Subscriptions, parse_event_id, recycle};
use bourse_cluster::{Frame, Outbox};
use futures_util::{Stream, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use warp::sse::Event;

fn event(f: &Frame) -> Event {
    Event::default()
        .id(format!("{}:{}", f.epoch, f.seq))
        .event(bourse_cluster::hub::public_name(&f.channel))
        .data(&*f.json)
}

struct Live {
    subs: Subscriptions,
    outbox: Arc<Outbox>,
    queue: VecDeque<Arc<Frame>>,
    /// A drain's frames, kept from one wake to the next.
    drained: Vec<Arc<Frame>>,
    /// `gateway.write_delay_ms`: how long a woken stream waits for more events.
    write_delay: Duration,
}

/// Subscribes the requested channels and returns the event stream.
pub async fn open(
    state: Arc<GatewayState>,
    q: HashMap<String, String>,
    last_event_id: Option<String>,
) -> Result<impl Stream<Item = Result<Event, Infallible>> + Send + 'static, ApiError> {
    if let Some(k) = q.keys().find(|k| *k != "channels" && *k != "token") {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter '{k}' (allowed: channels, token)"
        )));
    }
    let names: Vec<String> = q
        .get("channels")
        .map(|c| {
            c.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return Err(ApiError::bad_request(
            "'channels' is required, e.g. ?channels=ticker:KRW-BTC",
        ));
    }
    let outbox = Outbox::new(state.settings.outbound_queue);
    let mut subs = Subscriptions::new(state.clone(), outbox.clone(), "sse");
    if let Some(token) = q.get("token") {
        let (id, name) = state.auth.identity(token)?;
        subs.set_user(id, name);
    }
    let channels = subs.parse_all(&names)?;
    subs.check_room(&channels)?;
    let since = match (&last_event_id, channels.len()) {
        (Some(id), 1) => Some(parse_event_id(id).ok_or_else(|| {
            ApiError::bad_request(format!("Last-Event-ID '{id}' is not 'epoch:seq'"))
        })?),
        _ => None,
    };
    let wanted = channels.into_iter().map(|c| (c, since.clone())).collect();
    let queue: VecDeque<_> = subs
        .subscribe_all(wanted)
        .await?
        .into_iter()
        .flat_map(|g| g.frames)
        .collect();
    let live = Live {
        subs,
        outbox,
        queue,
        drained: Vec::new(),
        write_delay: Duration::from_millis(state.settings.write_delay_ms),
    };
    let events = futures_util::stream::unfold(live, |mut live| async move {
        loop {
            if let Some(f) = live.queue.pop_front() {
                return Some((Ok(event(&f)), live));
            }
            // A stopping node says so through the outbox, which wakes the stream.
            if live.outbox.is_closing() {
                return None;
            }
            live.outbox.wait(live.write_delay).await;
            // Boxed: an idle stream does not carry a resync's state.
            if !Box::pin(live.subs.next_frames(&mut live.drained)).await {
                tracing::debug!("sse client too slow; ending its stream");
                return None;
            }
            live.queue.extend(live.drained.drain(..));
            recycle(&mut live.drained);
        }
    });
    // A panicking stream (a bug, or a chaos kill) ends alone; its Subscriptions drop with it.
    let contained = std::panic::AssertUnwindSafe(events)
        .catch_unwind()
        .filter_map(|item| {
            futures_util::future::ready(match item {
                Ok(event) => Some(event),
                Err(panic) => {
                    crate::metrics::connection_panicked("sse", &*panic);
                    None
                }
            })
        });
    Ok(contained)
}

/// The keep-alive comment's text, for the streams served outside warp (direct.rs).
pub fn keep_alive_comment() -> String {
    Event::default().comment(KEEP_ALIVE).to_string()
}

const KEEP_ALIVE: &str = "keep-alive";

/// Keep-alive comments at the configured interval.
pub fn keep_alive(secs: u64) -> warp::sse::KeepAlive {
    warp::sse::keep_alive()
        .interval(Duration::from_secs(secs))
        .text(KEEP_ALIVE)
}
