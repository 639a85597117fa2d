//! Parsers of cgroup file formats (kernel `Documentation/admin-guide/cgroup-v2.rst`, "Interface
//! Files": flat keyed, nested keyed, single value), working on borrowed bytes so that a scan
//! reuses one read buffer.

/// The ASCII text of a file, trimmed.
pub(crate) fn trim(buf: &[u8]) -> &[u8] {
    buf.trim_ascii()
}

/// A single unsigned value (`memory.current`, `cpuacct.usage`). `max` and negatives give `None`.
pub(crate) fn single_u64(buf: &[u8]) -> Option<u64> {
    parse_u64(trim(buf))
}

pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// A single signed value (`cpu.cfs_quota_us`, which is `-1` when unset).
pub(crate) fn single_i64(buf: &[u8]) -> Option<i64> {
    std::str::from_utf8(trim(buf)).ok()?.parse().ok()
}

/// Lines of a flat keyed file (`key value`): `memory.stat`, `cpu.stat`, `memory.events`.
pub(crate) fn flat_keyed(buf: &[u8]) -> impl Iterator<Item = (&[u8], u64)> {
    buf.split(|b| *b == b'\n').filter_map(|line| {
        let mut it = line.split(|b| *b == b' ').filter(|f| !f.is_empty());
        let key = it.next()?;
        let value = parse_u64(it.next()?)?;
        Some((key, value))
    })
}

/// The value of `key` in a flat keyed file.
pub(crate) fn keyed(buf: &[u8], key: &str) -> Option<u64> {
    flat_keyed(buf)
        .find(|(k, _)| *k == key.as_bytes())
        .map(|(_, v)| v)
}

