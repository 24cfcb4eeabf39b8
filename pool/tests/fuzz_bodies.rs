//! The `idle_pool` fuzz target's body (`fuzz/bodies/idle_pool.rs`, shared with
//! `fuzz/fuzz_targets/idle_pool.rs`) as an ordinary test: over the checked-in
//! seed corpus `fuzz/corpus/idle_pool/` and deterministic pseudo-random inputs,
//! so `cargo test` on stable exercises it (see `fuzz/bodies/corpus.rs`).

mod corpus {
    include!("../../fuzz/bodies/corpus.rs");
}

mod idle_pool {
    include!("../../fuzz/bodies/idle_pool.rs");
}

#[test]
fn idle_pool_fuzz_body_over_corpus_and_random_inputs() {
    corpus::run_corpus("idle_pool", 1000, 512, idle_pool::run);
}
