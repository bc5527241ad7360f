//! PNG charts for training runs and tuning studies, drawn with plotters.
//!
//! - [`accuracy_curves`] and [`loss_curves`]: train and validation curves by
//!   epoch;
//! - [`confusion_matrix`]: a labelled 10x10 heatmap of true versus predicted
//!   class, with the overall accuracy in its title;
//! - [`prediction_grid`]: test digits with their predicted class, confidence
//!   and (when known) true class, misclassified ones outlined in red;
//! - [`optimization_history`]: each finished trial's objective value and the
//!   best value so far.
//!
//! Text is set in DejaVu Sans, embedded in the binary by the `dejavu` crate
//! and registered with plotters' `ab_glyph` renderer on first use, so charts
//! look the same on every machine and need no system fonts. (The font is
//! patched in memory first so that plotters spaces glyphs correctly; see
//! `plots/font_fix.rs`.)
//!
//! Charts are drawn into memory and written as PNG (whatever the path's
//! extension) to a temporary file that is then renamed over the target, so a
//! reader never sees a half-written image; missing parent directories are
//! created. No input makes these functions panic: empty or non-finite data is
//! skipped where something sensible can still be drawn (a NaN epoch leaves a
//! gap in its curve) and reported as a [`PlotError`] otherwise.

mod font_fix;
mod png;

use plotters::coord::cartesian::Cartesian2d;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, FontTransform};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Pixels per MNIST image side.
const DIGIT_SIDE: usize = 28;
/// Pixels per MNIST image.
const DIGIT_PIXELS: usize = DIGIT_SIDE * DIGIT_SIDE;
/// Most items [`prediction_grid`] draws (the image grows with the item count).
pub const MAX_GRID_ITEMS: usize = 256;

/// Why a chart could not be drawn or written. Every message starts with the
/// output path.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Nothing finite to draw: all series empty, or every value NaN/infinite.
    #[error("{path}: nothing to plot ({what})")]
    NoData { path: PathBuf, what: String },
    /// Finite values so far apart that their difference overflows.
    #[error("{path}: values from {min} to {max} span too wide a range to plot")]
    ValueRange { path: PathBuf, min: f64, max: f64 },
    /// [`prediction_grid`] was given no items.
    #[error("{path}: the prediction grid needs at least one item")]
    EmptyGrid { path: PathBuf },
    /// [`prediction_grid`] was given more than [`MAX_GRID_ITEMS`] items.
    #[error("{path}: the prediction grid takes at most {max} items, got {count}")]
    TooManyItems {
        path: PathBuf,
        count: usize,
        max: usize,
    },
    /// A [`GridItem`]'s pixels are not one 28x28 image.
    #[error("{path}: grid item {index} has {len} pixels, expected 784 (28x28)")]
    PixelCount {
        path: PathBuf,
        index: usize,
        len: usize,
    },
    /// The embedded font could not be registered with plotters.
    #[error("{path}: could not register the embedded font: {detail}")]
    Font { path: PathBuf, detail: String },
    /// plotters reported an error (or panicked) while drawing.
    #[error("{path}: drawing failed: {detail}")]
    Draw { path: PathBuf, detail: String },
    /// The PNG could not be written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

// ---------------------------------------------------------------------------
// Style

const FONT: &str = "sans-serif";
const TITLE_SIZE: f64 = 28.0;
const AXIS_DESC_SIZE: f64 = 20.0;
const TICK_SIZE: f64 = 16.0;
const LEGEND_SIZE: f64 = 17.0;

const TEXT: RGBColor = RGBColor(33, 33, 33);
const MUTED: RGBColor = RGBColor(110, 110, 110);
const GRID: RGBColor = RGBColor(225, 225, 225);
const FRAME: RGBColor = RGBColor(160, 160, 160);
/// Train / trial values (matplotlib's "tab:blue").
const BLUE_LINE: RGBColor = RGBColor(31, 119, 180);
/// Validation / best-so-far (matplotlib's "tab:orange").
const ORANGE_LINE: RGBColor = RGBColor(255, 127, 14);
/// Correct prediction (a dark green that stays readable as text).
const OK_GREEN: RGBColor = RGBColor(30, 132, 73);
/// Misclassification.
const BAD_RED: RGBColor = RGBColor(200, 30, 30);

fn font(size: f64) -> TextStyle<'static> {
    TextStyle::from(FontDesc::new(
        FontFamily::Name(FONT),
        size,
        FontStyle::Normal,
    ))
    .color(&TEXT)
}

fn bold(size: f64) -> TextStyle<'static> {
    TextStyle::from(FontDesc::new(FontFamily::Name(FONT), size, FontStyle::Bold)).color(&TEXT)
}

