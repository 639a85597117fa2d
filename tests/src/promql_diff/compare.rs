//! Comparison of two Prometheus HTTP API answers (`/api/v1/query`, `/api/v1/query_range`):
//! same result type, same series (label sets), same timestamps, values within a relative
//! tolerance of 1e-6 (NaN equals NaN); an error on both sides matches when the `errorType`s are
//! the same. Series order matters only when the caller says the query is ordered (`sort`,
//! `sort_desc`), and then only the order of values (ties may be listed either way).

use std::collections::BTreeMap;

use serde_json::Value;

/// Relative tolerance for sample values.
pub const REL_TOLERANCE: f64 = 1e-6;
/// Absolute floor under which two values count as equal: sums that cancel out differ in the
/// last bits between summation orders (Prometheus 3.x uses Kahan summation, 2.42 does not).
pub const ABS_FLOOR: f64 = 1e-12;

/// One series of an answer: its labels and its (millisecond, value) points.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(i64, f64)>,
}

/// A parsed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Error { error_type: String, error: String },
    Scalar(i64, f64),
    String(i64, String),
    Vector(Vec<Series>),
    Matrix(Vec<Series>),
}

impl Answer {
    fn kind(&self) -> &'static str {
        match self {
            Answer::Error { .. } => "error",
            Answer::Scalar(..) => "scalar",
            Answer::String(..) => "string",
            Answer::Vector(_) => "vector",
            Answer::Matrix(_) => "matrix",
        }
    }
}

/// Parses a sample value as the API writes it (`"1.5"`, `"NaN"`, `"+Inf"`, `"-Inf"`).
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

fn parse_point(p: &Value) -> Result<(i64, Value), String> {
    let arr = p.as_array().filter(|a| a.len() == 2).ok_or("bad point")?;
    let ts = arr[0].as_f64().ok_or("bad timestamp")?;
    Ok(((ts * 1000.0).round() as i64, arr[1].clone()))
}

fn parse_float_point(p: &Value) -> Result<(i64, f64), String> {
    let (ts, v) = parse_point(p)?;
    let v = v
        .as_str()
        .and_then(parse_value)
        .ok_or_else(|| format!("bad value {v}"))?;
    Ok((ts, v))
}

fn parse_series(s: &Value, vector: bool) -> Result<Series, String> {
    let labels = s["metric"]
        .as_object()
        .ok_or("series without metric")?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let points = if vector {
        vec![parse_float_point(&s["value"])?]
    } else {
        s["values"]
            .as_array()
            .ok_or("series without values")?
            .iter()
            .map(parse_float_point)
            .collect::<Result<_, _>>()?
    };
    Ok(Series { labels, points })
}

/// Parses an API response body.
pub fn parse(body: &Value) -> Result<Answer, String> {
    if body["status"] == "error" {
        return Ok(Answer::Error {
            error_type: body["errorType"].as_str().unwrap_or_default().to_string(),
            error: body["error"].as_str().unwrap_or_default().to_string(),
        });
    }
    let data = &body["data"];
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some("scalar") => {
            let (ts, v) = parse_float_point(result)?;
            Ok(Answer::Scalar(ts, v))
        }
        Some("string") => {
            let (ts, v) = parse_point(result)?;
            Ok(Answer::String(
                ts,
                v.as_str().unwrap_or_default().to_string(),
            ))
        }
        Some(kind @ ("vector" | "matrix")) => {
            let series = result
                .as_array()
                .ok_or("result is not an array")?
                .iter()
                .map(|s| parse_series(s, kind == "vector"))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if kind == "vector" {
                Answer::Vector(series)
            } else {
                Answer::Matrix(series)
            })
        }
        other => Err(format!("unknown result type {other:?}")),
    }
}

/// Whether two sample values match: NaN equals NaN, infinities equal themselves, finite values
/// within [`REL_TOLERANCE`].
pub fn values_match(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    if a.is_infinite() || b.is_infinite() {
        return false;
    }
    let diff = (a - b).abs();
    diff <= ABS_FLOOR || diff <= REL_TOLERANCE * a.abs().max(b.abs())
}

