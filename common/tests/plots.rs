//! Tests for `mnist_common::plots`: every chart is a valid PNG of the expected
//! size that actually shows its data, and bad input gives an error, never a
//! panic.
//!
//! The PNGs are decoded here (IHDR, inflate the IDAT stream with `flate2`,
//! undo the row filters) so tests can look at pixels without an image crate.
//!
//! Set `PLOTS_DEMO_DIR=/some/dir` to also write one example of each chart
//! there (test `write_demo_pngs`), using the real MNIST test digits when
//! `/work/shared/data/mnist` (or `MNIST_DATA_DIR`) has them.

use mnist_common::plots::{
    accuracy_curves, confusion_matrix, loss_curves, optimization_history, prediction_grid,
    GridItem, PlotError, MAX_GRID_ITEMS,
};
use std::io::Read;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------
// A minimal PNG reader (8-bit RGB / RGBA, non-interlaced).

struct Image {
    width: usize,
    height: usize,
    /// RGB triples, row-major.
    rgb: Vec<[u8; 3]>,
}

impl Image {
    fn count(&self, pred: impl Fn([u8; 3]) -> bool) -> usize {
        self.rgb.iter().filter(|&&p| pred(p)).count()
    }

    /// Pixels within `tol` per channel of `color`.
    fn near(&self, color: [u8; 3], tol: u8) -> usize {
        self.count(|p| (0..3).all(|i| p[i].abs_diff(color[i]) <= tol))
    }

    fn non_white(&self) -> usize {
        self.count(|p| p != [255, 255, 255])
    }
}

const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// Checks the signature and IHDR and returns the declared size.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(
        bytes.len() > 33,
        "too short for a PNG: {} bytes",
        bytes.len()
    );
    assert_eq!(bytes[..8], SIGNATURE, "not a PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk is not IHDR");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

fn decode(bytes: &[u8]) -> Image {
    let (width, height) = png_size(bytes);
    let (depth, color_type, interlace) = (bytes[24], bytes[25], bytes[28]);
    assert_eq!(depth, 8, "bit depth");
    assert_eq!(interlace, 0, "interlaced");
    let channels = match color_type {
        2 => 3,
        6 => 4,
        other => panic!("unexpected colour type {other}"),
    };
    let mut idat = Vec::new();
    let mut at = 8;
    let mut saw_end = false;
    while at + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind = &bytes[at + 4..at + 8];
        let data = &bytes[at + 8..at + 8 + len];
        match kind {
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => saw_end = true,
            _ => {}
        }
        at += 12 + len;
    }
    assert!(saw_end, "no IEND chunk");
    assert_eq!(at, bytes.len(), "trailing bytes after the last chunk");
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .expect("IDAT is valid zlib");
    let (w, h) = (width as usize, height as usize);
    let stride = w * channels;
    assert_eq!(raw.len(), h * (stride + 1), "decompressed size");
    let mut out = vec![0u8; h * stride];
    for y in 0..h {
        let filter = raw[y * (stride + 1)];
        let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
        for x in 0..stride {
            let a = if x >= channels {
                out[y * stride + x - channels] as i32
            } else {
                0
            };
            let b = if y > 0 {
                out[(y - 1) * stride + x] as i32
            } else {
                0
            };
            let c = if x >= channels && y > 0 {
                out[(y - 1) * stride + x - channels] as i32
            } else {
                0
            };
            let predictor = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                other => panic!("bad filter type {other} on row {y}"),
            };
            out[y * stride + x] = (line[x] as i32 + predictor) as u8;
        }
    }
    let rgb = out
        .chunks_exact(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    Image {
        width: w,
        height: h,
        rgb,
    }
}

fn read_png(path: &Path) -> (Vec<u8>, Image) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let image = decode(&bytes);
    (bytes, image)
}

/// Asserts `path` is a PNG of `size` that is not blank, and returns it.
fn assert_chart(path: &Path, size: (usize, usize)) -> (Vec<u8>, Image) {
    let (bytes, image) = read_png(path);
    assert_eq!((image.width, image.height), size, "{}", path.display());
    let ink = image.non_white();
    let total = image.width * image.height;
    assert!(
        ink * 100 > total * 2,
        "{} looks blank: only {ink} of {total} pixels are not white",
        path.display()
    );
    let mut colors: Vec<[u8; 3]> = image.rgb.clone();
    colors.sort_unstable();
    colors.dedup();
    assert!(
        colors.len() > 20,
        "{} has only {} colours",
        path.display(),
        colors.len()
    );
    (bytes, image)
}

