//! Training curves (error or RMSE per epoch) and reliability diagrams as SVG files, rendered in memory and
//! written atomically.

use dropnet::calibration::Calibration;
use dropnet::error::{Error, Result};
use dropnet::files::write_atomically;
use dropnet::train::{EpochReport, PerTarget};
use std::path::Path;

/// Draw the curves of `history` and write them to `path`.
pub fn write_curves(path: &Path, history: &[EpochReport]) -> Result<()> {
    let svg = render(history).map_err(|e| Error::Config(format!("cannot draw the plot {}: {e}", path.display())))?;
    write_atomically(path, svg.as_bytes())
}

fn render(history: &[EpochReport]) -> std::result::Result<String, String> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    type Series = (&'static str, RGBColor, Vec<(f64, f64)>);
    // classification: error per epoch; regression: RMSE (averaged over the targets)
    let regression = history.iter().any(|r| r.train_error.is_none());
    let mean = |v: &PerTarget| v.0.iter().sum::<f64>() / v.0.len().max(1) as f64;
    let series: [Series; 3] = if regression {
        [
            ("train", BLUE, Vec::new()),
            (
                "validation",
                GREEN,
                history.iter().filter_map(|r| r.val_rmse.as_ref().map(|e| (r.epoch as f64, mean(e)))).collect(),
            ),
            (
                "test",
                RED,
                history.iter().filter_map(|r| r.test_rmse.as_ref().map(|e| (r.epoch as f64, mean(e)))).collect(),
            ),
        ]
    } else {
        let pct = |e: Option<f64>| e.map(|e| 100.0 * e);
        [
            (
                "train (with dropout)",
                BLUE,
                history.iter().filter_map(|r| pct(r.train_error).map(|e| (r.epoch as f64, e))).collect(),
            ),
            (
                "validation",
                GREEN,
                history.iter().filter_map(|r| pct(r.val_error).map(|e| (r.epoch as f64, e))).collect(),
            ),
            ("test", RED, history.iter().filter_map(|r| pct(r.test_error).map(|e| (r.epoch as f64, e))).collect()),
        ]
    };
    let y_desc = if regression { "RMSE (original units, mean over targets)" } else { "error (%)" };
    let floor = if regression { 0.0 } else { 1.0 };
    let y_max = series.iter().flat_map(|s| s.2.iter().map(|p| p.1)).fold(floor, f64::max) * 1.05;
    let y_max = if y_max > 0.0 { y_max } else { 1.0 };
    let x_max = history.len().max(2) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("dropnet training", ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(1.0..x_max, 0.0..y_max)
            .map_err(|e| err(&e))?;
        chart.configure_mesh().x_desc("epoch").y_desc(y_desc).draw().map_err(|e| err(&e))?;
        for (name, color, points) in series {
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

/// Draw the reliability diagram of each named calibration (accuracy against mean confidence per
/// non-empty bin, and the diagonal of perfect calibration) and write it to `path`.
pub fn write_reliability(path: &Path, series: &[(&str, &Calibration)]) -> Result<()> {
    let svg = render_reliability(series)
        .map_err(|e| Error::Config(format!("cannot draw the reliability diagram {}: {e}", path.display())))?;
    write_atomically(path, svg.as_bytes())
}

fn render_reliability(series: &[(&str, &Calibration)]) -> std::result::Result<String, String> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let colors = [BLUE, RED];
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (600, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("reliability", ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(|e| err(&e))?;
        chart.configure_mesh().x_desc("confidence (top probability)").y_desc("accuracy").draw().map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.4)))
            .map_err(|e| err(&e))?
            .label("perfect calibration")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
        for (&(name, calibration), color) in series.iter().zip(colors.iter().cycle()) {
            let points: Vec<(f64, f64)> =
                calibration.bins.iter().filter(|b| b.count > 0).map(|b| (b.confidence, b.accuracy)).collect();
            let label = format!("{name} (ece {:.4})", calibration.ece);
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, color.filled()))).map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}
