//! Exponential backoff with a cap and jitter, for calls to a coordinator
//! that is unreachable (restarting, network down).

use std::time::Duration;

/// Delays that double from `initial` up to `max`, each with ±20 % jitter so
/// that many workers do not reconnect in lock-step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    attempts: u32,
}

impl Backoff {
    /// A backoff starting at `initial`, capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        let max = max.max(initial);
        Backoff { initial, max, next: initial, attempts: 0 }
    }

    /// The next delay (and advance).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        self.attempts += 1;
        let jitter = rand::random::<f64>() * 0.4 + 0.8;
        base.mul_f64(jitter).min(self.max)
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Start over from `initial` (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial;
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(80) && d[0] <= Duration::from_millis(120), "{d:?}");
        assert!(d[2] >= Duration::from_millis(320) && d[2] <= Duration::from_millis(480), "{d:?}");
        assert!(d.iter().all(|x| *x <= Duration::from_millis(1000)), "{d:?}");
        assert!(d[7] >= Duration::from_millis(800), "{d:?}");
        assert_eq!(b.attempts(), 8);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }
}
