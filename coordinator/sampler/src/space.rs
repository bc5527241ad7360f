//! Search spaces: the three distribution kinds Optuna knows (float, int,
//! categorical), their validation, the user-facing TOML/JSON format, and the
//! exact `distribution_json` text Optuna stores, both ways.
//!
//! # The user format
//!
//! One table (TOML) or object (JSON) per parameter, keyed by the parameter name,
//! with the same fields as Optuna's abbreviated distribution JSON:
//!
//! ```toml
//! [learning_rate]
//! type = "float"          # "float" | "int" | "categorical"
//! low = 1e-5
//! high = 0.1
//! log = true              # optional, default false
//!
//! [dropout]
//! type = "float"
//! low = 0.0
//! high = 0.5
//! step = 0.05             # optional; omit (or leave out) for a continuous range
//!
//! [hidden_units]
//! type = "int"
//! low = 32
//! high = 256
//! step = 32               # optional, default 1
//!
//! [optimizer]
//! type = "categorical"
//! choices = ["adam", "sgd"]   # strings, numbers, booleans (and JSON null)
//! ```
//!
//! The same in JSON: `{"learning_rate": {"type": "float", "low": 1e-5, "high": 0.1, "log": true}, ...}`.
//! Parameters keep the order in which the document lists them. Unknown keys are
//! rejected, so a typo such as `hihg` is reported instead of ignored.

use std::collections::HashSet;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::SpaceError;
use crate::pyjson::{mark_nonfinite, nonfinite_of, py_float, py_string};

/// One categorical choice: the JSON-compatible values Optuna accepts.
///
/// `Int` and `Num` are kept apart so that `[32, 64]` is written back as `[32, 64]`
/// (not `[32.0, 64.0]`) in `distribution_json`; they compare equal by value.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Choice {
    /// JSON `null` / Python `None`.
    None,
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(String),
}

impl Choice {
    /// Equality as Optuna sees it: numbers by value (`1 == 1.0`), NaN equals NaN.
    pub fn same(&self, other: &Choice) -> bool {
        match (self.as_number(), other.as_number()) {
            (Some(a), Some(b)) => a == b || (a.is_nan() && b.is_nan()),
            (None, None) => match (self, other) {
                (Choice::None, Choice::None) => true,
                (Choice::Bool(a), Choice::Bool(b)) => a == b,
                (Choice::Str(a), Choice::Str(b)) => a == b,
                _ => false,
            },
            _ => false,
        }
    }

    /// The value as a number, for `Int` and `Num` only.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Choice::Int(i) => Some(*i as f64),
            Choice::Num(x) => Some(*x),
            _ => None,
        }
    }

    /// The choice as Python's `json.dumps` writes it.
    pub fn to_py_json(&self) -> String {
        match self {
            Choice::None => "null".into(),
            Choice::Bool(b) => {
                if *b {
                    "true".into()
                } else {
                    "false".into()
                }
            }
            Choice::Int(i) => i.to_string(),
            Choice::Num(x) => py_float(*x),
            Choice::Str(s) => py_string(s),
        }
    }

    fn from_value(v: &Value, name: &str) -> Result<Choice, SpaceError> {
        if let Some(x) = nonfinite_of(v) {
            return Ok(Choice::Num(x));
        }
        Ok(match v {
            Value::Null => Choice::None,
            Value::Bool(b) => Choice::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Choice::Int(i),
                None => Choice::Num(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Choice::Str(s.clone()),
            other => return Err(SpaceError::Parse {
                format: "distribution JSON",
                message: format!(
                    "parameter `{name}`: choice {other} is not a string, number, boolean or null"
                ),
            }),
        })
    }
}

impl PartialEq for Choice {
    fn eq(&self, other: &Self) -> bool {
        self.same(other)
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Choice::Str(s) => write!(f, "{s:?}"),
            other => f.write_str(&other.to_py_json()),
        }
    }
}

