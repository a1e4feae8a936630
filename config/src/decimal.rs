//! Fixed-point decimals for money: prices and quantities are integer counts of a
//! power-of-ten step (a symbol's tick size or lot size) inside, decimal strings on the wire.
//! Never floats (docs/PROTOCOL.md "Conventions").

use std::fmt;

/// A step size that is a power of ten, `10^exp` (`"1000"` is exp 3, `"0.001"` is exp -3).
/// Tick and lot sizes must be powers of ten so a decimal string maps to exactly one integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Step {
    exp: i8,
}

/// Why a decimal string could not become a count of steps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("'{0}' is not a decimal number")]
    Syntax(String),
    #[error("'{value}' is not a multiple of {step}")]
    OffStep { value: String, step: String },
    #[error("'{0}' is out of range")]
    Range(String),
    #[error("'{0}' is negative")]
    Negative(String),
}

/// The largest exponent either way; 10^18 still fits a u64 count.
const MAX_EXP: i8 = 18;

impl Step {
    /// Parses a step such as `"1000"` or `"0.00000001"`; `None` unless it is exactly one
    /// power of ten.
    pub fn parse(s: &str) -> Option<Step> {
        let s = s.trim();
        if let Some(frac) = s.strip_prefix("0.") {
            // Zeros then a one, counted in bytes (a non-ASCII character is simply not a zero).
            let (&last, zeros) = frac.as_bytes().split_last()?;
            if last != b'1' || !zeros.iter().all(|&b| b == b'0') {
                return None;
            }
            let zeros = zeros.len();
            let exp = -i8::try_from(zeros + 1).ok()?;
            (exp >= -MAX_EXP).then_some(Step { exp })
        } else {
            let rest = s.strip_prefix('1')?;
            if !rest.bytes().all(|b| b == b'0') {
                return None;
            }
            let exp = i8::try_from(rest.len()).ok()?;
            (exp <= MAX_EXP).then_some(Step { exp })
        }
    }

    /// The step `10^exp`, if in range.
    pub fn from_exp(exp: i8) -> Option<Step> {
        (-MAX_EXP..=MAX_EXP).contains(&exp).then_some(Step { exp })
    }

    /// The power of ten this step stands for.
    pub fn exp(self) -> i8 {
        self.exp
    }

    /// Parses a non-negative decimal string into a count of steps; it must lie on the step.
    pub fn to_units(self, s: &str) -> Result<u64, DecimalError> {
        let t = s.trim();
        if t.starts_with('-') {
            return Err(DecimalError::Negative(s.to_string()));
        }
        let (int, frac) = match t.split_once('.') {
            Some((i, f)) => (i, f),
            None => (t, ""),
        };
        let digits_ok = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !digits_ok(int) || !digits_ok(frac) {
            return Err(DecimalError::Syntax(s.to_string()));
        }
        if t.ends_with('.') || t.starts_with('.') {
            return Err(DecimalError::Syntax(s.to_string()));
        }
        if int.bytes().chain(frac.bytes()).all(|b| b == b'0') {
            return Ok(0);
        }
        // value = int.frac = digits * 10^-(frac.len()); units = value / 10^exp.
        let frac = frac.trim_end_matches('0');
        let mut digits: String = format!("{int}{frac}");
        let mut scale = -(i32::try_from(frac.len()).map_err(|_| DecimalError::Range(s.into()))?);
        let exp = i32::from(self.exp);
        // Shift so that the value is digits * 10^exp exactly.
        while scale > exp {
            digits.push('0');
            scale -= 1;
        }
        if scale < exp {
            let drop = usize::try_from(exp - scale).map_err(|_| DecimalError::Range(s.into()))?;
            if drop > digits.len() || !digits[digits.len() - drop..].bytes().all(|b| b == b'0') {
                return Err(DecimalError::OffStep {
                    value: s.to_string(),
                    step: self.to_string(),
                });
            }
            digits.truncate(digits.len() - drop);
        }
        let digits = digits.trim_start_matches('0');
        if digits.is_empty() {
            return Ok(0);
        }
        digits
            .parse::<u64>()
            .map_err(|_| DecimalError::Range(s.to_string()))
    }

    /// Formats a count of steps as the canonical decimal string (no trailing zeros after
    /// the point, no exponent).
    pub fn format(self, units: u64) -> String {
        format_scaled(u128::from(units), self.exp)
    }

    /// Formats a signed count of steps (a price change, say).
    pub fn format_signed(self, units: i128) -> String {
        let body = format_scaled(units.unsigned_abs(), self.exp);
        if units < 0 { format!("-{body}") } else { body }
    }

    /// Formats a wide count of steps (sums of many quantities).
    pub fn format_wide(self, units: u128) -> String {
        format_scaled(units, self.exp)
    }
}

fn format_scaled(units: u128, exp: i8) -> String {
    let digits = units.to_string();
    if exp >= 0 {
        if units == 0 {
            return "0".into();
        }
        let mut s = digits;
        s.extend(std::iter::repeat_n('0', exp as usize));
        return s;
    }
    let places = exp.unsigned_abs() as usize;
    let padded = if digits.len() <= places {
        format!("{}{}", "0".repeat(places - digits.len() + 1), digits)
    } else {
        digits
    };
    let (int, frac) = padded.split_at(padded.len() - places);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_scaled(1, self.exp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_powers_of_ten_only() {
        assert_eq!(Step::parse("1").map(Step::exp), Some(0));
        assert_eq!(Step::parse("1000").map(Step::exp), Some(3));
        assert_eq!(Step::parse("0.001").map(Step::exp), Some(-3));
        assert_eq!(Step::parse("0.00000001").map(Step::exp), Some(-8));
        for bad in [
            "0", "5", "0.5", "10.0", "0.0010", "", "1e3", "-1", "0.", "100x",
            // Found by fuzzing: a multi-byte character where the zeros go panicked.
            "0.*Λ", "0.Λ1", "1Λ",
        ] {
            assert_eq!(Step::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn converts_both_ways() {
        let tick = Step::parse("1000").unwrap();
        assert_eq!(tick.to_units("50123000"), Ok(50123));
        assert_eq!(tick.format(50123), "50123000");
        assert!(matches!(
            tick.to_units("50123500"),
            Err(DecimalError::OffStep { .. })
        ));
        let lot = Step::parse("0.001").unwrap();
        assert_eq!(lot.to_units("0.015"), Ok(15));
        assert_eq!(lot.to_units("2"), Ok(2000));
        assert_eq!(lot.to_units("2.500"), Ok(2500));
        assert_eq!(lot.format(15), "0.015");
        assert_eq!(lot.format(2000), "2");
        assert_eq!(lot.format(0), "0");
        assert_eq!(lot.format_signed(-1500), "-1.5");
        assert!(matches!(
            lot.to_units("0.0155"),
            Err(DecimalError::OffStep { .. })
        ));
        assert!(matches!(lot.to_units("-1"), Err(DecimalError::Negative(_))));
        for bad in ["abc", "1.2.3", ".5", "5.", "", " "] {
            assert!(
                matches!(lot.to_units(bad), Err(DecimalError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            lot.to_units("99999999999999999999"),
            Err(DecimalError::Range(_))
        ));
    }

    #[test]
    fn round_trips_every_small_count() {
        for exp in [-8i8, -3, 0, 2] {
            let step = Step { exp };
            for units in (0..2000u64).chain([u64::MAX / 1000]) {
                assert_eq!(
                    step.to_units(&step.format(units)),
                    Ok(units),
                    "{exp} {units}"
                );
            }
        }
    }
}
