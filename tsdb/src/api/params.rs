//! Request parameters as Prometheus reads them: form body and URL merged (body first, as Go's
//! `Request.FormValue`), times in RFC3339 or float seconds, durations Prometheus-style or float
//! seconds, and `match[]` selectors.

use axum::http::{HeaderMap, Method, Uri, header};
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::Expr;

use super::response::ApiError;
use crate::labels::METRIC_NAME;
use crate::storage::{MatchOp, Matcher};

/// Prometheus's `MinTime` (web/api/v1/api.go), in milliseconds: the default `start`.
pub const MIN_TIME_MS: i64 = -9_223_309_901_257_974_000;
/// Prometheus's `MaxTime`, in milliseconds: the default `end`.
pub const MAX_TIME_MS: i64 = 9_223_309_901_257_974_999;
const MIN_TIME_FORMATTED: &str = "-292273086-05-16T16:47:06Z";
const MAX_TIME_FORMATTED: &str = "292277025-08-18T07:12:54.999999999Z";

/// The merged parameters of one request.
#[derive(Clone, Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Body parameters (for a form-encoded POST/PUT) followed by URL parameters.
    pub fn from_request(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Params {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        if form && matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        if let Some(q) = uri.query() {
            pairs.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        Params { pairs }
    }

    /// The first value of `name`; empty when absent (as `FormValue`).
    pub fn get(&self, name: &str) -> &str {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every value of `name`, body values first.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A time parameter, `default` when absent; errors as Prometheus's `parseTimeParam`.
    pub fn time_or(&self, name: &str, default: i64) -> Result<i64, ApiError> {
        let v = self.get(name);
        if v.is_empty() {
            return Ok(default);
        }
        parse_time(v).map_err(|e| {
            ApiError::invalid_param(name, format!("invalid time value for '{name}': {e}"))
        })
    }

    /// `limit` (0 = none), as Prometheus's `parseLimitParam`.
    pub fn limit(&self) -> Result<usize, ApiError> {
        let v = self.get("limit");
        if v.is_empty() {
            return Ok(0);
        }
        let n: i64 = v.parse().map_err(|_| {
            ApiError::invalid_param(
                "limit",
                format!("strconv.Atoi: parsing {v:?}: invalid syntax"),
            )
        })?;
        if n < 0 {
            return Err(ApiError::invalid_param(
                "limit",
                "limit must be non-negative",
            ));
        }
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// A timestamp in float seconds (rounded to the millisecond) or RFC3339, in milliseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>()
        && f.is_finite()
    {
        let secs = f.trunc();
        let ms = ((f - secs) * 1000.0).round();
        let total = secs * 1000.0 + ms;
        if total >= i64::MIN as f64 && total <= i64::MAX as f64 {
            return Ok(total as i64);
        }
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    match s {
        MIN_TIME_FORMATTED => Ok(MIN_TIME_MS),
        MAX_TIME_FORMATTED => Ok(MAX_TIME_MS),
        _ => Err(format!("cannot parse {s:?} to a valid timestamp")),
    }
}

/// A duration in float seconds or Prometheus's `1y2w3d4h5m6s7ms` form, in milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        let ms = f * 1000.0;
        if !ms.is_finite() || ms >= i64::MAX as f64 / 1e6 || ms <= i64::MIN as f64 / 1e6 {
            return Err(format!(
                "cannot parse {s:?} to a valid duration. It overflows int64"
            ));
        }
        return Ok(ms as i64);
    }
    parse_prom_duration(s).ok_or_else(|| format!("cannot parse {s:?} to a valid duration"))
}

/// Prometheus's `model.ParseDuration`, in milliseconds.
fn parse_prom_duration(s: &str) -> Option<i64> {
    i64::try_from(crate::duration::parse_ms(s).ok()?).ok()
}

/// Parses `match[]` selectors into matcher sets (a selector with `or` gives several sets).
/// Each set must have a matcher that does not match the empty string.
pub fn parse_match_sets(selectors: &[&str]) -> Result<Vec<Vec<Matcher>>, String> {
    let mut sets = Vec::new();
    for sel in selectors {
        for set in parse_selector(sel)? {
            if set.iter().all(|m| m.matches("")) {
                return Err("match[] must contain at least one non-empty matcher".into());
            }
            sets.push(set);
        }
    }
    Ok(sets)
}

/// One series selector (`up{job="a"}`), as Prometheus's `ParseMetricSelector`.
pub fn parse_selector(s: &str) -> Result<Vec<Vec<Matcher>>, String> {
    let expr = crate::promql::parse_expr(s)?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(format!("{s:?} is not a series selector"));
    };
    if vs.offset.is_some() || vs.at.is_some() {
        return Err(format!("{s:?} is not a series selector"));
    }
    selector_matcher_sets(&vs)
}

/// The matcher sets of a vector selector: one, or one per `or` alternative; each has the
/// metric name's matcher when the selector names one.
pub fn selector_matcher_sets(
    vs: &promql_parser::parser::VectorSelector,
) -> Result<Vec<Vec<Matcher>>, String> {
    let convert = |ms: &[promql_parser::label::Matcher]| -> Result<Vec<Matcher>, String> {
        let mut out = Vec::with_capacity(ms.len() + 1);
        if let Some(name) = &vs.name {
            out.push(
                Matcher::new(MatchOp::Equal, METRIC_NAME, name.as_str())
                    .map_err(|e| e.to_string())?,
            );
        }
        for m in ms {
            let op = match m.op {
                PMatchOp::Equal => MatchOp::Equal,
                PMatchOp::NotEqual => MatchOp::NotEqual,
                PMatchOp::Re(_) => MatchOp::Regex,
                PMatchOp::NotRe(_) => MatchOp::NotRegex,
            };
            out.push(
                Matcher::new(op, m.name.as_str(), m.value.as_str()).map_err(|e| e.to_string())?,
            );
        }
        Ok(out)
    };
    let mut sets = vec![convert(&vs.matchers.matchers)?];
    if !vs.matchers.or_matchers.is_empty() {
        sets = vs
            .matchers
            .or_matchers
            .iter()
            .map(|ms| convert(ms))
            .collect::<Result<_, _>>()?;
    }
    Ok(sets)
}

/// A label name from a path, with Prometheus's `U__` escaping undone (`U__a_2e_b` → `a.b`,
/// `__` → `_`).
pub fn unescape_label_name(name: &str) -> Option<String> {
    let Some(rest) = name.strip_prefix("U__") else {
        return Some(name.to_string());
    };
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '_' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'_') {
            chars.next();
            out.push('_');
            continue;
        }
        let mut hex = String::new();
        loop {
            match chars.next() {
                Some('_') => break,
                Some(h) if h.is_ascii_hexdigit() => hex.push(h),
                _ => return None,
            }
        }
        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
    }
    Some(out)
}

