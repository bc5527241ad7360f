//! The truncated normal distribution in standard form, as Optuna's
//! `_truncnorm.py` computes it: log-CDF with an asymptotic series in the far left
//! tail, the log of the Gaussian mass on an interval (working in the left tail for
//! accuracy), the inverse CDF, and `logpdf`. The inverse CDF is the number
//! Optuna's Newton iteration on `log_ndtr` converges to, computed from Wichura's
//! AS 241 approximations instead (Newton remains for the far left tail).
//! Every function returns a finite number or ±inf for finite inputs, never NaN
//! unless the input is NaN.

use std::f64::consts::{FRAC_1_SQRT_2, PI, SQRT_2};

/// `ln(sqrt(2π))`.
pub const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// The standard normal CDF, accurate in both tails.
pub fn ndtr(a: f64) -> f64 {
    let x = a / SQRT_2;
    if x < -FRAC_1_SQRT_2 {
        0.5 * libm::erfc(-x)
    } else if x < FRAC_1_SQRT_2 {
        0.5 + 0.5 * libm::erf(x)
    } else {
        1.0 - 0.5 * libm::erfc(x)
    }
}

/// `ln(ndtr(a))`, accurate down to the far left tail.
pub fn log_ndtr(a: f64) -> f64 {
    if a.is_nan() {
        return f64::NAN;
    }
    if a > 6.0 {
        return (-ndtr(-a)).ln_1p();
    }
    if a > -20.0 {
        return ndtr(a).ln();
    }
    if a == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    // Asymptotic series of the Mills ratio.
    let log_lhs = -0.5 * a * a - (-a).ln() - 0.5 * (2.0 * PI).ln();
    let mut last_total: f64 = 0.0;
    let mut rhs: f64 = 1.0;
    let mut numerator = 1.0;
    let mut denom_factor = 1.0;
    let denom_cons = 1.0 / (a * a);
    let mut sign = 1.0;
    let mut i = 0.0;
    let mut iters = 0;
    while (last_total - rhs).abs() > f64::EPSILON && iters < 100 {
        i += 1.0;
        iters += 1;
        last_total = rhs;
        sign = -sign;
        denom_factor *= denom_cons;
        numerator *= 2.0 * i - 1.0;
        rhs += sign * numerator * denom_factor;
    }
    log_lhs + rhs.ln()
}

/// `ln(exp(p) - exp(q))` for `p >= q`.
fn log_diff(log_p: f64, log_q: f64) -> f64 {
    if log_p == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    log_p + (-(log_q - log_p).exp()).ln_1p()
}

/// `ln(exp(p) + exp(q))`.
pub fn log_add_exp(p: f64, q: f64) -> f64 {
    let m = p.max(q);
    if m == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    if m == f64::INFINITY {
        return f64::INFINITY;
    }
    m + ((p - m).exp() + (q - m).exp()).ln()
}

/// `ln(Φ(b) - Φ(a))` for `a <= b <= 0`, in the left tail where it is accurate.
fn log_mass_left(a: f64, b: f64) -> f64 {
    if a > -20.0 {
        // Direct difference when it does not cancel (saves two logs and an exp).
        let (pb, pa) = (ndtr(b), ndtr(a));
        let d = pb - pa;
        if d > 0.01 * pb && d > 0.0 {
            return d.ln();
        }
    }
    log_diff(log_ndtr(b), log_ndtr(a))
}

/// `ln(Φ(b) - Φ(a))`: the log of the standard normal mass on `[a, b]`.
pub fn log_gauss_mass(a: f64, b: f64) -> f64 {
    if b <= 0.0 {
        log_mass_left(a, b)
    } else if a > 0.0 {
        log_mass_left(-b, -a)
    } else {
        // Tails beyond 9 sigma (< 1.2e-19) do not change log1p(-x) at double precision.
        let ta = if a < -9.0 { 0.0 } else { ndtr(a) };
        let tb = if b > 9.0 { 0.0 } else { ndtr(-b) };
        if ta == 0.0 && tb == 0.0 {
            // ln_1p(-0.0 - 0.0) is -0.0: skip the call (most kernels of a large
            // estimator lie well inside the range).
            return -0.0;
        }
        (-ta - tb).ln_1p()
    }
}

