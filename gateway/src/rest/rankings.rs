//! Trader rankings over REST (docs/PROTOCOL.md "Rankings"): the best traders by return over
//! the day, the week or all time, and the caller's own place, from the `rankings` entity.

use super::market::{limit, query};
use crate::error::ApiError;
use crate::state::GatewayState;
use bourse_actors::rankings::{KEY, Period, Rankings, RankingsMsg, RankingsReply, Standing};
use serde_json::{Value, json};
use std::collections::HashMap;

/// A return in millionths as a signed percentage with four decimal places: `"12.3456"`.
pub fn percent(ppm: i64) -> String {
    let abs = ppm.unsigned_abs();
    let sign = if ppm < 0 { "-" } else { "" };
    format!("{sign}{}.{:04}", abs / 10_000, abs % 10_000)
}

fn standing(s: &Standing) -> Value {
    // Ids are strings on the wire, as everywhere (they may pass 2^53).
    json!({ "rank": s.rank, "user_id": s.user.to_string(), "return_pct": percent(s.score) })
}

/// `GET /api/v1/rankings?period=day|week|all&limit=` (default `day` and 100, at most 1000);
/// with a token, `you` is the caller's own place (`null` before the caller's first trade
/// or grant is ranked).
pub async fn rankings(
    state: &GatewayState,
    user: Option<u64>,
    q: HashMap<String, String>,
) -> Result<Value, ApiError> {
    query(&q, &["period", "limit"])?;
    let name = q.get("period").map_or("day", String::as_str);
    let period = Period::parse(name).ok_or_else(|| {
        ApiError::bad_request(format!("unknown period '{name}' (allowed: day, week, all)"))
    })?;
    let limit = limit(&q, 100, 1000)?;
    let ask = RankingsMsg::Top {
        period,
        limit,
        user,
    };
    match state.sharding.ask::<Rankings>(KEY, ask).await? {
        RankingsReply::Top {
            traders,
            you,
            ranked,
            currency,
        } => Ok(json!({
            "period": period.name(),
            "currency": currency,
            "ranked": ranked,
            "traders": traders.iter().map(standing).collect::<Vec<_>>(),
            "you": you.as_ref().map(standing),
        })),
        other @ RankingsReply::Done => Err(ApiError::wrong_reply("rankings: top", &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::percent;

    #[test]
    fn returns_show_as_exact_percentages() {
        assert_eq!(percent(0), "0.0000");
        assert_eq!(percent(500_000), "50.0000");
        assert_eq!(percent(-123_456), "-12.3456");
        assert_eq!(percent(7), "0.0007");
        assert_eq!(percent(i64::MIN), "-922337203685477.5808");
    }
}
