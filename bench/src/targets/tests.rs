use serde_json::{Value, json};

use super::*;

/// A compare cell as `compare::report` writes it: `rps` answers a second, CPU µs per request of
/// the enclave, the host and this process.
fn cell(c: u64, p50: f64, rps: f64, cpu: (f64, f64, f64)) -> Value {
    json!({
        "concurrency": c, "ok": 100, "p50_ms": p50, "throughput_rps": rps,
        "enclave_cpu_us_per_request": cpu.0, "host_cpu_us_per_request": cpu.1,
        "bench_cpu_us_per_request": cpu.2,
    })
}

/// A cell with no CPU figures (the throughput rules then judge it).
fn idle(c: u64, p50: f64, rps: f64) -> Value {
    cell(c, p50, rps, (0.0, 0.0, 0.0))
}

/// One model with one case; `cells` per variant and the throughput ratios computed from them.
fn report(pin: Value, cores: u64, workers: u64, bare: Vec<Value>, sealed: Vec<Value>) -> Value {
    let ratios: Vec<Value> = bare
        .iter()
        .zip(&sealed)
        .map(|(b, s)| {
            json!({
                "concurrency": b["concurrency"],
                "sealed_over_bare": s["throughput_rps"].as_f64().unwrap()
                    / b["throughput_rps"].as_f64().unwrap(),
            })
        })
        .collect();
    json!({
        "machine": {"cpu": "Test CPU", "cores": cores},
        "settings": {"cores": cores, "workers": workers, "pin": pin, "quick": false},
        "models": [{
            "id": "large", "dynamic_batch_rows": null,
            "memory": {"sealed_peak_over_bare_kb": 900, "allowance_kb": 1024, "sealed_target_met": true},
            "cases": [{
                "input_bytes": 200_000,
                "variants": {"bare": {"cells": bare}, "sealed": {"cells": sealed}},
                "ratios": {"throughput": ratios},
            }],
        }],
        "scaling": [],
    })
}

fn pinned() -> Value {
    json!({"server_cpus": [1], "harness_cpus": [0]})
}

fn micro(floor_us: f64, request_bytes: u64) -> Value {
    json!({"floor": {"floor_us": floor_us, "hpke": {"request_bytes": request_bytes}}})
}

#[test]
fn latency_of_a_slow_model_is_the_ratio_of_medians() {
    let r = |sealed: f64| {
        report(
            Value::Null,
            2,
            2,
            vec![idle(1, 10.0, 100.0)],
            vec![cell(1, sealed, 95.0, (0.0, 0.0, 0.0))],
        )
    };
    let met = check_latency("compare", &r(10.5), None);
    assert_eq!(met.len(), 1);
    assert_eq!(met[0].verdict, Verdict::Met, "{:?}", met[0]);
    assert!(met[0].figure.contains("1.050"), "{}", met[0].figure);
    assert_eq!(met[0].scope, "compare: large, 200.0 kB input");
    assert_eq!(
        check_latency("compare", &r(10.6), None)[0].verdict,
        Verdict::NotMet
    );
}