/// `some`/`full` `total=` (µs) of a PSI file (`cpu.pressure`, …):
/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=1234`.
pub(crate) fn psi_totals(buf: &[u8]) -> (Option<u64>, Option<u64>) {
    let mut some = None;
    let mut full = None;
    for line in buf.split(|b| *b == b'\n') {
        let mut fields = line.split(|b| *b == b' ').filter(|f| !f.is_empty());
        let slot = match fields.next() {
            Some(b"some") => &mut some,
            Some(b"full") => &mut full,
            _ => continue,
        };
        *slot = fields
            .find_map(|f| f.strip_prefix(b"total="))
            .and_then(parse_u64);
    }
    (some, full)
}

/// A block device's `major:minor`.
pub(crate) fn major_minor(s: &[u8]) -> Option<(u32, u32)> {
    let s = std::str::from_utf8(s).ok()?;
    let (ma, mi) = s.split_once(':')?;
    Some((ma.parse().ok()?, mi.parse().ok()?))
}

/// Read and written bytes per device of v2 `io.stat`:
/// `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`.
pub(crate) fn io_stat(buf: &[u8], mut f: impl FnMut((u32, u32), u64, u64)) {
    for line in buf.split(|b| *b == b'\n') {
        let mut fields = line.split(|b| *b == b' ').filter(|f| !f.is_empty());
        let Some(dev) = fields.next().and_then(major_minor) else {
            continue;
        };
        let (mut r, mut w) = (0, 0);
        for field in fields {
            if let Some(v) = field.strip_prefix(b"rbytes=") {
                r = parse_u64(v).unwrap_or(0);
            } else if let Some(v) = field.strip_prefix(b"wbytes=") {
                w = parse_u64(v).unwrap_or(0);
            }
        }
        f(dev, r, w);
    }
}

/// Read and written bytes per device of v1 `blkio.*io_service_bytes*`:
/// `8:0 Read 4096` … `8:0 Total 8192` … `Total 8192`. Calls `f` once per device, in file order.
pub(crate) fn blkio_bytes(buf: &[u8], mut f: impl FnMut((u32, u32), u64, u64)) {
    let mut cur: Option<((u32, u32), u64, u64)> = None;
    for line in buf.split(|b| *b == b'\n') {
        let mut fields = line.split(|b| *b == b' ').filter(|f| !f.is_empty());
        let (Some(dev), Some(op), Some(v)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let (Some(dev), Some(v)) = (major_minor(dev), parse_u64(v)) else {
            continue;
        };
        match &mut cur {
            Some((d, _, _)) if *d == dev => {}
            _ => {
                if let Some((d, r, w)) = cur.take() {
                    f(d, r, w);
                }
                cur = Some((dev, 0, 0));
            }
        }
        if let Some((_, r, w)) = &mut cur {
            match op {
                b"Read" => *r = v,
                b"Write" => *w = v,
                _ => {}
            }
        }
    }
    if let Some((d, r, w)) = cur {
        f(d, r, w);
    }
}

/// Received and transmitted bytes per interface of `/proc/<pid>/net/dev`.
pub(crate) fn net_dev(buf: &[u8], mut f: impl FnMut(&str, u64, u64)) {
    // Two header lines, then `  eth0: rx_bytes rx_packets … (8 rx fields) tx_bytes …`.
    for line in buf.split(|b| *b == b'\n').skip(2) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let Ok(name) = std::str::from_utf8(line[..colon].trim_ascii()) else {
            continue;
        };
        let mut fields = line[colon + 1..]
            .split(|b| *b == b' ')
            .filter(|f| !f.is_empty());
        let rx = fields.next().and_then(parse_u64);
        let tx = fields.nth(7).and_then(parse_u64);
        if let (Some(rx), Some(tx)) = (rx, tx) {
            f(name, rx, tx);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn flat_keyed_and_single_values() {
        let stat = b"usage_usec 1000\nuser_usec 600\nsystem_usec 400\nnr_periods 7\n";
        assert_eq!(keyed(stat, "user_usec"), Some(600));
        assert_eq!(keyed(stat, "nr_periods"), Some(7));
        assert_eq!(keyed(stat, "nr_throttled"), None);
        assert_eq!(single_u64(b"123456\n"), Some(123456));
        assert_eq!(single_u64(b"max\n"), None);
        assert_eq!(single_i64(b"-1\n"), Some(-1));
    }

    #[test]
    fn psi() {
        let buf = b"some avg10=1.50 avg60=0.00 avg300=0.00 total=2500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1000\n";
        assert_eq!(psi_totals(buf), (Some(2_500_000), Some(1000)));
        // cpu.pressure before 5.13 had no `full` line.
        assert_eq!(
            psi_totals(b"some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n"),
            (Some(7), None)
        );
    }

    #[test]
    fn io_stat_v2() {
        let buf = b"8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n8:0 rbytes=90430464 wbytes=299008000 rios=8950 wios=1252 dbytes=50331648 dios=3021\n";
        let mut got = vec![];
        io_stat(buf, |d, r, w| got.push((d, r, w)));
        assert_eq!(
            got,
            vec![((8, 16), 1459200, 314773504), ((8, 0), 90430464, 299008000)]
        );
    }

    #[test]
    fn blkio_v1() {
        let buf = b"8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 12288\n8:0 Async 0\n8:0 Discard 0\n8:0 Total 12288\n253:1 Read 1\n253:1 Write 2\n253:1 Total 3\nTotal 12291\n";
        let mut got = vec![];
        blkio_bytes(buf, |d, r, w| got.push((d, r, w)));
        assert_eq!(got, vec![((8, 0), 4096, 8192), ((253, 1), 1, 2)]);
        let mut none = vec![];
        blkio_bytes(b"Total 0\n", |d, r, w| none.push((d, r, w)));
        assert!(none.is_empty());
    }

    #[test]
    fn net_dev_proc() {
        let buf = b"Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:  123456     100    0    0    0     0          0         0   123456     100    0    0    0     0       0          0\n  eth0: 9876543   12345    0    0    0     0          0         0  1234567    2345    0    0    0     0       0          0\n";
        let mut got = vec![];
        net_dev(buf, |n, r, t| got.push((n.to_owned(), r, t)));
        assert_eq!(
            got,
            vec![
                ("lo".to_owned(), 123456, 123456),
                ("eth0".to_owned(), 9876543, 1234567)
            ]
        );
    }

    proptest! {
        #[test]
        fn flat_keyed_finds_every_written_pair(pairs in proptest::collection::btree_map("[a-z_]{1,12}", any::<u64>(), 0..20)) {
            let text: String = pairs.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
            for (k, v) in &pairs {
                prop_assert_eq!(keyed(text.as_bytes(), k), Some(*v));
            }
        }

        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = flat_keyed(&bytes).count();
            let _ = psi_totals(&bytes);
            io_stat(&bytes, |_, _, _| {});
            blkio_bytes(&bytes, |_, _, _| {});
            net_dev(&bytes, |_, _, _| {});
        }
    }
}
