//! Plots of a run over virtual time, as SVG: signatures per virtual minute (`signing.svg`,
//! the peak marked) and the signing queue's depth per minute (`queue.svg`, the deepest
//! minute marked). Drawn with `plotters`' SVG backend without fonts (its text layout is an
//! estimate that needs no font file, so nothing depends on the machine), so the same metrics
//! give the same bytes. Each plot holds one polyline with one point per virtual minute.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::metrics::RunMetrics;

use super::ReportError;

const SIZE: (u32, u32) = (1200, 600);
const FONT: &str = "sans-serif";

/// What one plot shows.
struct Series<'a> {
    file: &'static str,
    title: &'a str,
    y_desc: &'a str,
    peak_word: &'a str,
    colour: RGBColor,
    /// (minute since start, value), in order.
    points: Vec<(u64, u64)>,
}

/// Draws one series as an SVG document.
fn draw(series: &Series<'_>) -> Result<String, ReportError> {
    let fail = |e: &dyn std::fmt::Display| ReportError::Plot {
        plot: series.file,
        detail: e.to_string(),
    };
    let last_minute = series.points.last().map_or(0, |p| p.0);
    // At least one minute wide, so an empty or one-minute run still has an axis.
    let x_end = (last_minute + 1) as f64 / 60.0;
    let (peak_minute, peak) =
        series.points.iter().fold(
            (0, 0),
            |best, &(m, v)| if v > best.1 { (m, v) } else { best },
        );
    // Headroom above the peak for its label.
    let y_end = peak + peak / 8 + 1;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(series.title, (FONT, 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..x_end, 0u64..y_end)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("virtual hours since start")
            .y_desc(series.y_desc)
            .label_style((FONT, 14))
            .draw()
            .map_err(|e| fail(&e))?;
        let hours = |minute: u64| minute as f64 / 60.0;
        chart
            .draw_series(LineSeries::new(
                series.points.iter().map(|&(m, v)| (hours(m), v)),
                series.colour.stroke_width(1),
            ))
            .map_err(|e| fail(&e))?;
        if !series.points.is_empty() {
            let at = (hours(peak_minute), peak);
            // Label on the side with room: left of the point in the right half of the plot,
            // lifted clear of the marker.
            let (h, dx) = if hours(peak_minute) > x_end / 2.0 {
                (HPos::Right, -9)
            } else {
                (HPos::Left, 9)
            };
            let label = format!(
                "{} {} at {}:{:02}",
                series.peak_word,
                peak,
                peak_minute / 60,
                peak_minute % 60
            );
            let style = TextStyle::from((FONT, 15).into_font())
                .color(&BLACK)
                .pos(Pos::new(h, VPos::Bottom));
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at(at)
                        + Circle::new((0, 0), 5, BLACK.filled())
                        + Text::new(label, (dx, -6), style),
                ))
                .map_err(|e| fail(&e))?;
        }
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}

fn signing_series(m: &RunMetrics) -> Series<'static> {
    Series {
        file: "signing.svg",
        title: "X.509-SVID signatures per virtual minute",
        y_desc: "signatures / minute",
        peak_word: "peak",
        colour: RGBColor(31, 119, 180),
        points: m.minutes.iter().map(|s| (s.minute, s.signatures)).collect(),
    }
}

fn queue_series(m: &RunMetrics) -> Series<'static> {
    Series {
        file: "queue.svg",
        title: "Signing queue depth (deepest in each virtual minute)",
        y_desc: "queued signing requests",
        peak_word: "max",
        colour: RGBColor(214, 39, 40),
        points: m
            .minutes
            .iter()
            .map(|s| (s.minute, s.queue_depth_max))
            .collect(),
    }
}

/// `signing.svg`'s document.
///
/// # Errors
/// [`ReportError::Plot`] if the plotting library refuses the layout.
pub fn signing_svg(m: &RunMetrics) -> Result<String, ReportError> {
    draw(&signing_series(m))
}

/// `queue.svg`'s document.
///
/// # Errors
/// [`ReportError::Plot`] if the plotting library refuses the layout.
pub fn queue_svg(m: &RunMetrics) -> Result<String, ReportError> {
    draw(&queue_series(m))
}

/// Writes `signing.svg` and `queue.svg` into `dir` (which must exist).
///
/// # Errors
/// [`ReportError::Plot`], or [`ReportError::Write`] naming the file.
pub fn plot_svg(m: &RunMetrics, dir: &Path) -> Result<(), ReportError> {
    for (name, svg) in [
        ("signing.svg", signing_svg(m)?),
        ("queue.svg", queue_svg(m)?),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, svg).map_err(|source| ReportError::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(())
}
