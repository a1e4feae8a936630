//! Price alerts: the `alert` entity (key: the alert id), its pure [`condition`], and the
//! symbol's trigger [`index`].
//!
//! A rule is stored armed when its symbol creates it (the symbol arms it in its index in the
//! same step); the symbol rebuilds its index from the stored armed rules on activation. When
//! a trade fires a rule, the symbol takes it out of its index and tells the rule's entity,
//! which decides: a deleted rule or a one-shot rule that already fired does nothing; a
//! repeating rule in its cooldown comes back when the cooldown ends; otherwise firing `n`
//! (the next one) is stored: inbox entry, then history and the rule's new state, all under
//! the entity's lease. Only then does the user's session get the live event, and the symbol
//! hear whether and when to re-arm. Firing `n` is keyed in history and inbox, so a rule that
//! fires again after a crash (its symbol rebuilt it armed) stores nothing twice, and the
//! lease keeps a stale activation from announcing it.

pub mod condition;
pub mod index;

use crate::session::Courier;
use crate::trading::Refusal;
use bourse_cluster::{Entity, EntityContext, EntityError, Sharding};
use bourse_config::{Market, Markets, Step};
use bourse_storage::{
    AlertFiring, AlertRecord, AlertStatus, Lease, MarketStore, Notification, StoreError, Write,
};
pub use condition::Condition;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

/// The entity kind name.
pub const KIND: &str = "alert";
/// The longest cooldown a repeating rule may ask for (a week).
pub const MAX_COOLDOWN_S: u32 = 7 * 24 * 3600;

/// What an alert accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AlertMsg {
    /// The symbol's index fired the rule on a trade at `price` (`reference`: the change
    /// window's start price, for `change_pct`).
    Fire { price: u64, reference: u64, ts: i64 },
    /// The owner deletes it.
    Delete { user_id: u64 },
}

/// What an alert answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AlertReply {
    /// The outcome of a `Fire` (stored and announced, or nothing to do): the time from
    /// which the symbol arms the rule again, if ever.
    Rearm(Option<i64>),
    /// The rule as it is now.
    Rule(AlertRecord),
    Error(Refusal),
}

/// What every alert on a node shares.
pub struct AlertDeps {
    pub store: Arc<dyn MarketStore>,
    pub markets: Markets,
    /// Whether firings also go to the outbox for the Kafka event relay.
    pub events: bool,
}

/// The entity state.
pub struct Alert {
    key: String,
    deps: Arc<AlertDeps>,
    sharding: Sharding,
    lease: Lease,
    rule: AlertRecord,
    condition: Condition,
    /// Carries firings to the user's session (`alerts`).
    courier: Courier,
}

fn storage(e: StoreError) -> EntityError {
    EntityError::new(e.to_string())
}

/// Parses a rule's condition from the wire: `above`/`below` take a price on the market's
/// tick, `change_pct` a signed, non-zero percentage with at most two decimals.
pub fn parse_condition(market: &Market, condition: &str, value: &str) -> Result<Condition, String> {
    match condition {
        "above" | "below" => {
            let ticks = market
                .tick
                .to_units(value)
                .map_err(|e| format!("value: {e}"))?;
            if ticks == 0 {
                return Err("value: a price threshold must be positive".into());
            }
            Ok(if condition == "above" {
                Condition::Above(ticks)
            } else {
                Condition::Below(ticks)
            })
        }
        "change_pct" => {
            let (negative, magnitude) = match value.trim().strip_prefix('-') {
                // The sign belongs to the number: "- 5" is not -5.
                Some(m) if m.starts_with(char::is_whitespace) => {
                    return Err("value: no space between the sign and the number".into());
                }
                Some(m) => (true, m),
                None => (false, value),
            };
            let bp = pct_step()
                .to_units(magnitude)
                .map_err(|e| format!("value: {e}"))?;
            let bp = i64::try_from(bp)
                .ok()
                .filter(|bp| (1..=1_000_000).contains(bp))
                .ok_or("value: a change must be non-zero and at most 10000 percent")?;
            if negative && bp >= 10_000 {
                // A price is positive: it can never fall by 100 % or more.
                return Err("value: a fall must be less than 100 percent".into());
            }
            Ok(Condition::ChangePct(if negative { -bp } else { bp }))
        }
        other => Err(format!(
            "unknown condition '{other}': use above, below or change_pct"
        )),
    }
}