/// Registers DejaVu Sans (regular and bold) as plotters' "sans-serif" once per
/// process. plotters' `ab_glyph` font table is global and has no system-font
/// fallback, so this must run before any text is drawn. The fonts are first
/// patched against plotters' glyph-placement bug (see `font_fix`); each patched
/// copy is built once and lives for the rest of the process.
fn ensure_fonts() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let fonts: [(FontStyle, &'static [u8], &str); 2] = [
                (FontStyle::Normal, dejavu::sans::regular(), "DejaVu Sans"),
                (FontStyle::Bold, dejavu::sans::bold(), "DejaVu Sans Bold"),
            ];
            for (style, raw, name) in fonts {
                let bytes: &'static [u8] = match font_fix::anchor_at_origin(raw) {
                    Some(patched) => Box::leak(patched.into_boxed_slice()),
                    None => raw,
                };
                plotters::style::register_font(FONT, style, bytes)
                    .map_err(|_| format!("{name} is not a valid font file"))?;
            }
            Ok(())
        })
        .clone()
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Draws a `width` x `height` chart on white with `draw` and writes it to
/// `path` as PNG.
fn render(
    path: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> DrawResult,
) -> Result<(), PlotError> {
    ensure_fonts().map_err(|detail| PlotError::Font {
        path: path.to_path_buf(),
        detail,
    })?;
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    // plotters is third-party code run on caller data: turn any panic in it
    // into an error rather than taking down a training run.
    let drawn = catch_unwind(AssertUnwindSafe(|| -> DrawResult {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
        Ok(())
    }));
    let detail = match drawn {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(panic) => Some(format!(
            "the plotting library panicked: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)")
        )),
    };
    if let Some(detail) = detail {
        return Err(PlotError::Draw {
            path: path.to_path_buf(),
            detail,
        });
    }
    png::encode_rgb(width, height, &rgb)
        .and_then(|bytes| png::write_atomically(path, &bytes))
        .map_err(|source| PlotError::Io {
            path: path.to_path_buf(),
            source,
        })
}

// ---------------------------------------------------------------------------
// Axes

/// A "nice" step (1, 2 or 5 times a power of ten) of at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

/// Integer tick positions covering `first..=last` (both integers), at most
/// about `max_ticks` of them, on multiples of a nice integer step.
fn integer_ticks(first: f64, last: f64, max_ticks: usize) -> Vec<f64> {
    let span = (last - first).max(0.0);
    let step = nice_step(span / max_ticks.max(1) as f64).max(1.0).round();
    let mut ticks = Vec::new();
    let mut t = (first / step).ceil() * step;
    while t <= last + 1e-9 && ticks.len() <= max_ticks + 2 {
        ticks.push(t);
        t += step;
    }
    if ticks.is_empty() {
        ticks.push(first);
    }
    ticks
}

/// Ticks on multiples of a nice step inside `lo..=hi` (about `target` of
/// them), dropping any outside `limits`, and a formatter for their labels.
fn value_ticks(
    lo: f64,
    hi: f64,
    target: usize,
    limits: Option<(f64, f64)>,
) -> (Vec<f64>, TickFormat) {
    let step = nice_step((hi - lo) / target.max(1) as f64);
    let (first, last) = ((lo / step).ceil(), (hi / step).floor());
    let mut ticks = Vec::new();
    if first.is_finite() && last.is_finite() && last - first < 4.0 * target as f64 {
        let mut k = first;
        while k <= last {
            let t = k * step;
            // -0.0 would print as "-0".
            ticks.push(if t == 0.0 { 0.0 } else { t });
            k += 1.0;
        }
    }
    if let Some((floor, ceiling)) = limits {
        ticks.retain(|t| (floor - step * 1e-6..=ceiling + step * 1e-6).contains(t));
    }
    let magnitude = lo.abs().max(hi.abs());
    let format = if magnitude >= 1e6 || (magnitude > 0.0 && step < 1e-4) {
        TickFormat::Scientific
    } else {
        TickFormat::Fixed((-step.log10().floor()).clamp(0.0, 8.0) as usize)
    };
    (ticks, format)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TickFormat {
    /// This many decimal places.
    Fixed(usize),
    /// Three significant digits, exponent notation.
    Scientific,
}

impl TickFormat {
    fn format(self, v: f64) -> String {
        match self {
            TickFormat::Fixed(decimals) => format!("{v:.decimals$}"),
            TickFormat::Scientific => format!("{v:.2e}"),
        }
    }

    /// Two more digits than the ticks, for quoting a single value.
    fn precise(self, v: f64) -> String {
        match self {
            TickFormat::Fixed(decimals) => {
                let decimals = (decimals + 2).min(10);
                format!("{v:.decimals$}")
            }
            TickFormat::Scientific => format!("{v:.4e}"),
        }
    }
}

/// The y range for values from `min` to `max` with some headroom, so no
/// point sits on the frame.
fn padded_range(path: &Path, min: f64, max: f64) -> Result<(f64, f64), PlotError> {
    let span = max - min;
    if !span.is_finite() {
        return Err(PlotError::ValueRange {
            path: path.to_path_buf(),
            min,
            max,
        });
    }
    let pad = if span > 0.0 {
        span * 0.06
    } else if max != 0.0 {
        max.abs() * 0.05
    } else {
        1.0
    };
    let (lo, hi) = (min - pad, max + pad);
    if !(lo.is_finite() && hi.is_finite() && lo < hi && (hi - lo).is_finite()) {
        return Err(PlotError::ValueRange {
            path: path.to_path_buf(),
            min,
            max,
        });
    }
    Ok((lo, hi))
}

/// A linear f64 axis whose ticks (and grid lines) are exactly the given
/// values, so epochs and trials get whole-number ticks and values get ticks
/// whose labels are formatted to match their spacing.
struct TickedAxis {
    linear: RangedCoordf64,
    ticks: Vec<f64>,
}

impl TickedAxis {
    fn new((lo, hi): (f64, f64), ticks: Vec<f64>) -> Self {
        Self {
            linear: (lo..hi).into(),
            ticks,
        }
    }
}

impl Ranged for TickedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.linear.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.linear.range()
    }
}

