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
//! look the same on every machine and need no system fonts.
//!
//! Charts are drawn into memory and written as PNG (whatever the path's
//! extension) to a temporary file that is then renamed over the target, so a
//! reader never sees a half-written image; missing parent directories are
//! created. No input makes these functions panic: empty or non-finite data is
//! skipped where something sensible can still be drawn (a NaN epoch leaves a
//! gap in its curve) and reported as a [`PlotError`] otherwise.

mod png;

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
const GRID_BOLD: RGBColor = RGBColor(215, 215, 215);
const GRID_LIGHT: RGBColor = RGBColor(238, 238, 238);
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
    TextStyle::from(FontDesc::new(FontFamily::Name(FONT), size, FontStyle::Normal)).color(&TEXT)
}

fn bold(size: f64) -> TextStyle<'static> {
    TextStyle::from(FontDesc::new(FontFamily::Name(FONT), size, FontStyle::Bold)).color(&TEXT)
}

/// Registers DejaVu Sans (regular and bold) as plotters' "sans-serif" once per
/// process. plotters' `ab_glyph` font table is global and has no system-font
/// fallback, so this must run before any text is drawn.
fn ensure_fonts() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let fonts: [(FontStyle, &'static [u8], &str); 2] = [
                (FontStyle::Normal, dejavu::sans::regular(), "DejaVu Sans"),
                (FontStyle::Bold, dejavu::sans::bold(), "DejaVu Sans Bold"),
            ];
            for (style, bytes, name) in fonts {
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
// Axis helpers

/// A "nice" step (1, 2 or 5 times a power of ten) of at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude);
    step
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

/// Decimal places that tell ticks of a `span`-wide axis with ~8 ticks apart.
fn tick_decimals(span: f64) -> usize {
    let step = nice_step(span / 8.0);
    (-step.log10().floor()).clamp(0.0, 8.0) as usize
}

/// The y range for values from `min` to `max` with some headroom, kept inside
/// `limits` when the data is.
fn padded_range(
    path: &Path,
    min: f64,
    max: f64,
    limits: Option<(f64, f64)>,
) -> Result<(f64, f64), PlotError> {
    let span = max - min;
    if !span.is_finite() {
        return Err(PlotError::ValueRange {
            path: path.to_path_buf(),
            min,
            max,
        });
    }
    let pad = if span > 0.0 {
        span * 0.08
    } else if max != 0.0 {
        max.abs() * 0.05
    } else {
        1.0
    };
    let (mut lo, mut hi) = (min - pad, max + pad);
    if let Some((floor, ceiling)) = limits {
        let (clo, chi) = (lo.max(floor), hi.min(ceiling));
        if clo < chi && clo <= min && chi >= max {
            (lo, hi) = (clo, chi);
        }
    }
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(PlotError::ValueRange {
            path: path.to_path_buf(),
            min,
            max,
        });
    }
    Ok((lo, hi))
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
    legend_at: SeriesLabelPosition,
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
    let (y_lo, y_hi) = padded_range(path, min, max, limits)?;
    let decimals = tick_decimals(y_hi - y_lo);
    let x_ticks = integer_ticks(1.0, epochs as f64, 15);
    // Markers show every epoch on short runs; on long ones only points with
    // no finite neighbour (which a line could not show) get one.
    let mark_all = epochs <= 40;

    render(path, (900, 600), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, bold(TITLE_SIZE))
            .margin(20)
            .margin_right(30)
            .x_label_area_size(60)
            .y_label_area_size(85)
            .build_cartesian_2d(
                (0.5..epochs as f64 + 0.5).with_key_points(x_ticks),
                y_lo..y_hi,
            )?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_desc)
            .axis_desc_style(font(AXIS_DESC_SIZE))
            .label_style(font(TICK_SIZE))
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .y_label_formatter(&|y| format!("{y:.decimals$}"))
            .bold_line_style(GRID_BOLD)
            .light_line_style(GRID_LIGHT)
            .axis_style(FRAME)
            .draw()?;

        for curve in &curves {
            let color = curve.color;
            let runs = finite_runs(curve.values);
            for run in &runs {
                chart.draw_series(LineSeries::new(run.iter().copied(), color.stroke_width(3)))?;
            }
            let marked = runs
                .iter()
                .filter(|run| mark_all || run.len() == 1)
                .flat_map(|run| run.iter().copied());
            chart
                .draw_series(marked.map(|p| Circle::new(p, 4, color.filled())))?
                .label(curve.name)
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(-4, 0), (22, 0)], color.stroke_width(3))
                        + Circle::new((9, 0), 4, color.filled())
                });
        }

        chart
            .configure_series_labels()
            .position(legend_at)
            .margin(15)
            .legend_area_size(34)
            .label_font(font(LEGEND_SIZE))
            .background_style(WHITE.mix(0.92))
            .border_style(FRAME)
            .draw()?;
        Ok(())
    })
}

