//! Placeholder until the facade benchmarks land.
fn main() {}