const TAB_BLUE: [u8; 3] = [31, 119, 180];
const TAB_ORANGE: [u8; 3] = [255, 127, 14];
const RED: [u8; 3] = [200, 30, 30];
const GREEN: [u8; 3] = [30, 132, 73];
const DARK_BLUE: [u8; 3] = [8, 48, 107];

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn train_acc(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| 99.5 - 8.0 * (-(i as f64) / 3.0).exp())
        .collect()
}

fn val_acc(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| 98.9 - 6.0 * (-(i as f64) / 2.5).exp())
        .collect()
}

// ---------------------------------------------------------------------------
// Learning curves

#[test]
fn accuracy_curves_draws_both_series() {
    let dir = tmp();
    let path = dir.path().join("accuracy.png");
    accuracy_curves(&path, &train_acc(15), &val_acc(15)).unwrap();
    let (bytes, image) = assert_chart(&path, (900, 600));
    assert!(image.near(TAB_BLUE, 10) > 300, "train line missing");
    assert!(image.near(TAB_ORANGE, 10) > 300, "validation line missing");

    // Different data gives a different picture.
    let other = dir.path().join("accuracy2.png");
    accuracy_curves(&other, &val_acc(15), &train_acc(15)).unwrap();
    let (other_bytes, _) = assert_chart(&other, (900, 600));
    assert_ne!(bytes, other_bytes);

    // Same data gives the same bytes (deterministic).
    let again = dir.path().join("accuracy3.png");
    accuracy_curves(&again, &train_acc(15), &val_acc(15)).unwrap();
    assert_eq!(bytes, std::fs::read(&again).unwrap());
}

#[test]
fn loss_curves_draws_both_series() {
    let dir = tmp();
    let path = dir.path().join("loss.png");
    let train: Vec<f64> = (0..20)
        .map(|i| 0.02 + 2.0 * (-(i as f64) / 2.0).exp())
        .collect();
    let val: Vec<f64> = (0..20)
        .map(|i| 0.04 + 1.5 * (-(i as f64) / 2.0).exp())
        .collect();
    loss_curves(&path, &train, &val).unwrap();
    let (_, image) = assert_chart(&path, (900, 600));
    assert!(image.near(TAB_BLUE, 10) > 300);
    assert!(image.near(TAB_ORANGE, 10) > 300);
}

#[test]
fn curves_handle_degenerate_input() {
    let dir = tmp();
    let p = |name: &str| dir.path().join(name);
    // A single epoch: drawn as markers.
    accuracy_curves(&p("one.png"), &[97.5], &[96.0]).unwrap();
    let (_, image) = assert_chart(&p("one.png"), (900, 600));
    assert!(image.near(TAB_BLUE, 10) > 20 && image.near(TAB_ORANGE, 10) > 20);
    // All values equal, including exactly 100% and exactly 0 loss.
    accuracy_curves(&p("flat.png"), &[100.0; 5], &[100.0; 5]).unwrap();
    assert_chart(&p("flat.png"), (900, 600));
    loss_curves(&p("zero.png"), &[0.0; 4], &[0.0; 4]).unwrap();
    assert_chart(&p("zero.png"), (900, 600));
    // NaN and infinities leave gaps.
    let nan = f64::NAN;
    accuracy_curves(
        &p("gaps.png"),
        &[90.0, nan, 95.0, 96.0],
        &[f64::INFINITY, 91.0, nan],
    )
    .unwrap();
    assert_chart(&p("gaps.png"), (900, 600));
    loss_curves(&p("neg_inf.png"), &[f64::NEG_INFINITY, 1.0, 0.5], &[]).unwrap();
    assert_chart(&p("neg_inf.png"), (900, 600));
    // One series empty, or of different lengths.
    accuracy_curves(&p("train_only.png"), &train_acc(8), &[]).unwrap();
    let (_, image) = assert_chart(&p("train_only.png"), (900, 600));
    assert!(image.near(TAB_BLUE, 10) > 100);
    loss_curves(&p("val_only.png"), &[], &[0.5, 0.3, 0.2]).unwrap();
    accuracy_curves(&p("ragged.png"), &train_acc(10), &val_acc(3)).unwrap();
    // Out-of-range accuracy and negative "loss" are drawn, not clipped away.
    accuracy_curves(&p("odd.png"), &[120.0, 130.0], &[-5.0, 10.0]).unwrap();
    loss_curves(&p("negative.png"), &[-1.0, -2.0], &[-0.5, -0.25]).unwrap();
    // Many epochs.
    accuracy_curves(&p("long.png"), &train_acc(500), &val_acc(500)).unwrap();
    assert_chart(&p("long.png"), (900, 600));
}

