//! What `promql-parser`'s AST loses about string literals: Go (and so Prometheus) decodes
//! `"\xff"` to the raw byte 0xff, making an invalid UTF-8 string that Prometheus rejects as a
//! label name, while `promql-parser` decodes it to the character U+00FF. This scanner finds the
//! literals whose Go decoding is not UTF-8, so the engine can reject them where Prometheus does.

/// Each literal whose Go decoding is invalid UTF-8: (the value as `promql-parser` decodes it,
/// the literal as written).
pub(crate) fn invalid_utf8_literals(text: &str) -> Vec<(String, String)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let q = b[i];
        if q == b'`' {
            i += 1;
            while i < b.len() && b[i] != b'`' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if q != b'"' && q != b'\'' {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        let mut bytes: Vec<u8> = Vec::new();
        let mut decoded = String::new();
        while i < b.len() && b[i] != q {
            if b[i] == b'\\' && i + 1 < b.len() {
                let c = b[i + 1];
                let radix_len = match c {
                    b'x' => Some((16, 2)),
                    b'0'..=b'7' => Some((8, 3)),
                    b'u' => Some((16, 4)),
                    b'U' => Some((16, 8)),
                    _ => None,
                };
                match radix_len {
                    Some((radix, n)) => {
                        let digits_at = if radix == 8 { i + 1 } else { i + 2 };
                        let digits = text.get(digits_at..digits_at + n).unwrap_or("");
                        let v = u32::from_str_radix(digits, radix).unwrap_or(0);
                        if matches!(c, b'u' | b'U') {
                            let ch = char::from_u32(v).unwrap_or('\u{fffd}');
                            let mut buf = [0u8; 4];
                            bytes.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            decoded.push(ch);
                        } else {
                            bytes.push(v as u8);
                            decoded.push(char::from(v as u8));
                        }
                        i = digits_at + n;
                    }
                    None => {
                        let ch = match c {
                            b'n' => '\n',
                            b't' => '\t',
                            b'r' => '\r',
                            b'a' => '\x07',
                            b'b' => '\x08',
                            b'f' => '\x0c',
                            b'v' => '\x0b',
                            other => char::from(other),
                        };
                        bytes.push(ch as u8);
                        decoded.push(ch);
                        i += 2;
                    }
                }
            } else {
                let Some(ch) = text.get(i..).and_then(|s| s.chars().next()) else {
                    break;
                };
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                decoded.push(ch);
                i += ch.len_utf8();
            }
        }
        i += 1;
        if std::str::from_utf8(&bytes).is_err() {
            out.push((
                decoded,
                text.get(start..i.min(b.len())).unwrap_or("").to_string(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_go_invalid_utf8_literals() {
        let v = invalid_utf8_literals(
            r#"count_values("a\xc5z", x) + label_replace(y, "ok", "\xc3\xbc", "ü", `\xff`)"#,
        );
        assert_eq!(v, [("a\u{c5}z".to_string(), r#""a\xc5z""#.to_string())]);
    }
}