#[test]
fn latency_of_a_tiny_model_is_the_added_time_against_the_floor() {
    let r = |sealed: f64, input: u64| {
        let mut r = report(
            Value::Null,
            2,
            2,
            vec![idle(1, 0.1, 100.0)],
            vec![cell(1, sealed, 95.0, (0.0, 0.0, 0.0))],
        );
        r["models"][0]["cases"][0]["input_bytes"] = json!(input);
        r
    };
    let m = micro(300.0, 256);
    // +590 µs against 2 × 300 µs: met; +610 µs: not.
    let met = check_latency("compare", &r(0.69, 256), Some(&m));
    assert_eq!(met[0].verdict, Verdict::Met, "{:?}", met[0]);
    assert!(
        met[0]
            .figure
            .contains("+590 µs vs floor 300 µs (256 B request)"),
        "{}",
        met[0].figure
    );
    let not = check_latency("compare", &r(0.71, 256), Some(&m));
    assert_eq!(not[0].verdict, Verdict::NotMet);
    // An input much larger than the floor's request: the floor does not apply.
    let big = check_latency("compare", &r(0.69, 4096), Some(&m));
    assert!(
        matches!(&big[0].verdict, Verdict::NotJudgeable(w) if w.contains("256 B request")),
        "{:?}",
        big[0]
    );
    // With a larger floor measured too, the smallest that fits the input judges it: 4096 B
    // against the 10 kB floor of 500 µs (+590 met, +1010 not); 256 B still against 300 µs;
    // beyond twice the largest, not judgeable, naming it.
    let mut m2 = m.clone();
    m2["floor"]["larger"] = json!([{"floor_us": 500.0, "hpke": {"request_bytes": 10_300}}]);
    let fits = check_latency("compare", &r(0.69, 4096), Some(&m2));
    assert_eq!(fits[0].verdict, Verdict::Met, "{:?}", fits[0]);
    assert!(
        fits[0]
            .figure
            .contains("vs floor 500 µs (10.3 kB request) = 1.18 ×"),
        "{}",
        fits[0].figure
    );
    assert_eq!(
        check_latency("compare", &r(1.11, 4096), Some(&m2))[0].verdict,
        Verdict::NotMet
    );
    let small = check_latency("compare", &r(0.69, 256), Some(&m2));
    assert!(
        small[0].figure.contains("vs floor 300 µs"),
        "{}",
        small[0].figure
    );
    let huge = check_latency("compare", &r(0.69, 20_601), Some(&m2));
    assert!(
        matches!(&huge[0].verdict, Verdict::NotJudgeable(w) if w.contains("largest floor (500 µs)") && w.contains("10.3 kB request")),
        "{:?}",
        huge[0]
    );
    // No micro report: missing, the added time still shown.
    let none = check_latency("compare", &r(0.69, 256), None);
    assert!(matches!(none[0].verdict, Verdict::Missing(_)));
    assert_eq!(none[0].figure, "+590 µs");
}

/// `paired_c1` as `compare::report` writes it, from (bare, sealed) p50s per round.
fn paired(rounds: &[(f64, f64)]) -> Value {
    let ratio: Vec<f64> = rounds.iter().map(|(b, s)| s / b).collect();
    let mut sorted = ratio.clone();
    sorted.sort_by(f64::total_cmp);
    let mut added: Vec<f64> = rounds.iter().map(|(b, s)| (s - b) * 1000.0).collect();
    added.sort_by(f64::total_cmp);
    json!({"sealed": {
        "rounds": rounds.len(),
        "ratio": ratio,
        "median_ratio": sorted[sorted.len() / 2],
        "median_added_us": added[added.len() / 2],
        "min_ratio": sorted[0],
        "max_ratio": sorted[sorted.len() - 1],
    }, "plain": null})
}

/// An unpinned report whose C = 1 cells have these p50s (ms), with paired rounds beside them.
fn with_rounds(bare: f64, sealed: f64, rounds: &[(f64, f64)]) -> Value {
    let mut r = report(
        Value::Null,
        2,
        2,
        vec![idle(1, bare, 100.0)],
        vec![idle(1, sealed, 95.0)],
    );
    r["models"][0]["cases"][0]["paired_c1"] = paired(rounds);
    r
}

#[test]
fn latency_is_judged_on_the_paired_rounds_when_they_ran() {
    // The cells, a minute apart, say 1.10 (the machine slowed down between them); the paired
    // rounds say 1.02–1.04: met, on the rounds.
    let r = with_rounds(10.0, 11.0, &[(10.0, 10.3), (12.0, 12.5), (10.0, 10.2)]);
    let met = check_latency("compare", &r, None);
    assert_eq!(met[0].verdict, Verdict::Met, "{:?}", met[0]);
    assert!(
        met[0]
            .figure
            .contains("paired median 1.030 over 3 rounds (1.020–1.042)")
            && met[0].figure.contains("cells 11.000 / 10.000 ms = 1.100"),
        "{}",
        met[0].figure
    );
    // And the other way: cells at 1.00, rounds at 1.08: not met.
    let r = with_rounds(10.0, 10.0, &[(10.0, 10.8), (10.0, 10.9), (10.0, 10.7)]);
    assert_eq!(
        check_latency("compare", &r, None)[0].verdict,
        Verdict::NotMet
    );
}

