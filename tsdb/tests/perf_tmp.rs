use std::time::Instant;
use tsdb::labels::Labels;
use tsdb::promql::{QueryOptions, range_query, instant_query};
use tsdb::storage::{MemStorage, Queryable, Matcher, MatchOp};

#[test]
fn perf() {
    let s = MemStorage::new();
    for i in 0..10_000 {
        let l = Labels::from_pairs([("__name__", "http_requests_total".to_string()), ("pod", format!("p{i}")), ("job", format!("j{}", i % 10))]);
        for k in 0..240 {
            s.insert(&l, k * 15_000, (k * (i % 7 + 1)) as f64);
        }
    }
    let o = QueryOptions::default();
    let t = Instant::now();
    let m = [Matcher::new(MatchOp::Equal, "__name__", "http_requests_total").unwrap()];
    let r = s.select(&m, 0, 3_600_000).unwrap();
    println!("select {} {:?}", r.len(), t.elapsed());
    let t = Instant::now();
    let r = instant_query(&s, "http_requests_total", 1_800_000, &o);
    println!("instant {:?} {}", t.elapsed(), r.is_ok());
    for q in ["http_requests_total", "count(http_requests_total)", "vector(1)", "count(rate(http_requests_total[5m]))"] {
    let t = Instant::now();
    let r = range_query(&s, q, 0, 3_600_000, 15_000, &o);
    println!("range {q} {:?} {}", t.elapsed(), r.is_ok());
    }
}
