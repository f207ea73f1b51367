//! The report's charts as inline SVG, drawn with plotters' SVG backend: grouped bars with
//! interval whiskers (one chart per benchmark), the pipeline funnel as horizontal bars, and
//! training curves as line charts. Every chart is an `<svg class="chart chart-KIND">` that
//! scales with the page; its text takes the page's font from CSS.
//!
//! Not here: which numbers to draw (callers pass them) or any HTML around the charts.

use std::error::Error;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Colours of models and runs, in order (Tableau 10: distinct, print- and colour-blind-aware).
pub const PALETTE: [(u8, u8, u8); 10] = [
    (0x4e, 0x79, 0xa7),
    (0xf2, 0x8e, 0x2b),
    (0x59, 0xa1, 0x4f),
    (0xe1, 0x57, 0x59),
    (0x76, 0xb7, 0xb2),
    (0xb0, 0x7a, 0xa1),
    (0xed, 0xc9, 0x48),
    (0x9c, 0x75, 0x5f),
    (0xff, 0x9d, 0xa7),
    (0xba, 0xb0, 0xac),
];

const FONT: &str = "sans-serif";
const INK: RGBColor = RGBColor(0x33, 0x33, 0x33);
const MUTED: RGBColor = RGBColor(0x6b, 0x6b, 0x6b);
const GRID: RGBColor = RGBColor(0xe6, 0xe6, 0xe6);
const AXIS: RGBColor = RGBColor(0xb0, 0xb0, 0xb0);
/// The funnel's bars: a neutral slate, so runs are not mistaken for models.
const FUNNEL: RGBColor = RGBColor(0x5b, 0x6e, 0x86);

type ChartResult = Result<(), Box<dyn Error>>;

/// The `i`-th palette colour (wrapping).
pub fn color(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// The `i`-th palette colour as `#rrggbb`, for CSS.
pub fn color_hex(i: usize) -> String {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// One bar: a value in [0, 1] with its interval, drawn ×100.
#[derive(Debug, Clone, Copy)]
pub struct Bar {
    pub value: f64,
    pub interval: Option<(f64, f64)>,
}

/// One series of bars (a model): its colour and one optional bar per category.
#[derive(Debug, Clone)]
pub struct BarSeries {
    pub color: usize,
    pub bars: Vec<Option<Bar>>,
}

/// One line (a run): its colour and its (step, value) points.
#[derive(Debug, Clone)]
pub struct LineSeries {
    pub color: usize,
    pub points: Vec<(u64, f64)>,
}

/// Renders with `draw` into an SVG string of `size` and tags it `chart chart-{kind}`.
fn render(
    kind: &str,
    title: &str,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, plotters::coord::Shift>) -> ChartResult,
) -> Result<String, String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, size).into_drawing_area();
        draw(&root).map_err(|e| format!("drawing the {kind} chart: {e}"))?;
        root.present()
            .map_err(|e| format!("drawing the {kind} chart: {e}"))?;
    }
    let head = format!(
        "<svg class=\"chart chart-{kind}\" role=\"img\" aria-label=\"{}\" style=\"max-width:{}px\"",
        crate::page::escape(title),
        size.0
    );
    Ok(buf.replacen("<svg", &head, 1))
}

fn text(size: u32, color: &RGBColor) -> TextStyle<'static> {
    // plotters writes font-size as size / 1.24.
    (FONT, f64::from(size) * 1.24).into_font().color(color)
}

