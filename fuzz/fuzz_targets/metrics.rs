//! cargo-fuzz target `metrics`: the body is shared with an ordinary test
//! (see `bodies/metrics.rs`).
#![no_main]

mod body {
    include!("../bodies/metrics.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