#[test]
fn a_tiny_models_added_time_comes_from_the_paired_rounds() {
    let mut r = with_rounds(0.1, 0.8, &[(0.1, 0.5), (0.1, 0.45), (0.1, 0.6)]);
    r["models"][0]["cases"][0]["input_bytes"] = json!(256);
    let m = micro(300.0, 256);
    let c = check_latency("compare", &r, Some(&m));
    assert_eq!(c[0].verdict, Verdict::Met, "{:?}", c[0]);
    assert!(
        c[0].figure
            .starts_with("paired median +400 µs over 3 rounds (cells +700) vs floor 300 µs"),
        "{}",
        c[0].figure
    );
}

#[test]
fn unpinned_throughput_on_the_workers_cores_is_not_judged() {
    let r = report(
        Value::Null,
        2,
        2,
        vec![idle(2, 10.0, 200.0), idle(16, 10.0, 200.0)],
        vec![idle(2, 10.0, 150.0), idle(16, 10.0, 150.0)],
    );
    let c = check_throughput("compare", &r);
    assert_eq!(c.len(), 1);
    assert!(
        matches!(&c[0].verdict, Verdict::NotJudgeable(w)
            if w.starts_with("C=2 0.75, C=16 0.75: the clients and the host ran on the workers' 2")
                && w.contains("--pin")),
        "{:?}",
        c[0]
    );
    // With a spare core the same cells are judged (and miss).
    let mut spare = r.clone();
    spare["settings"]["cores"] = json!(4);
    let c = check_throughput("compare", &spare);
    assert_eq!(c[0].verdict, Verdict::NotMet, "{:?}", c[0]);
    assert!(c[0].figure.contains("lowest 0.750"), "{}", c[0].figure);
}

#[test]
fn a_pinned_cell_bound_by_the_harness_is_not_judged() {
    // 1000 req/s: the enclave 500 µs a request (50 % of its CPU), the host and clients 950 µs
    // (95 % of theirs).
    let harness_bound = cell(16, 1.0, 1000.0, (500.0, 450.0, 500.0));
    let r = report(
        pinned(),
        2,
        1,
        vec![idle(16, 1.0, 1500.0)],
        vec![harness_bound],
    );
    let c = check_throughput("compare-pinned", &r);
    assert!(
        matches!(&c[0].verdict, Verdict::NotJudgeable(w)
            if w == "C=16 0.67 (enclave 50 % busy, clients and host 95 %): the load generator set the rate, not the enclave"),
        "{:?}",
        c[0]
    );
}

#[test]
fn a_pinned_cell_bound_by_the_enclave_is_judged() {
    let busy_enclave = |rps: f64| cell(16, 1.0, rps, (980_000.0 / rps, 10.0, 10.0));
    for (rps, verdict) in [(96.0, Verdict::Met), (90.0, Verdict::NotMet)] {
        let r = report(
            pinned(),
            2,
            1,
            vec![idle(1, 10.0, 100.0), idle(16, 10.0, 100.0)],
            vec![
                // With one enclave CPU, C = 1 is a throughput cell too: it passes, so that the
                // C = 16 cell decides.
                cell(1, 10.0, 100.0, (9_800.0, 10.0, 10.0)),
                busy_enclave(rps),
            ],
        );
        let c = check_throughput("compare-pinned", &r);
        assert_eq!(c[0].verdict, verdict, "{:?}", c[0]);
    }
    // Neither side busy (a slow sealed path that idles both): judged, not excused.
    let r = report(
        pinned(),
        2,
        1,
        vec![idle(16, 10.0, 100.0)],
        vec![cell(16, 10.0, 50.0, (1000.0, 1000.0, 1000.0))],
    );
    assert_eq!(
        check_throughput("compare-pinned", &r)[0].verdict,
        Verdict::NotMet
    );
}