/// Grouped bars with 95 % whiskers: one group per category, one bar per series, 0–100 %.
pub fn metric_bars(
    title: &str,
    categories: &[String],
    series: &[BarSeries],
) -> Result<String, String> {
    let n = categories.len().max(1);
    let longest = categories
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0);
    let group_px = (series.len() as u32 * 18 + 26).max(longest as u32 * 7 + 14);
    let width = (64 + n as u32 * group_px + 16).clamp(420, 1400);
    let size = (width, 340);
    render("bars", title, size, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin_top(14)
            .margin_right(16)
            .margin_left(8)
            .x_label_area_size(34)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..n as f64, 0f64..100f64)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .axis_style(AXIS)
            .x_labels(0)
            .y_labels(6)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .y_label_style(text(11, &MUTED))
            .y_desc("% (95% CI)")
            .axis_desc_style(text(11, &MUTED))
            .draw()?;
        // Category names under the groups (plotters' key-point axes cannot take a formatter).
        let style = text(12, &INK).pos(Pos::new(HPos::Center, VPos::Top));
        for (i, name) in categories.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            root.draw(&Text::new(name.clone(), (x, y + 9), style.clone()))?;
        }
        let m = series.len().max(1) as f64;
        let bw = 0.8 / m;
        for (k, s) in series.iter().enumerate() {
            let fill = color(s.color).filled();
            let bars = s.bars.iter().enumerate().filter_map(|(c, b)| {
                let b = (*b).filter(|b| b.value.is_finite())?;
                let x0 = c as f64 + 0.1 + k as f64 * bw;
                let mut r = Rectangle::new([(x0, 0.0), (x0 + bw, unit(b.value) * 100.0)], fill);
                r.set_margin(0, 0, 1, 1);
                Some(r)
            });
            chart.draw_series(bars)?;
            for (c, b) in s.bars.iter().enumerate() {
                let Some((lo, hi)) = b.and_then(|b| b.interval) else {
                    continue;
                };
                if !(lo.is_finite() && hi.is_finite()) {
                    continue;
                }
                let (lo, hi) = (unit(lo), unit(hi));
                let mid = c as f64 + 0.1 + (k as f64 + 0.5) * bw;
                let cap = bw * 0.22;
                let style = INK.stroke_width(1);
                for seg in [
                    [(mid, lo * 100.0), (mid, hi * 100.0)],
                    [(mid - cap, lo * 100.0), (mid + cap, lo * 100.0)],
                    [(mid - cap, hi * 100.0), (mid + cap, hi * 100.0)],
                ] {
                    chart.draw_series(std::iter::once(PathElement::new(seg.to_vec(), style)))?;
                }
            }
        }
        Ok(())
    })
}

/// One bar of the funnel: its name, its count, and a note printed after the count.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub count: u64,
    pub note: String,
}

/// A fraction held to the chart's [0, 1] (values outside it are bad input, not a reason to
/// draw over the axes).
fn unit(v: f64) -> f64 {
    v.clamp(0.0, 1.0)
}

/// Horizontal bars, top to bottom, each labelled with its count and note.
pub fn funnel(title: &str, stages: &[Stage]) -> Result<String, String> {
    let n = stages.len().max(1) as i32;
    let labels: Vec<String> = stages
        .iter()
        .map(|s| {
            if s.note.is_empty() {
                s.count.to_string()
            } else {
                format!("{}  ({})", s.count, s.note)
            }
        })
        .collect();
    let size = (900, 44 + 40 * n as u32);
    let x_max = funnel_x_max(stages, &labels, f64::from(size.0 - 190 - 20));
    render("funnel", title, size, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin_top(10)
            .margin_right(20)
            .x_label_area_size(26)
            .y_label_area_size(190)
            .build_cartesian_2d(0f64..x_max, (0..n - 1).into_segmented())?;
        let name_of = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) => stages
                .get((n - 1 - i) as usize)
                // Non-breaking spaces keep a gap to the axis (SVG collapses plain ones).
                .map(|s| format!("{}\u{a0}\u{a0}", s.name))
                .unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .axis_style(AXIS)
            .x_labels(6)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&name_of)
            .set_tick_mark_size(LabelAreaPosition::Left, 0)
            .y_label_style(text(13, &INK))
            .x_label_style(text(11, &MUTED))
            .draw()?;
        let fill = FUNNEL.filled();
        let rows = stages.iter().enumerate().map(|(i, s)| {
            let y = n - 1 - i as i32;
            let mut r = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(y)),
                    (s.count as f64, SegmentValue::Exact(y + 1)),
                ],
                fill,
            );
            r.set_margin(7, 7, 0, 0);
            r
        });
        chart.draw_series(rows)?;
        let label_style = text(12, &INK).pos(Pos::new(HPos::Left, VPos::Center));
        let texts = stages
            .iter()
            .zip(&labels)
            .enumerate()
            .map(|(i, (s, label))| {
                let at = (s.count as f64, SegmentValue::CenterOf(n - 1 - i as i32));
                EmptyElement::at(at) + Text::new(label.clone(), (8, 0), label_style.clone())
            });
        chart.draw_series(texts)?;
        Ok(())
    })
}