/// `x` such that `log_ndtr(x) == y` (for `y <= 0`): the standard normal quantile
/// of `exp(y)`, computed from `y` so that no precision is lost in either tail.
///
/// Wichura's AS 241 rational approximations (relative error about 1e-16):
/// in the lower tail they take `sqrt(-ln p)`, which is `sqrt(-y)` (no `exp`
/// needed, and accurate down to `p = 1e-300`); in the upper tail they take
/// `1 - p = -expm1(y)`, exact where `exp(y)` would round to 1. Beyond
/// `y < -690` (`p < 1e-300`) it falls back to [`ndtri_exp_newton`]. Optuna
/// gets the same number by Newton's method on `log_ndtr`, about ten times
/// slower (`examples/ndtri_speed.rs`); the two agree to rounding (see the tests).
pub fn ndtri_exp(y: f64) -> f64 {
    if y.is_nan() {
        return f64::NAN;
    }
    if y >= 0.0 {
        return f64::INFINITY;
    }
    if y < -690.0 {
        return ndtri_exp_newton(y);
    }
    // The central region p in [0.075, 0.925] is ln p in [-2.590267, -0.077962].
    if (-2.590_267_165_445_1..=-0.077_961_541_469_711_8).contains(&y) {
        let q = y.exp() - 0.5;
        if q.abs() <= 0.425 {
            return q * as241_central(0.180_625 - q * q);
        }
    }
    if y < -std::f64::consts::LN_2 {
        -as241_tail((-y).sqrt())
    } else {
        as241_tail((-(-y.exp_m1()).ln()).sqrt())
    }
}

// Wichura's AS 241 coefficients (Applied Statistics 37(3), 1988, PPND16), in
// increasing powers: numerator and denominator of each of the three regions.
#[allow(clippy::excessive_precision)]
const AS241_A: [f64; 8] = [
    3.3871328727963666080e0,
    1.3314166789178437745e+2,
    1.9715909503065514427e+3,
    1.3731693765509461125e+4,
    4.5921953931549871457e+4,
    6.7265770927008700853e+4,
    3.3430575583588128105e+4,
    2.5090809287301226727e+3,
];
#[allow(clippy::excessive_precision)]
const AS241_B: [f64; 8] = [
    1.0,
    4.2313330701600911252e+1,
    6.8718700749205790830e+2,
    5.3941960214247511077e+3,
    2.1213794301586595867e+4,
    3.9307895800092710610e+4,
    2.8729085735721942674e+4,
    5.2264952788528545610e+3,
];
#[allow(clippy::excessive_precision)]
const AS241_C: [f64; 8] = [
    1.42343711074968357734e0,
    4.63033784615654529590e0,
    5.76949722146069140550e0,
    3.64784832476320460504e0,
    1.27045825245236838258e0,
    2.41780725177450611770e-1,
    2.27238449892691845833e-2,
    7.74545014278341407640e-4,
];
#[allow(clippy::excessive_precision)]
const AS241_D: [f64; 8] = [
    1.0,
    2.05319162663775882187e0,
    1.67638483018380384940e0,
    6.89767334985100004550e-1,
    1.48103976427480074590e-1,
    1.51986665636164571966e-2,
    5.47593808499534494600e-4,
    1.05075007164441684324e-9,
];
#[allow(clippy::excessive_precision)]
const AS241_E: [f64; 8] = [
    6.65790464350110377720e0,
    5.46378491116411436990e0,
    1.78482653991729133580e0,
    2.96560571828504891230e-1,
    2.65321895265761230930e-2,
    1.24266094738807843860e-3,
    2.71155556874348757815e-5,
    2.01033439929228813265e-7,
];
#[allow(clippy::excessive_precision)]
const AS241_F: [f64; 8] = [
    1.0,
    5.99832206555887937690e-1,
    1.36929880922735805310e-1,
    1.48753612908506148525e-2,
    7.86869131145613259100e-4,
    1.84631831751005468180e-5,
    1.42151175831644588870e-7,
    2.04426310338993978564e-15,
];

