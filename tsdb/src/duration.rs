//! Prometheus's duration strings (Go's `model.ParseDuration`): `1y2w3d4h5m6s7ms`, units in
//! descending order, each at most once, 365-day years. One parser for the HTTP API's
//! parameters, the configuration and PromQL's duration literals; each caller words its own
//! errors. Written here because `humantime`'s grammar differs (spaces, 365.25-day years, no
//! bare `0`).

/// The units, largest first, in milliseconds.
pub const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3_600_000),
    ("w", 7 * 24 * 3_600_000),
    ("d", 24 * 3_600_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1000),
    ("ms", 1),
];

/// Why a duration string does not parse.
#[derive(Debug, PartialEq, Eq)]
pub enum DurationError {
    /// Empty, or not digits followed by a unit.
    Syntax,
    /// Letters after a number that are not a unit.
    UnknownUnit(String),
    /// A unit after a smaller one, or twice.
    Order,
    /// More milliseconds than a `u64` holds.
    Overflow,
}

/// The milliseconds of `s`; a bare `0` is accepted, as Prometheus's model accepts it.
pub fn parse_ms(s: &str) -> Result<u64, DurationError> {
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(DurationError::Syntax);
    }
    let mut rest = s;
    let mut next_unit = 0;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(DurationError::Syntax);
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| DurationError::Overflow)?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let Some(i) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(if unit.is_empty() {
                DurationError::Syntax
            } else {
                DurationError::UnknownUnit(unit.to_string())
            });
        };
        if i < next_unit {
            return Err(DurationError::Order);
        }
        next_unit = i + 1;
        total = n
            .checked_mul(UNITS[i].1)
            .and_then(|v| total.checked_add(v))
            .ok_or(DurationError::Overflow)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_prometheus_reads_them() {
        assert_eq!(parse_ms("0"), Ok(0));
        assert_eq!(parse_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_ms("1y2w3d4h5m6s7ms"), Ok(33_019_506_007));
        assert_eq!(parse_ms("100ms"), Ok(100));
        assert_eq!(parse_ms(""), Err(DurationError::Syntax));
        assert_eq!(parse_ms("5"), Err(DurationError::Syntax));
        assert_eq!(parse_ms("m"), Err(DurationError::Syntax));
        assert_eq!(parse_ms("30m1h"), Err(DurationError::Order));
        assert_eq!(parse_ms("1m1m"), Err(DurationError::Order));
        assert_eq!(parse_ms("1x"), Err(DurationError::UnknownUnit("x".into())));
        assert_eq!(parse_ms("99999999999y"), Err(DurationError::Overflow));
    }
}
