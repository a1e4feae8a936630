//! Decimal strings as prices, quantities and steps arrive (order bodies, config, feeds):
//! `<step> <amount>`. A parsed amount formats back to a string that parses to the same
//! count of steps.

#![no_main]

use bourse_config::decimal::Step;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (step, amount) = text.split_once(' ').unwrap_or(("0.001", text));
    let Some(step) = Step::parse(step) else {
        return;
    };
    if let Ok(units) = step.to_units(amount) {
        let shown = step.format(units);
        assert_eq!(
            step.to_units(&shown).ok(),
            Some(units),
            "{amount:?} -> {units} -> {shown:?}"
        );
    }
});
