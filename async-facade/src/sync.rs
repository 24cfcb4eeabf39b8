//! Sync shim: the one place the facade takes its atomics and `Arc` from.
//! The rest of the crate imports them from here, never from `std::sync`
//! directly.
//!
//! There is no loom twin: under `--cfg loom` the facade builds only its
//! dial-sharing protocol (tokio does not build under loom), which shares
//! no atomics with the rest of the crate, and whose models take loom's
//! types in their own test module (`dial_share::loom_models`).

pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
pub(crate) use std::sync::{Arc, Weak};