impl<'de> Deserialize<'de> for Choice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Choice;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a categorical choice: a string, number, boolean or null")
            }
            fn visit_unit<E>(self) -> Result<Choice, E> {
                Ok(Choice::None)
            }
            fn visit_none<E>(self) -> Result<Choice, E> {
                Ok(Choice::None)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Choice, E> {
                Ok(Choice::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Choice, E> {
                Ok(Choice::Int(i))
            }
            fn visit_u64<E>(self, u: u64) -> Result<Choice, E> {
                Ok(i64::try_from(u).map_or(Choice::Num(u as f64), Choice::Int))
            }
            fn visit_f64<E>(self, x: f64) -> Result<Choice, E> {
                Ok(Choice::Num(x))
            }
            fn visit_str<E>(self, s: &str) -> Result<Choice, E> {
                Ok(Choice::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Choice, E> {
                Ok(Choice::Str(s))
            }
        }
        d.deserialize_any(V)
    }
}

fn default_int_step() -> i64 {
    1
}

/// An integer step where `null` means the default, 1.
fn int_step<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(Option::<i64>::deserialize(d)?.unwrap_or(1))
}

/// A parameter's distribution, in Optuna's terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Distribution {
    /// `FloatDistribution(low, high, log, step)`.
    Float {
        low: f64,
        high: f64,
        #[serde(default)]
        log: bool,
        #[serde(default)]
        step: Option<f64>,
    },
    /// `IntDistribution(low, high, log, step)`.
    Int {
        low: i64,
        high: i64,
        #[serde(default)]
        log: bool,
        #[serde(default = "default_int_step", deserialize_with = "int_step")]
        step: i64,
    },
    /// `CategoricalDistribution(choices)`; the internal value is the choice index.
    Categorical { choices: Vec<Choice> },
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_optuna_json())
    }
}

fn finite(name: &str, what: &'static str, value: f64) -> Result<(), SpaceError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(SpaceError::NonFinite {
            name: name.to_string(),
            what,
            value,
        })
    }
}

impl Distribution {
    /// Checks the distribution. `allow_single` accepts `low == high` (Optuna does;
    /// user search spaces do not).
    pub fn check(&self, name: &str, allow_single: bool) -> Result<(), SpaceError> {
        let n = || name.to_string();
        match self {
            Distribution::Float {
                low,
                high,
                log,
                step,
            } => {
                finite(name, "low", *low)?;
                finite(name, "high", *high)?;
                if let Some(s) = step {
                    finite(name, "step", *s)?;
                    if *log {
                        return Err(SpaceError::LogWithStep { name: n() });
                    }
                    if *s <= 0.0 {
                        return Err(SpaceError::NonPositiveStep {
                            name: n(),
                            step: *s,
                        });
                    }
                }
                if low > high {
                    return Err(SpaceError::LowAboveHigh {
                        name: n(),
                        low: *low,
                        high: *high,
                    });
                }
                if low == high && !allow_single {
                    return Err(SpaceError::LowNotBelowHigh {
                        name: n(),
                        low: *low,
                        high: *high,
                    });
                }
                if *log && *low <= 0.0 {
                    return Err(SpaceError::LogNonPositive {
                        name: n(),
                        low: *low,
                    });
                }
                if !log && !(high - low).is_finite() {
                    return Err(SpaceError::RangeTooWide {
                        name: n(),
                        low: *low,
                        high: *high,
                    });
                }
                if let Some(s) = step {
                    // k = (high - low) / step must be a whole number, up to the
                    // rounding of the decimal bounds and step to binary (half an
                    // ulp each) and of the subtraction and division: a few
                    // epsilons of (|low| + |high|) / step + k, in units of k.
                    let k = (high - low) / s;
                    let tol = 4.0 * f64::EPSILON * ((low.abs() + high.abs()) / s + k.abs()) + 1e-12;
                    if !(k.is_finite() && tol.is_finite()) || (k - k.round()).abs() > tol {
                        return Err(SpaceError::StepDoesNotDivide {
                            name: n(),
                            low: *low,
                            high: *high,
                            step: *s,
                        });
                    }
                }
                Ok(())
            }
            Distribution::Int {
                low,
                high,
                log,
                step,
            } => {
                if *step <= 0 {
                    return Err(SpaceError::NonPositiveStep {
                        name: n(),
                        step: *step as f64,
                    });
                }
                if *log && *step != 1 {
                    return Err(SpaceError::LogWithStep { name: n() });
                }
                if low > high {
                    return Err(SpaceError::LowAboveHigh {
                        name: n(),
                        low: *low as f64,
                        high: *high as f64,
                    });
                }
                if low == high && !allow_single {
                    return Err(SpaceError::LowNotBelowHigh {
                        name: n(),
                        low: *low as f64,
                        high: *high as f64,
                    });
                }
                if *log && *low < 1 {
                    return Err(SpaceError::LogNonPositive {
                        name: n(),
                        low: *low as f64,
                    });
                }
                let range = (*high as i128) - (*low as i128);
                if range % (*step as i128) != 0 {
                    return Err(SpaceError::StepDoesNotDivide {
                        name: n(),
                        low: *low as f64,
                        high: *high as f64,
                        step: *step as f64,
                    });
                }
                Ok(())
            }
            Distribution::Categorical { choices } => {
                if choices.is_empty() {
                    return Err(SpaceError::EmptyChoices { name: n() });
                }
                for (i, c) in choices.iter().enumerate() {
                    if choices[..i].iter().any(|p| p.same(c)) {
                        return Err(SpaceError::DuplicateChoice {
                            name: n(),
                            choice: c.to_string(),
                        });
                    }
                }
                Ok(())
            }
        }
    }

