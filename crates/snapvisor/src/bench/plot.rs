//! The concurrency figure (SVG): p50 SnapStart and the host's DRAM against the number of
//! VMs restored at once, one line per configuration, one row of panels per function
//! (levels that did not fit are left out).

use super::concurrency::Level;
use plotters::prelude::*;
use std::collections::BTreeSet;
use std::path::Path;

const COLORS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
];

/// Writes the figure to `path` (nothing when there are no rows).
pub fn concurrency_svg(path: &Path, levels: &[Level]) -> std::io::Result<()> {
    let rows: Vec<&Level> = levels.iter().filter(|l| l.fits).collect();
    if rows.is_empty() {
        return Ok(());
    }
    draw(path, &rows).map_err(|e| std::io::Error::other(e.to_string()))
}

fn draw(path: &Path, rows: &[&Level]) -> Result<(), Box<dyn std::error::Error>> {
    let functions: Vec<String> = rows.iter().map(|r| r.function.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let strategies: Vec<String> = {
        let mut s: Vec<String> = Vec::new();
        for r in rows {
            if !s.contains(&r.config) {
                s.push(r.config.clone());
            }
        }
        s
    };
    let height = 360 * functions.len() as u32;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((functions.len(), 2));
    let max_n = rows.iter().map(|r| r.concurrency).max().unwrap_or(1) as u32;
    for (fi, function) in functions.iter().enumerate() {
        let of = |s: &str| -> Vec<&Level> {
            let mut v: Vec<&Level> =
                rows.iter().copied().filter(|r| &r.function == function && r.config == s).collect();
            v.sort_by_key(|r| r.concurrency);
            v
        };
        for (pi, (title, value, unit)) in [
            ("SnapStart p50", (|r: &Level| r.p50_ms) as fn(&Level) -> f64, "ms"),
            ("host DRAM, all VMs alive", |r: &Level| r.host_dram_mib, "MiB"),
        ]
        .into_iter()
        .enumerate()
        {
            let max_y = rows.iter().filter(|r| &r.function == function).map(|r| value(r)).fold(1.0, f64::max) * 1.1;
            let mut chart = ChartBuilder::on(&panels[fi * 2 + pi])
                .caption(format!("{function}: {title} ({unit})"), ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(35)
                .y_label_area_size(60)
                .build_cartesian_2d(0u32..max_n + 1, 0f64..max_y)?;
            chart.configure_mesh().x_desc("VMs restored at once").y_desc(unit).draw()?;
            for (si, strategy) in strategies.iter().enumerate() {
                let points: Vec<(u32, f64)> = of(strategy).iter().map(|r| (r.concurrency as u32, value(r))).collect();
                if points.is_empty() {
                    continue;
                }
                let color = COLORS[si % COLORS.len()];
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                    .label(strategy.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
            chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
        }
    }
    root.present()?;
    Ok(())
}
