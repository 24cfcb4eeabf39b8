//! cargo-fuzz target `manager`: the body is shared with an ordinary test
//! (see `bodies/manager.rs`).
#![no_main]

mod body {
    include!("../bodies/manager.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
