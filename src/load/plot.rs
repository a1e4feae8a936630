//! The load tool's plots, as SVG files an operator opens in a browser: lines over time and
//! latency distributions (the share of samples at or under each latency).

use anyhow::{Context, anyhow};
use hdrhistogram::Histogram;
use plotters::prelude::*;
use std::path::Path;

/// One named line.
pub struct Series {
    pub name: &'static str,
    pub points: Vec<(f64, f64)>,
}

const COLORS: [RGBColor; 4] = [BLUE, RED, BLACK, GREEN];

/// Draws `series` as lines on one chart into `path`.
pub fn lines(path: &Path, title: &str, x: &str, y: &str, series: &[Series]) -> anyhow::Result<()> {
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_max) = (0f64, 0f64);
    for (px, py) in points {
        x_max = x_max.max(*px);
        y_max = y_max.max(*py);
    }
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max.max(1.0), 0f64..(y_max * 1.1).max(1.0))?;
        chart.configure_mesh().x_desc(x).y_desc(y).draw()?;
        for (i, s) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(s.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow!("drawing {}: {e}", path.display()))
}

/// The share of samples (%) at or under each latency (ms): a latency distribution.
pub fn distribution(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to() as f64 / 1000.0, v.percentile()))
        .collect()
}

/// Creates the plot directory and names a file in it.
pub fn file(dir: &Path, name: &str) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.join(name))
}

/// `fanout`'s plots: latency and delivered messages over time, and the latency
/// distribution.
pub fn fanout(
    dir: &Path,
    seconds: &[super::fanout::Second],
    latency: &Histogram<u64>,
) -> anyhow::Result<()> {
    let over_time = |f: fn(&super::fanout::Second) -> u64| -> Vec<(f64, f64)> {
        seconds
            .iter()
            .map(|s| (s.at, f(s) as f64 / 1000.0))
            .collect()
    };
    let time = file(dir, "fanout-latency-over-time.svg")?;
    lines(
        &time,
        "Event latency per second (event ts to client)",
        "seconds",
        "ms",
        &[
            Series {
                name: "p50",
                points: over_time(|s| s.p50_us),
            },
            Series {
                name: "p99",
                points: over_time(|s| s.p99_us),
            },
            Series {
                name: "max",
                points: over_time(|s| s.max_us),
            },
        ],
    )?;
    let delivered = file(dir, "fanout-delivered-over-time.svg")?;
    lines(
        &delivered,
        "Messages delivered per second",
        "seconds",
        "messages/s",
        &[Series {
            name: "delivered",
            points: seconds.iter().map(|s| (s.at, s.delivered as f64)).collect(),
        }],
    )?;
    let cdf = file(dir, "fanout-latency-distribution.svg")?;
    lines(
        &cdf,
        "Event latency distribution",
        "ms",
        "% of messages at or under",
        &[Series {
            name: "latency",
            points: distribution(latency),
        }],
    )?;
    for f in [&time, &delivered, &cdf] {
        println!("plot written to {}", f.display());
    }
    Ok(())
}
