//! Access-log lines into fields: nginx `log_format`s, JSON lines and regexes with named groups,
//! tried in order; and the request fields the RED metrics and log links need.
//!
//! Every parser yields `(name, value)` pairs named like nginx variables (JSON keys and regex group
//! names are taken as such), so one mapping ([`Access::from_fields`]) serves all three.

use std::borrow::Cow;

use super::format::LogFormat;

/// One parser of a chain.
#[derive(Debug, Clone)]
pub enum Parser {
    Nginx(LogFormat),
    Json,
    Regex(regex::Regex),
}

/// Fields of one line: borrowed from the line where possible.
pub type Fields<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

impl Parser {
    /// Appends the line's fields to `out`; `false` when the line does not match.
    pub fn parse<'a>(&'a self, line: &'a str, out: &mut Fields<'a>) -> bool {
        match self {
            Parser::Nginx(f) => f.parse(line, out),
            Parser::Json => {
                let Ok(map) =
                    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line)
                else {
                    return false;
                };
                for (k, v) in map {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Number(n) => n.to_string(),
                        serde_json::Value::Bool(b) => b.to_string(),
                        // Nested values and nulls carry no request field.
                        _ => continue,
                    };
                    out.push((Cow::Owned(k), Cow::Owned(v)));
                }
                true
            }
            Parser::Regex(re) => {
                let Some(caps) = re.captures(line) else {
                    return false;
                };
                for name in re.capture_names().flatten() {
                    if let Some(m) = caps.name(name) {
                        out.push((Cow::Borrowed(name), Cow::Borrowed(m.as_str())));
                    }
                }
                true
            }
        }
    }
}

/// The request a line describes, as far as its fields tell.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Access<'a> {
    pub host: Option<&'a str>,
    pub service: Option<&'a str>,
    pub method: Option<&'a str>,
    pub uri: Option<&'a str>,
    pub status: Option<u16>,
    /// Response bytes (`$body_bytes_sent`, else `$bytes_sent`).
    pub bytes: Option<u64>,
    /// `$request_time`, seconds.
    pub request_time: Option<f64>,
    /// The upstream that answered (the last of `$upstream_addr`'s list).
    pub upstream: Option<&'a str>,
    /// `$upstream_response_time`, summed over the upstreams tried.
    pub upstream_time: Option<f64>,
    /// `$request_id`.
    pub request_id: Option<&'a str>,
    /// The trace id of a W3C `traceparent`, else `$request_id`.
    pub trace_id: Option<Cow<'a, str>>,
}

/// nginx writes `-` for an unset variable.
fn value(v: &str) -> Option<&str> {
    let v = v.trim();
    (!v.is_empty() && v != "-").then_some(v)
}

impl<'a> Access<'a> {
    /// Picks the request fields out of `fields`; `service_field` names the one that tells the
    /// service (a `map`ped variable, `$proxy_host`…).
    pub fn from_fields(fields: &'a Fields<'a>, service_field: &str) -> Self {
        let mut a = Access::default();
        let mut host_rank = u8::MAX;
        let mut request: Option<&str> = None;
        let mut traceparent: Option<&str> = None;
        for (name, v) in fields {
            let Some(v) = value(v) else {
                continue;
            };
            let name = name.as_ref();
            if name == service_field {
                a.service = Some(v);
            }
            match name {
                "host" | "http_host" | "server_name" => {
                    let rank = match name {
                        "host" => 0,
                        "http_host" => 1,
                        _ => 2,
                    };
                    if rank < host_rank {
                        host_rank = rank;
                        a.host = Some(v);
                    }
                }
                "request" => request = Some(v),
                "request_method" | "method" => a.method = Some(v),
                "request_uri" => a.uri = Some(v),
                "uri" if a.uri.is_none() => a.uri = Some(v),
                "status" => a.status = v.parse().ok(),
                "body_bytes_sent" => a.bytes = v.parse().ok(),
                "bytes_sent" if a.bytes.is_none() => a.bytes = v.parse().ok(),
                "request_time" => a.request_time = v.parse().ok().filter(|t: &f64| t.is_finite()),
                "upstream_addr" | "upstream" => a.upstream = last_of_list(v),
                "upstream_response_time" => a.upstream_time = sum_of_list(v),
                "request_id" => a.request_id = Some(v),
                "http_traceparent" | "traceparent" => traceparent = Some(v),
                "trace_id" if a.trace_id.is_none() => a.trace_id = Some(Cow::Borrowed(v)),
                _ => {}
            }
        }
        if let Some(r) = request {
            // "GET /path HTTP/1.1"
            let mut it = r.splitn(3, ' ');
            let m = it.next();
            let u = it.next();
            if a.method.is_none() {
                a.method = m.filter(|m| !m.is_empty());
            }
            if a.uri.is_none() {
                a.uri = u;
            }
        }
        if let Some(id) = traceparent.and_then(traceparent_trace_id) {
            a.trace_id = Some(Cow::Owned(id));
        } else if a.trace_id.is_none() {
            a.trace_id = a.request_id.map(Cow::Borrowed);
        }
        a
    }
}

/// nginx lists one value per upstream tried, `, ` between retries and ` : ` across internal
/// redirects; the last one answered.
fn last_of_list(v: &str) -> Option<&str> {
    v.rsplit([',', ' '])
        .map(str::trim)
        .find(|s| !s.is_empty() && *s != ":")
        .and_then(value)
}

