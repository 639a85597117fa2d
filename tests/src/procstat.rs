//! Resource use of a process and a directory, read from `/proc` and the file system, for
//! benchmarks that compare peers side by side.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result};

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds the process has used so far (its threads included).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the parenthesised command name, which may itself hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/pid/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .context("short /proc/pid/stat")?
            .parse::<f64>()
            .context("parsing /proc/pid/stat")
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks())
}

/// A `/proc/<pid>/status` size field (`VmRSS`, `VmHWM`…) in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    let kb: u64 = line[field.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("parsing {line:?}"))?;
    Ok(kb * 1024)
}

/// Bytes of the regular files under `dir`, recursively (apparent sizes).
pub fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    for e in entries {
        let e = e?;
        let meta = e.metadata()?;
        if meta.is_dir() {
            total += dir_size(&e.path())?;
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let pid = std::process::id();
        // Burn a little CPU so the counter is visibly non-negative and finite.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let cpu = cpu_seconds(pid).unwrap();
        assert!(cpu.is_finite() && cpu >= 0.0);
        let rss = status_bytes(pid, "VmRSS").unwrap();
        let hwm = status_bytes(pid, "VmHWM").unwrap();
        assert!(rss > 0 && hwm >= rss / 2, "rss {rss} hwm {hwm}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/f"), [0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("g"), [0u8; 24]).unwrap();
        assert_eq!(dir_size(dir.path()).unwrap(), 1024);
    }
}
