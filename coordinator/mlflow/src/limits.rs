//! MLflow's request and value limits, applied before anything is sent:
//! `log-batch` holds at most 1000 metrics, 100 params and 100 tags (1000
//! entities in all); param values up to 6000 characters, tag values up to
//! 8000; keys up to 250 characters of letters, digits, `_ - . / : ` and
//! space, and no key that a file system would read as another name.
//!
//! A key that breaks the rules is mended (the bad characters become `_`) and
//! an over-long value is cut, each with a warning that names it, so one bad
//! value never makes MLflow reject the batch it travels in.

use crate::op::MetricPoint;

pub const MAX_METRICS_PER_BATCH: usize = 1000;
pub const MAX_PARAMS_PER_BATCH: usize = 100;
pub const MAX_TAGS_PER_BATCH: usize = 100;
pub const MAX_ENTITIES_PER_BATCH: usize = 1000;
pub const MAX_PARAM_VALUE: usize = 6000;
pub const MAX_TAG_VALUE: usize = 8000;
pub const MAX_KEY: usize = 250;

fn key_char_ok(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ' ' | ':')
}

/// Whether MLflow accepts `key` as a metric, param or tag name.
pub fn key_ok(key: &str) -> bool {
    !key.is_empty()
        && key.chars().count() <= MAX_KEY
        && key.chars().all(key_char_ok)
        && !key.starts_with('/')
        && !key.ends_with('/')
        && key.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// `key` made acceptable: bad characters become `_`, empty, `.` and `..`
/// path segments are dropped, and it is cut to 250 characters. `None` when
/// it was fine already.
pub fn mend_key(key: &str) -> Option<String> {
    if key_ok(key) {
        return None;
    }
    let replaced: String = key.chars().map(|c| if key_char_ok(c) { c } else { '_' }).collect();
    let joined = replaced.split('/').filter(|s| !s.is_empty() && *s != "." && *s != "..").collect::<Vec<_>>().join("/");
    let mut out: String = joined.chars().take(MAX_KEY).collect();
    while out.ends_with('/') {
        out.pop();
    }
    if out.is_empty() {
        out = "_".into();
    }
    Some(out)
}

/// `value` cut to `max` characters, marked with a trailing `…` when cut.
pub fn clip_value(value: &str, max: usize) -> Option<String> {
    if value.chars().count() <= max {
        return None;
    }
    let mut s: String = value.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    Some(s)
}

/// Metrics, params and tags made acceptable, with one warning per change.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Cleaned {
    pub metrics: Vec<MetricPoint>,
    pub params: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

/// Applies the key and value rules; duplicate params (same key after
/// mending) keep the first value, since MLflow refuses to change a param.
pub fn clean(metrics: &[MetricPoint], params: &[(String, String)], tags: &[(String, String)]) -> Cleaned {
    let mut out = Cleaned::default();
    let key = |k: &str, what: &str, warnings: &mut Vec<String>| match mend_key(k) {
        Some(m) => {
            warnings.push(format!("{what} key {k:?} breaks MLflow's naming rules; logged as {m:?}"));
            m
        }
        None => k.to_string(),
    };
    for m in metrics {
        let k = key(&m.key, "metric", &mut out.warnings);
        out.metrics.push(MetricPoint { key: k, ..m.clone() });
    }
    let mut seen = std::collections::HashSet::new();
    for (k, v) in params {
        let k = key(k, "param", &mut out.warnings);
        if !seen.insert(k.clone()) {
            out.warnings.push(format!("param {k:?} given twice; MLflow keeps the first value"));
            continue;
        }
        let v = clip_value(v, MAX_PARAM_VALUE)
            .inspect(|_| out.warnings.push(format!("param {k:?} is longer than {MAX_PARAM_VALUE} characters; cut")))
            .unwrap_or_else(|| v.clone());
        out.params.push((k, v));
    }
    // MLflow refuses a batch that names a key twice; the last value wins.
    let mut last: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (k, v) in tags {
        let k = key(k, "tag", &mut out.warnings);
        let v = clip_value(v, MAX_TAG_VALUE)
            .inspect(|_| out.warnings.push(format!("tag {k:?} is longer than {MAX_TAG_VALUE} characters; cut")))
            .unwrap_or_else(|| v.clone());
        match last.get(&k) {
            Some(&i) => out.tags[i].1 = v,
            None => {
                last.insert(k.clone(), out.tags.len());
                out.tags.push((k, v));
            }
        }
    }
    out
}

/// One `log-batch` request's worth.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    pub metrics: Vec<MetricPoint>,
    pub params: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
}

