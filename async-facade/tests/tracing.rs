//! The `tracing` events (target `connmgr`): a test subscriber sees the
//! peer and the reason of a refusal, a trim, an expiry and a dial
//! failure, and the span of each `connect`.
#![cfg(not(loom))] // tokio does not build under loom (see .ci/loom.sh)

mod common;

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use connmgr::{ConnectionManager, PeerId};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One event as the subscriber saw it.
#[derive(Clone, Debug, Default)]
struct Seen {
    target: String,
    message: String,
    fields: Vec<(String, String)>,
    /// The names of the spans it happened in, innermost first.
    spans: Vec<String>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Visit for Seen {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        let value = format!("{value:?}");
        if field.name() == "message" {
            self.message = value;
        } else {
            self.fields.push((field.name().to_owned(), value));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields
            .push((field.name().to_owned(), value.to_owned()));
    }
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Seen>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Collect {
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut seen = Seen {
            target: event.metadata().target().to_owned(),
            ..Seen::default()
        };
        event.record(&mut seen);
        if let Some(scope) = ctx.event_scope(event) {
            seen.spans = scope.map(|s| s.name().to_owned()).collect();
        }
        self.0.lock().unwrap().push(seen);
    }
}

impl Collect {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }

    /// The events whose message is `message`, about `peer`.
    fn about(&self, message: &str, peer: &PeerId) -> Vec<Seen> {
        let peer = peer.to_string();
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.message == message && e.field("peer") == Some(&peer))
            .cloned()
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_refusal_names_the_peer_and_the_reason() {
    let events = Collect::default();
    let _guard = events.install();
    let m = ConnectionManager::builder()
        .max_connections(1)
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    m.connect(peer(OK, 0)).await.unwrap();
    let p = peer(OK, 1);
    let err = m.connect(p).await.unwrap_err();
    let refused = events.about("connect refused", &p);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].target, "connmgr");
    assert_eq!(refused[0].field("reason"), Some(err.to_string().as_str()));
    assert!(err.to_string().contains("`max_connections` limit reached"));
    assert_eq!(refused[0].spans, ["connect"]);
    // Blocked, and backing off, name theirs too.
    m.block(p);
    assert_eq!(
        events
            .about("blocked: live and idle connections closed", &p)
            .len(),
        1
    );
    let err = m.connect(p).await.unwrap_err();
    assert_eq!(
        events.about("connect refused", &p)[1].field("reason"),
        Some(err.to_string().as_str())
    );
    // So does an adopt refused.
    let accepted = Conn {
        closed: m.dialer().closed.clone(),
        alive: true,
    };
    let err = m.adopt(p, accepted).await.unwrap_err();
    let refused = events.about("adopt refused", &p);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].field("reason"), Some(err.to_string().as_str()));
}

#[tokio::test(start_paused = true)]
async fn a_dial_failure_names_the_peer_and_the_reason_inside_its_connect_span() {
    let events = Collect::default();
    let _guard = events.install();
    let m = ConnectionManager::builder()
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    let f = peer(FAIL, 0);
    assert!(m.connect(f).await.is_err());
    let failed = events.about("dial failed", &f);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].field("reason"), Some("dial failed"));
    assert_eq!(failed[0].field("error"), Some("refused"));
    assert_eq!(failed[0].spans, ["connect"]);
    // The transition, with its reason, and the refusal that follows.
    let changes = events.about("status changed", &f);
    assert_eq!(
        changes.last().and_then(|e| e.field("reason")),
        Some("dial failed")
    );
    assert!(m.connect(f).await.is_err());
    let backing_off = events.about("connect refused", &f);
    assert!(backing_off[0]
        .field("reason")
        .unwrap()
        .contains("backing off"));
}

#[tokio::test(start_paused = true)]
async fn a_trim_and_an_expiry_name_the_peer_and_the_reason() {
    let events = Collect::default();
    let _guard = events.install();
    let m = ConnectionManager::builder()
        .max_connections(8)
        .watermarks(1, 4)
        .grace_period(Duration::ZERO)
        .max_lifetime(Duration::from_secs(60))
        .dialer(TestDialer::default())
        .build()
        .unwrap();
    let keep = peer(OK, 0);
    m.tag_peer(&keep, "useful", 10);
    for n in 0..3 {
        m.connect(peer(OK, n)).await.unwrap();
    }
    assert_eq!(m.trim_now().await, 2);
    for n in 1..3 {
        let trimmed = events.about("status changed", &peer(OK, n));
        assert_eq!(
            trimmed.last().and_then(|e| e.field("reason")),
            Some("trimmed")
        );
        assert_eq!(
            events
                .about("trimming closes the connection", &peer(OK, n))
                .len(),
            1
        );
    }
    assert!(
        events.about("status changed", &keep).len() == 2,
        "Connecting, Connected"
    );

    tokio::time::advance(Duration::from_secs(60)).await;
    m.disconnect(&keep).await;
    let expired = events.about("connection expired: closed instead of pooled", &keep);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].field("reason"), Some("max_lifetime"));
}
