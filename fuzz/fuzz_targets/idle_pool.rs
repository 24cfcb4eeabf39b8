//! cargo-fuzz target `idle_pool`: the body is shared with an ordinary test
//! (see `bodies/idle_pool.rs`).
#![no_main]

mod body {
    include!("../bodies/idle_pool.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