/// Splits cleaned values into batches within every per-request limit,
/// keeping their order.
pub fn batches(c: &Cleaned) -> Vec<Batch> {
    let mut out = Vec::new();
    let (mut mi, mut pi, mut ti) = (0, 0, 0);
    while mi < c.metrics.len() || pi < c.params.len() || ti < c.tags.len() {
        let np = (c.params.len() - pi).min(MAX_PARAMS_PER_BATCH);
        let nt = (c.tags.len() - ti).min(MAX_TAGS_PER_BATCH);
        let nm = (c.metrics.len() - mi).min(MAX_METRICS_PER_BATCH).min(MAX_ENTITIES_PER_BATCH - np - nt);
        out.push(Batch {
            metrics: c.metrics[mi..mi + nm].to_vec(),
            params: c.params[pi..pi + np].to_vec(),
            tags: c.tags[ti..ti + nt].to_vec(),
        });
        mi += nm;
        pi += np;
        ti += nt;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(i: usize) -> MetricPoint {
        MetricPoint { key: format!("m{i}"), value: i as f64, timestamp_ms: 0, step: 0 }
    }

    #[test]
    fn keys_follow_mlflows_rules() {
        for ok in ["val_accuracy", "f1/class 3", "a.b-c:d", "x"] {
            assert!(key_ok(ok), "{ok}");
            assert_eq!(mend_key(ok), None);
        }
        assert_eq!(mend_key("a@b").as_deref(), Some("a_b"));
        assert_eq!(mend_key("../etc").as_deref(), Some("etc"));
        assert_eq!(mend_key("/abs//x/").as_deref(), Some("abs/x"));
        assert_eq!(mend_key("").as_deref(), Some("_"));
        let long = "k".repeat(300);
        assert_eq!(mend_key(&long).map(|k| k.len()), Some(MAX_KEY));
    }

    #[test]
    fn values_are_cut_with_a_warning() {
        let c = clean(&[], &[("space".into(), "x".repeat(7000)), ("space".into(), "y".into())], &[("t".into(), "z".repeat(9000))]);
        assert_eq!(c.params.len(), 1);
        assert_eq!(c.params[0].1.chars().count(), MAX_PARAM_VALUE);
        assert_eq!(c.tags[0].1.chars().count(), MAX_TAG_VALUE);
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
    }

    #[test]
    fn batches_stay_within_every_limit_and_keep_everything() {
        let metrics: Vec<_> = (0..2345).map(m).collect();
        let params: Vec<_> = (0..250).map(|i| (format!("p{i}"), "v".to_string())).collect();
        let tags: Vec<_> = (0..120).map(|i| (format!("t{i}"), "v".to_string())).collect();
        let c = clean(&metrics, &params, &tags);
        let bs = batches(&c);
        for b in &bs {
            assert!(b.metrics.len() <= MAX_METRICS_PER_BATCH);
            assert!(b.params.len() <= MAX_PARAMS_PER_BATCH);
            assert!(b.tags.len() <= MAX_TAGS_PER_BATCH);
            assert!(b.metrics.len() + b.params.len() + b.tags.len() <= MAX_ENTITIES_PER_BATCH);
        }
        let all_m: Vec<_> = bs.iter().flat_map(|b| b.metrics.clone()).collect();
        assert_eq!(all_m, metrics);
        assert_eq!(bs.iter().map(|b| b.params.len()).sum::<usize>(), 250);
        assert_eq!(bs.iter().map(|b| b.tags.len()).sum::<usize>(), 120);
        assert!(batches(&clean(&[], &[], &[])).is_empty());
    }
}