fn finite_min_max(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// Runs of consecutive finite values as (epoch, value) points, epochs from 1.
fn finite_runs(values: &[f64]) -> Vec<Vec<(f64, f64)>> {
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        if v.is_finite() {
            current.push(((i + 1) as f64, v));
        } else if !current.is_empty() {
            runs.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

// ---------------------------------------------------------------------------
// Line charts with a legend placed where it hides no data

#[derive(Debug, Clone, Copy, PartialEq)]
enum Corner {
    UpperLeft,
    UpperRight,
    LowerLeft,
    LowerRight,
}

impl Corner {
    fn is_upper(self) -> bool {
        matches!(self, Corner::UpperLeft | Corner::UpperRight)
    }

    fn is_right(self) -> bool {
        matches!(self, Corner::UpperRight | Corner::LowerRight)
    }

    fn position(self) -> SeriesLabelPosition {
        match self {
            Corner::UpperLeft => SeriesLabelPosition::UpperLeft,
            Corner::UpperRight => SeriesLabelPosition::UpperRight,
            Corner::LowerLeft => SeriesLabelPosition::LowerLeft,
            Corner::LowerRight => SeriesLabelPosition::LowerRight,
        }
    }
}

/// Picks the legend corner that needs the least extra vertical room to keep
/// the legend off the data (ties go to the earlier corner in `preference`),
/// and returns it with the y range widened by that room.
///
/// `shapes` are polylines (or single points) in data coordinates; `plot` and
/// `legend` are pixel sizes of the plotting area and of the legend box
/// including its offset from the frame.
fn place_legend(
    shapes: &[Vec<(f64, f64)>],
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    plot: (f64, f64),
    legend: (f64, f64),
    preference: [Corner; 4],
) -> (Corner, (f64, f64)) {
    let (bw, bh) = (legend.0 / plot.0.max(1.0), legend.1 / plot.1.max(1.0));
    if !(bw < 0.9 && bh < 0.6) {
        return (preference[0], (y0, y1));
    }
    // Sample the shapes every few pixels, in normalised coordinates.
    let norm = |(x, y): (f64, f64)| ((x - x0) / (x1 - x0), (y - y0) / (y1 - y0));
    let mut samples = Vec::new();
    for shape in shapes {
        let mut prev: Option<(f64, f64)> = None;
        for &point in shape {
            let p = norm(point);
            if let Some(q) = prev {
                let pixels = ((p.0 - q.0) * plot.0).hypot((p.1 - q.1) * plot.1);
                let steps = (pixels / 3.0).ceil().clamp(1.0, 2000.0) as usize;
                for s in 1..steps {
                    let t = s as f64 / steps as f64;
                    samples.push((q.0 + (p.0 - q.0) * t, q.1 + (p.1 - q.1) * t));
                }
            }
            samples.push(p);
            prev = Some(p);
        }
    }
    let mut best = (preference[0], f64::INFINITY, (y0, y1));
    for corner in preference {
        let in_band = samples.iter().filter(|(x, _)| {
            if corner.is_right() {
                *x >= 1.0 - bw
            } else {
                *x <= bw
            }
        });
        let (cost, range) = if corner.is_upper() {
            let top = in_band.map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            if top <= 1.0 - bh {
                (0.0, (y0, y1))
            } else {
                // Stretch upwards until the highest point is below the box.
                let scale = top / (1.0 - bh);
                (scale - 1.0, (y0, y0 + (y1 - y0) * scale))
            }
        } else {
            let bottom = in_band.map(|p| p.1).fold(f64::INFINITY, f64::min);
            if bottom >= bh {
                (0.0, (y0, y1))
            } else {
                let scale = (1.0 - bottom) / (1.0 - bh);
                (scale - 1.0, (y1 - (y1 - y0) * scale, y1))
            }
        };
        if cost.is_finite() && cost < best.1 - 1e-9 {
            best = (corner, cost, range);
        }
    }
    (best.0, best.2)
}

/// What [`line_chart`] draws around the series.
struct LineChart<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    x_range: (f64, f64),
    x_ticks: Vec<f64>,
    y_range: (f64, f64),
    /// Values outside these get no tick label (e.g. accuracy above 100%).
    y_limits: Option<(f64, f64)>,
    /// Lines and points the legend must not cover.
    shapes: Vec<Vec<(f64, f64)>>,
    legend_labels: Vec<String>,
    preference: [Corner; 4],
}

type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<TickedAxis, TickedAxis>>;

/// Draws a [`line_chart`]'s data series and labels them for the legend. (A
/// trait rather than a closure so that the method can state that the chart
/// borrows a backend that outlives it, which plotters' `draw_series` needs.)
trait PaintSeries {
    fn paint<'a, 'b: 'a>(&self, chart: &mut Chart<'a, 'b>) -> DrawResult;
}

const CHART_SIZE: (u32, u32) = (900, 600);
const X_LABEL_AREA: u32 = 62;
const Y_LABEL_AREA: u32 = 88;
const LEGEND_MARGIN: u32 = 12;
const LEGEND_SWATCH: u32 = 36;

/// Draws a 900x600 chart with title, axes, grid and legend; `series` draws
/// the data and labels it for the legend.
fn line_chart(
    path: &Path,
    spec: LineChart<'_>,
    series: &impl PaintSeries,
) -> Result<(), PlotError> {
    render(path, CHART_SIZE, |root| {
        let area = root
            .margin(14, 10, 16, 30)
            .titled(spec.title, bold(TITLE_SIZE))?;
        let (area_w, area_h) = area.dim_in_pixel();
        const TOP_GAP: u32 = 14;
        let plot = (
            area_w.saturating_sub(Y_LABEL_AREA) as f64,
            area_h.saturating_sub(X_LABEL_AREA + TOP_GAP) as f64,
        );
        let legend_font = font(LEGEND_SIZE);
        let mut text_w = 0u32;
        for label in &spec.legend_labels {
            text_w = text_w.max(area.estimate_text_size(label, &legend_font)?.0);
        }
        let lines = spec.legend_labels.len().max(1) as f64;
        let legend = (
            (text_w + LEGEND_SWATCH + 2 * LEGEND_MARGIN) as f64 + 5.0 + 8.0,
            (lines - 1.0) * LEGEND_SIZE * 1.25
                + LEGEND_SIZE
                + 2.0 * LEGEND_MARGIN as f64
                + 5.0
                + 8.0,
        );
        let (corner, y_range) = place_legend(
            &spec.shapes,
            spec.x_range,
            spec.y_range,
            plot,
            legend,
            spec.preference,
        );
        let (y_ticks, y_format) = value_ticks(y_range.0, y_range.1, 10, spec.y_limits);

        let mut chart = ChartBuilder::on(&area)
            .margin_top(TOP_GAP)
            .x_label_area_size(X_LABEL_AREA)
            .y_label_area_size(Y_LABEL_AREA)
            .build_cartesian_2d(
                TickedAxis::new(spec.x_range, spec.x_ticks),
                TickedAxis::new(y_range, y_ticks),
            )?;
        chart
            .configure_mesh()
            .x_desc(spec.x_desc)
            .y_desc(spec.y_desc)
            .axis_desc_style(font(AXIS_DESC_SIZE))
            .label_style(font(TICK_SIZE))
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .y_label_formatter(&|&y| y_format.format(y))
            .bold_line_style(GRID)
            .light_line_style(GRID)
            .axis_style(FRAME)
            .draw()?;
        // Close the frame on the top and right.
        let ((px0, py0), (px1, py1)) = {
            let r = chart.plotting_area().get_pixel_range();
            ((r.0.start, r.1.start), (r.0.end - 1, r.1.end - 1))
        };
        root.draw(&PathElement::new(
            vec![(px0, py0), (px1, py0), (px1, py1)],
            FRAME.stroke_width(1),
        ))?;

        series.paint(&mut chart)?;

        chart
            .configure_series_labels()
            .position(corner.position())
            .margin(LEGEND_MARGIN)
            .legend_area_size(LEGEND_SWATCH)
            .label_font(legend_font)
            .background_style(WHITE.mix(0.9))
            .border_style(FRAME)
            .draw()?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// Learning curves

struct Curve<'a> {
    name: &'a str,
    values: &'a [f64],
    color: RGBColor,
}

/// Shared body of [`accuracy_curves`] and [`loss_curves`].
fn epoch_curves(
    path: &Path,
    title: &str,
    y_desc: &str,
    curves: [Curve<'_>; 2],
    limits: Option<(f64, f64)>,
    preference: [Corner; 4],
) -> Result<(), PlotError> {
    let epochs = curves.iter().map(|c| c.values.len()).max().unwrap_or(0);
    let (min, max) = finite_min_max(curves.iter().flat_map(|c| c.values.iter().copied()))
        .ok_or_else(|| PlotError::NoData {
            path: path.to_path_buf(),
            what: if epochs == 0 {
                "no epochs".to_string()
            } else {
                format!("no finite value in {epochs} epochs")
            },
        })?;
    let y_range = padded_range(path, min, max)?;
    // Only data inside the natural limits keeps its ticks inside them.
    let limits = limits.filter(|&(floor, ceiling)| floor <= min && max <= ceiling);
    // Don't pad far past a limit the data touches (flat 100% accuracy).
    let y_range = match limits {
        Some((floor, ceiling)) => {
            let slack = 0.04 * (y_range.1 - y_range.0);
            (y_range.0.max(floor - slack), y_range.1.min(ceiling + slack))
        }
        None => y_range,
    };
    let runs: Vec<Vec<Vec<(f64, f64)>>> = curves.iter().map(|c| finite_runs(c.values)).collect();
    // Markers show every epoch on short runs; on long ones only points with
    // no finite neighbour (which a line could not show) get one.
    let mark_all = epochs <= 40;

    let spec = LineChart {
        title,
        x_desc: "epoch",
        y_desc,
        x_range: (0.5, epochs as f64 + 0.5),
        x_ticks: integer_ticks(1.0, epochs as f64, 15),
        y_range,
        y_limits: limits,
        shapes: runs.iter().flatten().cloned().collect(),
        legend_labels: curves.iter().map(|c| c.name.to_string()).collect(),
        preference,
    };
    line_chart(
        path,
        spec,
        &CurvePainter {
            curves: &curves,
            runs: &runs,
            mark_all,
        },
    )
}

struct CurvePainter<'c> {
    curves: &'c [Curve<'c>],
    /// Finite runs of each curve.
    runs: &'c [Vec<Vec<(f64, f64)>>],
    mark_all: bool,
}

impl PaintSeries for CurvePainter<'_> {
    fn paint<'a, 'b: 'a>(&self, chart: &mut Chart<'a, 'b>) -> DrawResult {
        for (curve, runs) in self.curves.iter().zip(self.runs) {
            let color = curve.color;
            for run in runs {
                chart.draw_series(LineSeries::new(run.iter().copied(), color.stroke_width(3)))?;
            }
            let marked = runs
                .iter()
                .filter(|run| self.mark_all || run.len() == 1)
                .flat_map(|run| run.iter().copied());
            chart
                .draw_series(marked.map(|p| Circle::new(p, 4, color.filled())))?
                .label(curve.name)
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (26, 0)], color.stroke_width(3))
                        + Circle::new((13, 0), 4, color.filled())
                });
        }
        Ok(())
    }
}

