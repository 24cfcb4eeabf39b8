//! The `metrics` crate facade, checked with a tiny recorder.
//!
//! Deliberately not `#![cfg(feature = "metrics")]`: the crate's
//! dev-dependency on itself turns the feature on for every test build, so
//! `cargo test --workspace` (CI) runs this file, although no workspace
//! member enables the feature.

use connmgr_metrics::{DialOutcome, FacadeExporter, Gauges, ManualClock, Metrics, MetricsConfig};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Default)]
struct State {
    counters: BTreeMap<String, u64>,
    gauges: BTreeMap<String, f64>,
    histograms: BTreeMap<String, Vec<f64>>,
    described: Vec<String>,
}

#[derive(Debug, Default, Clone)]
struct TestRecorder(Arc<Mutex<State>>);

struct Handle(Arc<Mutex<State>>, String);

fn key_string(key: &Key) -> String {
    let labels: Vec<_> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    if labels.is_empty() {
        key.name().to_owned()
    } else {
        format!("{}{{{}}}", key.name(), labels.join(","))
    }
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        *self
            .0
            .lock()
            .unwrap()
            .counters
            .entry(self.1.clone())
            .or_default() += value;
    }
    fn absolute(&self, value: u64) {
        self.0
            .lock()
            .unwrap()
            .counters
            .insert(self.1.clone(), value);
    }
}

impl GaugeFn for Handle {
    fn increment(&self, value: f64) {
        *self
            .0
            .lock()
            .unwrap()
            .gauges
            .entry(self.1.clone())
            .or_default() += value;
    }
    fn decrement(&self, value: f64) {
        *self
            .0
            .lock()
            .unwrap()
            .gauges
            .entry(self.1.clone())
            .or_default() -= value;
    }
    fn set(&self, value: f64) {
        self.0.lock().unwrap().gauges.insert(self.1.clone(), value);
    }
}

impl HistogramFn for Handle {
    fn record(&self, value: f64) {
        self.0
            .lock()
            .unwrap()
            .histograms
            .entry(self.1.clone())
            .or_default()
            .push(value);
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.0
            .lock()
            .unwrap()
            .described
            .push(key.as_str().to_owned());
    }
    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.0
            .lock()
            .unwrap()
            .described
            .push(key.as_str().to_owned());
    }
    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.0
            .lock()
            .unwrap()
            .described
            .push(key.as_str().to_owned());
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Handle(self.0.clone(), key_string(key))))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Handle(self.0.clone(), key_string(key))))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Handle(self.0.clone(), key_string(key))))
    }
}

#[test]
fn exporter_forwards_counters_gauges_and_new_latencies() {
    let recorder = TestRecorder::default();
    let clock = ManualClock::new();
    let m = Metrics::with_config(MetricsConfig::default(), clock.clone()).unwrap();
    let mut exporter = FacadeExporter::new();
    for _ in 0..4 {
        m.record_message(Duration::from_millis(2));
    }
    m.record_bytes(10, 20);
    m.record_dial(DialOutcome::Failed);
    m.record_dial(DialOutcome::PoolHit);
    clock.advance(Duration::from_secs(2));
    let gauges = Gauges {
        connections: 5,
        memory_usage: 1000,
        ..Gauges::default()
    };

    metrics::with_local_recorder(&recorder, || exporter.export(&m.snapshot(), &gauges));
    {
        let state = recorder.0.lock().unwrap();
        assert_eq!(state.counters["connmgr_messages_total"], 4);
        assert_eq!(state.counters["connmgr_bytes_sent_total"], 10);
        assert_eq!(state.counters["connmgr_bytes_received_total"], 20);
        assert_eq!(state.counters["connmgr_dials_total{outcome=failed}"], 1);
        assert_eq!(state.counters["connmgr_dials_total{outcome=ok}"], 0);
        assert_eq!(state.counters["connmgr_pool_hits_total"], 1);
        assert_eq!(state.gauges["connmgr_connections"], 5.0);
        assert_eq!(state.gauges["connmgr_memory_bytes"], 1000.0);
        assert_eq!(state.gauges["connmgr_messages_per_second"], 2.0);
        let latencies = &state.histograms["connmgr_message_latency_seconds"];
        assert_eq!(latencies.len(), 4);
        assert!(
            latencies.iter().all(|&v| (v - 0.002).abs() <= 0.002 / 32.0),
            "{latencies:?}"
        );
        assert!(state
            .described
            .iter()
            .any(|d| d == "connmgr_message_latency_seconds"));
    }

    // A second export forwards only the latencies recorded since.
    m.record_message(Duration::from_millis(30));
    metrics::with_local_recorder(&recorder, || exporter.export(&m.snapshot(), &gauges));
    let state = recorder.0.lock().unwrap();
    assert_eq!(state.counters["connmgr_messages_total"], 5);
    let latencies = &state.histograms["connmgr_message_latency_seconds"];
    assert_eq!(latencies.len(), 5);
    assert!((latencies[4] - 0.030).abs() <= 0.030 / 32.0);
}
