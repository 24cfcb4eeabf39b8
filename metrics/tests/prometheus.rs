//! The Prometheus export, checked line by line against the text exposition
//! format 0.0.4 by a small validating parser.

use connmgr_metrics::{prometheus_text, DialOutcome, Gauges, ManualClock, Metrics, MetricsConfig};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn is_metric_name(s: &str) -> bool {
    // [a-zA-Z_:][a-zA-Z0-9_:]*
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    // [a-zA-Z_][a-zA-Z0-9_]*, not reserved (__ prefix)
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

fn parse_value(s: &str) -> f64 {
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => s.parse().unwrap_or_else(|_| panic!("bad value {s:?}")),
    }
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad labels {s:?}"));
        assert!(is_label_name(name), "label name {name:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => panic!("bad escape {other:?} in {s:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {s:?}"),
            }
        };
        labels.push((name.to_owned(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    let mut names: Vec<_> = labels.iter().map(|(n, _)| n).collect();
    names.dedup();
    assert_eq!(names.len(), labels.len(), "duplicate label in {s:?}");
    labels
}

/// Parses and validates an exposition; returns families by name (type, samples).
fn parse(text: &str) -> BTreeMap<String, (String, Vec<Sample>)> {
    assert!(text.ends_with('\n'), "ends with a line feed");
    let mut families: BTreeMap<String, (String, Vec<Sample>)> = BTreeMap::new();
    let mut help: HashMap<String, String> = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        assert!(!line.is_empty(), "no blank lines");
        if let Some(rest) = line.strip_prefix("# ") {
            let (kind, rest) = rest.split_once(' ').unwrap();
            let (name, arg) = rest.split_once(' ').unwrap();
            assert!(is_metric_name(name), "{name:?}");
            match kind {
                "HELP" => {
                    assert!(
                        help.insert(name.to_owned(), arg.to_owned()).is_none(),
                        "one HELP per {name}"
                    );
                    assert!(
                        !families.contains_key(name),
                        "HELP for {name} before its TYPE and samples"
                    );
                }
                "TYPE" => {
                    assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg));
                    assert!(help.contains_key(name), "HELP before TYPE for {name}");
                    assert!(
                        !families.contains_key(name),
                        "one TYPE per {name}, before samples"
                    );
                    families.insert(name.to_owned(), (arg.to_owned(), Vec::new()));
                    current = Some(name.to_owned());
                }
                other => panic!("unknown comment {other}"),
            }
            continue;
        }
        assert!(
            !line.starts_with('#'),
            "comments are '# HELP' or '# TYPE': {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, parse_labels(labels.strip_suffix('}').unwrap())),
            None => (series, Vec::new()),
        };
        assert!(is_metric_name(name), "{name:?}");
        let family = current.clone().expect("samples after a TYPE line");
        let (kind, samples) = families.get_mut(&family).unwrap();
        let allowed: Vec<String> = if kind == "histogram" {
            ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{family}{s}"))
                .collect()
        } else {
            vec![family.clone()]
        };
        assert!(
            allowed.iter().any(|a| a == name),
            "sample {name} belongs to family {family}"
        );
        if kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name} ends in _total");
        }
        let value = parse_value(value);
        if kind == "counter" || (kind == "histogram" && !name.ends_with("_sum")) {
            assert!(
                value >= 0.0 && value.fract() == 0.0,
                "{name} is a non-negative count"
            );
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    // Histogram rules: buckets with le, ascending, cumulative, +Inf == _count.
    for (family, (kind, samples)) in &families {
        if kind != "histogram" {
            continue;
        }
        let buckets: Vec<_> = samples
            .iter()
            .filter(|s| s.name.ends_with("_bucket"))
            .collect();
        let mut last_le = f64::NEG_INFINITY;
        let mut last_count = 0.0;
        for b in &buckets {
            assert_eq!(b.labels.len(), 1);
            assert_eq!(b.labels[0].0, "le");
            let le = parse_value(&b.labels[0].1);
            assert!(le > last_le, "{family}: le ascending");
            assert!(b.value >= last_count, "{family}: buckets cumulative");
            last_le = le;
            last_count = b.value;
        }
        assert_eq!(last_le, f64::INFINITY, "{family}: last bucket is +Inf");
        let count = samples
            .iter()
            .find(|s| s.name.ends_with("_count"))
            .unwrap()
            .value;
        assert_eq!(last_count, count, "{family}: +Inf bucket == _count");
        assert!(samples.iter().any(|s| s.name.ends_with("_sum")));
    }
    families
}