/// Train and validation accuracy (in %, 0..100) by epoch (x axis: epoch
/// 1..=n, integer ticks). Two lines with legend, title "Accuracy", y label
/// "accuracy (%)". The y axis zooms in on the data (and labels no tick
/// outside 0..=100 unless the data is). The slices may differ in length; NaN or infinite values
/// leave a gap. Errors when neither slice has a finite value.
pub fn accuracy_curves(path: &Path, train: &[f64], val: &[f64]) -> Result<(), PlotError> {
    use Corner::*;
    epoch_curves(
        path,
        "Accuracy",
        "accuracy (%)",
        [
            Curve {
                name: "train",
                values: train,
                color: BLUE_LINE,
            },
            Curve {
                name: "validation",
                values: val,
                color: ORANGE_LINE,
            },
        ],
        Some((0.0, 100.0)),
        [LowerRight, UpperLeft, LowerLeft, UpperRight],
    )
}

/// Train and validation loss by epoch; title "Loss", y label "loss". Same
/// conventions as [`accuracy_curves`]; the y axis labels no negative tick
/// when the data has no negative value.
pub fn loss_curves(path: &Path, train: &[f64], val: &[f64]) -> Result<(), PlotError> {
    use Corner::*;
    epoch_curves(
        path,
        "Loss",
        "loss",
        [
            Curve {
                name: "train",
                values: train,
                color: BLUE_LINE,
            },
            Curve {
                name: "validation",
                values: val,
                color: ORANGE_LINE,
            },
        ],
        Some((0.0, f64::INFINITY)),
        [UpperRight, LowerLeft, UpperLeft, LowerRight],
    )
}