#[test]
fn paired_throughput_medians_judge_the_cells_they_cover() {
    let enclave_bound = |c: u64, rps: f64| cell(c, 10.0, rps, (980_000.0 / rps, 10.0, 10.0));
    let mut r = report(
        pinned(),
        2,
        1,
        vec![idle(1, 10.0, 100.0), idle(4, 10.0, 100.0)],
        // The cells alone: 0.97 at C = 1, 0.80 at C = 4 (not met).
        vec![enclave_bound(1, 97.0), enclave_bound(4, 80.0)],
    );
    assert_eq!(
        check_throughput("compare-pinned", &r)[0].verdict,
        Verdict::NotMet
    );
    // Pairs at C = 4 put it at 0.98: judged on them, the cell's ratio printed beside.
    r["models"][0]["cases"][0]["paired_throughput"] =
        json!({"sealed": [{"concurrency": 4, "median_ratio": 0.98}]});
    let c = check_throughput("compare-pinned", &r);
    assert_eq!(c[0].verdict, Verdict::Met, "{:?}", c[0]);
    assert!(
        c[0].figure
            .starts_with("lowest 0.970 at C=1 (paired medians: C=1 0.97, C=4 0.98 (cells 0.80);"),
        "{}",
        c[0].figure
    );
    // And the other way: a pair median under the threshold fails a cell that passed.
    r["models"][0]["cases"][0]["paired_throughput"] = json!({"sealed": [{"concurrency": 1, "median_ratio": 0.91}, {"concurrency": 4, "median_ratio": 0.99}]});
    let c = check_throughput("compare-pinned", &r);
    assert_eq!(c[0].verdict, Verdict::NotMet, "{:?}", c[0]);
    assert!(
        c[0].figure.starts_with("lowest 0.910 at C=1"),
        "{}",
        c[0].figure
    );
}

#[test]
fn cells_below_the_core_count_are_not_throughput_cells() {
    let r = report(
        Value::Null,
        4,
        2,
        vec![idle(1, 10.0, 100.0)],
        vec![idle(1, 10.0, 50.0)],
    );
    assert!(matches!(
        check_throughput("compare", &r)[0].verdict,
        Verdict::Missing(_)
    ));
}

fn scaling(cores: u64, rows: &[(u64, f64, f64)]) -> Value {
    let mut r = report(Value::Null, cores, cores, vec![], vec![]);
    r["scaling"] = json!([{
        "model": "conv", "concurrency": 2 * cores,
        "rows": rows.iter().map(|(w, b, s)| json!({"workers": w, "bare_rps": b, "sealed_rps": s}))
            .collect::<Vec<_>>(),
    }]);
    r
}

#[test]
fn scaling_is_judged_below_the_core_count_only() {
    let two = check_scaling("compare", &scaling(2, &[(1, 10.0, 9.0), (2, 20.0, 12.0)]));
    assert!(
        matches!(&two[0].verdict, Verdict::NotJudgeable(w) if w.contains("≥ 3 cores")),
        "{:?}",
        two[0]
    );
    // 4 cores: w = 2 and 3 judged, w = 4 not. Sealed ×1.91 and ×2.87 against bare ×2 and ×3:
    // met.
    let ok = check_scaling(
        "compare",
        &scaling(
            4,
            &[
                (1, 10.0, 9.0),
                (2, 20.0, 17.2),
                (3, 30.0, 25.8),
                (4, 40.0, 9.0),
            ],
        ),
    );
    assert_eq!(ok[0].verdict, Verdict::Met, "{:?}", ok[0]);
    assert!(!ok[0].figure.contains("4 workers"), "{}", ok[0].figure);
    // Sealed flat at 3 workers: not met.
    let flat = check_scaling(
        "compare",
        &scaling(4, &[(1, 10.0, 9.0), (2, 20.0, 17.2), (3, 30.0, 17.2)]),
    );
    assert_eq!(flat[0].verdict, Verdict::NotMet);
}

#[test]
fn memory_reads_the_compare_verdict() {
    let mut r = report(Value::Null, 2, 2, vec![], vec![]);
    let c = check_memory("compare", &r);
    assert_eq!(c[0].verdict, Verdict::Met);
    assert_eq!(
        c[0].figure,
        "peak over bare 900 KiB (≤ 1024 KiB); no heap figures"
    );
    // With heap figures (compare's verdict is then on them), both are shown.
    r["models"][0]["memory"]["sealed_anon_peak_over_bare_kb"] = json!(300);
    assert_eq!(
        check_memory("compare", &r)[0].figure,
        "heap peak over bare 300 KiB (≤ 1024 KiB); VmHWM peak over bare 900 KiB"
    );
    r["models"][0]["memory"]["sealed_target_met"] = json!(false);
    assert_eq!(check_memory("compare", &r)[0].verdict, Verdict::NotMet);
    r["models"][0]["memory"] = json!({});
    assert!(matches!(
        check_memory("compare", &r)[0].verdict,
        Verdict::Missing(_)
    ));
}