    /// True when only one value is possible (Optuna's `single()`); such parameters are
    /// never sampled, they take that value.
    pub fn is_single(&self) -> bool {
        match self {
            Distribution::Float {
                low, high, step, ..
            } => match step {
                None => low == high,
                Some(s) => low == high || (high - low) < *s * (1.0 - 1e-12),
            },
            Distribution::Int {
                low,
                high,
                log,
                step,
            } => {
                if *log {
                    low == high
                } else {
                    low == high || (*high as i128 - *low as i128) < *step as i128
                }
            }
            Distribution::Categorical { choices } => choices.len() <= 1,
        }
    }

    /// The internal value of a single-valued distribution (`low`, or choice 0).
    pub fn single_value(&self) -> f64 {
        match self {
            Distribution::Float { low, .. } => *low,
            Distribution::Int { low, .. } => *low as f64,
            Distribution::Categorical { .. } => 0.0,
        }
    }

    /// Exactly the text Optuna stores in `trial_params.distribution_json`
    /// (`optuna.distributions.distribution_to_json`).
    pub fn to_optuna_json(&self) -> String {
        match self {
            Distribution::Float { low, high, log, step } => format!(
                "{{\"name\": \"FloatDistribution\", \"attributes\": {{\"step\": {}, \"low\": {}, \"high\": {}, \"log\": {}}}}}",
                step.map(py_float).unwrap_or_else(|| "null".into()),
                py_float(*low),
                py_float(*high),
                log
            ),
            Distribution::Int { low, high, log, step } => format!(
                "{{\"name\": \"IntDistribution\", \"attributes\": {{\"log\": {log}, \"step\": {step}, \"low\": {low}, \"high\": {high}}}}}"
            ),
            Distribution::Categorical { choices } => {
                let items: Vec<String> = choices.iter().map(Choice::to_py_json).collect();
                format!(
                    "{{\"name\": \"CategoricalDistribution\", \"attributes\": {{\"choices\": [{}]}}}}",
                    items.join(", ")
                )
            }
        }
    }