// ---------------------------------------------------------------------------
// Confusion matrix

/// matplotlib's "Blues" colour map at `t` in 0..=1 (white to dark blue).
fn blues(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 9] = [
        (247, 251, 255),
        (222, 235, 247),
        (198, 219, 239),
        (158, 202, 225),
        (107, 174, 214),
        (66, 146, 198),
        (33, 113, 181),
        (8, 81, 156),
        (8, 48, 107),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (STOPS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(STOPS.len() - 2);
    let f = pos - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// A count that fits a matrix cell: exact below 100 000, else 3 significant
/// digits with a k/M/G/... suffix.
fn compact_count(n: u64) -> String {
    if n < 100_000 {
        return n.to_string();
    }
    let mut value = n as f64;
    let mut suffix = 0;
    const SUFFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    while value >= 999.5 && suffix + 1 < SUFFIXES.len() {
        value /= 1000.0;
        suffix += 1;
    }
    let digits = if value >= 99.95 {
        0
    } else if value >= 9.995 {
        1
    } else {
        2
    };
    format!("{value:.digits$}{}", SUFFIXES[suffix])
}

/// A labelled 10x10 heatmap: rows = true class 0..9, cols = predicted class
/// 0..9. Each cell shows its count (white on dark cells, dark on light ones)
/// and is coloured by its share of its row (so a row reads as "where did the
/// true Ns go"), with a colour bar for that scale. Axis labels "predicted" /
/// "true"; the title carries the overall accuracy (trace / total), e.g.
/// "Confusion matrix (test accuracy 98.93%)", or "(no samples)" for an
/// all-zero matrix.
pub fn confusion_matrix(path: &Path, matrix: &[[u64; 10]; 10]) -> Result<(), PlotError> {
    let total: u128 = matrix.iter().flatten().map(|&c| c as u128).sum();
    let correct: u128 = (0..10).map(|i| matrix[i][i] as u128).sum();
    let title = if total == 0 {
        "Confusion matrix (no samples)".to_string()
    } else {
        format!(
            "Confusion matrix (test accuracy {:.2}%)",
            correct as f64 * 100.0 / total as f64
        )
    };
    let row_sums: Vec<u128> = matrix
        .iter()
        .map(|row| row.iter().map(|&c| c as u128).sum())
        .collect();
    let longest = matrix
        .iter()
        .flatten()
        .map(|&c| compact_count(c).len())
        .max()
        .unwrap_or(1);
    let count_size = match longest {
        0..=3 => 19.0,
        4 => 17.0,
        _ => 15.0,
    };

    const CELL: i32 = 60;
    const GX: i32 = 115; // grid left
    const GY: i32 = 85; // grid top
    const SIDE: i32 = CELL * 10;
    const BAR_X: i32 = GX + SIDE + 40;
    const BAR_W: i32 = 24;
    const WIDTH: u32 = 920;
    const HEIGHT: u32 = (GY + SIDE + 95) as u32;

    render(path, (WIDTH, HEIGHT), |root| {
        let centered = Pos::new(HPos::Center, VPos::Center);
        root.draw(&Text::new(
            title.as_str(),
            (WIDTH as i32 / 2, 38),
            bold(26.0).pos(centered),
        ))?;

        for (r, row) in matrix.iter().enumerate() {
            for (c, &count) in row.iter().enumerate() {
                let share = if row_sums[r] == 0 {
                    0.0
                } else {
                    count as f64 / row_sums[r] as f64
                };
                let fill = blues(share);
                let (x0, y0) = (GX + c as i32 * CELL, GY + r as i32 * CELL);
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + CELL, y0 + CELL)],
                    fill.filled(),
                ))?;
                let ink = if share > 0.45 { WHITE } else { TEXT };
                let ink = if count == 0 {
                    RGBColor(150, 160, 175)
                } else {
                    ink
                };
                let style = if r == c {
                    bold(count_size)
                } else {
                    font(count_size)
                };
                root.draw(&Text::new(
                    compact_count(count),
                    (x0 + CELL / 2, y0 + CELL / 2),
                    style.color(&ink).pos(centered),
                ))?;
            }
        }
        // Thin white separators between cells, then a frame.
        for k in 1..10 {
            let o = k * CELL;
            root.draw(&PathElement::new(
                vec![(GX + o, GY), (GX + o, GY + SIDE)],
                WHITE.stroke_width(1),
            ))?;
            root.draw(&PathElement::new(
                vec![(GX, GY + o), (GX + SIDE, GY + o)],
                WHITE.stroke_width(1),
            ))?;
        }
        root.draw(&Rectangle::new(
            [(GX, GY), (GX + SIDE, GY + SIDE)],
            FRAME.stroke_width(1),
        ))?;

        // Class labels and axis titles.
        for k in 0..10 {
            let mid = k * CELL + CELL / 2;
            root.draw(&Text::new(
                k.to_string(),
                (GX + mid, GY + SIDE + 20),
                font(18.0).pos(centered),
            ))?;
            root.draw(&Text::new(
                k.to_string(),
                (GX - 20, GY + mid),
                font(18.0).pos(centered),
            ))?;
        }
        root.draw(&Text::new(
            "predicted",
            (GX + SIDE / 2, GY + SIDE + 58),
            font(AXIS_DESC_SIZE).pos(centered),
        ))?;
        root.draw(&Text::new(
            "true",
            (GX - 62, GY + SIDE / 2),
            font(AXIS_DESC_SIZE)
                .transform(FontTransform::Rotate270)
                .pos(centered),
        ))?;

        // Colour bar: one band per pixel row, 100% at the top.
        for y in 0..SIDE {
            let t = 1.0 - y as f64 / (SIDE - 1) as f64;
            root.draw(&Rectangle::new(
                [(BAR_X, GY + y), (BAR_X + BAR_W, GY + y + 1)],
                blues(t).filled(),
            ))?;
        }
        root.draw(&Rectangle::new(
            [(BAR_X, GY), (BAR_X + BAR_W, GY + SIDE)],
            FRAME.stroke_width(1),
        ))?;
        for pct in [0, 25, 50, 75, 100] {
            let y = GY + SIDE - (SIDE * pct) / 100;
            root.draw(&PathElement::new(
                vec![(BAR_X + BAR_W, y), (BAR_X + BAR_W + 5, y)],
                FRAME.stroke_width(1),
            ))?;
            root.draw(&Text::new(
                format!("{pct}%"),
                (BAR_X + BAR_W + 9, y),
                font(TICK_SIZE).pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
        }
        root.draw(&Text::new(
            "share of true class",
            (BAR_X + BAR_W + 75, GY + SIDE / 2),
            font(17.0)
                .color(&MUTED)
                .transform(FontTransform::Rotate90)
                .pos(centered),
        ))?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// Prediction grid

/// One digit of a [`prediction_grid`].
#[derive(Debug, Clone, Copy)]
pub struct GridItem<'a> {
    /// 28*28 grayscale, 0=black, 255=white, row-major.
    pub pixels: &'a [u8],
    /// The true class, when known.
    pub label: Option<u8>,
    /// The predicted class.
    pub predicted: u8,
    /// The model's probability for `predicted`, in 0..=1.
    pub probability: f64,
}

/// A grid of test digits (up to 8 columns), each drawn as an enlarged
/// grayscale image with a caption "pred 7 (99.1%)" and, when label is known,
/// "true 7"; misclassified ones (label != predicted) get a red border and red
/// caption, correct ones green, unlabelled ones grey. Title e.g. "Predictions
/// (3 of 32 misclassified)". Works for 1..=[`MAX_GRID_ITEMS`] items; errors on
/// 0 items, more than that, or a pixels slice that is not 784 long.
pub fn prediction_grid(path: &Path, items: &[GridItem]) -> Result<(), PlotError> {
    if items.is_empty() {
        return Err(PlotError::EmptyGrid {
            path: path.to_path_buf(),
        });
    }
    if items.len() > MAX_GRID_ITEMS {
        return Err(PlotError::TooManyItems {
            path: path.to_path_buf(),
            count: items.len(),
            max: MAX_GRID_ITEMS,
        });
    }
    if let Some((index, item)) = items
        .iter()
        .enumerate()
        .find(|(_, item)| item.pixels.len() != DIGIT_PIXELS)
    {
        return Err(PlotError::PixelCount {
            path: path.to_path_buf(),
            index,
            len: item.pixels.len(),
        });
    }

    let labelled = items.iter().filter(|i| i.label.is_some()).count();
    let wrong = items
        .iter()
        .filter(|i| i.label.is_some_and(|l| l != i.predicted))
        .count();
    let title = if labelled == items.len() {
        format!("Predictions ({wrong} of {} misclassified)", items.len())
    } else if labelled == 0 {
        format!("Predictions ({} digits, true labels unknown)", items.len())
    } else {
        format!("Predictions ({wrong} of {labelled} labelled digits misclassified)")
    };

    const SCALE: i32 = 4;
    const IMG: i32 = DIGIT_SIDE as i32 * SCALE; // 112
    const BORDER: i32 = 4;
    const CELL_W: i32 = 150;
    const CELL_H: i32 = IMG + 2 * BORDER + 58;
    const TOP: i32 = 72;
    const MARGIN: i32 = 24;
    let cols = items.len().min(8) as i32;
    let rows = items.len().div_ceil(8) as i32;
    let width = (cols * CELL_W + 2 * MARGIN).max(660);
    let height = TOP + rows * CELL_H + MARGIN / 2;
    let left = (width - cols * CELL_W) / 2;

    render(path, (width as u32, height as u32), |root| {
        let centered = Pos::new(HPos::Center, VPos::Center);
        root.draw(&Text::new(
            title.as_str(),
            (width / 2, 36),
            bold(26.0).pos(centered),
        ))?;
        for (i, item) in items.iter().enumerate() {
            let (col, row) = (i as i32 % 8, i as i32 / 8);
            let cx = left + col * CELL_W + CELL_W / 2;
            let img_x = cx - IMG / 2;
            let img_y = TOP + row * CELL_H + BORDER;
            let verdict = item.label.map(|l| l == item.predicted);
            let accent = match verdict {
                Some(true) => OK_GREEN,
                Some(false) => BAD_RED,
                None => FRAME,
            };
            root.draw(&Rectangle::new(
                [
                    (img_x - BORDER, img_y - BORDER),
                    (img_x + IMG + BORDER, img_y + IMG + BORDER),
                ],
                accent.filled(),
            ))?;
            for (p, &v) in item.pixels.iter().enumerate() {
                let (px, py) = ((p % DIGIT_SIDE) as i32, (p / DIGIT_SIDE) as i32);
                let (x0, y0) = (img_x + px * SCALE, img_y + py * SCALE);
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + SCALE, y0 + SCALE)],
                    RGBColor(v, v, v).filled(),
                ))?;
            }
            let confidence = if item.probability.is_finite() {
                format!("{:.1}%", item.probability * 100.0)
            } else {
                "?".to_string()
            };
            let caption_y = img_y + IMG + BORDER + 16;
            let ink = match verdict {
                None => TEXT,
                Some(_) => accent,
            };
            let caption = format!("pred {} ({confidence})", item.predicted);
            let caption_style = if verdict == Some(false) {
                bold(15.0)
            } else {
                font(15.0)
            };
            root.draw(&Text::new(
                caption,
                (cx, caption_y),
                caption_style.color(&ink).pos(centered),
            ))?;
            if let Some(label) = item.label {
                root.draw(&Text::new(
                    format!("true {label}"),
                    (cx, caption_y + 20),
                    font(15.0).color(&ink).pos(centered),
                ))?;
            }
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// Optimisation history

/// Tuning optimisation history: a scatter of each finished trial's value
/// (x = trial number) and a best-so-far step line (max when `maximize`, else
/// min), the best trial ringed and quoted in the legend; title "Optimization
/// history", y label = `metric` ("value" when empty). Points need not be
/// sorted; non-finite values are skipped. Errors when no point has a finite
/// value.
pub fn optimization_history(
    path: &Path,
    points: &[(u64, f64)],
    maximize: bool,
    metric: &str,
) -> Result<(), PlotError> {
    use Corner::*;
    let mut trials: Vec<(f64, f64)> = points
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|&(t, v)| (t as f64, v))
        .collect();
    if trials.is_empty() {
        return Err(PlotError::NoData {
            path: path.to_path_buf(),
            what: if points.is_empty() {
                "no finished trials".to_string()
            } else {
                format!("no finite value in {} trials", points.len())
            },
        });
    }
    trials.sort_by(|a, b| a.0.total_cmp(&b.0));
    let better = |a: f64, b: f64| if maximize { a > b } else { a < b };

    // Best-so-far as a step line: flat until a trial improves on it.
    let mut best = trials[0];
    let mut steps = vec![best];
    for &(t, v) in &trials[1..] {
        if better(v, best.1) {
            steps.push((t, best.1));
            best = (t, v);
        }
        steps.push((t, best.1));
    }

    let (min, max) = finite_min_max(trials.iter().map(|p| p.1)).unwrap_or((0.0, 1.0));
    let y_range = padded_range(path, min, max)?;
    let (first, last) = (trials[0].0, trials[trials.len() - 1].0);
    let x_pad = ((last - first) * 0.03).max(0.6);
    let metric = if metric.trim().is_empty() {
        "value"
    } else {
        metric
    };
    // The legend quotes the best value with two digits more than the ticks
    // show; the tick format depends on the final range, so estimate it here
    // from the unextended one (the legend only widens it slightly).
    let (_, format) = value_ticks(y_range.0, y_range.1, 10, None);
    let best_label = format!(
        "best so far ({}, trial {})",
        format.precise(best.1),
        best.0 as u64
    );
    let mut shapes: Vec<Vec<(f64, f64)>> = trials.iter().map(|&p| vec![p]).collect();
    shapes.push(steps.clone());

    let spec = LineChart {
        title: "Optimization history",
        x_desc: "trial",
        y_desc: metric,
        x_range: (first - x_pad, last + x_pad),
        x_ticks: integer_ticks(first, last, 15),
        y_range,
        y_limits: None,
        shapes,
        legend_labels: vec!["trial".to_string(), best_label.clone()],
        preference: if maximize {
            [LowerRight, UpperLeft, LowerLeft, UpperRight]
        } else {
            [UpperRight, LowerLeft, UpperLeft, LowerRight]
        },
    };
    line_chart(
        path,
        spec,
        &HistoryPainter {
            trials: &trials,
            steps: &steps,
            best,
            best_label: &best_label,
        },
    )
}

struct HistoryPainter<'h> {
    trials: &'h [(f64, f64)],
    steps: &'h [(f64, f64)],
    best: (f64, f64),
    best_label: &'h str,
}

