//! A market's trading hours: per weekday, one session from open to close in the market's
//! time zone (seed 004's stock markets); 24/7 (crypto) by default. Pure: time is passed in
//! as milliseconds since the Unix epoch. A market names its hours (`symbols[i].hours`);
//! outside them its book reserves orders for the next open and expires day orders at the
//! close (`actors/src/book`).

use crate::ConfigError;
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};
use serde::{Deserialize, Serialize};

/// `[hours.NAME]`: a time zone and, per weekday, `"HH:MM-HH:MM"` or `"closed"` (a day not
/// named is closed). `"00:00-24:00"` is the whole day.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HoursSettings {
    /// An IANA time zone (`Asia/Seoul`, `America/New_York`).
    pub timezone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mon: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sat: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sun: Option<String>,
}

/// One day's session: open at `open`, closed from `close` (`None`: midnight, the day's end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Session {
    open: Time,
    close: Option<Time>,
}

/// When a market trades.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hours {
    tz: TimeZone,
    /// Monday first.
    days: [Option<Session>; 7],
}

fn day_index(w: Weekday) -> usize {
    w.to_monday_zero_offset() as usize
}

fn clock(key: &str, text: &str) -> Result<Time, ConfigError> {
    let bad = || ConfigError::new(key, format!("'{text}' is not HH:MM"));
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

fn session(key: &str, text: &str) -> Result<Option<Session>, ConfigError> {
    if text == "closed" {
        return Ok(None);
    }
    let (open, close) = text.split_once('-').ok_or_else(|| {
        ConfigError::new(key, format!("'{text}': expected HH:MM-HH:MM or closed"))
    })?;
    let open = clock(key, open)?;
    let close = if close == "24:00" {
        None
    } else {
        Some(clock(key, close)?)
    };
    if close.is_some_and(|c| c <= open) {
        return Err(ConfigError::new(
            key,
            format!("'{text}': the close must come after the open (a session ends by midnight)"),
        ));
    }
    Ok(Some(Session { open, close }))
}

impl Hours {
    /// Always open.
    pub fn always() -> Hours {
        let all_day = Session {
            open: Time::midnight(),
            close: None,
        };
        Hours {
            tz: TimeZone::UTC,
            days: [Some(all_day); 7],
        }
    }

    /// Validates `[hours.NAME]` (`key` names it in errors).
    pub fn from_settings(key: &str, s: &HoursSettings) -> Result<Hours, ConfigError> {
        let tz = TimeZone::get(&s.timezone).map_err(|_| {
            ConfigError::new(
                format!("{key}.timezone"),
                format!("unknown time zone '{}'", s.timezone),
            )
        })?;
        let named = [
            ("mon", &s.mon),
            ("tue", &s.tue),
            ("wed", &s.wed),
            ("thu", &s.thu),
            ("fri", &s.fri),
            ("sat", &s.sat),
            ("sun", &s.sun),
        ];
        let mut days = [None; 7];
        for (i, (day, text)) in named.iter().enumerate() {
            if let Some(text) = text {
                days[i] = session(&format!("{key}.{day}"), text)?;
            }
        }
        Ok(Hours { tz, days })
    }

    fn zoned(&self, ts_ms: i64) -> Option<ZonedDateTime> {
        Some(
            Timestamp::from_millisecond(ts_ms)
                .ok()?
                .to_zoned_datetime(self.tz.clone()),
        )
    }

    /// The instant `time` on `date`, in this market's zone (a time the clocks skipped is
    /// taken as the instant after the gap).
    fn at(&self, date: Date, time: Time) -> Option<i64> {
        let zoned = date
            .to_datetime(time)
            .to_zoned_datetime(self.tz.clone())
            .ok()?;
        Some(zoned.timestamp().as_millisecond())
    }

    /// Day `date`'s session as instants: `[open, close)`.
    fn span(&self, date: Date) -> Option<(i64, i64)> {
        let s = self.days[day_index(date.weekday())]?;
        let open = self.at(date, s.open)?;
        let close = match s.close {
            Some(c) => self.at(date, c)?,
            None => self.at(date.tomorrow().ok()?, Time::midnight())?,
        };
        Some((open, close))
    }

    /// Whether the market trades at `ts_ms`: inside the session of that instant's local
    /// day. Sessions are spans of real time between their open and close instants, so on
    /// the night the clocks go back a session does not close and reopen.
    pub fn is_open(&self, ts_ms: i64) -> bool {
        self.zoned(ts_ms)
            .and_then(|z| self.span(z.date()))
            .is_some_and(|(open, close)| open <= ts_ms && ts_ms < close)
    }

    /// The first instant at or after `ts_ms` when the market trades; `None` if it never
    /// does.
    pub fn next_open(&self, ts_ms: i64) -> Option<i64> {
        if self.is_open(ts_ms) {
            return Some(ts_ms);
        }
        let mut date = self.zoned(ts_ms)?.date();
        for _ in 0..8 {
            if let Some((open, _)) = self.span(date)
                && open >= ts_ms
            {
                return Some(open);
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The first instant at or after `ts_ms` when the market does not trade; `None` if it
    /// always does.
    pub fn next_close(&self, ts_ms: i64) -> Option<i64> {
        if !self.is_open(ts_ms) {
            return Some(ts_ms);
        }
        let mut date = self.zoned(ts_ms)?.date();
        for _ in 0..8 {
            let (_, close) = self.span(date)?;
            let next = date.tomorrow().ok()?;
            // Open to midnight, and open again from it: one span.
            match self.span(next) {
                Some((open, _)) if open == close => date = next,
                _ => return Some(close),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(text: &str) -> i64 {
        text.parse::<Timestamp>()
            .map(|t| t.as_millisecond())
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn weekdays(tz: &str, hours: &str) -> Hours {
        let day = Some(hours.to_string());
        Hours::from_settings(
            "hours.test",
            &HoursSettings {
                timezone: tz.into(),
                mon: day.clone(),
                tue: day.clone(),
                wed: day.clone(),
                thu: day.clone(),
                fri: day,
                sat: None,
                sun: None,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn seoul_sessions_in_utc() {
        let krx = weekdays("Asia/Seoul", "09:00-15:30");
        // Friday 2026-12-04 09:00 KST is 00:00 UTC.
        assert!(!krx.is_open(ms("2026-12-03T23:59:59Z")));
        assert!(krx.is_open(ms("2026-12-04T00:00:00Z")));
        assert!(!krx.is_open(ms("2026-12-04T06:30:00Z")), "closed at 15:30");
        assert_eq!(
            krx.next_close(ms("2026-12-04T01:00:00Z")),
            Some(ms("2026-12-04T06:30:00Z"))
        );
        // Friday after the close: next Monday 09:00 KST.
        assert_eq!(
            krx.next_open(ms("2026-12-04T07:00:00Z")),
            Some(ms("2026-12-07T00:00:00Z"))
        );
    }

    #[test]
    fn new_york_follows_daylight_saving() {
        let nyse = weekdays("America/New_York", "09:30-16:00");
        // Before 2026-03-08 New York is UTC-5, after it UTC-4.
        assert_eq!(
            nyse.next_open(ms("2026-03-06T22:00:00Z")),
            Some(ms("2026-03-09T13:30:00Z"))
        );
        assert!(nyse.is_open(ms("2026-03-06T14:30:00Z")));
        assert!(!nyse.is_open(ms("2026-03-09T13:29:00Z")));
        assert!(nyse.is_open(ms("2026-03-09T13:30:00Z")));
    }

    #[test]
    fn always_open_never_closes_and_bad_settings_name_their_key() {
        let all = Hours::always();
        assert!(all.is_open(0));
        assert_eq!(all.next_close(0), None);
        assert_eq!(all.next_open(123), Some(123));
        for (settings, key) in [
            (
                HoursSettings {
                    timezone: "Mars/Olympus".into(),
                    ..HoursSettings::default()
                },
                "hours.x.timezone",
            ),
            (
                HoursSettings {
                    timezone: "UTC".into(),
                    mon: Some("9:00-15:30".into()),
                    ..HoursSettings::default()
                },
                "hours.x.mon",
            ),
            (
                HoursSettings {
                    timezone: "UTC".into(),
                    tue: Some("15:00-09:00".into()),
                    ..HoursSettings::default()
                },
                "hours.x.tue",
            ),
        ] {
            let err = Hours::from_settings("hours.x", &settings).unwrap_err();
            assert_eq!(err.key, key, "{err}");
        }
    }

    fn day() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some("closed".to_string())),
            Just(Some("00:00-24:00".to_string())),
            (0u32..23, 1u32..60).prop_map(|(h, len)| {
                let open = h * 60;
                let close = (open + len * 15).min(24 * 60);
                let fmt = |m: u32| {
                    if m == 24 * 60 {
                        "24:00".to_string()
                    } else {
                        format!("{:02}:{:02}", m / 60, m % 60)
                    }
                };
                Some(format!("{}-{}", fmt(open), fmt(close)))
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// For any weekly schedule in a zone with daylight saving, the next open and close
        /// are the first minutes at or after the instant where `is_open` says so.
        #[test]
        fn next_open_and_close_are_the_first_such_minutes(
            days in prop::collection::vec(day(), 7),
            start_min in 0i64..(60 * 24 * 400),
        ) {
            let s = HoursSettings {
                timezone: "America/New_York".into(),
                mon: days[0].clone(), tue: days[1].clone(), wed: days[2].clone(),
                thu: days[3].clone(), fri: days[4].clone(), sat: days[5].clone(),
                sun: days[6].clone(),
            };
            let h = Hours::from_settings("hours.p", &s).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let t0 = ms("2026-01-01T00:00:00Z") + start_min * 60_000;
            let scan = |want: bool| (0..(60 * 24 * 9)).map(|k| t0 + k * 60_000).find(|t| h.is_open(*t) == want);
            prop_assert_eq!(h.next_open(t0), scan(true));
            prop_assert_eq!(h.next_close(t0), scan(false));
        }
    }
}
