//! The default markets, which the targets check bodies and messages against.

use bourse_config::{Markets, Settings};
use std::sync::LazyLock;

pub static MARKETS: LazyLock<Markets> = LazyLock::new(|| {
    Settings::from_sources("", std::iter::empty())
        .expect("the default settings load")
        .1
});