/// The x range that leaves room after the longest bar-plus-label within `plot_px` pixels.
fn funnel_x_max(stages: &[Stage], labels: &[String], plot_px: f64) -> f64 {
    let room =
        |label: &String| (plot_px - 12.0 - label.chars().count() as f64 * 7.0).max(plot_px * 0.3);
    stages
        .iter()
        .zip(labels)
        .map(|(s, l)| s.count as f64 * plot_px / room(l))
        .fold(1.0, f64::max)
}

/// A line chart of `series` over optimiser steps; `y_fixed` pins the y range (e.g. [0, 1]).
pub fn lines(
    title: &str,
    y_desc: &str,
    series: &[LineSeries],
    y_fixed: Option<(f64, f64)>,
) -> Result<String, String> {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = all().fold((u64::MAX, 0u64), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (x0, x1) = if x0 > x1 {
        (0, 1)
    } else {
        (x0, x1.max(x0 + 1))
    };
    let (y0, y1) = y_fixed.unwrap_or_else(|| padded(all().map(|p| p.1)));
    let digits = decimals(y1 - y0);
    render("line", title, (560, 300), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, text(14, &INK))
            .margin(10)
            .margin_right(18)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .axis_style(AXIS)
            .x_labels(7)
            .y_labels(6)
            .y_label_formatter(&|v| format!("{v:.digits$}"))
            .x_label_style(text(11, &MUTED))
            .y_label_style(text(11, &MUTED))
            .x_desc("step")
            .y_desc(y_desc)
            .axis_desc_style(text(11, &MUTED))
            .draw()?;
        for s in series {
            let c = color(s.color);
            chart.draw_series(plotters::series::LineSeries::new(
                s.points.iter().copied(),
                c.stroke_width(2),
            ))?;
            if s.points.len() <= 40 {
                chart.draw_series(s.points.iter().map(|p| Circle::new(*p, 2.5, c.filled())))?;
            }
        }
        Ok(())
    })
}

/// The range of `ys` with 6 % room on each side (a flat or empty series gets ±0.5).
fn padded(ys: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = ys
        .filter(|y| y.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
            (a.min(y), b.max(y))
        });
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = if hi - lo < 1e-12 {
        0.5
    } else {
        (hi - lo) * 0.06
    };
    (lo - pad, hi + pad)
}

/// Decimals that tell ticks apart over a span.
fn decimals(span: f64) -> usize {
    if span.is_nan() || span <= 0.0 {
        return 2;
    }
    (1.0 - span.log10().floor()).clamp(0.0, 5.0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_tagged_and_sized() {
        let svg = metric_bars(
            "b <&>",
            &["a".into(), "bb".into()],
            &[BarSeries {
                color: 0,
                bars: vec![
                    Some(Bar {
                        value: 0.5,
                        interval: Some((0.4, 0.6)),
                    }),
                    None,
                ],
            }],
        )
        .unwrap();
        assert!(svg.starts_with("<svg class=\"chart chart-bars\""), "{svg}");
        assert!(svg.contains("aria-label=\"b &lt;&amp;&gt;\""));
        assert_eq!(svg.matches("<svg").count(), 1);
        let stage = |name: &str, count, note: &str| Stage {
            name: name.into(),
            count,
            note: note.into(),
        };
        let f = funnel(
            "f",
            &[stage("seeds", 10, ""), stage("kept", 0, "0% of seeds")],
        )
        .unwrap();
        assert!(
            f.contains("chart-funnel") && f.contains("(0% of seeds)"),
            "{f}"
        );
        assert!(f.contains("seeds\u{a0}\u{a0}"), "{f}");
        let l = lines("loss", "loss", &[], None).unwrap();
        assert!(l.contains("chart-line"));
    }

    #[test]
    fn ranges_and_decimals() {
        assert_eq!(padded([1.0, 1.0].into_iter()), (0.5, 1.5));
        assert_eq!(padded(std::iter::empty()), (0.0, 1.0));
        assert_eq!(decimals(0.05), 3);
        assert_eq!(decimals(0.8), 2);
        assert_eq!(decimals(3.0), 1);
        assert_eq!(decimals(250.0), 0);
        assert_eq!(color_hex(0), "#4e79a7");
        assert_eq!(color_hex(10), "#4e79a7");
    }
}
