//! The `manager` fuzz target's body (`fuzz/bodies/manager.rs`, shared with
//! `fuzz/fuzz_targets/manager.rs`) as an ordinary test: over the checked-in
//! seed corpus `fuzz/corpus/manager/` and deterministic pseudo-random inputs,
//! so `cargo test` on stable exercises it (see `fuzz/bodies/corpus.rs`).
#![cfg(not(loom))] // tokio does not build under loom (see .ci/loom.sh)

mod corpus {
    include!("../../fuzz/bodies/corpus.rs");
}

mod manager {
    include!("../../fuzz/bodies/manager.rs");
}

#[test]
fn manager_fuzz_body_over_corpus_and_random_inputs() {
    corpus::run_corpus("manager", 1000, 384, manager::run);
}
