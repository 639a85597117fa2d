//! Runs Prometheus's PromQL test scripts against Sextant's engine.
//!
//! `promqltest [-v] <file or folder>...` prints one line per file and, last,
//! `promqltest: P passed, F failed, S skipped`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use tests::promqltest::run_script;

#[derive(Parser)]
#[command(about = "Runs PromQL test scripts (*.test) against Sextant's engine")]
struct Args {
    /// Print each failure (file:line, query, expected vs got).
    #[arg(short = 'v')]
    verbose: bool,
    /// Test files, or folders holding *.test files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    let mut files = Vec::new();
    for p in &args.paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "test"))
                .collect();
            v.sort();
            files.extend(v);
        } else {
            files.push(p.clone());
        }
    }
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
    for f in &files {
        let input =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let r = run_script(&input);
        let name = f.file_name().map_or_else(
            || f.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let why: Vec<String> = r
            .skip_reasons
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        if why.is_empty() {
            println!(
                "{name}: {} passed, {} failed, {} skipped",
                r.passed, r.failed, r.skipped
            );
        } else {
            println!(
                "{name}: {} passed, {} failed, {} skipped ({})",
                r.passed,
                r.failed,
                r.skipped,
                why.join(", ")
            );
        }
        if args.verbose {
            for msg in &r.failures {
                println!("  {name}:{msg}");
            }
        }
        passed += r.passed;
        failed += r.failed;
        skipped += r.skipped;
        for (k, v) in r.skip_reasons {
            *reasons.entry(k).or_default() += v;
        }
    }
    if !reasons.is_empty() {
        let why: Vec<String> = reasons.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!("skipped by reason: {}", why.join(", "));
    }
    println!("promqltest: {passed} passed, {failed} failed, {skipped} skipped");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