#[test]
fn unseal_checks_aes_gcm_and_the_load_ratio() {
    let m = |gcm: f64, ratio: f64| {
        json!({"unseal": {"model_bytes": 100_000_000, "aes_gcm_only": {"median_mb_s": gcm},
               "opener": {"median_mb_s": 400.0},
               "pipelined_unseal_plus_load_over_plain_load": ratio}})
    };
    let c = check_unseal(Some(&m(1760.0, 1.09)));
    assert_eq!(c.len(), 2);
    assert_eq!(
        (&c[0].verdict, &c[1].verdict),
        (&Verdict::Met, &Verdict::Met)
    );
    assert!(
        c[0].figure.contains("the whole opener (with SHA-384) 400"),
        "{}",
        c[0].figure
    );
    assert!(!c[1].figure.contains("trimmed"), "{}", c[1].figure);
    let c = check_unseal(Some(&m(900.0, 1.2)));
    assert_eq!(
        (&c[0].verdict, &c[1].verdict),
        (&Verdict::NotMet, &Verdict::NotMet)
    );
    // The trimmed-heap figure is shown and does not change the verdict.
    let mut cold = m(1760.0, 1.09);
    cold["unseal"]["trimmed_heap"] = json!({"pipelined_over_plain": 1.42});
    let c = check_unseal(Some(&cold));
    assert_eq!(c[1].verdict, Verdict::Met);
    assert!(
        c[1].figure
            .contains("from a trimmed heap 1.420 × (not judged)"),
        "{}",
        c[1].figure
    );
    let c = check_unseal(None);
    assert!(c.iter().all(|c| matches!(c.verdict, Verdict::Missing(_))));
}

#[test]
fn unseal_load_is_judged_on_the_alternated_pairs_when_there() {
    let m = |medians: f64, paired: f64| {
        json!({"unseal": {"model_bytes": 100_000_000, "aes_gcm_only": {"median_mb_s": 9000.0},
               "pipelined_unseal_plus_load_over_plain_load": medians,
               "paired_loads": {"pairs": 5, "median_ratio": paired,
                                "min_ratio": 0.98, "max_ratio": 1.14}}})
    };
    // The pairs decide, either way; the ratio of the medians is shown beside them.
    let c = check_unseal(Some(&m(1.12, 1.04)));
    assert_eq!(c[1].verdict, Verdict::Met);
    assert!(
        c[1].figure
            .contains("paired median 1.040 × over 5 pairs (0.980–1.140) (≤ 1.1); medians 1.120 ×"),
        "{}",
        c[1].figure
    );
    let c = check_unseal(Some(&m(1.04, 1.12)));
    assert_eq!(c[1].verdict, Verdict::NotMet);
}

#[test]
fn the_relay_is_not_judged_under_a_low_ceiling() {
    let m = |host: f64, ceiling: f64| {
        json!({"relay": {"cases": [
            {"payload_bytes": 1024, "relay_mb_per_s": 5.0},
            {"payload_bytes": 16 << 20, "relay_mb_per_s": host,
             "ceiling": {"relay_mb_per_s": ceiling}},
        ]}})
    };
    assert_eq!(
        check_relay(Some(&m(1100.0, 900.0)))[0].verdict,
        Verdict::Met
    );
    let low = check_relay(Some(&m(700.0, 620.0)));
    assert!(
        matches!(&low[0].verdict, Verdict::NotJudgeable(w) if w.contains("620 MB/s")),
        "{:?}",
        low[0]
    );
    // The host well under a ceiling that is itself under the target: the host's fault.
    assert_eq!(
        check_relay(Some(&m(400.0, 900.0)))[0].verdict,
        Verdict::NotMet
    );
    assert_eq!(
        check_relay(Some(&m(800.0, 2000.0)))[0].verdict,
        Verdict::NotMet
    );
    assert!(matches!(check_relay(None)[0].verdict, Verdict::Missing(_)));
}