/// Train and validation accuracy (in %, 0..100) by epoch (x axis: epoch
/// 1..=n, integer ticks). Two lines with legend, title "Accuracy", y label
/// "accuracy (%)". The y axis zooms in on the data (staying within 0..100
/// when the data does). The two slices may differ in length; NaN or infinite
/// values leave a gap. Errors when neither slice has a finite value.
pub fn accuracy_curves(path: &Path, train: &[f64], val: &[f64]) -> Result<(), PlotError> {
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
        SeriesLabelPosition::LowerRight,
    )
}

/// Train and validation loss by epoch; title "Loss", y label "loss". Same
/// conventions as [`accuracy_curves`]; the y axis stays at or above 0 when
/// the data does.
pub fn loss_curves(path: &Path, train: &[f64], val: &[f64]) -> Result<(), PlotError> {
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
        SeriesLabelPosition::UpperRight,
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
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
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
                let ink = if count == 0 { RGBColor(150, 160, 175) } else { ink };
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
/// min), title "Optimization history", y label = `metric` ("value" when
/// empty). Points need not be sorted; non-finite values are skipped. Errors
/// when no point has a finite value.
pub fn optimization_history(
    path: &Path,
    points: &[(u64, f64)],
    maximize: bool,
    metric: &str,
) -> Result<(), PlotError> {
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
    let (y_lo, y_hi) = padded_range(path, min, max, None)?;
    let decimals = tick_decimals(y_hi - y_lo);
    let (first, last) = (trials[0].0, trials[trials.len() - 1].0);
    let x_pad = ((last - first) * 0.02).max(0.5);
    let x_ticks = integer_ticks(first, last, 15);
    let metric = if metric.trim().is_empty() {
        "value"
    } else {
        metric
    };
    let best_decimals = (decimals + 2).min(8);
    let best_label = format!(
        "best so far ({:.best_decimals$}, trial {})",
        best.1, best.0 as u64
    );

    render(path, (900, 600), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Optimization history", bold(TITLE_SIZE))
            .margin(20)
            .margin_right(30)
            .x_label_area_size(60)
            .y_label_area_size(85)
            .build_cartesian_2d(
                (first - x_pad..last + x_pad).with_key_points(x_ticks),
                y_lo..y_hi,
            )?;
        chart
            .configure_mesh()
            .x_desc("trial")
            .y_desc(metric)
            .axis_desc_style(font(AXIS_DESC_SIZE))
            .label_style(font(TICK_SIZE))
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .y_label_formatter(&|y| format!("{y:.decimals$}"))
            .bold_line_style(GRID_BOLD)
            .light_line_style(GRID_LIGHT)
            .axis_style(FRAME)
            .draw()?;

        let dot = BLUE_LINE.mix(0.75);
        chart
            .draw_series(
                trials
                    .iter()
                    .map(|&p| Circle::new(p, 5, ShapeStyle::from(&dot).filled())),
            )?
            .label("trial")
            .legend(move |(x, y)| Circle::new((x + 9, y), 5, ShapeStyle::from(&dot).filled()));
        chart
            .draw_series(LineSeries::new(steps, ORANGE_LINE.stroke_width(3)))?
            .label(best_label.as_str())
            .legend(|(x, y)| {
                PathElement::new(vec![(x - 4, y), (x + 22, y)], ORANGE_LINE.stroke_width(3))
            });
        // Ring the best trial.
        chart.draw_series(std::iter::once(Circle::new(
            best,
            9,
            ORANGE_LINE.stroke_width(2),
        )))?;

        chart
            .configure_series_labels()
            .position(if maximize {
                SeriesLabelPosition::LowerRight
            } else {
                SeriesLabelPosition::UpperRight
            })
            .margin(15)
            .legend_area_size(34)
            .label_font(font(LEGEND_SIZE))
            .background_style(WHITE.mix(0.92))
            .border_style(FRAME)
            .draw()?;
        Ok(())
    })
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
        assert!(many.iter().all(|t| t.fract() == 0.0 && (1.0..=500.0).contains(t)));
        assert_eq!(integer_ticks(0.0, 3.0, 15), vec![0.0, 1.0, 2.0, 3.0]);
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
        let (lo, hi) = padded_range(p, 90.0, 100.0, Some((0.0, 100.0))).unwrap();
        assert!(lo < 90.0 && hi == 100.0);
        let (lo, hi) = padded_range(p, 5.0, 5.0, None).unwrap();
        assert!(lo < 5.0 && hi > 5.0);
        let (lo, hi) = padded_range(p, 0.0, 0.0, Some((0.0, f64::INFINITY))).unwrap();
        assert!(lo == 0.0 && hi > 0.0);
        // Data outside the limits is not clipped.
        let (lo, hi) = padded_range(p, 150.0, 160.0, Some((0.0, 100.0))).unwrap();
        assert!(lo < 150.0 && hi > 160.0);
        assert!(padded_range(p, -f64::MAX, f64::MAX, None).is_err());
    }
}
