//! Search spaces and training configurations: the built-in default space of
//! the MNIST CNN, parsing a user's space (TOML, JSON or structured), and
//! turning a trial's parameters into the full `TrainConfig` a worker runs.

use mnist_common::config::{ParamValue, TrainConfig};
use mnist_sampler::{Choice, Distribution, SearchSpace};

/// The built-in search space of the MNIST CNN (the seed's `tune.py`, widened):
///
/// | parameter        | distribution                         |
/// |------------------|--------------------------------------|
/// | `learning_rate`  | float 1e-4 .. 1e-1, log scale         |
/// | `momentum`       | float 0.5 .. 0.99                     |
/// | `batch_size`     | categorical 32, 64, 128, 256          |
/// | `dropout_conv`   | float 0.0 .. 0.5                      |
/// | `dropout_fc`     | float 0.0 .. 0.7                      |
/// | `fc_width`       | int 32 .. 256, step 32                |
/// | `conv1_channels` | categorical 16, 32, 64                |
/// | `conv2_channels` | categorical 32, 64, 128               |
///
/// Every name is a `TrainConfig` field, so each trial's parameters become its
/// training configuration. `mnistctl study create` and `mnistctl tune` use it
/// when no space file is given.
pub fn default_search_space() -> SearchSpace {
    let ints = |v: &[i64]| Distribution::Categorical { choices: v.iter().map(|&i| Choice::Int(i)).collect() };
    let mut s = SearchSpace::new();
    s.push("learning_rate", Distribution::Float { low: 1e-4, high: 1e-1, log: true, step: None });
    s.push("momentum", Distribution::Float { low: 0.5, high: 0.99, log: false, step: None });
    s.push("batch_size", ints(&[32, 64, 128, 256]));
    s.push("dropout_conv", Distribution::Float { low: 0.0, high: 0.5, log: false, step: None });
    s.push("dropout_fc", Distribution::Float { low: 0.0, high: 0.7, log: false, step: None });
    s.push("fc_width", Distribution::Int { low: 32, high: 256, log: false, step: 32 });
    s.push("conv1_channels", ints(&[16, 32, 64]));
    s.push("conv2_channels", ints(&[32, 64, 128]));
    s
}

/// Where a new study's space comes from.
#[derive(Debug, Clone, Default)]
pub enum SpaceSource {
    /// [`default_search_space`].
    #[default]
    Default,
    /// The TOML user format.
    Toml(String),
    /// The JSON user format.
    Json(String),
    /// A structured space (validated here).
    Space(SearchSpace),
}

/// Parses and validates a space; the error text says what to fix.
pub fn parse_space(src: &SpaceSource) -> Result<SearchSpace, String> {
    let space = match src {
        SpaceSource::Default => default_search_space(),
        SpaceSource::Toml(t) => SearchSpace::from_toml_str(t).map_err(|e| format!("bad search space: {e}"))?,
        SpaceSource::Json(j) => SearchSpace::from_json_str(j).map_err(|e| format!("bad search space: {e}"))?,
        SpaceSource::Space(s) => s.clone(),
    };
    space.validate().map_err(|e| format!("bad search space: {e}"))?;
    for (name, _) in space.params() {
        if name.is_empty() || name.len() > 512 || name.chars().any(char::is_control) {
            return Err(format!("bad search space: parameter name {name:?} must be 1 to 512 characters without control characters"));
        }
    }
    Ok(space)
}

/// The training-configuration value of a parameter value, or `None` for a
/// categorical `None` (which leaves the field at its base value).
pub fn param_value(c: &Choice) -> Option<ParamValue> {
    match c {
        Choice::None => None,
        Choice::Bool(b) => Some(ParamValue::Bool(*b)),
        Choice::Int(i) => Some(ParamValue::Num(*i as f64)),
        Choice::Num(x) => Some(ParamValue::Num(*x)),
        Choice::Str(s) => Some(ParamValue::Str(s.clone())),
    }
}