    /// Reads Optuna's `distribution_json` (current and legacy class names, and the
    /// abbreviated `{"type": ...}` form of `json_to_distribution`).
    pub fn from_optuna_json(s: &str) -> Result<Self, SpaceError> {
        // Python writes non-finite choices as bare NaN / Infinity.
        let v: Value = serde_json::from_str(&mark_nonfinite(s)).map_err(|e| SpaceError::Parse {
            format: "distribution JSON",
            message: e.to_string(),
        })?;
        let dist = Self::from_optuna_value(&v)?;
        dist.check("<distribution_json>", true)?;
        Ok(dist)
    }

    fn from_optuna_value(v: &Value) -> Result<Self, SpaceError> {
        let perr = |m: String| SpaceError::Parse {
            format: "distribution JSON",
            message: m,
        };
        let obj = v
            .as_object()
            .ok_or_else(|| perr(format!("expected an object, got {v}")))?;
        let get_f = |o: &serde_json::Map<String, Value>, k: &str| -> Result<f64, SpaceError> {
            o.get(k)
                .and_then(Value::as_f64)
                .ok_or_else(|| perr(format!("missing or non-numeric `{k}`")))
        };
        let get_i = |o: &serde_json::Map<String, Value>,
                     k: &str,
                     default: Option<i64>|
         -> Result<i64, SpaceError> {
            match o.get(k) {
                None | Some(Value::Null) => default.ok_or_else(|| perr(format!("missing `{k}`"))),
                Some(x) => x
                    .as_i64()
                    .or_else(|| {
                        x.as_f64()
                            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                            .map(|f| f as i64)
                    })
                    .ok_or_else(|| perr(format!("`{k}` must be an integer, got {x}"))),
            }
        };
        let get_b = |o: &serde_json::Map<String, Value>, k: &str| -> bool {
            o.get(k).and_then(Value::as_bool).unwrap_or(false)
        };
        let get_opt_f =
            |o: &serde_json::Map<String, Value>, k: &str| -> Result<Option<f64>, SpaceError> {
                match o.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(x) => x
                        .as_f64()
                        .map(Some)
                        .ok_or_else(|| perr(format!("`{k}` must be a number, got {x}"))),
                }
            };
        let choices_of = |o: &serde_json::Map<String, Value>| -> Result<Vec<Choice>, SpaceError> {
            let arr = o
                .get("choices")
                .and_then(Value::as_array)
                .ok_or_else(|| perr("missing `choices` array".into()))?;
            arr.iter()
                .map(|c| Choice::from_value(c, "<distribution_json>"))
                .collect()
        };
        if let Some(name) = obj.get("name").and_then(Value::as_str) {
            let empty = serde_json::Map::new();
            let a = obj
                .get("attributes")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            return Ok(match name {
                "FloatDistribution" => Distribution::Float {
                    low: get_f(a, "low")?,
                    high: get_f(a, "high")?,
                    log: get_b(a, "log"),
                    step: get_opt_f(a, "step")?,
                },
                "UniformDistribution" => Distribution::Float {
                    low: get_f(a, "low")?,
                    high: get_f(a, "high")?,
                    log: false,
                    step: None,
                },
                "LogUniformDistribution" => Distribution::Float {
                    low: get_f(a, "low")?,
                    high: get_f(a, "high")?,
                    log: true,
                    step: None,
                },
                "DiscreteUniformDistribution" => Distribution::Float {
                    low: get_f(a, "low")?,
                    high: get_f(a, "high")?,
                    log: false,
                    step: Some(get_f(a, "q")?),
                },
                "IntDistribution" | "IntUniformDistribution" | "IntLogUniformDistribution" => {
                    Distribution::Int {
                        low: get_i(a, "low", None)?,
                        high: get_i(a, "high", None)?,
                        log: name == "IntLogUniformDistribution" || get_b(a, "log"),
                        step: get_i(a, "step", Some(1))?,
                    }
                }
                "CategoricalDistribution" => Distribution::Categorical {
                    choices: choices_of(a)?,
                },
                other => return Err(perr(format!("unknown distribution class `{other}`"))),
            });
        }
        match obj.get("type").and_then(Value::as_str) {
            Some("float") => Ok(Distribution::Float {
                low: get_f(obj, "low")?,
                high: get_f(obj, "high")?,
                log: get_b(obj, "log"),
                step: get_opt_f(obj, "step")?,
            }),
            Some("int") => Ok(Distribution::Int {
                low: get_i(obj, "low", None)?,
                high: get_i(obj, "high", None)?,
                log: get_b(obj, "log"),
                step: get_i(obj, "step", Some(1))?,
            }),
            Some("categorical") => Ok(Distribution::Categorical {
                choices: choices_of(obj)?,
            }),
            Some(other) => Err(perr(format!("unknown distribution type `{other}`"))),
            None => Err(perr("expected a `name` or `type` field".into())),
        }
    }

    /// Optuna's internal representation of an external value (`to_internal_repr`):
    /// the number itself for float/int, the choice index for categorical.
    pub fn to_internal(&self, v: &Choice) -> Result<f64, SpaceError> {
        let invalid = |reason: &str| SpaceError::InvalidValue {
            value: v.to_string(),
            distribution: self.to_optuna_json(),
            reason: reason.to_string(),
        };
        match self {
            Distribution::Float { log, .. } | Distribution::Int { log, .. } => {
                let x = v
                    .as_number()
                    .ok_or_else(|| invalid("a number is expected"))?;
                if x.is_nan() {
                    return Err(invalid("NaN is not a valid parameter value"));
                }
                if *log && x <= 0.0 {
                    return Err(invalid("log=true needs a positive value"));
                }
                Ok(x)
            }
            Distribution::Categorical { choices } => choices
                .iter()
                .position(|c| c.same(v))
                .map(|i| i as f64)
                .ok_or_else(|| invalid("it is not one of the choices")),
        }
    }

    /// The external value of an internal one (`to_external_repr`). A categorical index
    /// outside the choices is clamped into range.
    pub fn to_external(&self, internal: f64) -> Choice {
        match self {
            Distribution::Float { .. } => Choice::Num(internal),
            Distribution::Int { .. } => Choice::Int(internal.round() as i64),
            Distribution::Categorical { choices } => {
                let i = if internal.is_finite() && internal > 0.0 {
                    internal as usize
                } else {
                    0
                };
                choices
                    .get(i.min(choices.len().saturating_sub(1)))
                    .cloned()
                    .unwrap_or(Choice::None)
            }
        }
    }

    /// Whether an internal value lies in the distribution (Optuna's `_contains`).
    pub fn contains(&self, internal: f64) -> bool {
        if !internal.is_finite() {
            return false;
        }
        match self {
            Distribution::Float {
                low, high, step, ..
            } => {
                if internal < *low || internal > *high {
                    return false;
                }
                match step {
                    None => true,
                    Some(s) if *s > 0.0 => {
                        let k = (internal - low) / s;
                        (k - k.round()).abs() < 1e-8
                    }
                    Some(_) => false, // not a valid distribution
                }
            }
            Distribution::Int {
                low, high, step, ..
            } => {
                *step > 0
                    && internal.fract() == 0.0
                    && internal >= *low as f64
                    && internal <= *high as f64
                    && ((internal - *low as f64) as i128) % (*step as i128) == 0
            }
            Distribution::Categorical { choices } => {
                let i = internal.trunc();
                i >= 0.0 && (i as usize) < choices.len()
            }
        }
    }
}

