//! The `status_table` fuzz target's body (`fuzz/bodies/status_table.rs`, shared with
//! `fuzz/fuzz_targets/status_table.rs`) as an ordinary test: over the checked-in
//! seed corpus `fuzz/corpus/status_table/` and deterministic pseudo-random inputs,
//! so `cargo test` on stable exercises it (see `fuzz/bodies/corpus.rs`).

mod corpus {
    include!("../../fuzz/bodies/corpus.rs");
}

mod status_table {
    include!("../../fuzz/bodies/status_table.rs");
}

#[test]
fn status_table_fuzz_body_over_corpus_and_random_inputs() {
    corpus::run_corpus("status_table", 2000, 1024, status_table::run);
}
