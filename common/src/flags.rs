//! Checks shared by the binaries' command-line flags.

use std::time::Duration;

use thiserror::Error;

/// The longest duration a flag takes: 30 days. Leases and heartbeats travel
/// as 32-bit milliseconds (49 days), and nothing here waits longer.
pub const MAX_FLAG_SECONDS: f64 = 30.0 * 86_400.0;

/// A flag value out of its range, worded for the user.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{0}")]
pub struct FlagError(pub String);

/// A coordinator address as `--coordinator` takes it: `host:port` gets
/// `http://`; `https://` is refused, since no TLS is built in yet (it would
/// have gone out as plain text under an https name).
pub fn coordinator_url(addr: &str) -> Result<String, FlagError> {
    let a = addr.trim().trim_end_matches('/');
    let url = if a.contains("://") { a.to_string() } else { format!("http://{a}") };
    if url.starts_with("https://") {
        return Err(FlagError(format!(
            "coordinator address {addr:?}: TLS is not supported yet, the coordinator speaks plain gRPC; \
             use http://HOST:PORT over a trusted network, a VPN or an SSH tunnel"
        )));
    }
    if !url.starts_with("http://") || url.len() == "http://".len() {
        return Err(FlagError(format!("coordinator address {addr:?} is not valid: use HOST:PORT or http://HOST:PORT")));
    }
    Ok(url)
}

/// A `--name` flag given in seconds: finite, above 0 (or at least 0 with
/// `allow_zero`), at most [`MAX_FLAG_SECONDS`].
pub fn seconds(name: &str, v: f64, allow_zero: bool) -> Result<Duration, FlagError> {
    let low_ok = if allow_zero { v >= 0.0 } else { v > 0.0 };
    if v.is_finite() && low_ok && v <= MAX_FLAG_SECONDS {
        return Ok(Duration::from_secs_f64(v));
    }
    let low = if allow_zero { "from 0" } else { "above 0" };
    Err(FlagError(format!(
        "--{name} must be a number of seconds {low} up to {MAX_FLAG_SECONDS} (30 days), got {v:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_addresses_get_a_scheme_and_no_false_tls() {
        assert_eq!(coordinator_url("127.0.0.1:50051").unwrap(), "http://127.0.0.1:50051");
        assert_eq!(coordinator_url(" http://h:1/ ").unwrap(), "http://h:1");
        assert!(coordinator_url("https://h:1").unwrap_err().0.contains("TLS is not supported yet"));
        assert!(coordinator_url("grpc://h:1").unwrap_err().0.contains("use HOST:PORT"));
        assert!(coordinator_url("").is_err());
    }

    #[test]
    fn seconds_are_bounded() {
        assert_eq!(seconds("x", 1.5, false).unwrap(), Duration::from_millis(1500));
        assert_eq!(seconds("x", 0.0, true).unwrap(), Duration::ZERO);
        for v in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e20, MAX_FLAG_SECONDS * 2.0] {
            let e = seconds("lease-seconds", v, false).unwrap_err().to_string();
            assert!(e.starts_with("--lease-seconds must be"), "{e}");
        }
    }
}