impl PaintSeries for HistoryPainter<'_> {
    fn paint<'a, 'b: 'a>(&self, chart: &mut Chart<'a, 'b>) -> DrawResult {
        let dot = BLUE_LINE.mix(0.75);
        chart
            .draw_series(
                self.trials
                    .iter()
                    .map(|&p| Circle::new(p, 5, ShapeStyle::from(&dot).filled())),
            )?
            .label("trial")
            .legend(move |(x, y)| Circle::new((x + 13, y), 5, ShapeStyle::from(&dot).filled()));
        // Each step segment on its own: plotters' joins of thick lines at
        // right angles leave small hooks.
        let line = ORANGE_LINE.stroke_width(3);
        chart
            .draw_series(
                self.steps
                    .windows(2)
                    .map(|w| PathElement::new(vec![w[0], w[1]], line)),
            )?
            .label(self.best_label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 26, y)], line));
        // Ring the best trial.
        chart.draw_series(std::iter::once(Circle::new(self.best, 9, line)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.0), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert!((nice_step(0.013) - 0.02).abs() < 1e-12);
        assert_eq!(nice_step(f64::NAN), 1.0);
        assert_eq!(nice_step(0.0), 1.0);
    }

    #[test]
    fn integer_ticks_are_integers_within_range() {
        assert_eq!(integer_ticks(1.0, 1.0, 15), vec![1.0]);
        assert_eq!(integer_ticks(1.0, 5.0, 15), vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        let many = integer_ticks(1.0, 500.0, 15);
        assert!(many.len() <= 16, "{many:?}");
        assert!(many
            .iter()
            .all(|t| t.fract() == 0.0 && (1.0..=500.0).contains(t)));
        assert_eq!(integer_ticks(0.0, 3.0, 15), vec![0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn value_ticks_match_their_labels() {
        let (ticks, format) = value_ticks(0.01, 0.43, 10, None);
        assert_eq!(format, TickFormat::Fixed(2));
        let labels: Vec<String> = ticks.iter().map(|&t| format.format(t)).collect();
        assert_eq!(
            labels,
            ["0.05", "0.10", "0.15", "0.20", "0.25", "0.30", "0.35", "0.40"]
        );
        let (ticks, format) = value_ticks(91.0, 104.0, 8, Some((0.0, 100.0)));
        assert_eq!(format, TickFormat::Fixed(0));
        assert_eq!(ticks.last(), Some(&100.0));
        let (ticks, _) = value_ticks(-0.3, 0.3, 8, None);
        assert!(ticks.contains(&0.0) && !ticks.iter().any(|t| t.is_sign_negative() && *t == 0.0));
        assert_eq!(value_ticks(0.0, 5e9, 8, None).1, TickFormat::Scientific);
        assert_eq!(value_ticks(1e-7, 2e-7, 8, None).1, TickFormat::Scientific);
        assert!(value_ticks(0.0, 1.0, 8, None).0.len() <= 12);
    }

    #[test]
    fn legend_goes_to_an_empty_corner_or_makes_room() {
        use Corner::*;
        let order = [LowerRight, UpperLeft, LowerLeft, UpperRight];
        // A rising curve leaves the lower right empty.
        let rising = vec![vec![(0.0, 0.0), (10.0, 10.0)]];
        let (corner, range) = place_legend(
            &rising,
            (0.0, 10.0),
            (0.0, 10.0),
            (700.0, 450.0),
            (150.0, 80.0),
            order,
        );
        assert_eq!((corner, range), (LowerRight, (0.0, 10.0)));
        // Data everywhere: the range grows so the legend fits above or below.
        let full: Vec<Vec<(f64, f64)>> = (0..=10)
            .flat_map(|x| (0..=10).map(move |y| vec![(x as f64, y as f64)]))
            .collect();
        let (corner, (lo, hi)) = place_legend(
            &full,
            (0.0, 10.0),
            (0.0, 10.0),
            (700.0, 450.0),
            (150.0, 90.0),
            order,
        );
        assert_eq!(corner, LowerRight);
        assert!(hi == 10.0 && lo < -2.0, "{lo}..{hi}");
        // A legend bigger than the plot is left where preferred.
        let (corner, range) = place_legend(
            &full,
            (0.0, 10.0),
            (0.0, 10.0),
            (100.0, 100.0),
            (150.0, 90.0),
            order,
        );
        assert_eq!((corner, range), (LowerRight, (0.0, 10.0)));
    }

    #[test]
    fn compact_counts() {
        assert_eq!(compact_count(0), "0");
        assert_eq!(compact_count(99_999), "99999");
        assert_eq!(compact_count(123_456), "123k");
        assert_eq!(compact_count(1_234_567), "1.23M");
        assert_eq!(compact_count(999_999), "1.00M");
        assert_eq!(compact_count(u64::MAX), "18.4E");
    }

    #[test]
    fn blues_endpoints() {
        assert_eq!(blues(0.0), RGBColor(247, 251, 255));
        assert_eq!(blues(1.0), RGBColor(8, 48, 107));
        assert_eq!(blues(f64::NAN), RGBColor(247, 251, 255));
        assert_eq!(blues(7.0), RGBColor(8, 48, 107));
    }

    #[test]
    fn padded_ranges() {
        let p = Path::new("x.png");
        let (lo, hi) = padded_range(p, 90.0, 100.0).unwrap();
        assert!(lo < 90.0 && hi > 100.0);
        let (lo, hi) = padded_range(p, 5.0, 5.0).unwrap();
        assert!(lo < 5.0 && hi > 5.0);
        let (lo, hi) = padded_range(p, 0.0, 0.0).unwrap();
        assert!(lo < 0.0 && hi > 0.0);
        assert!(padded_range(p, -f64::MAX, f64::MAX).is_err());
        assert!(padded_range(p, f64::MAX, f64::MAX).is_err());
    }
}