/// `c[0] + c[1] x + ... + c[7] x^7`.
#[inline(always)]
fn horner(c: &[f64; 8], x: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, &ci| acc * x + ci)
}

/// AS 241's `x / q` for `|q| <= 0.425`, as a function of `r = 0.180625 - q²`.
fn as241_central(r: f64) -> f64 {
    horner(&AS241_A, r) / horner(&AS241_B, r)
}

/// AS 241's `|x|` in a tail, as a function of `r = sqrt(-ln(tail mass))`, `r > 0`.
fn as241_tail(r: f64) -> f64 {
    if r <= 5.0 {
        let r = r - 1.6;
        horner(&AS241_C, r) / horner(&AS241_D, r)
    } else {
        let r = r - 5.0;
        horner(&AS241_E, r) / horner(&AS241_F, r)
    }
}

/// [`ndtri_exp`] by Newton's method on `log_ndtr`, as Optuna computes it; used
/// below `p = 1e-300`, where AS 241 is not specified.
pub fn ndtri_exp_newton(y: f64) -> f64 {
    if y.is_nan() {
        return f64::NAN;
    }
    if y >= 0.0 {
        return f64::INFINITY;
    }
    if y == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let flipped = y > -1e-2;
    let z = if flipped { (-y.exp_m1()).ln() } else { y };
    let mut x = if z < -5.0 {
        -(-2.0 * (z + LN_SQRT_2PI)).sqrt()
    } else {
        -(3f64.sqrt() / PI) * (-z).exp_m1().ln()
    };
    for _ in 0..100 {
        let l = log_ndtr(x);
        let log_pdf = -0.5 * x * x - LN_SQRT_2PI;
        let dx = (l - z) * (l - log_pdf).exp();
        if !dx.is_finite() {
            break;
        }
        x -= dx;
        if dx.abs() < 1e-8 * x.abs() || dx.abs() < 1e-300 {
            break;
        }
    }
    if flipped {
        -x
    } else {
        x
    }
}

/// Inverse CDF of the standard normal truncated to `[a, b]` at quantile `q`.
pub fn ppf(q: f64, a: f64, b: f64) -> f64 {
    if a >= b {
        return a;
    }
    let end = if a < 0.0 { log_ndtr(a) } else { log_ndtr(-b) };
    ppf_given(q, a, b, log_gauss_mass(a, b), end)
}

/// [`ppf`] given `log_gauss_mass(a, b)` and `log_ndtr(a)` (for `a < 0`, else
/// `log_ndtr(-b)`), which a caller may keep across calls.
pub fn ppf_given(q: f64, a: f64, b: f64, log_mass: f64, log_ndtr_end: f64) -> f64 {
    if a >= b {
        return a;
    }
    if q <= 0.0 {
        return a;
    }
    if q >= 1.0 {
        return b;
    }
    let x = if a < 0.0 {
        let log_phi_x = log_add_exp(log_ndtr_end, q.ln() + log_mass);
        ndtri_exp(log_phi_x)
    } else {
        let log_phi_x = log_add_exp(log_ndtr_end, (-q).ln_1p() + log_mass);
        -ndtri_exp(log_phi_x)
    };
    if x.is_nan() {
        a
    } else {
        x.clamp(a, b)
    }
}

