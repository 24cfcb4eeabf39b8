//! The manager under hostile use: boxed resolvers, abandoned watches,
//! panicking destructors, several runtimes, paused time, a tiny
//! `forget_after`. Each test is named after what it guards.

mod common;

use std::net::SocketAddr;

use common::*;
use connmgr::{ConnectionManager, ConnectionStatus::*, PeerId, TcpDialer};

/// A resolver boxed as real code stores it: the dial future, hence
/// `connect`'s, is `Send`, so `connect` can be spawned.
#[tokio::test]
async fn connect_with_a_boxed_resolver_is_spawnable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    type Resolver = Box<dyn Fn(&PeerId) -> Option<SocketAddr> + Send + Sync>;
    let resolve: Resolver = Box::new(move |_: &PeerId| Some(addr));
    let m = ConnectionManager::builder()
        .dialer(TcpDialer::new(resolve))
        .build()
        .unwrap();
    let p = peer(OK, 1);
    let connect = tokio::spawn({
        let m = m.clone();
        async move { m.connect(p).await }
    });
    let (_accepted, _) = listener.accept().await.unwrap();
    connect.await.unwrap().unwrap();
    assert_eq!(m.get_status(&p).await, Some(Connected));
}
