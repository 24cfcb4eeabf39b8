//! cargo-fuzz target `status_table`: the body is shared with an ordinary test
//! (see `bodies/status_table.rs`).
#![no_main]

mod body {
    include!("../bodies/status_table.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