fn label_text(l: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

fn compare_series(want: &[Series], got: &[Series], ordered: bool) -> Result<(), String> {
    if want.len() != got.len() {
        return Err(format!("{} series vs {} series", want.len(), got.len()));
    }
    if ordered {
        for (i, (w, g)) in want.iter().zip(got).enumerate() {
            let (wv, gv) = (w.points.first(), g.points.first());
            let same = match (wv, gv) {
                (Some(a), Some(b)) => values_match(a.1, b.1),
                (None, None) => true,
                _ => false,
            };
            if !same {
                return Err(format!(
                    "order differs at position {i}: {} vs {}",
                    label_text(&w.labels),
                    label_text(&g.labels)
                ));
            }
        }
    }
    let mut w: Vec<&Series> = want.iter().collect();
    let mut g: Vec<&Series> = got.iter().collect();
    w.sort_by(|a, b| a.labels.cmp(&b.labels));
    g.sort_by(|a, b| a.labels.cmp(&b.labels));
    for (a, b) in w.iter().zip(&g) {
        if a.labels != b.labels {
            return Err(format!(
                "series {} vs {}",
                label_text(&a.labels),
                label_text(&b.labels)
            ));
        }
        if a.points.len() != b.points.len() {
            return Err(format!(
                "{}: {} points vs {} points",
                label_text(&a.labels),
                a.points.len(),
                b.points.len()
            ));
        }
        for (p, q) in a.points.iter().zip(&b.points) {
            if p.0 != q.0 {
                return Err(format!(
                    "{}: timestamp {} vs {}",
                    label_text(&a.labels),
                    p.0,
                    q.0
                ));
            }
            if !values_match(p.1, q.1) {
                return Err(format!(
                    "{} at {}: {} vs {}",
                    label_text(&a.labels),
                    p.0,
                    p.1,
                    q.1
                ));
            }
        }
    }
    Ok(())
}

/// Compares the reference answer `want` with `got`; `Err` says how they differ.
pub fn compare(want: &Answer, got: &Answer, ordered: bool) -> Result<(), String> {
    match (want, got) {
        (Answer::Error { error_type: a, .. }, Answer::Error { error_type: b, .. }) => {
            if a == b {
                Ok(())
            } else {
                Err(format!("errorType {a} vs {b}"))
            }
        }
        (Answer::Scalar(t1, v1), Answer::Scalar(t2, v2)) => {
            if t1 == t2 && values_match(*v1, *v2) {
                Ok(())
            } else {
                Err(format!("scalar {v1}@{t1} vs {v2}@{t2}"))
            }
        }
        (Answer::String(t1, s1), Answer::String(t2, s2)) => {
            if t1 == t2 && s1 == s2 {
                Ok(())
            } else {
                Err(format!("string {s1:?}@{t1} vs {s2:?}@{t2}"))
            }
        }
        (Answer::Vector(a), Answer::Vector(b)) => compare_series(a, b, ordered),
        (Answer::Matrix(a), Answer::Matrix(b)) => compare_series(a, b, false),
        (a, b) => Err(format!("{} vs {}", a.kind(), b.kind())),
    }
}

/// Whether Prometheus guarantees the order of an instant query's result.
pub fn is_ordered(query: &str) -> bool {
    let q = query.trim_start();
    q.starts_with("sort(") || q.starts_with("sort_desc(")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vector(points: &[(&str, &str)]) -> Answer {
        let result: Vec<Value> = points
            .iter()
            .map(|(inst, v)| json!({"metric": {"instance": inst}, "value": [1700000000.5, v]}))
            .collect();
        parse(&json!({"status": "success", "data": {"resultType": "vector", "result": result}}))
            .unwrap()
    }

    #[test]
    fn tolerance_is_relative_and_nan_equals_nan() {
        assert!(values_match(1.0, 1.0 + 1e-7));
        assert!(!values_match(1.0, 1.0 + 1e-5));
        assert!(values_match(1e12, 1e12 + 1e5));
        assert!(!values_match(1e-3, 2e-3));
        assert!(values_match(f64::NAN, f64::NAN));
        assert!(!values_match(f64::NAN, 0.0));
        assert!(values_match(f64::INFINITY, f64::INFINITY));
        assert!(!values_match(f64::INFINITY, f64::NEG_INFINITY));
        assert!(!values_match(f64::INFINITY, 1e308));
    }

    #[test]
    fn api_values_parse() {
        assert_eq!(parse_value("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_value("-Inf"), Some(f64::NEG_INFINITY));
        assert!(parse_value("NaN").is_some_and(f64::is_nan));
        assert_eq!(parse_value("1e3"), Some(1000.0));
    }

    #[test]
    fn order_matters_only_when_ordered() {
        let a = vector(&[("x", "1"), ("y", "2")]);
        let b = vector(&[("y", "2"), ("x", "1")]);
        assert!(compare(&a, &b, false).is_ok());
        assert!(compare(&a, &b, true).is_err());
        // Ties may come in either order.
        let c = vector(&[("x", "1"), ("y", "1")]);
        let d = vector(&[("y", "1"), ("x", "1")]);
        assert!(compare(&c, &d, true).is_ok());
        assert!(is_ordered("sort_desc(up)"));
        assert!(!is_ordered("topk(3, up)"));
    }

    #[test]
    fn series_values_types_and_errors_are_compared() {
        let a = vector(&[("x", "1")]);
        assert!(compare(&a, &vector(&[("x", "1.0000001")]), false).is_ok());
        assert!(compare(&a, &vector(&[("x", "1.1")]), false).is_err());
        assert!(compare(&a, &vector(&[("z", "1")]), false).is_err());
        assert!(compare(&a, &vector(&[]), false).is_err());
        let err = |t: &str| Answer::Error {
            error_type: t.to_string(),
            error: String::new(),
        };
        assert!(compare(&err("bad_data"), &err("bad_data"), false).is_ok());
        assert!(compare(&err("bad_data"), &err("execution"), false).is_err());
        assert!(compare(&err("bad_data"), &a, false).is_err());
        assert!(compare(&Answer::Scalar(1, 2.0), &a, false).is_err());
    }
}
