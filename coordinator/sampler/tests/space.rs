//! Search-space parsing, validation errors, internal/external values.

use mnist_sampler::{Choice, Distribution, SearchSpace, SpaceError};

const TOML: &str = r#"
[learning_rate]
type = "float"
low = 1e-5
high = 0.1
log = true

[dropout]
type = "float"
low = 0
high = 0.5
step = 0.05

[units]
type = "int"
low = 32
high = 256
step = 32

[optimizer]
type = "categorical"
choices = ["adam", "sgd"]

[batch]
type = "categorical"
choices = [32, 64, 128]
"#;

#[test]
fn toml_and_json_give_the_same_space_in_document_order() {
    let s = SearchSpace::from_toml_str(TOML).unwrap();
    let names: Vec<&str> = s.params().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["learning_rate", "dropout", "units", "optimizer", "batch"]
    );
    assert_eq!(
        s.get("learning_rate"),
        Some(&Distribution::Float {
            low: 1e-5,
            high: 0.1,
            log: true,
            step: None
        })
    );
    assert_eq!(
        s.get("units"),
        Some(&Distribution::Int {
            low: 32,
            high: 256,
            log: false,
            step: 32
        })
    );
    let json = r#"{"learning_rate": {"type": "float", "low": 1e-5, "high": 0.1, "log": true},
                   "dropout": {"type": "float", "low": 0, "high": 0.5, "step": 0.05},
                   "units": {"type": "int", "low": 32, "high": 256, "step": 32},
                   "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
                   "batch": {"type": "categorical", "choices": [32, 64, 128]}}"#;
    let j = SearchSpace::from_json_str(json).unwrap();
    assert_eq!(s, j);
    assert_eq!(
        SearchSpace::from_json_str(&j.to_json_string())
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        s.get("batch").unwrap().to_optuna_json(),
        r#"{"name": "CategoricalDistribution", "attributes": {"choices": [32, 64, 128]}}"#
    );
}

fn err(json: &str) -> SpaceError {
    SearchSpace::from_json_str(json).expect_err("should be rejected")
}

