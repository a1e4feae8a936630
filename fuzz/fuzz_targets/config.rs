//! A config file as an operator writes it, with a `BOURSE_*` variable beside it: loading
//! either answers settings or a `ConfigError`, never a panic.

#![no_main]

use bourse_config::Settings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line, when it looks like `BOURSE_X=v`, is an environment variable.
    let (env, toml) = match text.split_once('\n') {
        Some((first, rest)) if first.starts_with("BOURSE_") => (first, rest),
        _ => ("", text),
    };
    let env: Vec<(String, String)> = env
        .split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into_iter()
        .collect();
    let _ = Settings::from_sources(toml, env);
});
