//! Placeholder until the core benchmarks land.
fn main() {}
