//! PNG plots of what people would rather see than read: the δ histogram of a scored dataset and
//! the training curves (loss, reward margins, β over steps; the paper's Figs. 6–9).
//!
//! Text is rendered with a font bundled in the binary, so plotting needs nothing from the system.

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 520;
const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
            .unwrap_or_else(|_| panic!("the bundled Ubuntu-Light font is a valid TrueType font"));
    });
}

/// One curve of a line chart, with an optional shaded band (e.g. min..max around a mean).
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
    pub band: Option<Vec<(f64, f64, f64)>>,
}

/// Renders into an RGB buffer and writes it as PNG with the `image` crate.
fn save_png(
    path: &Path,
    draw: impl FnOnce(DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    register_font();
    let mut buf = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        draw(root.clone())?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let img =
        image::RgbImage::from_raw(WIDTH, HEIGHT, buf).expect("buffer has width·height·3 bytes");
    img.save(path)
        .with_context(|| format!("writing plot {}", path.display()))
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    (lo - pad, hi + pad)
}

/// A line chart of one or more series against a shared x axis.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
) -> Result<()> {
    let xs = bounds(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let ys = bounds(series.iter().flat_map(|s| {
        s.points
            .iter()
            .map(|p| p.1)
            .chain(s.band.iter().flatten().flat_map(|b| [b.1, b.2]))
    }));
    save_png(path, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(xs.0..xs.1, ys.0..ys.1)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style((FONT, 14))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (i, s) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            if let Some(band) = &s.band {
                let upper = band.iter().map(|&(x, _, hi)| (x, hi));
                let lower = band.iter().rev().map(|&(x, lo, _)| (x, lo));
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        upper.chain(lower).collect::<Vec<_>>(),
                        color.mix(0.18),
                    )))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(s.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    })
}

/// A histogram of `values` in `bins` equal bins, with vertical markers (e.g. the quartiles that
/// separate hard / normal / easy pairs).
pub fn histogram(
    path: &Path,
    title: &str,
    x_label: &str,
    values: &[f64],
    bins: usize,
    markers: &[(&str, f64)],
) -> Result<()> {
    let (lo, hi) = bounds(values.iter().copied().chain(markers.iter().map(|m| m.1)));
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0u32; bins];
    for &v in values.iter().filter(|v| v.is_finite()) {
        counts[(((v - lo) / width) as usize).min(bins - 1)] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.1;
    save_png(path, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(lo..hi, 0.0..top)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc("pairs")
            .label_style((FONT, 14))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                let x0 = lo + i as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], BLUE.mix(0.55).filled())
            }))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        const MARKER_COLORS: [RGBColor; 4] = [
            RGBColor(200, 30, 30),
            RGBColor(20, 120, 40),
            RGBColor(120, 40, 160),
            BLACK,
        ];
        for (i, &(name, x)) in markers.iter().enumerate() {
            let color = MARKER_COLORS[i % MARKER_COLORS.len()].to_rgba();
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, 0.0), (x, top)],
                    color.stroke_width(2),
                )))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(format!("{name} = {x:.4}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        if !markers.is_empty() {
            chart
                .configure_series_labels()
                .label_font((FONT, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .draw()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_readable_pngs() {
        let dir = tempfile::tempdir().unwrap();
        let hist = dir.path().join("delta.png");
        let values: Vec<f64> = (0..200).map(|i| ((i as f64) * 0.37).sin() * 0.8).collect();
        histogram(
            &hist,
            "δ over the dataset",
            "δ",
            &values,
            30,
            &[("q1", -0.5), ("q3", 0.5)],
        )
        .unwrap();
        let lines = dir.path().join("loss.png");
        let points: Vec<(f64, f64)> = (0..50)
            .map(|i| (i as f64, 0.69 * (-(i as f64) / 30.0).exp()))
            .collect();
        let band = Some(points.iter().map(|&(x, y)| (x, y * 0.8, y * 1.2)).collect());
        line_chart(
            &lines,
            "loss",
            "step",
            "loss",
            &[Series {
                name: "dama",
                points,
                band,
            }],
        )
        .unwrap();
        for p in [hist, lines] {
            let img = image::open(&p).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
            // Something besides the white background was drawn.
            let non_white = img.pixels().filter(|px| px.0 != [255, 255, 255]).count();
            assert!(non_white > 5_000, "{}: {non_white}", p.display());
        }
    }
}
