//! The chart: median calls/s against callers (both axes logarithmic), one panel per store,
//! one line per system, solid for fresh keys and dashed for replays. An SVG written with
//! plotters (text is left to the SVG viewer's fonts).

use std::path::{Path, PathBuf};

use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::results::Results;
use crate::rows::{Family, Mode, Row, System};

const WIDTH: u32 = 1400;
const PANEL_HEIGHT: u32 = 460;

/// A colour per system, the same in every panel where it appears.
fn colour(system: System) -> RGBColor {
    use System::*;
    match system {
        Plain => RGBColor(120, 120, 120),
        IdemMemory | IdemSqlite | IdemRedis | IdemRedisCluster | IdemPostgres => {
            RGBColor(31, 119, 180)
        }
        IdemRedisReplayCache => RGBColor(23, 190, 207),
        Cached => RGBColor(44, 160, 44),
        IdempotentMemory | IdempotentRedis => RGBColor(255, 127, 14),
        AgentEffectsMemory | AgentEffectsSqlite | AgentEffectsPostgres => RGBColor(214, 39, 40),
        RawSqlite | RawRedis | RawRedisCluster | RawPostgres => RGBColor(60, 60, 60),
        // Sagas: a colour per store, lighter for the raw log writes and
        // darker for the 12-step saga.
        SagaSqlite => RGBColor(31, 119, 180),
        LongSagaSqlite => RGBColor(15, 60, 110),
        RawLogSqlite => RGBColor(140, 190, 225),
        SagaRedis => RGBColor(148, 103, 189),
        LongSagaRedis => RGBColor(85, 50, 120),
        RawLogRedis => RGBColor(200, 176, 220),
        SagaPostgres => RGBColor(140, 86, 75),
        LongSagaPostgres => RGBColor(80, 45, 35),
        RawLogPostgres => RGBColor(205, 160, 150),
    }
}

/// The name of `system` in the legend: one entry per colour.
fn legend_name(system: System) -> &'static str {
    use System::*;
    match system {
        Plain => "plain call (no dedup)",
        IdemMemory | IdemSqlite | IdemRedis | IdemRedisCluster | IdemPostgres => "idem",
        IdemRedisReplayCache => "idem + ReplayCache",
        Cached => "cached 4.1",
        IdempotentMemory | IdempotentRedis => "idempotent 0.3",
        AgentEffectsMemory | AgentEffectsSqlite | AgentEffectsPostgres => "agent-effects 0.2",
        RawSqlite | RawRedis | RawRedisCluster | RawPostgres => "raw store commands",
        other => other.label(),
    }
}

/// The legend panel: a line of each colour with its name, then the two line styles.
fn legend<DB: DrawingBackend>(
    panel: &DrawingArea<DB, plotters::coord::Shift>,
    results: &Results,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let mut entries: Vec<(&str, RGBColor)> = Vec::new();
    for row in &results.rows {
        let name = legend_name(row.system);
        if !entries.iter().any(|(n, _)| *n == name) {
            entries.push((name, colour(row.system)));
        }
    }
    let font = ("sans-serif", 16).into_font();
    let (x, mut y) = (60, 30);
    panel.draw(&Text::new("legend", (x, y), ("sans-serif", 20).into_font()))?;
    y += 32;
    for (name, colour) in entries {
        let style = colour.stroke_width(3);
        panel.draw(&PathElement::new(vec![(x, y), (x + 40, y)], style))?;
        panel.draw(&Text::new(name.to_owned(), (x + 52, y - 8), font.clone()))?;
        y += 22;
    }
    y += 10;
    let black = BLACK.stroke_width(2);
    panel.draw(&PathElement::new(vec![(x, y), (x + 40, y)], black))?;
    panel.draw(&Text::new(
        "solid: fresh keys",
        (x + 52, y - 8),
        font.clone(),
    ))?;
    y += 22;
    panel.draw(&DashedPathElement::new(
        vec![(x, y), (x + 40, y)],
        8,
        5,
        black,
    ))?;
    panel.draw(&Text::new(
        "dashed: replays of one key",
        (x + 52, y - 8),
        font.clone(),
    ))?;
    y += 28;
    panel.draw(&Text::new(
        "median calls/s over the repetitions; both axes logarithmic",
        (x, y),
        font,
    ))?;
    Ok(())
}

/// The points of a row: (callers, median calls/s) where measured.
fn points(results: &Results, row: Row) -> Vec<(f64, f64)> {
    results
        .callers
        .iter()
        .filter_map(|&c| {
            results
                .median(row.system, row.mode, c)
                .map(|rate| (c as f64, rate))
        })
        .collect()
}

/// Writes `peers.svg` in `folder`; returns its path.
pub fn write(results: &Results, folder: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
    let path = folder.join("peers.svg");
    draw(results, &path)?;
    Ok(path)
}

fn draw(results: &Results, path: &Path) -> Result<(), String> {
    let families: Vec<Family> = Family::ALL
        .into_iter()
        .filter(|f| results.rows.iter().any(|r| r.system.family() == *f))
        .collect();
    // One panel per store, and one for the legend (colours are the same in every panel).
    let panel_rows = (families.len() + 1).div_ceil(2);
    let height = 60 + PANEL_HEIGHT * panel_rows as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    let fail = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let root = root
        .titled(
            "idem and its peers: median calls/s against concurrent callers (solid: fresh keys, dashed: replays)",
            ("sans-serif", 22),
        )
        .map_err(|e| fail(&e))?;
    let panels = root.split_evenly((panel_rows, 2));
    let (low, high) = results
        .callers
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &c| {
            (lo.min(c as f64), hi.max(c as f64))
        });
    let (x_low, x_high) = if low < high {
        (low / 1.3, high * 1.3)
    } else {
        (low / 2.0, low * 2.0)
    };
    for (panel, family) in panels.iter().zip(&families) {
        // (A panel's own legend would hide its lines: the legend has a panel of its own.)
        let rows: Vec<Row> = results
            .rows
            .iter()
            .copied()
            .filter(|r| r.system.family() == *family)
            .collect();
        let series: Vec<(Row, Vec<(f64, f64)>)> = rows
            .iter()
            .map(|&row| (row, points(results, row)))
            .filter(|(_, p)| !p.is_empty())
            .collect();
        let (y_low, y_high) = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
            .fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
        let (y_low, y_high) = if y_low <= y_high {
            (y_low / 2.0, y_high * 2.0)
        } else {
            (1.0, 10.0)
        };
        let mut chart = ChartBuilder::on(panel)
            .caption(family.name(), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d((x_low..x_high).log_scale(), (y_low..y_high).log_scale())
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("concurrent callers")
            .y_desc("calls/s")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| crate::table::thousands(*y))
            .draw()
            .map_err(|e| fail(&e))?;
        for (row, points) in series {
            let style = colour(row.system).stroke_width(2);
            if row.mode == Mode::Replay {
                chart.draw_series(DashedLineSeries::new(points.clone(), 8, 5, style))
            } else {
                chart.draw_series(LineSeries::new(points.clone(), style))
            }
            .map_err(|e| fail(&e))?;
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&p| Circle::new(p, 3, colour(row.system).filled())),
                )
                .map_err(|e| fail(&e))?;
        }
    }
    if let Some(panel) = panels.get(families.len()) {
        legend(panel, results).map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))
}