#[test]
fn validation_errors_name_the_parameter_and_the_problem() {
    type Case = (&'static str, fn(&SpaceError) -> bool, &'static str);
    let cases: Vec<Case> = vec![
        (
            r#"{"x": {"type": "float", "low": 1, "high": 1}}"#,
            |e| matches!(e, SpaceError::LowNotBelowHigh { .. }),
            "less than high",
        ),
        (
            r#"{"x": {"type": "float", "low": 2, "high": 1}}"#,
            |e| matches!(e, SpaceError::LowAboveHigh { .. }),
            "must not exceed",
        ),
        (
            r#"{"x": {"type": "int", "low": 5, "high": 5}}"#,
            |e| matches!(e, SpaceError::LowNotBelowHigh { .. }),
            "less than high",
        ),
        (
            r#"{"x": {"type": "float", "low": 0, "high": 1, "log": true}}"#,
            |e| matches!(e, SpaceError::LogNonPositive { .. }),
            "low > 0",
        ),
        (
            r#"{"x": {"type": "int", "low": 0, "high": 10, "log": true}}"#,
            |e| matches!(e, SpaceError::LogNonPositive { .. }),
            "low > 0",
        ),
        (
            r#"{"x": {"type": "float", "low": 1, "high": 2, "log": true, "step": 0.5}}"#,
            |e| matches!(e, SpaceError::LogWithStep { .. }),
            "step",
        ),
        (
            r#"{"x": {"type": "int", "low": 1, "high": 9, "log": true, "step": 2}}"#,
            |e| matches!(e, SpaceError::LogWithStep { .. }),
            "step",
        ),
        (
            r#"{"x": {"type": "float", "low": 0, "high": 1, "step": 0.3}}"#,
            |e| matches!(e, SpaceError::StepDoesNotDivide { .. }),
            "does not divide",
        ),
        (
            r#"{"x": {"type": "int", "low": 0, "high": 10, "step": 3}}"#,
            |e| matches!(e, SpaceError::StepDoesNotDivide { .. }),
            "does not divide",
        ),
        (
            r#"{"x": {"type": "int", "low": 0, "high": 10, "step": 0}}"#,
            |e| matches!(e, SpaceError::NonPositiveStep { .. }),
            "step must be > 0",
        ),
        (
            r#"{"x": {"type": "float", "low": 0, "high": 1, "step": -0.1}}"#,
            |e| matches!(e, SpaceError::NonPositiveStep { .. }),
            "step must be > 0",
        ),
        (
            r#"{"x": {"type": "categorical", "choices": []}}"#,
            |e| matches!(e, SpaceError::EmptyChoices { .. }),
            "at least one choice",
        ),
        (
            r#"{"x": {"type": "categorical", "choices": ["a", "b", "a"]}}"#,
            |e| matches!(e, SpaceError::DuplicateChoice { .. }),
            "more than once",
        ),
        (
            r#"{"x": {"type": "categorical", "choices": [1, 1.0]}}"#,
            |e| matches!(e, SpaceError::DuplicateChoice { .. }),
            "more than once",
        ),
        (
            r#"{"x": {"type": "float", "low": 0, "high": 1}, "x": {"type": "float", "low": 0, "high": 2}}"#,
            |e| matches!(e, SpaceError::DuplicateName { .. }),
            "more than once",
        ),
        (
            r#"{"x": {"type": "float", "low": 0, "hihg": 1}}"#,
            |e| matches!(e, SpaceError::Parse { .. }),
            "hihg",
        ),
        (
            r#"{"x": {"type": "normal", "low": 0, "high": 1}}"#,
            |e| matches!(e, SpaceError::Parse { .. }),
            "normal",
        ),
        (
            r#"{}"#,
            |e| matches!(e, SpaceError::EmptySpace),
            "no parameters",
        ),
    ];
    for (json, check, text) in cases {
        let e = err(json);
        assert!(check(&e), "{json}: got {e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(text),
            "{json}: message {msg:?} should mention {text:?}"
        );
        if !matches!(e, SpaceError::EmptySpace) {
            assert!(msg.contains('x'), "{msg}");
        }
    }
    // Non-finite bounds cannot be written in JSON; build them directly.
    let mut s = SearchSpace::new();
    s.push(
        "lr",
        Distribution::Float {
            low: f64::NEG_INFINITY,
            high: 1.0,
            log: false,
            step: None,
        },
    );
    let e = s.validate().unwrap_err();
    assert!(
        matches!(e, SpaceError::NonFinite { .. }) && e.to_string().contains("lr"),
        "{e}"
    );
    let mut s = SearchSpace::new();
    s.push(
        "lr",
        Distribution::Float {
            low: 0.0,
            high: f64::NAN,
            log: false,
            step: None,
        },
    );
    assert!(matches!(s.validate(), Err(SpaceError::NonFinite { .. })));
    // TOML duplicate tables are a parse error that names the key.
    let e = SearchSpace::from_toml_str(
        "[x]\ntype=\"int\"\nlow=0\nhigh=1\n[x]\ntype=\"int\"\nlow=0\nhigh=2\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains('x'), "{e}");
}

#[test]
fn internal_and_external_values() {
    let cat = Distribution::Categorical {
        choices: vec![
            Choice::Str("a".into()),
            Choice::Int(3),
            Choice::Bool(true),
            Choice::None,
        ],
    };
    assert_eq!(cat.to_internal(&Choice::Int(3)).unwrap(), 1.0);
    assert_eq!(cat.to_internal(&Choice::Num(3.0)).unwrap(), 1.0);
    assert_eq!(cat.to_internal(&Choice::None).unwrap(), 3.0);
    assert!(cat.to_internal(&Choice::Str("b".into())).is_err());
    assert_eq!(cat.to_external(2.0), Choice::Bool(true));
    assert!(cat.contains(3.0) && !cat.contains(4.0) && !cat.contains(-1.0));
    let f = Distribution::Float {
        low: -1.0,
        high: 1.0,
        log: false,
        step: Some(0.25),
    };
    assert!(f.contains(0.75) && !f.contains(0.8) && !f.contains(1.25));
    assert!(f.to_internal(&Choice::Num(f64::NAN)).is_err());
    let lf = Distribution::Float {
        low: 1e-3,
        high: 1.0,
        log: true,
        step: None,
    };
    assert!(lf.to_internal(&Choice::Num(-1.0)).is_err());
    assert!(lf.to_internal(&Choice::Str("x".into())).is_err());
    let i = Distribution::Int {
        low: 0,
        high: 10,
        log: false,
        step: 2,
    };
    assert_eq!(i.to_external(4.0), Choice::Int(4));
    assert!(i.contains(4.0) && !i.contains(5.0) && !i.contains(4.5) && !i.contains(12.0));
}

#[test]
fn optuna_json_round_trips_including_legacy_forms() {
    let legacy = [
        (
            r#"{"name": "UniformDistribution", "attributes": {"low": 0.0, "high": 2.0}}"#,
            Distribution::Float {
                low: 0.0,
                high: 2.0,
                log: false,
                step: None,
            },
        ),
        (
            r#"{"name": "LogUniformDistribution", "attributes": {"low": 0.001, "high": 2.0}}"#,
            Distribution::Float {
                low: 0.001,
                high: 2.0,
                log: true,
                step: None,
            },
        ),
        (
            r#"{"name": "DiscreteUniformDistribution", "attributes": {"low": 0.0, "high": 2.0, "q": 0.5}}"#,
            Distribution::Float {
                low: 0.0,
                high: 2.0,
                log: false,
                step: Some(0.5),
            },
        ),
        (
            r#"{"name": "IntUniformDistribution", "attributes": {"low": 0, "high": 8, "step": 2}}"#,
            Distribution::Int {
                low: 0,
                high: 8,
                log: false,
                step: 2,
            },
        ),
        (
            r#"{"name": "IntLogUniformDistribution", "attributes": {"low": 1, "high": 8, "step": 1}}"#,
            Distribution::Int {
                low: 1,
                high: 8,
                log: true,
                step: 1,
            },
        ),
        (
            r#"{"type": "int", "low": 1, "high": 8}"#,
            Distribution::Int {
                low: 1,
                high: 8,
                log: false,
                step: 1,
            },
        ),
        (
            r#"{"type": "categorical", "choices": ["a", null]}"#,
            Distribution::Categorical {
                choices: vec![Choice::Str("a".into()), Choice::None],
            },
        ),
        // Optuna allows single-valued distributions in stored studies.
        (
            r#"{"name": "FloatDistribution", "attributes": {"step": null, "low": 1.0, "high": 1.0, "log": false}}"#,
            Distribution::Float {
                low: 1.0,
                high: 1.0,
                log: false,
                step: None,
            },
        ),
    ];
    for (json, want) in legacy {
        assert_eq!(
            Distribution::from_optuna_json(json).unwrap(),
            want,
            "{json}"
        );
    }
    assert!(Distribution::from_optuna_json(r#"{"name": "Nope", "attributes": {}}"#).is_err());
    assert!(Distribution::from_optuna_json("not json").is_err());
    assert!(Distribution::from_optuna_json(
        r#"{"name": "FloatDistribution", "attributes": {"low": 2.0, "high": 1.0}}"#
    )
    .is_err());
}

#[test]
fn non_finite_choices_round_trip_through_optuna_json() {
    // Python writes them as bare NaN / Infinity; a string that spells them stays a string.
    let d = Distribution::Categorical {
        choices: vec![
            Choice::Num(1.0),
            Choice::Num(f64::INFINITY),
            Choice::Num(f64::NEG_INFINITY),
            Choice::Num(f64::NAN),
            Choice::Str("NaN".into()),
            Choice::Str("say \"Infinity\"".into()),
        ],
    };
    let d = &d;
    let json = d.to_optuna_json();
    assert_eq!(
        json,
        r#"{"name": "CategoricalDistribution", "attributes": {"choices": [1.0, Infinity, -Infinity, NaN, "NaN", "say \"Infinity\""]}}"#
    );
    let back = Distribution::from_optuna_json(&json).unwrap();
    assert_eq!(&back, d);
    assert_eq!(back.to_optuna_json(), json);
    let Distribution::Categorical { choices } = back else {
        panic!("categorical expected")
    };
    assert!(matches!(choices[1], Choice::Num(x) if x == f64::INFINITY));
    assert!(matches!(choices[3], Choice::Num(x) if x.is_nan()));
    assert!(matches!(&choices[4], Choice::Str(x) if x == "NaN"));
}

#[test]
fn steps_that_almost_divide_and_ranges_that_overflow_are_rejected() {
    // k = 100000000.5 steps: the old relative tolerance let half a step through.
    assert!(matches!(
        err(r#"{"x": {"type": "float", "low": 0, "high": 100000000.5, "step": 1}}"#),
        SpaceError::StepDoesNotDivide { .. }
    ));
    // Decimal steps that do divide still pass despite binary rounding.
    for (low, high, step) in [(0.1, 0.7, 0.2), (1e-5, 0.1, 1e-5), (-3.3, 9.9, 1.1), (0.0, 1.00001, 1e-6)] {
        let json = format!(r#"{{"x": {{"type": "float", "low": {low}, "high": {high}, "step": {step}}}}}"#);
        SearchSpace::from_json_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
    }
    let e = err(r#"{"x": {"type": "float", "low": -1e308, "high": 1e308}}"#);
    assert!(matches!(e, SpaceError::RangeTooWide { .. }), "{e}");
    assert!(e.to_string().contains("too wide"), "{e}");
    // Over many decades on a log scale is fine.
    SearchSpace::from_json_str(r#"{"x": {"type": "float", "low": 1e-300, "high": 1e300, "log": true}}"#).unwrap();
}

#[test]
fn unchecked_distributions_do_not_panic() {
    // `contains` and the grid's public helpers on a space that skipped validation.
    let d = Distribution::Int { low: 0, high: 10, log: false, step: 0 };
    assert!(!d.contains(3.0));
    let f = Distribution::Float { low: 0.0, high: 1.0, log: false, step: Some(0.0) };
    assert!(!f.contains(0.5));
    let mut space = SearchSpace::default();
    space.push("x", d);
    let g = mnist_sampler::GridSampler::new(0);
    assert!(g.n_points(&space).is_err());
    assert!(g.check_exhausted(&space, &[]).is_err());
}

#[test]
fn bad_choices_and_null_int_steps_read_clearly() {
    let e = err(r#"{"x": {"type": "categorical", "choices": [1, [2, 3]]}}"#).to_string();
    assert!(e.contains("a categorical choice: a string, number, boolean or null"), "{e}");
    let s = SearchSpace::from_json_str(r#"{"n": {"type": "int", "low": 1, "high": 9, "step": null}}"#).unwrap();
    assert_eq!(s.get("n"), Some(&Distribution::Int { low: 1, high: 9, log: false, step: 1 }));
    // Choices of every kind still parse, in both formats.
    let s = SearchSpace::from_json_str(
        r#"{"c": {"type": "categorical", "choices": [null, true, 3, 18446744073709551615, 2.5, "s"]}}"#,
    )
    .unwrap();
    let Some(Distribution::Categorical { choices }) = s.get("c") else { panic!("categorical expected") };
    assert!(matches!(choices[0], Choice::None));
    assert!(matches!(choices[1], Choice::Bool(true)));
    assert!(matches!(choices[2], Choice::Int(3)));
    assert!(matches!(choices[3], Choice::Num(_)));
    assert!(matches!(choices[4], Choice::Num(x) if x == 2.5));
    assert!(matches!(&choices[5], Choice::Str(x) if x == "s"));
}

#[test]
fn user_spaces_refuse_non_finite_choices() {
    // Stored as JSON they would come back as null.
    let e = SearchSpace::from_toml_str("[c]\ntype = \"categorical\"\nchoices = [1.5, nan, \"a\"]\n").unwrap_err();
    assert!(matches!(e, SpaceError::NonFinite { .. }), "{e}");
    assert!(e.to_string().contains("`c`"), "{e}");
}
