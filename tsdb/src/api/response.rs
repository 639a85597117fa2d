//! Prometheus's response envelope, its error types with their HTTP statuses, and the JSON
//! rendering of values (strings formatted like Go's `strconv.FormatFloat(v, 'f', -1, 64)`,
//! timestamps as float seconds).

use std::fmt::Write as _;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::labels::Labels;
use crate::promql::{QueryError, Value};
use crate::storage::{SeriesSamples, StorageError};

/// Prometheus's `errorType`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    BadData,
    Execution,
    Timeout,
    Canceled,
    Internal,
    Unavailable,
    NotFound,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::BadData => "bad_data",
            ErrorType::Execution => "execution",
            ErrorType::Timeout => "timeout",
            ErrorType::Canceled => "canceled",
            ErrorType::Internal => "internal",
            ErrorType::Unavailable => "unavailable",
            ErrorType::NotFound => "not_found",
        }
    }

    /// The one mapping from error type to HTTP status, as Prometheus's `getDefaultErrorCode`
    /// (web/api/v1/api.go): `unavailable` has no case there and falls to 500, `canceled` is
    /// 499 (client closed request) since Prometheus 3.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorType::BadData => StatusCode::BAD_REQUEST,
            ErrorType::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            ErrorType::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Internal | ErrorType::Unavailable => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::NotFound => StatusCode::NOT_FOUND,
        }
    }
}

/// An error answer: `{"status":"error","errorType":…,"error":…}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorType,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
        }
    }

    pub fn bad_data(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorType::BadData, message)
    }

    /// Prometheus's `invalidParamError`: `invalid parameter "name": cause`.
    pub fn invalid_param(param: &str, cause: impl std::fmt::Display) -> ApiError {
        ApiError::bad_data(format!("invalid parameter {param:?}: {cause}"))
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorType::Internal, message)
    }
}

impl From<QueryError> for ApiError {
    /// Prometheus's `returnAPIError` plus the parse/validation errors that it reports as
    /// invalid `query` parameters.
    fn from(e: QueryError) -> ApiError {
        match e {
            QueryError::BadData(m) => ApiError::invalid_param("query", m),
            QueryError::Execution(_) | QueryError::TooManySamples(_) => {
                ApiError::new(ErrorType::Execution, e.to_string())
            }
            QueryError::Timeout(_) => ApiError::new(ErrorType::Timeout, e.to_string()),
            QueryError::Canceled(_) => ApiError::new(ErrorType::Canceled, e.to_string()),
            QueryError::Storage(s) => ApiError::from(s),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        match e {
            StorageError::BadMatcher(_) => ApiError::bad_data(e.to_string()),
            StorageError::TooManySamples(_) => ApiError::new(ErrorType::Execution, e.to_string()),
            StorageError::Internal(_) => ApiError::internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = format!(
            r#"{{"status":"error","errorType":"{}","error":{}}}"#,
            self.kind.as_str(),
            json_string(&self.message)
        );
        json_response(self.kind.status(), body)
    }
}

/// A success answer. `data: None` is Prometheus's empty result: 204 No Content.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiSuccess {
    /// The `data` member, already rendered as JSON (after [`ENVELOPE`] when `enveloped`).
    pub data: Option<String>,
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
    /// `data` starts with [`ENVELOPE`]: large answers are rendered into the body's buffer
    /// rather than copied into it.
    enveloped: bool,
}

/// What a success body starts with, before the `data` member's value.
pub const ENVELOPE: &str = r#"{"status":"success","data":"#;

impl ApiSuccess {
    pub fn data(data: String) -> ApiSuccess {
        ApiSuccess {
            data: Some(data),
            ..ApiSuccess::default()
        }
    }

    /// A success whose `body` holds [`ENVELOPE`] followed by the `data` member's value.
    pub fn enveloped(body: String) -> ApiSuccess {
        debug_assert!(body.starts_with(ENVELOPE));
        ApiSuccess {
            data: Some(body),
            enveloped: true,
            ..ApiSuccess::default()
        }
    }

    pub fn no_content() -> ApiSuccess {
        ApiSuccess::default()
    }

