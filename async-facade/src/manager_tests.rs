//! Unit tests of the manager that need its internals.

use super::*;
use crate::sync::Ordering;

/// A peer's record can be freed (forgotten, nothing held) while one of
/// its connections is still on its way into the pool, and made again
/// later. The new record's generations must differ from every one the
/// old record had, or that connection could match a later one and be
/// handed out after a Failed it predates.
#[tokio::test(flavor = "current_thread")]
async fn a_record_made_again_never_reuses_a_generation() {
    let manager = ConnectionManager::new(4);
    let inner = &manager.inner;
    let peer = PeerId::from_bytes([7; 32]);
    let key = inner.peers.key(peer);
    let generation = || {
        inner
            .peers
            .at(&key, |map| map.get(&peer).map(|r| r.generation))
            .expect("the peer has a record")
    };
    let mut seen = Vec::new();
    for _ in 0..3 {
        manager.connect(peer).await.unwrap();
        let live = generation();
        manager.update_status(peer, ConnectionStatus::Failed).await;
        let failed = generation();
        for g in [live, failed] {
            assert!(!seen.contains(&g), "generation {g} given twice: {seen:?}");
            seen.push(g);
        }
        // Free the record, as forgetting the peer does once nothing
        // holds it (the Failed closed its connection).
        let freed = inner.peers.at(&key, |map| map.remove(&peer));
        assert!(freed.is_some_and(|r| r.live.is_none()));
        inner.records.fetch_sub(1, Ordering::Relaxed);
    }
}