fn value(
    families: &BTreeMap<String, (String, Vec<Sample>)>,
    name: &str,
    label: Option<&str>,
) -> f64 {
    let (_, samples) = families
        .iter()
        .find(|(f, _)| name.starts_with(f.as_str()))
        .unwrap()
        .1;
    samples
        .iter()
        .find(|s| s.name == name && label.is_none_or(|l| s.labels.iter().any(|(_, v)| v == l)))
        .unwrap_or_else(|| panic!("{name} {label:?}"))
        .value
}

#[test]
fn export_is_valid_and_carries_the_snapshot() {
    let clock = ManualClock::new();
    let m = Metrics::with_config(MetricsConfig::default(), clock.clone()).unwrap();
    for (i, ms) in [1u64, 2, 3, 50, 700, 2_000].iter().enumerate() {
        for _ in 0..=i {
            m.record_message(Duration::from_millis(*ms));
        }
    }
    m.record_message(Duration::from_nanos(1024)); // just above le="0.000001023"
    m.record_bytes(100, 2_000);
    for outcome in DialOutcome::ALL {
        m.record_dial(outcome);
    }
    m.record_dial(DialOutcome::TimedOut);
    clock.advance(Duration::from_secs(2));
    let snapshot = m.snapshot();
    let gauges = Gauges {
        connections: 3,
        connecting: 1,
        idle: 2,
        tracked_peers: 9,
        memory_usage: 4096,
    };
    let text = prometheus_text(&snapshot, &gauges);
    let families = parse(&text);

    for (name, kind) in [
        ("connmgr_connections", "gauge"),
        ("connmgr_messages_total", "counter"),
        ("connmgr_message_latency_seconds", "histogram"),
        ("connmgr_bytes_sent_total", "counter"),
        ("connmgr_bytes_received_total", "counter"),
        ("connmgr_dials_total", "counter"),
        ("connmgr_pool_hits_total", "counter"),
        ("connmgr_pool_misses_total", "counter"),
        ("connmgr_messages_per_second", "gauge"),
        ("connmgr_memory_bytes", "gauge"),
    ] {
        assert_eq!(families[name].0, kind, "{name}");
    }
    assert_eq!(value(&families, "connmgr_connections", None), 3.0);
    assert_eq!(value(&families, "connmgr_memory_bytes", None), 4096.0);
    assert_eq!(value(&families, "connmgr_messages_total", None), 22.0);
    assert_eq!(value(&families, "connmgr_messages_per_second", None), 11.0);
    assert_eq!(
        value(&families, "connmgr_bytes_received_total", None),
        2000.0
    );
    assert_eq!(
        value(&families, "connmgr_dials_total", Some("timed_out")),
        2.0
    );
    assert_eq!(value(&families, "connmgr_dials_total", Some("ok")), 1.0);
    assert_eq!(value(&families, "connmgr_pool_misses_total", None), 1.0);
    let h = "connmgr_message_latency_seconds";
    assert_eq!(value(&families, &format!("{h}_count"), None), 22.0);
    assert_eq!(
        value(&families, &format!("{h}_bucket"), Some("0.000001023")),
        0.0
    );
    assert_eq!(
        value(&families, &format!("{h}_bucket"), Some("0.000004095")),
        1.0
    );
    // 1 ms < 2^20 ns = 1.048576 ms; 2 ms, 3 ms below 2^22 ns = 4.194304 ms
    // (each `le` is the inclusive bound one nanosecond below the power).
    assert_eq!(
        value(&families, &format!("{h}_bucket"), Some("0.001048575")),
        2.0
    );
    assert_eq!(
        value(&families, &format!("{h}_bucket"), Some("0.004194303")),
        7.0
    );
    assert_eq!(
        value(&families, &format!("{h}_bucket"), Some("1.073741823")),
        16.0
    );
    let sum = value(&families, &format!("{h}_sum"), None);
    let expected =
        (1.0 + 2.0 * 2.0 + 3.0 * 3.0 + 50.0 * 4.0 + 700.0 * 5.0 + 2000.0 * 6.0) / 1e3 + 1024e-9;
    assert!((sum - expected).abs() < 1e-9, "{sum} vs {expected}");
}