    pub fn warn(mut self, w: impl Into<String>) -> ApiSuccess {
        self.warnings.push(w.into());
        self
    }
}

/// The warning Prometheus adds when `limit` cut a result.
pub const TRUNCATED_WARNING: &str = "results truncated due to limit";

impl IntoResponse for ApiSuccess {
    fn into_response(self) -> Response {
        let Some(data) = self.data else {
            return StatusCode::NO_CONTENT.into_response();
        };
        let mut body = if self.enveloped {
            data
        } else {
            let mut body = String::with_capacity(data.len() + 64);
            body.push_str(ENVELOPE);
            body.push_str(&data);
            body
        };
        for (key, list) in [("warnings", &self.warnings), ("infos", &self.infos)] {
            if !list.is_empty() {
                let _ = write!(body, r#","{key}":"#);
                push_string_array(&mut body, list.iter().map(String::as_str));
            }
        }
        body.push('}');
        json_response(StatusCode::OK, body)
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_string(&mut out, s);
    out
}

/// Appends `s` as a JSON string literal, escaped as `serde_json` does (quote, backslash and
/// control characters); label names and values rarely need it, so those are copied whole.
pub fn push_json_string(out: &mut String, s: &str) {
    if s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\"")));
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

/// Appends `["a","b"]`.
pub fn push_string_array<'a>(out: &mut String, items: impl IntoIterator<Item = &'a str>) {
    out.push('[');
    for (i, s) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(out, s);
    }
    out.push(']');
}

pub use crate::promql::value::{format_value, push_value};

/// A millisecond timestamp as float seconds with up to three decimals, like Prometheus's
/// `jsonutil.MarshalTimestamp` (`1.5` s is written `1.500`).
pub fn push_timestamp(out: &mut String, t: i64) {
    let neg = t < 0;
    let abs = t.unsigned_abs();
    if neg {
        out.push('-');
    }
    out.push_str(itoa::Buffer::new().format(abs / 1000));
    let frac = abs % 1000;
    if frac != 0 {
        let _ = write!(out, ".{frac:03}");
    }
}

/// `[t,"v"]` for a float sample.
fn push_float_point(out: &mut String, t: i64, v: f64) {
    // Whole seconds (the usual step) without the generic path's several small appends.
    if t >= 0 && t % 1000 == 0 {
        let mut b = itoa::Buffer::new();
        let secs = b.format(t / 1000);
        out.reserve(secs.len() + 32);
        out.push('[');
        out.push_str(secs);
    } else {
        out.push('[');
        push_timestamp(out, t);
    }
    out.push_str(",\"");
    push_value(out, v);
    out.push_str("\"]");
}

/// Slots of [`Stamps`]: a prime, so that the steps of a range query fill distinct slots for
/// any step width (at 60 s steps, a power of two would hold only 32 of them).
const STAMP_SLOTS: usize = 127;

/// The `[t,"` opening of a matrix point, by its timestamp, written once per timestamp: a
/// range query's points share its few steps, and formatting a 10-digit number costs more
/// than copying it.
struct Stamps {
    slots: [(Option<i64>, String); STAMP_SLOTS],
}

impl Default for Stamps {
    fn default() -> Stamps {
        Stamps {
            slots: std::array::from_fn(|_| (None, String::new())),
        }
    }
}

impl Stamps {
    fn push(&mut self, out: &mut String, t: i64) {
        let (at, text) = &mut self.slots[t.rem_euclid(STAMP_SLOTS as i64) as usize];
        if *at != Some(t) {
            text.clear();
            text.push('[');
            push_timestamp(text, t);
            text.push_str(",\"");
            *at = Some(t);
        }
        out.push_str(text);
    }
}

/// `{"name":"value",…}` in label order.
pub fn push_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(out, &l.name);
        out.push(':');
        push_json_string(out, &l.value);
    }
    out.push('}');
}

fn push_point(out: &mut String, t: i64, v: &str) {
    out.push('[');
    push_timestamp(out, t);
    out.push(',');
    push_json_string(out, v);
    out.push(']');
}

/// `{"resultType":…,"result":…}` of a query; matrices are sorted by labels here, whatever the
/// engine did.
pub fn render_query_data(value: &mut Value) -> String {
    let mut out = String::with_capacity(256);
    push_query_data(&mut out, value);
    out
}

/// A guess at the JSON size of a value (about 24 bytes per point), to size the buffer once.
/// Bytes a matrix point takes in the body, rounded up: `[1796035260,"57.73333333333333"],` is
/// 33, and a buffer that has to grow copies everything written so far.
const POINT_SIZE: usize = 36;

