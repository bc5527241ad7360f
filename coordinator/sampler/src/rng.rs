//! Deterministic seeding: every random draw for trial `n` comes from a generator
//! seeded by `(seed, n)`, so a restarted coordinator repeats itself exactly and no
//! sampler keeps state between calls.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The generator type used throughout the crate.
pub type Rng = ChaCha8Rng;

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator for trial `trial_number` under `seed`; `stream` separates
/// independent uses (sampler kinds) of the same pair.
pub fn trial_rng(seed: u64, trial_number: u64, stream: u64) -> Rng {
    let s = splitmix64(seed ^ splitmix64(trial_number ^ splitmix64(stream)));
    ChaCha8Rng::seed_from_u64(s)
}

/// A uniform draw in `[0, 1)`.
pub fn uniform01(rng: &mut Rng) -> f64 {
    use rand::RngCore;
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A uniform draw in `[low, high)`.
pub fn uniform(rng: &mut Rng, low: f64, high: f64) -> f64 {
    let x = low + (high - low) * uniform01(rng);
    if x.is_finite() {
        x
    } else {
        low
    }
}