/// Percent in hundredths (basis points).
fn pct_step() -> Step {
    Step::from_exp(-2).unwrap_or_else(|| unreachable!("-2 is within the step range"))
}

/// The rule's value as a decimal string.
fn value_string(market: Option<&Market>, condition: Condition) -> String {
    match (condition, market) {
        (Condition::Above(t) | Condition::Below(t), Some(m)) => m.tick.format(t),
        (Condition::Above(t) | Condition::Below(t), None) => t.to_string(),
        (Condition::ChangePct(bp), _) => pct_step().format_signed(i128::from(bp)),
    }
}

/// A rule as the REST body and WebSocket result show it.
pub fn view(markets: &Markets, r: &AlertRecord) -> Value {
    let value = Condition::from_stored(&r.condition, r.value)
        .map(|c| value_string(markets.get(&r.symbol), c))
        .unwrap_or_default();
    json!({
        "alert_id": r.alert_id.to_string(),
        "symbol": r.symbol,
        "condition": r.condition,
        "value": value,
        "repeat": r.repeat,
        "cooldown_s": r.cooldown_s,
        "status": r.status.as_str(),
        "created_at": r.created_at,
        "last_fired_at": (r.last_fired_at > 0).then_some(r.last_fired_at),
        "fired_count": r.fired_count,
    })
}

/// A firing as the `alerts` event, the inbox entry and alert history show it: `price` is
/// the threshold of a level rule, or the reference the change was measured from.
pub fn firing_view(markets: &Markets, f: &AlertFiring) -> Value {
    let market = markets.get(&f.symbol);
    let condition = Condition::from_stored(&f.condition, f.value);
    let price = |ticks: u64| market.map_or(ticks.to_string(), |m| m.tick.format(ticks));
    let threshold = match condition {
        Some(Condition::Above(t) | Condition::Below(t)) => Some(price(t)),
        _ => (f.reference > 0).then(|| price(f.reference)),
    };
    json!({
        "type": "alert",
        "alert_id": f.alert_id.to_string(),
        "n": f.n,
        "symbol": f.symbol,
        "condition": f.condition,
        "value": condition.map(|c| value_string(market, c)),
        "price": threshold,
        "fired_price": price(f.price),
        "ts": f.ts,
    })
}

impl Entity for Alert {
    const KIND: &'static str = KIND;

    type Msg = AlertMsg;
    type Reply = AlertReply;
    type Deps = AlertDeps;

    async fn activate(ctx: &EntityContext, deps: &Arc<AlertDeps>) -> Result<Self, EntityError> {
        let id: u64 = ctx
            .key
            .parse()
            .map_err(|_| EntityError::new(format!("alert key '{}' is not an id", ctx.key)))?;
        let store = &deps.store;
        let lease = crate::journal::take_over(store, KIND, &ctx.key, &ctx.sharding).await?;
        let rule = store
            .alert(id)
            .await
            .map_err(storage)?
            .ok_or_else(|| EntityError::new(format!("no alert {id}")))?;
        let condition = Condition::from_stored(&rule.condition, rule.value).ok_or_else(|| {
            EntityError::new(format!(
                "alert {id}: unknown condition '{}' {}",
                rule.condition, rule.value
            ))
        })?;
        Ok(Alert {
            key: ctx.key.clone(),
            deps: deps.clone(),
            sharding: ctx.sharding.clone(),
            courier: Courier::new(&ctx.sharding, &format!("{KIND}/{}", ctx.key), rule.user_id),
            lease,
            rule,
            condition,
        })
    }

    async fn handle(&mut self, msg: AlertMsg, _ctx: &EntityContext) -> AlertReply {
        match msg {
            AlertMsg::Fire {
                price,
                reference,
                ts,
            } => self.fire(price, reference, ts).await,
            AlertMsg::Delete { user_id } => self.delete(user_id).await,
        }
    }

    fn summary(&self) -> Value {
        json!({
            "lease": self.lease.fence().epoch,
            "symbol": self.rule.symbol,
            "status": self.rule.status,
            "repeat": self.rule.repeat,
            "fired_count": self.rule.fired_count,
        })
    }

    fn fenced(&self) -> bool {
        self.lease.is_lost()
    }

    async fn passivate(&mut self, _ctx: &EntityContext) {
        self.lease.release().await;
    }
}

impl Alert {
    fn cooldown_ends(&self) -> i64 {
        self.rule.last_fired_at + i64::from(self.rule.cooldown_s) * 1000
    }