/// Log density of the normal `N(loc, scale²)` truncated to the standardized bounds
/// `[a, b]` at `x`; `-inf` outside.
pub fn logpdf(x: f64, a: f64, b: f64, loc: f64, scale: f64) -> f64 {
    let z = (x - loc) / scale;
    if z < a || z > b {
        return f64::NEG_INFINITY;
    }
    -0.5 * z * z - LN_SQRT_2PI - log_gauss_mass(a, b) - scale.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppf_inverts_the_cdf() {
        for &(a, b) in &[
            (-1.0, 1.0),
            (-30.0, -25.0),
            (25.0, 40.0),
            (-3.0, 0.5),
            (0.1, 0.2),
            (-50.0, 50.0),
        ] {
            for &q in &[1e-9, 0.01, 0.3, 0.5, 0.9, 0.999_999] {
                let x: f64 = ppf(q, a, b);
                assert!(x >= a && x <= b, "ppf({q},{a},{b}) = {x}");
                let cdf = (log_gauss_mass(a, x) - log_gauss_mass(a, b)).exp();
                assert!(
                    (cdf - q).abs() < 1e-6 * q.max(1e-3),
                    "cdf {cdf} vs {q} for [{a},{b}]"
                );
            }
        }
    }

    /// The `y` grid of the `ndtri_exp` tests: both tails, the region edges
    /// (ln 0.075, ln 0.5, ln 0.925, r = 5) and the Newton fallback below -690.
    fn ndtri_grid() -> Vec<f64> {
        let mut ys: Vec<f64> = (1..=400).map(|k| -(10f64).powf(3.0 - k as f64 / 25.0)).collect();
        ys.extend((0..3000).map(|k| -3.0 * k as f64 / 3000.0 - 1e-9));
        for e in [0.075f64.ln(), 0.5f64.ln(), 0.925f64.ln(), -25.0, -690.0] {
            ys.extend([e - 1e-12, e, e + 1e-12]);
        }
        ys.retain(|y| *y < 0.0);
        ys
    }

    #[test]
    fn ndtri_exp_agrees_with_newton_and_inverts_log_ndtr() {
        for y in ndtri_grid() {
            let (x, newton) = (ndtri_exp(y), ndtri_exp_newton(y));
            assert!(x.is_finite(), "ndtri_exp({y}) = {x}");
            assert!(
                (x - newton).abs() <= 1e-12 * newton.abs() + 1e-15,
                "ndtri_exp({y}) = {x}, Newton {newton}"
            );
            // log_ndtr(x) = y to log_ndtr's own precision (it is `ln(ndtr(x))`
            // up to x = 6, so its error is absolute there) and x's rounding.
            let back = log_ndtr(x);
            let slope = (-0.5 * x * x - LN_SQRT_2PI - y).exp(); // d log_ndtr / dx
            assert!(
                (back - y).abs() <= 1e-13 * y.abs() + 4.0 * f64::EPSILON * (1.0 + slope * x.abs().max(1.0)),
                "log_ndtr(ndtri_exp({y})) = {back}"
            );
        }
    }

    #[test]
    fn ndtri_exp_is_monotone_and_handles_the_ends() {
        let mut ys = ndtri_grid();
        ys.sort_by(f64::total_cmp);
        let xs: Vec<f64> = ys.iter().map(|y| ndtri_exp(*y)).collect();
        for (w, y) in xs.windows(2).zip(&ys) {
            assert!(w[0] <= w[1], "not monotone at y = {y}: {} > {}", w[0], w[1]);
        }
        assert_eq!(ndtri_exp(0.0), f64::INFINITY);
        assert_eq!(ndtri_exp(f64::NEG_INFINITY), f64::NEG_INFINITY);
        assert!(ndtri_exp(f64::NAN).is_nan());
        assert_eq!(ndtri_exp(0.5f64.ln()), 0.0);
    }

    #[test]
    fn log_ndtr_is_continuous_at_branch_points() {
        for &x in &[-20.0f64, 6.0] {
            let l = log_ndtr(x - 1e-9);
            let r = log_ndtr(x + 1e-9);
            assert!(((l - r) / l).abs() < 1e-6, "{l} {r}");
        }
    }
}