#[test]
fn reports_are_read_from_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let err = Reports::load(dir.path()).err().unwrap().to_string();
    assert!(err.contains("run scripts/bench.sh first"), "{err}");

    // A file far larger than any report is refused before it is read.
    let huge = std::fs::File::create(dir.path().join("micro.json")).unwrap();
    huge.set_len(MAX_REPORT_BYTES + 1).unwrap();
    drop(huge);
    let err = Reports::load(dir.path()).err().unwrap().to_string();
    assert!(err.contains("more than any sealed-bench report"), "{err}");

    std::fs::write(dir.path().join("micro.json"), "{not json").unwrap();
    let err = Reports::load(dir.path()).err().unwrap().to_string();
    assert!(
        err.contains("micro.json is not a sealed-bench report"),
        "{err}"
    );

    let r = report(
        pinned(),
        2,
        1,
        vec![idle(16, 10.0, 100.0)],
        vec![cell(16, 10.0, 99.0, (9_800.0, 10.0, 10.0))],
    );
    std::fs::write(dir.path().join("compare-pinned.json"), r.to_string()).unwrap();
    std::fs::write(dir.path().join("micro.json"), micro(300.0, 256).to_string()).unwrap();
    let reports = Reports::load(dir.path()).unwrap();
    let all = checks(&reports);
    // The absent comparison runs are listed as missing, not skipped silently.
    let absent: Vec<&str> = all
        .iter()
        .filter(|c| c.target == "comparison run")
        .map(|c| c.scope.as_str())
        .collect();
    assert_eq!(absent, ["compare", "compare-batch", "compare-musl"]);
    let table = table(&reports, &all);
    assert!(table.contains("Machine: Test CPU, 2 cores."), "{table}");
    assert!(
        table.contains("| throughput at C ≥ cores: sealed/bare ≥ 0.95 | compare-pinned: large, 200.0 kB input | lowest 0.990 at C=16"),
        "{table}"
    );
    assert!(table.contains("**met**"), "{table}");
    let j = json(&reports, &all);
    assert_eq!(j["checks"].as_array().unwrap().len(), all.len());
    assert!(
        j["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["verdict"] == "met")
    );
}

#[test]
fn quick_runs_are_flagged() {
    let mut r = report(Value::Null, 2, 2, vec![], vec![]);
    r["settings"]["quick"] = json!(true);
    r["machine"]["bench_profile"] = json!("dev");
    let reports = Reports {
        compare: vec![("compare", Some(r))],
        micro: Some(json!({"quick": true, "machine": {"profile": "debug"}})),
    };
    let c = caveats(&reports);
    assert_eq!(c.len(), 4, "{c:?}");
    assert!(c[0].contains("compare.json is a --quick run"));
    assert_eq!(c[1], "compare.json came from a dev build, not release");
    assert_eq!(c[3], "micro.json came from a debug build, not release");
    // A release report that is not quick has none.
    let clean = Reports {
        compare: vec![("compare", Some(report(Value::Null, 2, 2, vec![], vec![])))],
        micro: None,
    };
    assert!(caveats(&clean).is_empty());
}

#[test]
fn a_run_with_an_idle_gap_is_flagged() {
    let mut r = report(Value::Null, 2, 2, vec![], vec![]);
    r["settings"]["paired_gap_ms"] = json!(5.0);
    let mut back_to_back = report(Value::Null, 2, 2, vec![], vec![]);
    back_to_back["settings"]["paired_gap_ms"] = json!(0.0);
    let reports = Reports {
        compare: vec![("compare-pinned", Some(r)), ("compare", Some(back_to_back))],
        micro: None,
    };
    let c = caveats(&reports);
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(c[0].starts_with("compare-pinned.json ran its paired rounds with --paired-gap-ms 5"));
}

#[test]
fn the_payload_sweep_is_shown_not_judged() {
    let mut r = report(
        Value::Null,
        4,
        2,
        vec![idle(1, 24.0, 40.0), idle(4, 24.0, 80.0)],
        vec![idle(1, 96.0, 10.0), idle(4, 96.0, 20.0)],
    );
    r["models"][0]["id"] = json!("echo");
    let latency = check_latency("compare", &r, None);
    assert!(
        matches!(&latency[0].verdict, Verdict::NotJudgeable(w) if w.contains("no model work")),
        "{latency:?}"
    );
    assert_eq!(latency[0].figure, "96.000 / 24.000 ms = 4.000, +72000 µs");
    assert!(check_throughput("compare", &r).is_empty());
    // The same cells under another name are judged.
    r["models"][0]["id"] = json!("large");
    assert_eq!(
        check_latency("compare", &r, None)[0].verdict,
        Verdict::NotMet
    );
    assert_eq!(check_throughput("compare", &r)[0].verdict, Verdict::NotMet);
}