#[test]
fn curves_without_finite_data_are_errors() {
    let dir = tmp();
    let path = dir.path().join("empty.png");
    for (train, val) in [
        (&[][..], &[][..]),
        (&[f64::NAN, f64::NAN][..], &[f64::INFINITY][..]),
    ] {
        let err = accuracy_curves(&path, train, val).unwrap_err();
        assert!(matches!(err, PlotError::NoData { .. }), "{err:?}");
        assert!(err.to_string().contains("empty.png"), "{err}");
        let err = loss_curves(&path, train, val).unwrap_err();
        assert!(matches!(err, PlotError::NoData { .. }), "{err:?}");
    }
    assert!(!path.exists(), "a failed plot must not leave a file");
    let err = loss_curves(&path, &[-f64::MAX, f64::MAX], &[]).unwrap_err();
    assert!(matches!(err, PlotError::ValueRange { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------
// Confusion matrix

fn sample_matrix() -> [[u64; 10]; 10] {
    let mut m = [[0u64; 10]; 10];
    let per_class = [980u64, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009];
    for (i, row) in m.iter_mut().enumerate() {
        let wrong = (i as u64 * 3 + 2) % 11;
        row[i] = per_class[i] - wrong;
        row[(i + 3) % 10] += wrong / 2;
        row[(i + 7) % 10] += wrong - wrong / 2;
    }
    m
}

#[test]
fn confusion_matrix_draws_heatmap() {
    let dir = tmp();
    let path = dir.path().join("confusion.png");
    confusion_matrix(&path, &sample_matrix()).unwrap();
    let (bytes, image) = assert_chart(&path, (920, 780));
    // Ten near-saturated diagonal cells of 60x60 (minus their text).
    assert!(
        image.near(DARK_BLUE, 12) > 10 * 2500,
        "diagonal cells not dark: {}",
        image.near(DARK_BLUE, 12)
    );

    // A uniform matrix has no dark cells (every share is 10%).
    let uniform = dir.path().join("uniform.png");
    confusion_matrix(&uniform, &[[7; 10]; 10]).unwrap();
    let (uniform_bytes, image) = assert_chart(&uniform, (920, 780));
    assert_ne!(bytes, uniform_bytes);
    assert!(
        image.near(DARK_BLUE, 12) < 2000,
        "{}",
        image.near(DARK_BLUE, 12)
    );
}

#[test]
fn confusion_matrix_degenerate_input() {
    let dir = tmp();
    let p = |name: &str| dir.path().join(name);
    // No samples at all, a missing class, and counts too big to print whole.
    confusion_matrix(&p("zero.png"), &[[0; 10]; 10]).unwrap();
    assert_chart(&p("zero.png"), (920, 780));
    let mut m = sample_matrix();
    m[4] = [0; 10];
    confusion_matrix(&p("missing.png"), &m).unwrap();
    confusion_matrix(&p("huge.png"), &[[u64::MAX; 10]; 10]).unwrap();
    assert_chart(&p("huge.png"), (920, 780));
}

// ---------------------------------------------------------------------------
// Prediction grid

/// A crude synthetic digit: a ring (0) or a vertical bar (1) and so on, light
/// strokes on black like MNIST.
fn synthetic_digit(class: u8) -> Vec<u8> {
    let mut px = vec![0u8; 784];
    for y in 0..28i32 {
        for x in 0..28i32 {
            let (dx, dy) = (x - 14, y - 14);
            let on = match class % 3 {
                0 => (64..=100).contains(&(dx * dx + dy * dy)),
                1 => (12..=15).contains(&x) && (4..=23).contains(&y),
                _ => (y - x).abs() <= 1 && (4..=23).contains(&y),
            };
            if on {
                px[(y * 28 + x) as usize] = 255;
            }
        }
    }
    px
}

#[test]
fn prediction_grid_marks_right_and_wrong() {
    let dir = tmp();
    let digits: Vec<Vec<u8>> = (0..32).map(|i| synthetic_digit(i as u8 % 10)).collect();
    let items: Vec<GridItem> = digits
        .iter()
        .enumerate()
        .map(|(i, px)| {
            let label = (i % 10) as u8;
            GridItem {
                pixels: px,
                label: Some(label),
                predicted: if i % 11 == 5 { (label + 1) % 10 } else { label },
                probability: 0.5 + (i as f64) / 64.0,
            }
        })
        .collect();
    let path = dir.path().join("grid.png");
    prediction_grid(&path, &items).unwrap();
    let (_, image) = read_png(&path);
    assert!(image.width >= 8 * 112 && image.height >= 4 * 112);
    let (_, image) = assert_chart(&path, (image.width, image.height));
    assert!(
        image.near(RED, 8) > 3 * 400,
        "red borders: {}",
        image.near(RED, 8)
    );
    assert!(
        image.near(GREEN, 8) > 29 * 400,
        "green borders: {}",
        image.near(GREEN, 8)
    );
    // White digit strokes are drawn.
    assert!(image.near([255, 255, 255], 0) > 0 && image.near([0, 0, 0], 0) > 32 * 300);

    // All correct: no red at all.
    let correct: Vec<GridItem> = items
        .iter()
        .map(|i| GridItem {
            predicted: i.label.unwrap(),
            ..*i
        })
        .collect();
    let path = dir.path().join("correct.png");
    prediction_grid(&path, &correct).unwrap();
    let (_, image) = read_png(&path);
    assert_eq!(image.near(RED, 8), 0);

    // Unlabelled: neither red nor green.
    let unlabelled: Vec<GridItem> = items
        .iter()
        .map(|i| GridItem { label: None, ..*i })
        .collect();
    let path = dir.path().join("unlabelled.png");
    prediction_grid(&path, &unlabelled).unwrap();
    let (_, image) = read_png(&path);
    assert_eq!(image.near(RED, 8) + image.near(GREEN, 8), 0);
}

#[test]
fn prediction_grid_sizes() {
    let dir = tmp();
    let px = synthetic_digit(0);
    let item = GridItem {
        pixels: &px,
        label: Some(0),
        predicted: 0,
        probability: 0.999,
    };
    let mut heights = Vec::new();
    for n in [1, 8, 9, 100, MAX_GRID_ITEMS] {
        let path = dir.path().join(format!("grid{n}.png"));
        prediction_grid(&path, &vec![item; n]).unwrap();
        let (_, image) = read_png(&path);
        assert!(image.non_white() > 112 * 112, "{n} items look blank");
        heights.push(image.height);
    }
    // 1 and 8 items fit one row; 9 need two; 100 need 13.
    assert_eq!(heights[0], heights[1]);
    assert!(heights[2] > heights[1] && heights[3] > heights[2] && heights[4] > heights[3]);
}

#[test]
fn prediction_grid_errors() {
    let dir = tmp();
    let path = dir.path().join("grid.png");
    let err = prediction_grid(&path, &[]).unwrap_err();
    assert!(matches!(err, PlotError::EmptyGrid { .. }), "{err:?}");
    assert!(err.to_string().contains("grid.png"), "{err}");

    let good = vec![0u8; 784];
    let short = vec![0u8; 783];
    let item = |pixels| GridItem {
        pixels,
        label: None,
        predicted: 3,
        probability: 0.5,
    };
    let err = prediction_grid(&path, &[item(&good), item(&short)]).unwrap_err();
    assert!(
        matches!(
            err,
            PlotError::PixelCount {
                index: 1,
                len: 783,
                ..
            }
        ),
        "{err:?}"
    );
    let long = vec![0u8; 785];
    let err = prediction_grid(&path, &[item(&long)]).unwrap_err();
    assert!(
        matches!(
            err,
            PlotError::PixelCount {
                index: 0,
                len: 785,
                ..
            }
        ),
        "{err:?}"
    );
    let err = prediction_grid(&path, &[item(&[])]).unwrap_err();
    assert!(
        matches!(err, PlotError::PixelCount { len: 0, .. }),
        "{err:?}"
    );

    let too_many = vec![item(&good); MAX_GRID_ITEMS + 1];
    let err = prediction_grid(&path, &too_many).unwrap_err();
    assert!(matches!(err, PlotError::TooManyItems { .. }), "{err:?}");
    assert!(!path.exists());

    // Odd but drawable values are fine.
    let odd = [
        GridItem {
            pixels: &good,
            label: Some(200),
            predicted: 255,
            probability: f64::NAN,
        },
        GridItem {
            pixels: &good,
            label: Some(1),
            predicted: 1,
            probability: 7.5,
        },
    ];
    prediction_grid(&path, &odd).unwrap();
    read_png(&path);
}

// ---------------------------------------------------------------------------
// Optimisation history

#[test]
fn optimization_history_draws_points_and_best_line() {
    let dir = tmp();
    let points: Vec<(u64, f64)> = (0..30u64)
        .map(|t| {
            (
                t,
                0.95 + 0.04 * ((t * 37 % 17) as f64 / 17.0) * (t as f64 / 30.0),
            )
        })
        .collect();
    let path = dir.path().join("history.png");
    optimization_history(&path, &points, true, "val_accuracy").unwrap();
    let (max_bytes, image) = assert_chart(&path, (900, 600));
    assert!(image.near(TAB_ORANGE, 10) > 300, "best-so-far line missing");
    assert!(
        image.count(|p| p[2] as i32 > p[0] as i32 + 60 && p[2] > 150) > 300,
        "trial points missing"
    );

    let path = dir.path().join("history_min.png");
    optimization_history(&path, &points, false, "val_loss").unwrap();
    let (min_bytes, _) = assert_chart(&path, (900, 600));
    assert_ne!(max_bytes, min_bytes);
}

#[test]
fn optimization_history_degenerate_input() {
    let dir = tmp();
    let p = |name: &str| dir.path().join(name);
    optimization_history(&p("one.png"), &[(0, 0.5)], true, "acc").unwrap();
    assert_chart(&p("one.png"), (900, 600));
    // Unsorted, duplicated trial numbers, NaN, equal values, empty metric name.
    let points = [(5, 0.3), (2, f64::NAN), (9, 0.3), (5, 0.3), (u64::MAX, 0.3)];
    optimization_history(&p("odd.png"), &points, false, "").unwrap();
    assert_chart(&p("odd.png"), (900, 600));

    for points in [&[][..], &[(1, f64::NAN), (2, f64::INFINITY)][..]] {
        let err = optimization_history(&p("none.png"), points, true, "acc").unwrap_err();
        assert!(matches!(err, PlotError::NoData { .. }), "{err:?}");
        assert!(err.to_string().contains("none.png"), "{err}");
    }
}

// ---------------------------------------------------------------------------
// Output handling

#[test]
fn output_is_png_whatever_the_extension_and_dirs_are_created() {
    let dir = tmp();
    let path = dir.path().join("a/b/c/chart.dat");
    loss_curves(&path, &[1.0, 0.5], &[1.1, 0.7]).unwrap();
    assert_chart(&path, (900, 600));
    // No temporary files are left beside it.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("chart.dat")]);
    // Overwriting works.
    loss_curves(&path, &[2.0, 0.5], &[1.1, 0.7]).unwrap();
    assert_chart(&path, (900, 600));
}

#[test]
fn unwritable_path_is_an_io_error() {
    let dir = tmp();
    // The target is an existing directory.
    let err = loss_curves(dir.path(), &[1.0], &[1.0]).unwrap_err();
    assert!(matches!(err, PlotError::Io { .. }), "{err:?}");
    // A parent is a file.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = confusion_matrix(&file.join("m.png"), &sample_matrix()).unwrap_err();
    assert!(matches!(err, PlotError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("m.png"), "{err}");
}

#[test]
fn concurrent_plots_from_many_threads() {
    let dir = tmp();
    let paths: Vec<PathBuf> = (0..4)
        .map(|i| dir.path().join(format!("t{i}.png")))
        .collect();
    std::thread::scope(|s| {
        for (i, path) in paths.iter().enumerate() {
            s.spawn(move || {
                accuracy_curves(path, &train_acc(5 + i), &val_acc(5 + i)).unwrap();
            });
        }
    });
    for path in &paths {
        assert_chart(path, (900, 600));
    }
}

// ---------------------------------------------------------------------------
// Demo output for eyeballing: PLOTS_DEMO_DIR=/tmp/plots-demo cargo test ...

fn gunzip(path: &Path) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// Up to `n` MNIST test images and labels, if the files are around.
fn mnist_test_digits(n: usize) -> Option<(Vec<Vec<u8>>, Vec<u8>)> {
    let dir = std::env::var_os("MNIST_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/data/mnist"));
    let images = gunzip(&dir.join("t10k-images-idx3-ubyte.gz"))?;
    let labels = gunzip(&dir.join("t10k-labels-idx1-ubyte.gz"))?;
    let count = n
        .min((images.len().saturating_sub(16)) / 784)
        .min(labels.len().saturating_sub(8));
    // MNIST stores ink as 255 on 0 background; GridItem wants 0=black,
    // 255=white, which is the same convention (white digit on black).
    let digits = (0..count)
        .map(|i| images[16 + i * 784..16 + (i + 1) * 784].to_vec())
        .collect();
    Some((digits, labels[8..8 + count].to_vec()))
}

#[test]
fn write_demo_pngs() {
    let Some(dir) = std::env::var_os("PLOTS_DEMO_DIR").map(PathBuf::from) else {
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    let epochs = 14;
    accuracy_curves(
        &dir.join("accuracy.png"),
        &train_acc(epochs),
        &val_acc(epochs),
    )
    .unwrap();
    let train_loss: Vec<f64> = (0..epochs)
        .map(|i| 0.03 + 0.35 * (-(i as f64) / 2.0).exp())
        .collect();
    let val_loss: Vec<f64> = (0..epochs)
        .map(|i| 0.045 + 0.2 * (-(i as f64) / 2.0).exp() + 0.001 * i as f64)
        .collect();
    loss_curves(&dir.join("loss.png"), &train_loss, &val_loss).unwrap();
    confusion_matrix(&dir.join("confusion_matrix.png"), &sample_matrix()).unwrap();

    let (digits, labels) = mnist_test_digits(32).unwrap_or_else(|| {
        let digits = (0..32).map(|i| synthetic_digit(i as u8 % 10)).collect();
        (digits, (0..32).map(|i| i as u8 % 10).collect())
    });
    let items: Vec<GridItem> = digits
        .iter()
        .zip(&labels)
        .enumerate()
        .map(|(i, (px, &label))| {
            let wrong = i % 11 == 4;
            GridItem {
                pixels: px,
                label: Some(label),
                predicted: if wrong { (label + 5) % 10 } else { label },
                probability: if wrong {
                    0.512 + i as f64 / 100.0
                } else {
                    0.999 - i as f64 / 1000.0
                },
            }
        })
        .collect();
    prediction_grid(&dir.join("predictions.png"), &items).unwrap();

    let history: Vec<(u64, f64)> = (0..40u64)
        .map(|t| {
            let noise = ((t * 7919) % 97) as f64 / 97.0;
            (
                t,
                96.0 + 2.8 * (1.0 - (-(t as f64) / 12.0).exp()) * noise + 0.4 * noise,
            )
        })
        .collect();
    optimization_history(
        &dir.join("optimization_history.png"),
        &history,
        true,
        "val_accuracy (%)",
    )
    .unwrap();
    let losses: Vec<(u64, f64)> = history
        .iter()
        .map(|&(t, v)| (t, (100.0 - v) / 30.0))
        .collect();
    optimization_history(
        &dir.join("optimization_history_min.png"),
        &losses,
        false,
        "val_loss",
    )
    .unwrap();

    // Edge cases, to check they still look sensible.
    let edge = dir.join("edge");
    let nan = f64::NAN;
    accuracy_curves(&edge.join("single_epoch.png"), &[97.31], &[96.8]).unwrap();
    accuracy_curves(&edge.join("flat_100.png"), &[100.0; 6], &[100.0; 6]).unwrap();
    loss_curves(
        &edge.join("gaps.png"),
        &[0.9, 0.5, nan, 0.3, 0.25, nan, 0.2, f64::INFINITY, 0.15],
        &[0.8, nan, 0.45, 0.35],
    )
    .unwrap();
    let long_train = train_acc(300);
    let long_val: Vec<f64> = val_acc(300).iter().map(|v| v - 0.4).collect();
    accuracy_curves(&edge.join("long.png"), &long_train, &long_val).unwrap();
    confusion_matrix(&edge.join("empty_matrix.png"), &[[0; 10]; 10]).unwrap();
    let mut big = sample_matrix();
    for row in big.iter_mut() {
        for c in row.iter_mut() {
            *c *= 1_234;
        }
    }
    confusion_matrix(&edge.join("big_counts.png"), &big).unwrap();
    prediction_grid(&edge.join("grid_one.png"), &items[..1]).unwrap();
    let unlabelled: Vec<GridItem> = items
        .iter()
        .take(11)
        .map(|i| GridItem { label: None, ..*i })
        .collect();
    prediction_grid(&edge.join("grid_unlabelled.png"), &unlabelled).unwrap();
    optimization_history(
        &edge.join("history_one.png"),
        &[(0, 0.981)],
        true,
        "val_accuracy",
    )
    .unwrap();
    optimization_history(
        &edge.join("history_flat.png"),
        &[(3, 0.5), (1, 0.5), (7, nan), (2, 0.5)],
        false,
        "",
    )
    .unwrap();
}