#[test]
fn an_empty_aggregator_exports_valid_zeroes() {
    let text = prometheus_text(&Metrics::new().snapshot(), &Gauges::default());
    let families = parse(&text);
    assert_eq!(families.len(), 14);
    assert_eq!(
        value(&families, "connmgr_message_latency_seconds_count", None),
        0.0
    );
}

#[test]
fn the_validator_rejects_what_it_should() {
    let bad = [
        "connmgr_x 1\n",                                                            // no TYPE
        "# TYPE a gauge\na 1\n",                                                    // no HELP
        "# HELP a x\n# TYPE a counter\na 1\n",                                      // counter w/o _total
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n",
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\nh_count 1\n",
        "# HELP a x\n# TYPE a gauge\na{0bad=\"1\"} 1\n",
        "# HELP 9a x\n# TYPE 9a gauge\n9a 1\n",
    ];
    for text in bad {
        assert!(
            std::panic::catch_unwind(|| parse(text)).is_err(),
            "accepted {text:?}"
        );
    }
}

/// Decimal seconds as written by the export (`0.000001023`), in whole
/// nanoseconds, exactly.
fn nanos_of(le: &str) -> u128 {
    let (secs, frac) = le.split_once('.').unwrap_or((le, ""));
    assert!(frac.len() <= 9, "{le}: finer than a nanosecond");
    let frac = format!("{frac:0<9}");
    secs.parse::<u128>().unwrap() * 1_000_000_000 + frac.parse::<u128>().unwrap()
}

/// `le` is an inclusive upper bound: each bucket counts the latencies at or
/// below it. Latencies on and next to every power of two of nanoseconds
/// (the internal bucket edges) must land on the right side of every bound;
/// a latency of exactly 2^10 ns belongs in `le="0.000001024"`.
#[test]
fn every_le_bucket_counts_the_latencies_at_or_below_its_bound() {
    let m = Metrics::with_config(MetricsConfig::default(), ManualClock::new()).unwrap();
    let mut latencies = Vec::new();
    for power in 8..=38u32 {
        let edge = 1u64 << power;
        latencies.extend([edge - 1, edge, edge + 1]);
    }
    for &ns in &latencies {
        m.record_message(Duration::from_nanos(ns));
    }
    let text = prometheus_text(&m.snapshot(), &Gauges::default());
    let families = parse(&text);
    let (_, samples) = &families["connmgr_message_latency_seconds"];
    let mut finite = 0;
    for bucket in samples.iter().filter(|s| s.name.ends_with("_bucket")) {
        let le = &bucket.labels[0].1;
        if le == "+Inf" {
            assert_eq!(bucket.value, latencies.len() as f64);
            continue;
        }
        let bound = nanos_of(le);
        let at_or_below = latencies
            .iter()
            .filter(|&&ns| u128::from(ns) <= bound)
            .count();
        assert_eq!(bucket.value, at_or_below as f64, "le=\"{le}\"");
        finite += 1;
    }
    assert_eq!(finite, 14);
}