    async fn fire(&mut self, price: u64, reference: u64, ts: i64) -> AlertReply {
        if self.rule.status != AlertStatus::Armed {
            return AlertReply::Rearm(None);
        }
        if self.rule.repeat && self.rule.fired_count > 0 && ts < self.cooldown_ends() {
            return AlertReply::Rearm(Some(self.cooldown_ends()));
        }
        if !self.condition.holds(price, reference) {
            // Not this rule's trade (an index built from an older rule): wait for one.
            return AlertReply::Rearm(Some(ts));
        }
        let firing = AlertFiring {
            alert_id: self.rule.alert_id,
            n: self.rule.fired_count + 1,
            user_id: self.rule.user_id,
            symbol: self.rule.symbol.clone(),
            condition: self.rule.condition.clone(),
            value: self.rule.value,
            price,
            reference,
            ts,
        };
        let event = firing_view(&self.deps.markets, &firing).to_string();
        let store = &self.deps.store;
        // The inbox entry first: once the firing is stored, so is its notification.
        let noted = store.submit(Write::Notify(Notification {
            user_id: self.rule.user_id,
            key: format!("alert:{}:{}", firing.alert_id, firing.n),
            ts,
            kind: "alert".into(),
            body: event.clone(),
        }));
        let one_shot = !self.rule.repeat;
        let events = if self.deps.events {
            vec![crate::events::alert(event.clone(), &firing)]
        } else {
            Vec::new()
        };
        let stored = self.lease.commit(
            Write::AlertFired {
                firing: firing.clone(),
                one_shot,
            }
            .with_events(events),
        );
        if let Err(e) = async { noted.wait().await.and(stored.await.map(|_| ())) }.await {
            tracing::error!(alert = %self.key, error = %e, "storing an alert firing failed");
            return AlertReply::Error(Refusal::Unavailable(format!(
                "alert {} could not be stored",
                self.key
            )));
        }
        self.rule.fired_count = firing.n;
        self.rule.last_fired_at = ts;
        if one_shot {
            self.rule.status = AlertStatus::Fired;
        }
        self.courier
            .send(crate::session::Private::Alerts, ts, event);
        tracing::debug!(alert = %self.key, n = firing.n, price, "alert fired");
        AlertReply::Rearm(self.rule.repeat.then(|| self.cooldown_ends()))
    }

    async fn delete(&mut self, user_id: u64) -> AlertReply {
        if self.rule.user_id != user_id || self.rule.status == AlertStatus::Deleted {
            return AlertReply::Error(Refusal::NotFound(format!("no alert {}", self.key)));
        }
        let write = Write::DeleteAlert {
            alert_id: self.rule.alert_id,
        };
        if self.lease.commit(write).await.is_err() {
            return AlertReply::Error(Refusal::Unavailable(format!(
                "alert {} could not be deleted; retry",
                self.key
            )));
        }
        self.rule.status = AlertStatus::Deleted;
        // The symbol drops it from its index; if this is lost, the rule's next firing finds
        // it deleted and does nothing.
        let disarm = crate::symbol::SymbolMsg::DisarmAlert {
            alert_id: self.rule.alert_id,
        };
        let _ = self
            .sharding
            .send::<crate::symbol::Symbol>(&self.rule.symbol, disarm);
        AlertReply::Rule(self.rule.clone())
    }
}

/// A new rule as the symbol receives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewAlert {
    pub user_id: u64,
    pub condition: Condition,
    pub repeat: bool,
    pub cooldown_s: u32,
}

impl NewAlert {
    /// The record to store for it on `symbol` at `now`.
    pub fn record(&self, symbol: &str, now: i64) -> AlertRecord {
        AlertRecord {
            alert_id: 0,
            user_id: self.user_id,
            symbol: symbol.to_string(),
            condition: self.condition.name().into(),
            value: self.condition.stored_value(),
            repeat: self.repeat,
            cooldown_s: self.cooldown_s,
            created_at: now,
            status: AlertStatus::Armed,
            last_fired_at: 0,
            fired_count: 0,
        }
    }
}

/// When a stored armed rule is armed again after a restart: at once, or when a repeating
/// rule's cooldown ends.
pub fn armed_from(r: &AlertRecord) -> i64 {
    if r.repeat && r.fired_count > 0 {
        r.last_fired_at + i64::from(r.cooldown_s) * 1000
    } else {
        0
    }
}
