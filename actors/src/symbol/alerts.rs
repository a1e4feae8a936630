//! The symbol's side of price alerts: creating rules, the trigger index rebuilt from storage
//! on activation, and handing each rule a trade fires to its `alert` entity.

use super::{Symbol, SymbolReply};
use crate::alert::index::TriggerIndex;
use crate::alert::{Alert, AlertMsg, AlertReply, Condition, NewAlert, armed_from};
use crate::clock::now_ms;
use crate::trading::Refusal;
use bourse_cluster::EntityError;
use bourse_storage::{Interval, MarketStore, Write};
use std::time::Duration;

/// How often a firing is offered to an unreachable alert entity before the rule is simply
/// armed again (so the next trade that satisfies it fires it).
const FIRE_ATTEMPTS: u32 = 12;

/// How far back an activating symbol offers its stored trades to the rebuilt index: a
/// crash can lose the firings of trades stored shortly before it (a firing is handed to its
/// rule's entity after the trade is durable, retried for about a minute).
pub const REPLAY_MS: i64 = 5 * 60 * 1000;

/// The index of the armed rules stored for `symbol`, as it stood at `as_of`: a rule counts
/// from its creation (and a repeating one from the end of its cooldown), so trades replayed
/// from `as_of` on fire only rules that existed and were armed when they happened.
pub async fn load(
    store: &dyn MarketStore,
    symbol: &str,
    as_of: i64,
) -> Result<TriggerIndex, EntityError> {
    let mut index = TriggerIndex::new();
    let rules = store
        .armed_alerts(symbol)
        .await
        .map_err(|e| EntityError::new(format!("loading the alerts of {symbol}: {e}")))?;
    for r in rules {
        match Condition::from_stored(&r.condition, r.value) {
            Some(c) => index.arm(r.alert_id, c, armed_from(&r).max(r.created_at), as_of),
            None => {
                tracing::error!(alert = r.alert_id, condition = %r.condition, "skipping a rule with an unknown condition")
            }
        }
    }
    Ok(index)
}

impl Symbol {
    /// Stores the rule (under this symbol's lease) and arms it.
    pub(super) async fn create_alert(&mut self, new: NewAlert) -> SymbolReply {
        let now = now_ms();
        let mut record = new.record(&self.market.symbol, now);
        match self.lease.commit(Write::CreateAlert(record.clone())).await {
            Ok(id) => {
                record.alert_id = id;
                self.triggers.arm(id, new.condition, 0, now);
                SymbolReply::AlertCreated(record)
            }
            Err(e) => {
                self.on_write_error(e);
                SymbolReply::Refused(Refusal::Unavailable(format!(
                    "{} could not store the alert; retry",
                    self.market.symbol
                )))
            }
        }
    }

    /// The price `change_pct` rules measure from at `now`.
    fn change_reference(&self, now: i64) -> u64 {
        let start = Interval::M1.bucket(now) - self.deps.alert_window_ms + 60_000;
        self.window
            .open_since(start, self.candles.open_candle(Interval::M1))
            .unwrap_or(0)
    }

    /// Offers the stored trades since `from` to the index just rebuilt from storage. A
    /// firing lost with the previous activation fires now; one that was stored finds its
    /// rule fired (one-shot) or cooling (repeating), and its entity refuses it again.
    pub(super) fn replay_alerts(&mut self, from: i64) {
        let trades: Vec<(u64, i64)> = self
            .recent
            .iter()
            .filter(|t| t.ts >= from)
            .map(|t| (t.price, t.ts))
            .collect();
        for (price, ts) in trades {
            self.fire_alerts(&[price], ts);
        }
    }

    /// Fires the rules the durable trades at `prices` (in order, at `ts`) satisfy.
    pub(super) fn fire_alerts(&mut self, prices: &[u64], ts: i64) {
        if self.triggers.is_empty() {
            return;
        }
        let reference = self.change_reference(ts);
        for &price in prices {
            for (id, condition) in self.triggers.fire(price, reference, ts) {
                self.dispatch(id, condition, price, reference, ts);
            }
        }
    }

    /// Tells rule `id`'s entity it fired, retrying while it cannot be reached, and arms
    /// the rule again when (and if) the entity says so.
    fn dispatch(&self, id: u64, condition: Condition, price: u64, reference: u64, ts: i64) {
        let sharding = self.sharding.clone();
        let symbol = self.market.symbol.clone();
        tokio::spawn(async move {
            let key = id.to_string();
            let mut delay = Duration::from_millis(200);
            let mut rearm = Some(0);
            for _ in 0..FIRE_ATTEMPTS {
                let fire = AlertMsg::Fire {
                    price,
                    reference,
                    ts,
                };
                match sharding.ask::<Alert>(&key, fire).await {
                    Ok(AlertReply::Rearm(at)) => {
                        rearm = at;
                        break;
                    }
                    Ok(other) => {
                        tracing::warn!(alert = id, reply = ?other, "alert did not take its firing; retrying")
                    }
                    Err(e) => {
                        tracing::warn!(alert = id, error = %e, "alert unreachable; retrying its firing")
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            if let Some(armed_from) = rearm {
                let arm = super::SymbolMsg::ArmAlert {
                    alert_id: id,
                    condition,
                    armed_from,
                };
                if let Err(e) = sharding.send::<Symbol>(&symbol, arm) {
                    tracing::warn!(alert = id, error = %e, "re-arming lost; the symbol's next activation re-arms from storage");
                }
            }
        });
    }
}