/// As an extractor: the URL's and a form body's parameters of the request (a body over the
/// router's limit is refused as `Bytes` refuses it).
impl<S: Send + Sync> axum::extract::FromRequest<S> for Params {
    type Rejection = axum::response::Response;

    async fn from_request(
        req: axum::extract::Request,
        state: &S,
    ) -> Result<Params, Self::Rejection> {
        use axum::response::IntoResponse;
        let (method, uri, headers) = (
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
        );
        let body = bytes::Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Params::from_request(&method, &uri, &headers, &body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(parse_time("1435781451"), Ok(1_435_781_451_000));
        assert_eq!(parse_time("-1.5"), Ok(-1500));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        assert_eq!(
            parse_time("2015-07-01T22:10:51.781+02:00"),
            Ok(1_435_781_451_781)
        );
        assert_eq!(parse_time(MIN_TIME_FORMATTED), Ok(MIN_TIME_MS));
        assert_eq!(parse_time(MAX_TIME_FORMATTED), Ok(MAX_TIME_MS));
        assert_eq!(
            parse_time("yesterday"),
            Err("cannot parse \"yesterday\" to a valid timestamp".into())
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15"), Ok(15_000));
        assert_eq!(parse_duration("0.5"), Ok(500));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("1d2h"), Ok(93_600_000));
        assert_eq!(parse_duration("100ms"), Ok(100));
        assert_eq!(parse_duration("0"), Ok(0));
        assert!(parse_duration("30m1h").is_err()); // descending order only
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1e300").unwrap_err().contains("overflows"));
    }

    #[test]
    fn merged_params_body_first() {
        let uri: Uri = "/q?query=url&match[]=a".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let p = Params::from_request(&Method::POST, &uri, &h, b"query=body&match%5B%5D=b");
        assert_eq!(p.get("query"), "body");
        assert_eq!(p.all("match[]"), ["b", "a"]);
        let p = Params::from_request(&Method::GET, &uri, &h, b"query=body");
        assert_eq!(p.get("query"), "url");
    }

    #[test]
    fn selectors() {
        let sets = parse_match_sets(&["up{job=~\"a.*\"}"]).unwrap();
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].len(), 2);
        assert!(
            parse_match_sets(&["{job=~\".*\"}"])
                .unwrap_err()
                .contains("at least one non-empty matcher")
        );
        assert!(parse_match_sets(&["rate(up[5m])"]).is_err());
        let sets = parse_match_sets(&["{a=\"1\" or b=\"2\"}"]).unwrap();
        assert_eq!(sets.len(), 2);
    }

    #[test]
    fn escaped_label_names() {
        assert_eq!(unescape_label_name("job").as_deref(), Some("job"));
        assert_eq!(unescape_label_name("U__a_2e_b").as_deref(), Some("a.b"));
        assert_eq!(unescape_label_name("U__a__b").as_deref(), Some("a_b"));
        assert_eq!(unescape_label_name("U__a_zz_"), None);
    }
}
