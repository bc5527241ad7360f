//! Python-compatible JSON text: floats written as Python's `repr`, strings escaped
//! as `json.dumps` does (ASCII only), so that our `distribution_json` strings are
//! byte-for-byte what Optuna writes.

/// The names Python's `json.dumps` writes for the floats JSON has no number
/// for, in the order `NaN`, `Infinity`, `-Infinity`.
const NON_FINITE: [(&str, f64); 3] = [
    ("NaN", f64::NAN),
    ("Infinity", f64::INFINITY),
    ("-Infinity", f64::NEG_INFINITY),
];

/// Python's name for a NaN or infinite float (`NaN`, `Infinity`,
/// `-Infinity`); `None` for a finite one.
pub fn non_finite_name(x: f64) -> Option<&'static str> {
    if x.is_nan() {
        Some(NON_FINITE[0].0)
    } else if x == f64::INFINITY {
        Some(NON_FINITE[1].0)
    } else if x == f64::NEG_INFINITY {
        Some(NON_FINITE[2].0)
    } else {
        None
    }
}

/// The float a [`non_finite_name`] stands for; `None` for any other text.
pub fn non_finite_from_name(name: &str) -> Option<f64> {
    NON_FINITE.iter().find(|(n, _)| *n == name).map(|(_, x)| *x)
}

/// Formats a float exactly like Python's `repr(float)` / `json.dumps(float)`.
pub fn py_float(x: f64) -> String {
    if let Some(name) = non_finite_name(x) {
        return name.to_string();
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits, like Python's repr.
    let s = format!("{:e}", x);
    let (mant, exp) = match s.split_once('e') {
        Some(p) => p,
        None => return s,
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let sign = if neg { "-" } else { "" };
    if !(-4..16).contains(&exp) {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits.clone()
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{m}e{esign}{:02}", exp.abs());
    }
    let point = exp + 1; // position of the decimal point relative to the first digit
    let body = if point <= 0 {
        format!("0.{}{}", "0".repeat((-point) as usize), digits)
    } else if (point as usize) >= digits.len() {
        format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
    } else {
        format!(
            "{}.{}",
            &digits[..point as usize],
            &digits[point as usize..]
        )
    };
    format!("{sign}{body}")
}

/// Reads a float as Python's `json.dumps` writes it: a JSON number, or `NaN`,
/// `Infinity`, `-Infinity`. `None` for anything else.
pub fn parse_py_float(s: &str) -> Option<f64> {
    let t = s.trim();
    non_finite_from_name(t).or_else(|| serde_json::from_str::<f64>(t).ok())
}

/// The key of the object [`mark_nonfinite`] writes in place of Python's bare
/// `NaN`, `Infinity` and `-Infinity`.
pub const NONFINITE_KEY: &str = "__python_nonfinite_float__";

/// Rewrites the bare `NaN`, `Infinity` and `-Infinity` that Python's `json.dumps`
/// writes (standard JSON has no such numbers) as `{"__python_nonfinite_float__":
/// "NaN" | "Infinity" | "-Infinity"}`, so that serde_json parses the text; string contents
/// are left alone. Callers turn the marker back into the float where a number is
/// expected ([`nonfinite_of`]).
pub fn mark_nonfinite(s: &str) -> std::borrow::Cow<'_, str> {
    if !(s.contains("NaN") || s.contains("Infinity")) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 64);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if let Some((name, _)) = NON_FINITE.iter().find(|(n, _)| rest.starts_with(n)) {
            out.push_str(&format!("{{\"{NONFINITE_KEY}\": \"{name}\"}}"));
            rest = &rest[name.len()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    std::borrow::Cow::Owned(out)
}

/// The float a [`mark_nonfinite`] marker stands for; `None` for other values.
pub fn nonfinite_of(v: &serde_json::Value) -> Option<f64> {
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    non_finite_from_name(obj.get(NONFINITE_KEY)?.as_str()?)
}

/// Escapes a string like Python's `json.dumps` with `ensure_ascii=True`.
pub fn py_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{:04x}", unit));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_match_python_repr() {
        let cases = [
            (1e-5, "1e-05"),
            (0.1, "0.1"),
            (1.0, "1.0"),
            (100.0, "100.0"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (-2.5, "-2.5"),
            (1.5e-7, "1.5e-07"),
            (123456.789, "123456.789"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (0.3, "0.3"),
            (-0.0, "-0.0"),
        ];
        for (x, want) in cases {
            assert_eq!(py_float(x), want, "for {x:e}");
        }
    }

    #[test]
    fn strings_match_python_json() {
        assert_eq!(py_string("adam"), "\"adam\"");
        assert_eq!(py_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(py_string("é"), "\"\\u00e9\"");
        assert_eq!(py_string("😀"), "\"\\ud83d\\ude00\"");
        assert_eq!(py_string("\u{7f}"), "\"\\u007f\"");
    }
}