/// An ordered list of named parameter distributions.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SearchSpace {
    params: Vec<(String, Distribution)>,
}

/// Keeps the document order of a map and reports duplicate keys.
struct OrderedParams(Vec<(String, Distribution)>, Option<String>);

impl<'de> Deserialize<'de> for OrderedParams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedParams;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of parameters, each with a `type` field")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedParams, A::Error> {
                let mut out: Vec<(String, Distribution)> = Vec::new();
                let mut dup = None;
                while let Some(name) = map.next_key::<String>()? {
                    let dist: Distribution = map.next_value().map_err(|e| {
                        serde::de::Error::custom(format!("parameter `{name}`: {e}"))
                    })?;
                    if out.iter().any(|(n, _)| *n == name) && dup.is_none() {
                        dup = Some(name.clone());
                    }
                    out.push((name, dist));
                }
                Ok(OrderedParams(out, dup))
            }
        }
        d.deserialize_map(V)
    }
}

impl SearchSpace {
    /// An empty space; add parameters with [`SearchSpace::push`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds and validates a space from `(name, distribution)` pairs.
    pub fn from_params(params: Vec<(String, Distribution)>) -> Result<Self, SpaceError> {
        let s = SearchSpace { params };
        s.validate()?;
        Ok(s)
    }