fn sum_of_list(v: &str) -> Option<f64> {
    let mut sum = None;
    for part in v.split([',', ' ', ':']) {
        if let Ok(t) = part.trim().parse::<f64>()
            && t.is_finite()
        {
            *sum.get_or_insert(0.0) += t;
        }
    }
    sum
}

/// The trace id of a W3C `traceparent` (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`),
/// lowercased; `None` when invalid (version `ff`, all-zero ids, wrong lengths, extra fields in
/// version 00).
pub fn traceparent_trace_id(tp: &str) -> Option<String> {
    let tp = tp.trim();
    let mut parts = tp.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(version, 2) || version.eq_ignore_ascii_case("ff") {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(trace.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(p: &'a Parser, line: &'a str) -> Option<Fields<'a>> {
        let mut out = Vec::new();
        p.parse(line, &mut out).then_some(out)
    }

    #[test]
    fn combined_line_to_access() {
        let p = Parser::Nginx(LogFormat::compile("combined").unwrap());
        let line = r#"10.1.2.3 - - [10/Oct/2026:13:55:36 +0000] "GET /a?b=c HTTP/1.1" 404 153 "-" "curl/8""#;
        let f = fields(&p, line).unwrap();
        let a = Access::from_fields(&f, "service");
        assert_eq!(a.method, Some("GET"));
        assert_eq!(a.uri, Some("/a?b=c"));
        assert_eq!(a.status, Some(404));
        assert_eq!(a.bytes, Some(153));
        assert_eq!(a.host, None);
        assert_eq!(a.request_time, None);
        assert_eq!(a.trace_id, None);
    }

    #[test]
    fn custom_format_with_upstream_fields_and_traceparent() {
        let p = Parser::Nginx(
            LogFormat::compile(r#"$host "$request" $status $body_bytes_sent $request_time "$upstream_addr" "$upstream_response_time" $request_id "$http_traceparent" $svc"#)
                .unwrap(),
        );
        let line = r#"api.example.com "POST /v1/orders HTTP/2.0" 503 0 1.250 "10.0.1.5:8080, 10.0.1.6:8080 : 10.0.2.1:80" "0.500, 0.250 : 0.400" 9f8e7d "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01" orders"#;
        let f = fields(&p, line).unwrap();
        let a = Access::from_fields(&f, "svc");
        assert_eq!(a.host, Some("api.example.com"));
        assert_eq!(a.service, Some("orders"));
        assert_eq!(a.method, Some("POST"));
        assert_eq!(a.status, Some(503));
        assert_eq!(a.request_time, Some(1.25));
        assert_eq!(a.upstream, Some("10.0.2.1:80"));
        assert!((a.upstream_time.unwrap() - 1.15).abs() < 1e-9);
        assert_eq!(a.request_id, Some("9f8e7d"));
        assert_eq!(
            a.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );

        // Without a traceparent the request id is the trace id.
        let line = r#"api.example.com "GET / HTTP/1.1" 200 5 0.001 "-" "-" 9f8e7d "-" -"#;
        let f = fields(&p, line).unwrap();
        let a = Access::from_fields(&f, "svc");
        assert_eq!(a.trace_id.as_deref(), Some("9f8e7d"));
        assert_eq!((a.upstream, a.upstream_time, a.service), (None, None, None));
    }

    #[test]
    fn json_lines() {
        let p = Parser::Json;
        let line = r#"{"time":"2026-10-10T13:55:36+00:00","host":"a.example","request_method":"PUT","request_uri":"/x","status":"201","body_bytes_sent":12,"request_time":0.004,"upstream_addr":"10.0.0.1:80","upstream_response_time":"0.003","http_traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","nested":{"a":1}}"#;
        let f = fields(&p, line).unwrap();
        let a = Access::from_fields(&f, "service");
        assert_eq!(a.method, Some("PUT"));
        assert_eq!(a.uri, Some("/x"));
        assert_eq!(a.status, Some(201));
        assert_eq!(a.bytes, Some(12));
        assert_eq!(a.request_time, Some(0.004));
        assert_eq!(a.upstream_time, Some(0.003));
        assert_eq!(
            a.trace_id.as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert!(fields(&p, "not json").is_none());
        assert!(fields(&p, "[1,2]").is_none());
    }

    #[test]
    fn regex_named_groups() {
        let p = Parser::Regex(
            regex::Regex::new(r"^(?P<remote_addr>\S+) (?P<method>[A-Z]+) (?P<uri>\S+) -> (?P<status>\d{3}) in (?P<request_time>[0-9.]+)s$").unwrap(),
        );
        let f = fields(&p, "10.0.0.1 DELETE /items/7 -> 204 in 0.020s").unwrap();
        let a = Access::from_fields(&f, "service");
        assert_eq!(a.method, Some("DELETE"));
        assert_eq!(a.uri, Some("/items/7"));
        assert_eq!(a.status, Some(204));
        assert_eq!(a.request_time, Some(0.02));
        assert!(fields(&p, "something else").is_none());
    }

    #[test]
    fn traceparent_validation() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            traceparent_trace_id(ok).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "",
            "-",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(traceparent_trace_id(bad), None, "{bad}");
        }
        // Later versions may append fields.
        assert!(
            traceparent_trace_id("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
    }
}
