//! `e^x` for the terms of the mixture sums (`x = log term - largest log term`,
//! so `x <= 0`), written so that a loop over many terms compiles to vector
//! code: no branches and no calls, unlike the C library's `exp`.
//!
//! The method is fdlibm's (as in musl and the `libm` crate): `x = k ln 2 + r`
//! with `|r| <= ln 2 / 2`, `e^r` from a degree-5 rational approximation, and
//! `2^k` put in the exponent bits. The error is below one unit in the last
//! place, as the C library's (tests compare the two).

/// `1.5 * 2^52`: adding it rounds a double of magnitude below `2^51` to an
/// integer, which then sits in the low bits of the sum.
const SHIFT: f64 = 6_755_399_441_055_744.0;
const INV_LN2: f64 = std::f64::consts::LOG2_E;
/// `ln 2` split so that `k * LN2_HI` is exact for the `k` used here.
#[allow(clippy::excessive_precision)]
const LN2_HI: f64 = 6.93147180369123816490e-01;
#[allow(clippy::excessive_precision)]
const LN2_LO: f64 = 1.90821492927058770002e-10;
#[allow(clippy::excessive_precision)]
const P1: f64 = 1.66666666666666019037e-01;
#[allow(clippy::excessive_precision)]
const P2: f64 = -2.77777777770155933842e-03;
#[allow(clippy::excessive_precision)]
const P3: f64 = 6.61375632143793436117e-05;
#[allow(clippy::excessive_precision)]
const P4: f64 = -1.65339022054652515390e-06;
#[allow(clippy::excessive_precision)]
const P5: f64 = 4.13813679705723846039e-08;

/// The smallest argument handled (`e^-708` is still a normal double).
pub(crate) const EXP_MIN: f64 = -708.0;

/// `e^x` for `EXP_MIN <= x <= 0` (within one unit in the last place). Any
/// other argument gives some finite or NaN number and no panic: callers
/// select the result only where `x` is in range.
#[inline(always)]
pub(crate) fn exp_nonpos(x: f64) -> f64 {
    let t = x * INV_LN2 + SHIFT;
    let kf = t - SHIFT; // round(x / ln 2)
                        // The integer k from the low bits of `t` (two's complement, so negative
                        // k works too), then 2^k from its exponent bits.
    let k = (t.to_bits() as i64).wrapping_sub(SHIFT.to_bits() as i64);
    let scale = f64::from_bits((k.wrapping_add(1023) as u64) << 52);
    let hi = x - kf * LN2_HI;
    let lo = kf * LN2_LO;
    let r = hi - lo;
    let z = r * r;
    let c = r - z * (P1 + z * (P2 + z * (P3 + z * (P4 + z * P5))));
    let y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
    y * scale
}

/// Replaces each log term `d` by `e^d` where `d > cut` (`cut >= EXP_MIN`),
/// else by 0; a NaN becomes 0. One pass the compiler can vectorise.
#[inline]
pub(crate) fn exp_terms(ds: &mut [f64], cut: f64) {
    debug_assert!(cut >= EXP_MIN);
    for d in ds.iter_mut() {
        let x = *d;
        let e = exp_nonpos(x.max(cut));
        *d = if x > cut { e } else { 0.0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place.
    fn ulps(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64).abs_diff(b.to_bits() as i64)
    }

    #[test]
    fn matches_the_c_library_within_one_ulp() {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut worst = 0;
        let mut xs: Vec<f64> = (0..200_000).map(|_| -50.0 * next()).collect();
        xs.extend((0..50_000).map(|_| EXP_MIN * next()));
        xs.extend((0..50_000).map(|_| -1e-6 * next()));
        xs.extend([
            0.0,
            -0.0,
            -1e-300,
            -0.5 * std::f64::consts::LN_2,
            -std::f64::consts::LN_2,
            -50.0,
            EXP_MIN,
        ]);
        for x in xs {
            let (ours, libc) = (exp_nonpos(x), x.exp());
            let u = ulps(ours, libc);
            assert!(u <= 1, "exp({x}): {ours} vs {libc}");
            worst = worst.max(u);
        }
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert!(worst <= 1);
    }

    #[test]
    fn terms_below_the_cut_or_nan_become_zero() {
        let mut ds = [
            0.0,
            -1.0,
            -49.9,
            -50.0,
            -51.0,
            f64::NEG_INFINITY,
            f64::NAN,
            -1e-3,
        ];
        exp_terms(&mut ds, -50.0);
        assert_eq!(ds[0], 1.0);
        assert!(ulps(ds[1], (-1.0f64).exp()) <= 1);
        assert!(ds[2] > 0.0);
        assert_eq!(&ds[3..7], &[0.0, 0.0, 0.0, 0.0]);
        assert!(ulps(ds[7], (-1e-3f64).exp()) <= 1);
    }
}