    /// Appends a parameter (validate afterwards with [`SearchSpace::validate`]).
    pub fn push(&mut self, name: impl Into<String>, dist: Distribution) {
        self.params.push((name.into(), dist));
    }

    /// Parses the TOML user format (see the module docs) and validates it.
    pub fn from_toml_str(s: &str) -> Result<Self, SpaceError> {
        // The TOML map comes back sorted by key; the spans give the document order.
        let map: std::collections::BTreeMap<String, toml::Spanned<Distribution>> =
            toml::from_str(s).map_err(|e| SpaceError::Parse {
                format: "search space TOML",
                message: e.to_string(),
            })?;
        let mut params: Vec<(usize, String, Distribution)> = map
            .into_iter()
            .map(|(n, d)| (d.span().start, n, d.into_inner()))
            .collect();
        params.sort_by_key(|p| p.0);
        Self::from_params(params.into_iter().map(|(_, n, d)| (n, d)).collect())
    }

    /// Parses the JSON user format (see the module docs) and validates it.
    pub fn from_json_str(s: &str) -> Result<Self, SpaceError> {
        let p: OrderedParams = serde_json::from_str(s).map_err(|e| SpaceError::Parse {
            format: "search space JSON",
            message: e.to_string(),
        })?;
        Self::finish(p)
    }

    fn finish(p: OrderedParams) -> Result<Self, SpaceError> {
        if let Some(name) = p.1 {
            return Err(SpaceError::DuplicateName { name });
        }
        Self::from_params(p.0)
    }

    /// The user format as JSON (round-trips through [`SearchSpace::from_json_str`]).
    pub fn to_json_string(&self) -> String {
        let mut m = serde_json::Map::new();
        for (n, d) in &self.params {
            m.insert(n.clone(), serde_json::to_value(d).unwrap_or(Value::Null));
        }
        Value::Object(m).to_string()
    }

    /// The parameters in order.
    pub fn params(&self) -> impl Iterator<Item = (&str, &Distribution)> {
        self.params.iter().map(|(n, d)| (n.as_str(), d))
    }

    /// The distribution of one parameter.
    pub fn get(&self, name: &str) -> Option<&Distribution> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, d)| d)
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Checks every distribution (strictly: `low < high`) and that names are unique.
    pub fn validate(&self) -> Result<(), SpaceError> {
        if self.params.is_empty() {
            return Err(SpaceError::EmptySpace);
        }
        let mut seen = HashSet::new();
        for (name, d) in &self.params {
            if !seen.insert(name.as_str()) {
                return Err(SpaceError::DuplicateName { name: name.clone() });
            }
            d.check(name, false)?;
            // A user's choices are stored as JSON, which has no NaN or
            // infinity (they would come back as null). Optuna's own
            // distributions may hold them; `from_optuna_json` reads those.
            if let Distribution::Categorical { choices } = d {
                if let Some(x) = choices.iter().find_map(|c| match c {
                    Choice::Num(x) if !x.is_finite() => Some(*x),
                    _ => None,
                }) {
                    return Err(SpaceError::NonFinite { name: name.clone(), what: "every numeric choice", value: x });
                }
            }
        }
        Ok(())
    }
}