/// The base configuration with every parameter that names a `TrainConfig`
/// field applied, validated. Parameters with other names are the objective's
/// own business (generic ask/tell studies) and are ignored here.
pub fn apply_params<'a>(
    base: &TrainConfig,
    params: impl IntoIterator<Item = (&'a str, &'a Choice)>,
) -> Result<TrainConfig, String> {
    let mut cfg = base.clone();
    for (name, value) in params {
        if !TrainConfig::PARAM_NAMES.contains(&name) {
            continue;
        }
        if let Some(v) = param_value(value) {
            cfg.set_param(name, &v).map_err(|e| e.to_string())?;
        }
    }
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// Checks, at study creation, that the extremes of every parameter that names
/// a `TrainConfig` field give a valid configuration (e.g. `dropout_fc` must
/// stay below 1, `batch_size` must be whole), so a bad space is refused up
/// front instead of failing trials later.
pub fn check_space_against_config(space: &SearchSpace, base: &TrainConfig) -> Result<(), String> {
    base.validate().map_err(|e| format!("bad base training configuration: {e}"))?;
    for (name, dist) in space.params() {
        if !TrainConfig::PARAM_NAMES.contains(&name) {
            // The objective's own (generic ask/tell studies); `mnistctl`
            // refuses names that look like mistyped training parameters.
            continue;
        }
        let candidates: Vec<Choice> = match dist {
            // The ends, and one value inside (so that a continuous range on an
            // integer field, say batch_size, is refused here, not by every trial).
            Distribution::Float { low, high, step, .. } => {
                let inside = match step {
                    Some(s) if low + s <= *high => low + s,
                    Some(_) => *low,
                    None => low + (high - low) * 0.381_966_011_250_105,
                };
                vec![Choice::Num(*low), Choice::Num(inside), Choice::Num(*high)]
            }
            Distribution::Int { low, high, .. } => vec![Choice::Int(*low), Choice::Int(*high)],
            Distribution::Categorical { choices } => choices.clone(),
        };
        for c in &candidates {
            apply_params(base, [(name, c)])
                .map_err(|e| format!("bad search space: parameter `{name}` can take the value {c}, which the training configuration rejects ({e})"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_space_is_valid_and_fits_the_config() {
        let s = default_search_space();
        s.validate().unwrap();
        assert_eq!(s.len(), 8);
        check_space_against_config(&s, &TrainConfig::default()).unwrap();
        // The stored form keeps the parameter order.
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<SearchSpace>(&json).unwrap(), s);
    }

    #[test]
    fn bad_spaces_are_explained() {
        let e = parse_space(&SpaceSource::Toml("[x]\ntype = \"float\"\nlow = 1\nhigh = 0\n".into())).unwrap_err();
        assert!(e.contains("`x`"), "{e}");
        let e = parse_space(&SpaceSource::Json("{not json".into())).unwrap_err();
        assert!(e.starts_with("bad search space"), "{e}");
        let space = SearchSpace::from_toml_str("[dropout_fc]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\n").unwrap();
        let e = check_space_against_config(&space, &TrainConfig::default()).unwrap_err();
        assert!(e.contains("dropout_fc"), "{e}");
        // A continuous range on an integer field would fail every trial.
        let space = SearchSpace::from_json_str(r#"{"batch_size": {"type": "float", "low": 32, "high": 256}}"#).unwrap();
        let e = check_space_against_config(&space, &TrainConfig::default()).unwrap_err();
        assert!(e.contains("batch_size") && e.contains("whole number"), "{e}");
        // ... while a stepped float of whole numbers is fine.
        let space = SearchSpace::from_json_str(r#"{"batch_size": {"type": "float", "low": 32, "high": 256, "step": 32}}"#).unwrap();
        check_space_against_config(&space, &TrainConfig::default()).unwrap();
    }

    #[test]
    fn params_become_a_train_config() {
        let lr = Choice::Num(0.05);
        let bs = Choice::Int(128);
        let other = Choice::Str("ignored".into());
        let cfg = apply_params(&TrainConfig::default(), [("learning_rate", &lr), ("batch_size", &bs), ("x", &other)]).unwrap();
        assert_eq!((cfg.learning_rate, cfg.batch_size), (0.05, 128));
        // Every field set_param knows is applied (lr_schedule was once skipped).
        let constant = Choice::Str("constant".into());
        let cfg = apply_params(&TrainConfig::default(), [("lr_schedule", &constant)]).unwrap();
        assert_eq!(cfg.lr_schedule, mnist_common::config::LrSchedule::Constant);
        for name in TrainConfig::PARAM_NAMES {
            let e = TrainConfig::default().set_param(name, &ParamValue::Str("?".into())).unwrap_err();
            assert!(!e.to_string().contains("not a training parameter"), "{name}: {e}");
        }
    }
}
