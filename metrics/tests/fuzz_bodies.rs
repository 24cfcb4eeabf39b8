//! The `metrics` fuzz target's body (`fuzz/bodies/metrics.rs`, shared with
//! `fuzz/fuzz_targets/metrics.rs`) as an ordinary test: over the checked-in
//! seed corpus `fuzz/corpus/metrics/` and deterministic pseudo-random inputs,
//! so `cargo test` on stable exercises it (see `fuzz/bodies/corpus.rs`).

mod corpus {
    include!("../../fuzz/bodies/corpus.rs");
}

mod metrics {
    include!("../../fuzz/bodies/metrics.rs");
}

#[test]
fn metrics_fuzz_body_over_corpus_and_random_inputs() {
    corpus::run_corpus("metrics", 2000, 1024, metrics::run);
}