fn rendered_size(value: &Value) -> usize {
    let labels = |l: &Labels| {
        l.iter()
            .map(|l| l.name.len() + l.value.len() + 6)
            .sum::<usize>()
    };
    match value {
        Value::Scalar { .. } => 64,
        Value::String { s, .. } => s.len() + 64,
        Value::Vector(v) => v.iter().map(|s| labels(&s.labels) + 48).sum::<usize>() + 64,
        Value::Matrix(m) => {
            m.iter()
                .map(|s| labels(&s.labels) + 24 + s.samples.len() * POINT_SIZE)
                .sum::<usize>()
                + 64
        }
    }
}

/// The whole success body of a query's value: [`ENVELOPE`] and the `data` member's value, in
/// one buffer sized up front (a 300-series hour at 60 s is half a megabyte).
pub fn render_query_body(value: &mut Value) -> String {
    let mut out = String::with_capacity(ENVELOPE.len() + rendered_size(value) + 64);
    out.push_str(ENVELOPE);
    push_query_data(&mut out, value);
    out
}

/// Appends `{"resultType":…,"result":…}`.
fn push_query_data(out: &mut String, value: &mut Value) {
    out.push_str(r#"{"resultType":""#);
    out.push_str(value.type_name());
    out.push_str(r#"","result":"#);
    match value {
        Value::Scalar { t, v } => push_float_point(out, *t, *v),
        Value::String { t, s } => push_point(out, *t, s),
        Value::Vector(samples) => {
            out.push('[');
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                push_labels(out, &s.labels);
                out.push_str(r#","value":"#);
                push_float_point(out, s.t, s.v);
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(series) => {
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
            push_matrix(out, series);
        }
    }
    out.push('}');
}

/// Points one thread writes before a matrix is written on more (a millisecond's worth).
const POINTS_PER_THREAD: usize = 16_384;

fn push_matrix(out: &mut String, series: &[SeriesSamples]) {
    let points: usize = series.iter().map(|s| s.samples.len()).sum();
    let parts = crate::parallel::parts(points, POINTS_PER_THREAD);
    out.push('[');
    if parts > 1 {
        let per_part = out.capacity().saturating_sub(out.len()) / parts;
        let runs = crate::parallel::map_slices(series, parts, |run| {
            let mut s = String::with_capacity(per_part);
            push_series(&mut s, run);
            s
        });
        for (i, r) in runs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(r);
        }
    } else {
        push_series(out, series);
    }
    out.push(']');
}

/// The series of a matrix, comma-separated.
fn push_series(out: &mut String, series: &[SeriesSamples]) {
    let mut stamps = Stamps::default();
    for (i, s) in series.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"metric":"#);
        push_labels(out, &s.labels);
        out.push_str(r#","values":["#);
        for (j, p) in s.samples.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            stamps.push(out, p.t);
            push_value(out, p.v);
            out.push_str("\"]");
        }
        out.push_str("]}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::VectorSample;
    use crate::storage::Sample;

    #[test]
    fn values_format_like_go() {
        let cases = [
            (1.0, "1"),
            (0.1, "0.1"),
            (-0.0, "-0"),
            (1e21, "1000000000000000000000"),
            (1e-7, "0.0000001"),
            (123456.789, "123456.789"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            // Ties between two shortest digit strings go to the even digit, as Go's
            // strconv does (checked against Prometheus 2.42), where Rust's `Display` rounds up.
            (-(1536046330430110.0 + 0.25), "-1536046330430110.2"),
            (123456789012345678.0, "123456789012345680"),
            (2.5e-7, "0.00000025"),
        ];
        for (v, want) in cases {
            assert_eq!(format_value(v), want);
        }
        assert!(format_value(5e-324).ends_with("5"));
    }

    #[test]
    fn timestamps_as_prometheus_writes_them() {
        let t = |ms| {
            let mut s = String::new();
            push_timestamp(&mut s, ms);
            s
        };
        assert_eq!(t(1_435_781_451_781), "1435781451.781");
        assert_eq!(t(1_500), "1.500");
        assert_eq!(t(1_005), "1.005");
        assert_eq!(t(2_000), "2");
        assert_eq!(t(-1_500), "-1.500");
    }

    #[test]
    fn results_render_in_prometheus_shape() {
        let a = Labels::from_pairs([("__name__", "up"), ("job", "b")]);
        let b = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let mut m = Value::Matrix(vec![
            SeriesSamples {
                labels: a.clone(),
                samples: vec![Sample { t: 1000, v: 1.0 }, Sample { t: 2500, v: 0.5 }],
            },
            SeriesSamples {
                labels: b,
                samples: vec![Sample {
                    t: 1000,
                    v: f64::NAN,
                }],
            },
        ]);
        assert_eq!(
            render_query_data(&mut m),
            r#"{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a"},"values":[[1,"NaN"]]},{"metric":{"__name__":"up","job":"b"},"values":[[1,"1"],[2.500,"0.5"]]}]}"#
        );
        let mut v = Value::Vector(vec![VectorSample {
            labels: a,
            t: 3000,
            v: 2.0,
        }]);
        assert_eq!(
            render_query_data(&mut v),
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"b"},"value":[3,"2"]}]}"#
        );
        let mut s = Value::Scalar { t: 4000, v: 2.0 };
        assert_eq!(
            render_query_data(&mut s),
            r#"{"resultType":"scalar","result":[4,"2"]}"#
        );
        let mut s = Value::String {
            t: 4000,
            s: "a\"b".into(),
        };
        assert_eq!(
            render_query_data(&mut s),
            r#"{"resultType":"string","result":[4,"a\"b"]}"#
        );
    }

    async fn body(r: Response) -> String {
        let b = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn enveloped_bodies_equal_copied_ones() {
        let mut v = Value::Matrix(vec![SeriesSamples {
            labels: Labels::from_pairs([("__name__", "up"), ("job", "a\"b\n")]),
            samples: vec![Sample { t: 1500, v: 0.25 }],
        }]);
        let mut a = ApiSuccess::data(render_query_data(&mut v.clone()));
        let mut b = ApiSuccess::enveloped(render_query_body(&mut v));
        for s in [&mut a, &mut b] {
            s.warnings.push("w".into());
            s.infos.push("i".into());
        }
        let (a, b) = (body(a.into_response()).await, body(b.into_response()).await);
        assert_eq!(a, b);
        assert_eq!(
            b,
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a\"b\n"},"values":[[1.500,"0.25"]]}]},"warnings":["w"],"infos":["i"]}"#
        );
    }

    #[test]
    fn large_matrices_render_in_parts_as_in_one() {
        let series: Vec<SeriesSamples> = (0..40)
            .map(|i| SeriesSamples {
                labels: Labels::from_pairs([("__name__", "m"), ("i", &*format!("{i:02}"))]),
                samples: (0..1000)
                    .map(|j| Sample {
                        t: j * 15_000 + i,
                        v: (j as f64) / 7.0,
                    })
                    .collect(),
            })
            .collect();
        let mut one = String::new();
        push_series(&mut one, &series);
        let body = render_query_body(&mut Value::Matrix(series));
        assert_eq!(
            body,
            format!(r#"{ENVELOPE}{{"resultType":"matrix","result":[{one}]}}"#)
        );
    }

    proptest::proptest! {
        #[test]
        fn json_strings_escape_as_serde_json(s in "\\PC*|[\"\\\\\u{0}-\u{1f}a-zé]*") {
            proptest::prop_assert_eq!(json_string(&s), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn values_and_timestamps_round_trip(v in proptest::num::f64::ANY, t in -(1i64 << 50)..(1i64 << 50)) {
            let s = format_value(v);
            let back: f64 = match s.as_str() {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                other => other.parse().unwrap(),
            };
            proptest::prop_assert!(back.to_bits() == v.to_bits() || (v.is_nan() && back.is_nan()));
            proptest::prop_assert!(!s.contains('e'));
            let mut ts = String::new();
            push_timestamp(&mut ts, t);
            proptest::prop_assert_eq!(crate::api::params::parse_time(&ts), Ok(t));
        }
    }

    #[test]
    fn every_error_type_has_prometheus_status() {
        let want = [
            (ErrorType::BadData, 400),
            (ErrorType::Execution, 422),
            (ErrorType::Canceled, 499),
            (ErrorType::Timeout, 503),
            (ErrorType::Internal, 500),
            (ErrorType::Unavailable, 500),
            (ErrorType::NotFound, 404),
        ];
        for (t, code) in want {
            assert_eq!(t.status().as_u16(), code, "{}", t.as_str());
        }
        let e = ApiError::from(QueryError::TooManySamples("query execution"));
        assert_eq!(e.kind, ErrorType::Execution);
        assert_eq!(
            e.message,
            "query processing would load too many samples into memory in query execution"
        );
        let e = ApiError::from(QueryError::BadData("unexpected end of input".into()));
        assert_eq!(
            e.message,
            "invalid parameter \"query\": unexpected end of input"
        );
        let e = ApiError::from(QueryError::Storage(StorageError::Internal("io".into())));
        assert_eq!(e.kind, ErrorType::Internal);
    }
}
