//! The truncated normal distribution in standard form, as Optuna's
//! `_truncnorm.py` computes it: log-CDF with an asymptotic series in the far left
//! tail, the log of the Gaussian mass on an interval (working in the left tail for
//! accuracy), the inverse CDF through Newton's method on `log_ndtr`, and `logpdf`.
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

/// `x` such that `log_ndtr(x) == y` (for `y <= 0`), by Newton's method.
pub fn ndtri_exp(y: f64) -> f64 {
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

    #[test]
    fn log_ndtr_is_continuous_at_branch_points() {
        for &x in &[-20.0f64, 6.0] {
            let l = log_ndtr(x - 1e-9);
            let r = log_ndtr(x + 1e-9);
            assert!(((l - r) / l).abs() < 1e-6, "{l} {r}");
        }
    }
}
