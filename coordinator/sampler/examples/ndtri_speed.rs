//! The truncated normal's inverse CDF, two ways, in one run: `ndtri_exp`
//! (Wichura's AS 241, what the sampler uses) against `ndtri_exp_newton`
//! (Newton's method on `log_ndtr`, as Optuna computes it), timed on the
//! arguments the candidate draws produce (kernels inside a range, uniform
//! quantiles), and how far apart their answers are.
//!
//! `cargo run --release -p mnist-sampler --example ndtri_speed`
//!
//! With `dump`, it reads one `y` per line on stdin and prints both answers
//! (`ndtri_exp newton`), for comparing them with a high-precision reference:
//! `... --example ndtri_speed dump < ys.txt`.

use std::io::BufRead;
use std::time::Instant;

use mnist_sampler::rng::{trial_rng, uniform01};
use mnist_sampler::sampler::tpe::truncnorm::{
    log_add_exp, log_gauss_mass, log_ndtr, ndtri_exp, ndtri_exp_newton,
};

fn main() {
    if std::env::args().nth(1).as_deref() == Some("dump") {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            match line.trim().parse::<f64>() {
                Ok(y) => println!("{:e} {:e}", ndtri_exp(y), ndtri_exp_newton(y)),
                Err(e) => eprintln!("skipped {line:?}: {e}"),
            }
        }
        return;
    }
    // What `ppf_given` hands `ndtri_exp` when a candidate is drawn from a
    // kernel (mu in [0, 1], sigma 0.05-0.55) truncated to [0, 1].
    let mut rng = trial_rng(7, 0, 0);
    let ys: Vec<f64> = (0..200_000)
        .map(|_| {
            let (mu, sigma, q) = (
                uniform01(&mut rng),
                0.05 + 0.5 * uniform01(&mut rng),
                uniform01(&mut rng),
            );
            let (a, b) = (-mu / sigma, (1.0 - mu) / sigma);
            let (end, mass) = if a < 0.0 {
                (log_ndtr(a), log_gauss_mass(a, b))
            } else {
                (log_ndtr(-b), log_gauss_mass(a, b))
            };
            if a < 0.0 {
                log_add_exp(end, q.ln() + mass)
            } else {
                log_add_exp(end, (-q).ln_1p() + mass)
            }
        })
        .collect();
    let time = |f: fn(f64) -> f64| {
        let mut best = f64::INFINITY;
        let mut acc = 0.0;
        for _ in 0..5 {
            let t = Instant::now();
            for y in &ys {
                acc += f(*y);
            }
            best = best.min(t.elapsed().as_secs_f64() / ys.len() as f64);
        }
        (best, acc)
    };
    let (t_as241, s1) = time(ndtri_exp);
    let (t_newton, s2) = time(ndtri_exp_newton);
    // Apart by: the largest absolute difference, and the largest relative
    // one where |x| > 1e-3 (near 0 a relative difference means nothing).
    let (mut abs_worst, mut rel_worst) = (0.0f64, 0.0f64);
    for y in &ys {
        let (a, b) = (ndtri_exp(*y), ndtri_exp_newton(*y));
        abs_worst = abs_worst.max((a - b).abs());
        if b.abs() > 1e-3 {
            rel_worst = rel_worst.max((a - b).abs() / b.abs());
        }
    }
    println!(
        "ndtri_exp (AS 241): {:.1} ns, Newton: {:.1} ns, {:.1}x; largest difference {abs_worst:.1e}, \
         relative (|x| > 1e-3) {rel_worst:.1e}, over {} arguments (checksums {s1:.6e} {s2:.6e})",
        t_as241 * 1e9,
        t_newton * 1e9,
        t_newton / t_as241,
        ys.len()
    );
}
