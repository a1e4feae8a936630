//! What the shared store witnesses of a member this node cannot hear.
//!
//! A peer whose cluster port refuses connections has usually exited, but a firewall that
//! rejects (a TCP reset) says the same of a process that lives on. A node that forgot such
//! a peer at its word, when it would otherwise stand down, could serve on a membership the
//! peer still counts itself in, and both sides of the cut would serve. So every clustered
//! node beats in the store its peers share (it takes a lease of its own again every
//! heartbeat: the epoch grows, the owner names the process's run), and a refused peer that
//! would change this node's verdict is forgotten only once its beat has not grown between
//! two of this node's reads at least the heartbeat timeout apart. Until then, a node that
//! served and would serve without it holds what it owns (see the membership's
//! `recompute`), and stands down once its beat lives. A forgotten peer whose beat lives
//! again (read for a minute after) counts again wherever that would make this node stand
//! down, until it is heard, or its beat stops again.

use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// The store's side of the witness (implemented over the node's store).
#[async_trait]
pub trait Witness: Send + Sync + 'static {
    /// Records that run `run` of `me` is alive now.
    async fn beat(&self, me: &str, run: u64) -> Result<(), String>;
    /// `node`'s latest beat (`None`: it never beat).
    async fn last_beat(&self, node: &str) -> Result<Option<Beat>, String>;
}

/// One beat of a node: which run of it beat (its incarnation), and a count that grows
/// with every beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    pub run: u64,
    pub epoch: u64,
}

/// Beats run `run` of node `me` into the store every `every` for as long as the process
/// lives: from a task of its own, as a membership tick held up by a slow region must not
/// look like a death. One beat at a time, each awaited to its end (the store's own
/// timeouts bound it), never given up: a beat abandoned while the server still ran it
/// could land beside the next, and a process killed then would grow twice after its death,
/// which reads as alive.
pub fn beat_on(witness: Arc<dyn Witness>, me: String, run: u64, every: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = witness.beat(&me, run).await {
                tracing::debug!(error = %e, "this node's beat failed");
            }
        }
    });
}

/// What the membership knows of the shared store.
#[derive(Clone)]
pub struct SharedStore {
    /// Whether the store answers (`bourse_storage::health::watch`); while it does not,
    /// this node stands down and routes to the others.
    pub ok: Arc<AtomicBool>,
    pub witness: Arc<dyn Witness>,
}

/// What one read of a member's beat showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// Too soon to tell: the first read, or its beat stood still for less than
    /// `dead_after`.
    Unknown,
    /// Its beat grew twice since the first read: it lives (a process killed with a beat
    /// in flight makes it grow once more, never twice).
    Beating,
    /// Its beat stood still for at least `dead_after` (the membership passes the heartbeat
    /// timeout, four beats or more at the defaults).
    Still,
}

/// One member's beats as this node read them.
#[derive(Debug, Clone, Default)]
pub struct Beats {
    /// The beat read last and when that read was answered, once read.
    since: Option<(Option<u64>, Instant)>,
    /// Whether it grew once already.
    grew: bool,
}

impl Beats {
    /// Notes a read of `beat` sent at `sent` and answered at `answered`. A beat unchanged
    /// since a read answered at least `dead_after` before this one was sent is still:
    /// no beat landed in between, whatever the two reads' own delays.
    pub fn read(
        &mut self,
        beat: Option<u64>,
        sent: Instant,
        answered: Instant,
        dead_after: Duration,
    ) -> Sign {
        match self.since {
            Some((last, at)) if last == beat => {
                if sent.saturating_duration_since(at) >= dead_after {
                    Sign::Still
                } else {
                    Sign::Unknown
                }
            }
            Some(_) => {
                self.since = Some((beat, answered));
                if std::mem::replace(&mut self.grew, true) {
                    Sign::Beating
                } else {
                    Sign::Unknown
                }
            }
            None => {
                self.since = Some((beat, answered));
                Sign::Unknown
            }
        }
    }

    /// The beat read last.
    pub fn last(&self) -> Option<Option<u64>> {
        self.since.map(|(beat, _)| beat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEAD: Duration = Duration::from_secs(4);

    #[test]
    fn a_beat_that_stands_still_long_enough_is_still() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut beats = Beats::default();
        assert_eq!(beats.read(Some(7), ms(0), ms(10), DEAD), Sign::Unknown);
        assert_eq!(beats.read(Some(7), ms(2000), ms(2010), DEAD), Sign::Unknown);
        // Sent 4 s after the first read was answered: nothing landed in between.
        assert_eq!(beats.read(Some(7), ms(4010), ms(4020), DEAD), Sign::Still);
        assert_eq!(beats.last(), Some(Some(7)));
    }

    #[test]
    fn the_time_counts_from_the_first_answer_to_the_last_send() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut beats = Beats::default();
        // A slow first read: its answer, not its send, starts the time.
        beats.read(Some(7), ms(0), ms(1000), DEAD);
        assert_eq!(beats.read(Some(7), ms(4500), ms(4600), DEAD), Sign::Unknown);
        assert_eq!(beats.read(Some(7), ms(5000), ms(5100), DEAD), Sign::Still);
    }

    #[test]
    fn a_beat_that_grows_starts_the_time_again_and_lives_once_it_grew_twice() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut beats = Beats::default();
        beats.read(Some(7), ms(0), ms(10), DEAD);
        // Once: perhaps the last beat of a process killed with it in flight.
        assert_eq!(beats.read(Some(8), ms(500), ms(510), DEAD), Sign::Unknown);
        assert_eq!(beats.read(Some(8), ms(4000), ms(4010), DEAD), Sign::Unknown);
        assert_eq!(beats.read(Some(8), ms(4510), ms(4520), DEAD), Sign::Still);
        assert_eq!(beats.read(Some(9), ms(8000), ms(8010), DEAD), Sign::Beating);
        assert_eq!(
            beats.read(Some(10), ms(8500), ms(8510), DEAD),
            Sign::Beating
        );
    }

    #[test]
    fn a_member_that_never_beat_is_still_after_the_time() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut beats = Beats::default();
        assert_eq!(beats.read(None, ms(0), ms(10), DEAD), Sign::Unknown);
        assert_eq!(beats.read(None, ms(4010), ms(4020), DEAD), Sign::Still);
        assert_eq!(beats.read(Some(1), ms(5000), ms(5010), DEAD), Sign::Unknown);
        assert_eq!(beats.read(Some(2), ms(5500), ms(5510), DEAD), Sign::Beating);
    }
}
