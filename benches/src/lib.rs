//! Shared helpers for the connmgr criterion benchmarks (key generation,
//! allocation counting). The benchmarks themselves live in `benches/`.
