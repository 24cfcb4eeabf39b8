//! Placeholder until the metrics benchmarks land.
fn main() {}
