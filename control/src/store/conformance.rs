//! The behaviour every [`Store`] backend must have, as checks any backend's
//! tests can run: `check(store).await` panics with a message on the first
//! difference.
//!
//! Each check writes only under its own key prefix and asserts revisions
//! relative to what it saw first, so it works on a store that already holds
//! data (an etcd cluster). It does need a store nobody else writes to while
//! it runs: "a failed transaction does not move the revision" cannot be
//! told apart from someone else's write.
//!
//! [`ALL`] lists the checks that need nothing but a store;
//! [`watch_from_compacted_revision_fails`] also needs the backend's way to
//! compact.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::{
    Compare, Event, EventKind, KeyValue, Op, Revision, Store, StoreError, Txn, WatchBatch,
    WatchStream,
};

/// How long a check waits for a watch batch before it fails (instead of hanging).
const WATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A check, boxed so a list of them can be run in a loop.
pub type Check = fn(Arc<dyn Store>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Every check that needs only a store, by name. Run each on a fresh store.
pub const ALL: &[(&str, Check)] = &[
    ("get_put_delete", |s| Box::pin(get_put_delete(s))),
    ("range_prefix_order_and_isolation", |s| {
        Box::pin(range_prefix_order_and_isolation(s))
    }),
    ("cas_success_and_failure", |s| {
        Box::pin(cas_success_and_failure(s))
    }),
    ("multi_key_atomicity", |s| Box::pin(multi_key_atomicity(s))),
    ("create_and_mod_revisions", |s| {
        Box::pin(create_and_mod_revisions(s))
    }),
    ("last_write_per_key_wins", |s| {
        Box::pin(last_write_per_key_wins(s))
    }),
    ("watch_replays_then_live", |s| {
        Box::pin(watch_replays_then_live(s))
    }),
    ("watch_from_now", |s| Box::pin(watch_from_now(s))),
    ("watch_prefix_filtering", |s| {
        Box::pin(watch_prefix_filtering(s))
    }),
    ("watch_delivers_deletes", |s| {
        Box::pin(watch_delivers_deletes(s))
    }),
    ("watch_concurrent_writers_in_order", |s| {
        Box::pin(watch_concurrent_writers_in_order(s))
    }),
    ("concurrent_cas_one_winner", |s| {
        Box::pin(concurrent_cas_one_winner(s))
    }),
];

/// Put `key` unconditionally; the new revision.
pub async fn put(store: &dyn Store, key: &str, value: &[u8]) -> Revision {
    let r = store
        .txn(Txn::new().then(Op::Put(key.into(), value.to_vec())))
        .await
        .expect("put");
    assert!(r.succeeded, "an unconditional put must succeed");
    r.revision
}

/// Delete `key` unconditionally; the revision after.
pub async fn delete(store: &dyn Store, key: &str) -> Revision {
    let r = store
        .txn(Txn::new().then(Op::Delete(key.into())))
        .await
        .expect("delete");
    assert!(r.succeeded, "an unconditional delete must succeed");
    r.revision
}

/// The next batch of a watch; fails the check on an error, the end of the
/// stream, or silence for [`WATCH_TIMEOUT`].
pub async fn next_batch(watch: &mut WatchStream) -> WatchBatch {
    match tokio::time::timeout(WATCH_TIMEOUT, watch.next()).await {
        Ok(Some(Ok(batch))) => batch,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch batch within {WATCH_TIMEOUT:?}"),
    }
}

/// (kind, key, value) of each event, for compact assertions.
fn summary(batch: &WatchBatch) -> Vec<(EventKind, String, Vec<u8>)> {
    batch
        .events
        .iter()
        .map(|e| (e.kind.clone(), e.kv.key.clone(), e.kv.value.clone()))
        .collect()
}

fn put_ev(key: &str, value: &[u8]) -> (EventKind, String, Vec<u8>) {
    (EventKind::Put, key.into(), value.to_vec())
}

fn del_ev(key: &str) -> (EventKind, String, Vec<u8>) {
    (EventKind::Delete, key.into(), Vec::new())
}

/// Single-key reads and writes, and the revision moving once per write.
pub async fn get_put_delete(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let k = "conf/gpd/k";
    assert_eq!(s.get(k).await.expect("get"), None, "fresh key");
    let before = s.revision().await.expect("revision");

    let r1 = put(s, k, b"one").await;
    assert_eq!(r1, before + 1, "a write takes the next revision");
    assert_eq!(s.revision().await.expect("revision"), r1);
    assert_eq!(
        s.get(k).await.expect("get"),
        Some(KeyValue {
            key: k.into(),
            value: b"one".to_vec(),
            create_revision: r1,
            mod_revision: r1,
        })
    );

    let r2 = put(s, k, b"two").await;
    assert_eq!(r2, r1 + 1);
    let kv = s.get(k).await.expect("get").expect("key after overwrite");
    assert_eq!(kv.value, b"two");

    let r3 = delete(s, k).await;
    assert_eq!(r3, r2 + 1, "a delete takes a revision");
    assert_eq!(s.get(k).await.expect("get"), None, "deleted");

    // Deleting what is not there changes nothing, so takes no revision.
    let r4 = delete(s, k).await;
    assert_eq!(r4, r3, "a no-op delete must not move the revision");
    assert_eq!(s.revision().await.expect("revision"), r3);

    // Empty values are values.
    put(s, k, b"").await;
    let kv = s.get(k).await.expect("get").expect("empty value is stored");
    assert!(kv.value.is_empty());
}

/// `range` returns exactly the keys under the prefix, in byte order.
pub async fn range_prefix_order_and_isolation(store: Arc<dyn Store>) {
    let s = store.as_ref();
    for key in [
        "conf/rng/a/2",
        "conf/rng/ab",
        "conf/rng/a/10",
        "conf/rng/b",
        "conf/rng/a/1",
        "conf/rng/a",
    ] {
        put(s, key, key.as_bytes()).await;
    }
    let (kvs, rev) = s.range("conf/rng/a/").await.expect("range");
    let keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        ["conf/rng/a/1", "conf/rng/a/10", "conf/rng/a/2"],
        "prefix a/ must not return ab or a"
    );
    assert_eq!(
        rev,
        s.revision().await.expect("revision"),
        "range reports the revision it read"
    );
    for kv in &kvs {
        assert_eq!(kv.value, kv.key.as_bytes(), "values travel with their keys");
    }

    let (all, _) = s.range("conf/rng/").await.expect("range");
    let keys: Vec<&str> = all.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "conf/rng/a",
            "conf/rng/a/1",
            "conf/rng/a/10",
            "conf/rng/a/2",
            "conf/rng/ab",
            "conf/rng/b"
        ]
    );

    let (none, _) = s.range("conf/rng/zz").await.expect("range");
    assert!(none.is_empty());
    let (exact, _) = s.range("conf/rng/b").await.expect("range");
    assert_eq!(exact.len(), 1, "a prefix equal to a key returns that key");
}

/// Compare-and-swap: success applies, failure changes nothing at all.
pub async fn cas_success_and_failure(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let k = "conf/cas/k";
    let other = "conf/cas/other";

    // ModRevision 0 = create only if absent.
    let create = Txn::new()
        .when(Compare::ModRevision(k.into(), 0))
        .then(Op::Put(k.into(), b"v1".to_vec()));
    let r = s.txn(create.clone()).await.expect("txn");
    assert!(r.succeeded, "create-if-absent on an absent key");
    let r1 = r.revision;
    let r = s.txn(create).await.expect("txn");
    assert!(!r.succeeded, "create-if-absent on a present key must fail");
    assert_eq!(
        r.revision, r1,
        "a failed txn reports the unchanged revision"
    );

    // Swap with the right mod revision.
    let r = s
        .txn(
            Txn::new()
                .when(Compare::ModRevision(k.into(), r1))
                .then(Op::Put(k.into(), b"v2".to_vec())),
        )
        .await
        .expect("txn");
    assert!(r.succeeded);
    let r2 = r.revision;
    assert_eq!(r2, r1 + 1);

    // Swap with a stale mod revision: nothing happens, anywhere.
    let r = s
        .txn(
            Txn::new()
                .when(Compare::ModRevision(k.into(), r1))
                .then(Op::Put(k.into(), b"v3".to_vec()))
                .then(Op::Put(other.into(), b"x".to_vec()))
                .then(Op::Delete(k.into())),
        )
        .await
        .expect("txn");
    assert!(!r.succeeded, "stale mod revision must fail");
    assert_eq!(r.revision, r2);
    assert_eq!(
        s.revision().await.expect("revision"),
        r2,
        "a failed txn must not move the revision"
    );
    let kv = s.get(k).await.expect("get").expect("key still there");
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision),
        (b"v2".as_slice(), r2)
    );
    assert_eq!(
        s.get(other).await.expect("get"),
        None,
        "no write of a failed txn applies"
    );

    // Exists.
    let r = s
        .txn(
            Txn::new()
                .when(Compare::Exists("conf/cas/missing".into()))
                .then(Op::Put(other.into(), b"x".to_vec())),
        )
        .await
        .expect("txn");
    assert!(!r.succeeded, "Exists on a missing key fails");
    let r = s
        .txn(
            Txn::new()
                .when(Compare::Exists(k.into()))
                .when(Compare::ModRevision(other.into(), 0))
                .then(Op::Put(other.into(), b"x".to_vec())),
        )
        .await
        .expect("txn");
    assert!(r.succeeded, "all conditions hold");

    // One failing condition among holding ones fails the whole txn.
    let r = s
        .txn(
            Txn::new()
                .when(Compare::Exists(k.into()))
                .when(Compare::ModRevision(other.into(), 0))
                .then(Op::Delete(k.into())),
        )
        .await
        .expect("txn");
    assert!(!r.succeeded, "conditions are ANDed");
    assert!(s.get(k).await.expect("get").is_some());
}

/// A transaction's writes land together at one revision, as one watch batch.
pub async fn multi_key_atomicity(store: Arc<dyn Store>) {
    let s = store.as_ref();
    put(s, "conf/atom/old", b"old").await;
    let start = s.revision().await.expect("revision");
    let mut watch = s.watch("conf/atom/", start + 1).await.expect("watch");

    let r = s
        .txn(
            Txn::new()
                .then(Op::Put("conf/atom/a".into(), b"a".to_vec()))
                .then(Op::Put("conf/atom/b".into(), b"b".to_vec()))
                .then(Op::Put("conf/atom/c".into(), b"c".to_vec()))
                .then(Op::Delete("conf/atom/old".into())),
        )
        .await
        .expect("txn");
    assert!(r.succeeded);
    assert_eq!(r.revision, start + 1, "one transaction, one revision");
    for key in ["conf/atom/a", "conf/atom/b", "conf/atom/c"] {
        let kv = s.get(key).await.expect("get").expect("written");
        assert_eq!(kv.mod_revision, r.revision, "{key} at the txn's revision");
    }
    assert_eq!(s.get("conf/atom/old").await.expect("get"), None);

    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.revision, r.revision);
    assert_eq!(
        summary(&batch),
        [
            put_ev("conf/atom/a", b"a"),
            put_ev("conf/atom/b", b"b"),
            put_ev("conf/atom/c", b"c"),
            del_ev("conf/atom/old")
        ],
        "the txn's writes arrive together, in order"
    );

    // A failing txn with many writes applies none of them.
    let r = s
        .txn(
            Txn::new()
                .when(Compare::ModRevision("conf/atom/a".into(), 1_000_000_000))
                .then(Op::Put("conf/atom/d".into(), b"d".to_vec()))
                .then(Op::Delete("conf/atom/a".into())),
        )
        .await
        .expect("txn");
    assert!(!r.succeeded);
    assert_eq!(s.get("conf/atom/d").await.expect("get"), None);
    assert!(s.get("conf/atom/a").await.expect("get").is_some());
    let (kvs, rev) = s.range("conf/atom/").await.expect("range");
    assert_eq!(kvs.len(), 3);
    assert_eq!(rev, start + 1);
}

/// `create_revision` stays until the key is deleted; `mod_revision` follows writes.
pub async fn create_and_mod_revisions(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let k = "conf/revs/k";
    let r1 = put(s, k, b"1").await;
    put(s, "conf/revs/unrelated", b"x").await;
    let r3 = put(s, k, b"2").await;
    let kv = s.get(k).await.expect("get").expect("present");
    assert_eq!((kv.create_revision, kv.mod_revision), (r1, r3));

    let unrelated = s
        .get("conf/revs/unrelated")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        unrelated.mod_revision,
        r1 + 1,
        "other writes leave a key's revisions alone"
    );

    delete(s, k).await;
    let r5 = put(s, k, b"3").await;
    let kv = s.get(k).await.expect("get").expect("present");
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (r5, r5),
        "a re-created key starts over"
    );

    let (kvs, _) = s.range(k).await.expect("range");
    assert_eq!(kvs, [kv], "range returns the same revisions as get");
}

/// When a transaction names a key twice, its last write applies.
pub async fn last_write_per_key_wins(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let k = "conf/dup/k";
    let start = s.revision().await.expect("revision");
    let mut watch = s.watch("conf/dup/", start + 1).await.expect("watch");
    let r = s
        .txn(
            Txn::new()
                .then(Op::Put(k.into(), b"first".to_vec()))
                .then(Op::Put(k.into(), b"last".to_vec())),
        )
        .await
        .expect("txn");
    assert!(r.succeeded);
    assert_eq!(
        s.get(k).await.expect("get").expect("present").value,
        b"last"
    );
    let batch = next_batch(&mut watch).await;
    assert_eq!(summary(&batch), [put_ev(k, b"last")], "one event per key");

    let r = s
        .txn(
            Txn::new()
                .then(Op::Put(k.into(), b"again".to_vec()))
                .then(Op::Delete(k.into())),
        )
        .await
        .expect("txn");
    assert!(r.succeeded);
    assert_eq!(
        s.get(k).await.expect("get"),
        None,
        "put then delete: deleted"
    );
    let batch = next_batch(&mut watch).await;
    assert_eq!(summary(&batch), [del_ev(k)]);
}

/// A watch from an old revision replays exactly the changes since, then
/// delivers live ones, with no gap and no duplicate.
pub async fn watch_replays_then_live(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let p = "conf/replay/";
    let r1 = put(s, "conf/replay/a", b"1").await;
    let r2 = put(s, "conf/replay/b", b"2").await;
    let r3 = delete(s, "conf/replay/a").await;

    let mut from_start = s.watch(p, r1).await.expect("watch");
    let mut from_middle = s.watch(p, r2).await.expect("watch");

    let b = next_batch(&mut from_start).await;
    assert_eq!(
        (b.revision, summary(&b)),
        (r1, vec![put_ev("conf/replay/a", b"1")])
    );
    let b = next_batch(&mut from_start).await;
    assert_eq!(
        (b.revision, summary(&b)),
        (r2, vec![put_ev("conf/replay/b", b"2")])
    );
    let b = next_batch(&mut from_start).await;
    assert_eq!(
        (b.revision, summary(&b)),
        (r3, vec![del_ev("conf/replay/a")])
    );

    let b = next_batch(&mut from_middle).await;
    assert_eq!(b.revision, r2, "replay starts at the asked revision");

    let r4 = put(s, "conf/replay/c", b"3").await;
    let r5 = put(s, "conf/replay/c", b"4").await;
    let b = next_batch(&mut from_start).await;
    assert_eq!(
        (b.revision, summary(&b)),
        (r4, vec![put_ev("conf/replay/c", b"3")]),
        "then live"
    );
    let b = next_batch(&mut from_start).await;
    assert_eq!(b.revision, r5);
    let kv: &Event = &b.events[0];
    assert_eq!(
        (kv.kv.create_revision, kv.kv.mod_revision),
        (r4, r5),
        "events carry revisions"
    );

    let revs: Vec<Revision> = [
        next_batch(&mut from_middle).await.revision,
        next_batch(&mut from_middle).await.revision,
        next_batch(&mut from_middle).await.revision,
    ]
    .into();
    assert_eq!(revs, [r3, r4, r5]);

    // A watch from the next revision sees only what comes after.
    let mut from_next = s.watch(p, r5 + 1).await.expect("watch");
    let r6 = put(s, "conf/replay/d", b"5").await;
    assert_eq!(next_batch(&mut from_next).await.revision, r6);
}

/// `from` = 0 delivers only changes made after the watch started.
pub async fn watch_from_now(store: Arc<dyn Store>) {
    let s = store.as_ref();
    put(s, "conf/now/before", b"x").await;
    let mut watch = s.watch("conf/now/", 0).await.expect("watch");
    let r = put(s, "conf/now/after", b"y").await;
    let b = next_batch(&mut watch).await;
    assert_eq!(
        (b.revision, summary(&b)),
        (r, vec![put_ev("conf/now/after", b"y")])
    );
}

/// A watch sees only keys under its prefix; batches with nothing under it
/// are not delivered.
pub async fn watch_prefix_filtering(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let mut watch = s.watch("conf/filt/a/", 0).await.expect("watch");
    put(s, "conf/filt/ab", b"sibling").await;
    put(s, "conf/filt/a", b"parent").await;
    let r = s
        .txn(
            Txn::new()
                .then(Op::Put("conf/filt/b".into(), b"other".to_vec()))
                .then(Op::Put("conf/filt/a/1".into(), b"mine".to_vec())),
        )
        .await
        .expect("txn");
    let b = next_batch(&mut watch).await;
    assert_eq!(
        (b.revision, summary(&b)),
        (r.revision, vec![put_ev("conf/filt/a/1", b"mine")]),
        "only keys under the prefix, and no empty batches"
    );
}

/// Deletes arrive as events with an empty value and the delete's revision;
/// deleting an absent key makes no event.
pub async fn watch_delivers_deletes(store: Arc<dyn Store>) {
    let s = store.as_ref();
    put(s, "conf/del/k", b"v").await;
    let mut watch = s.watch("conf/del/", 0).await.expect("watch");
    let rd = delete(s, "conf/del/k").await;
    delete(s, "conf/del/never").await;
    let rm = put(s, "conf/del/marker", b"m").await;

    let b = next_batch(&mut watch).await;
    assert_eq!(b.revision, rd);
    assert_eq!(b.events.len(), 1);
    let e = &b.events[0];
    assert_eq!(e.kind, EventKind::Delete);
    assert_eq!(e.kv.key, "conf/del/k");
    assert!(e.kv.value.is_empty());
    assert_eq!(
        e.kv.mod_revision, rd,
        "a delete event carries the delete's revision"
    );

    let b = next_batch(&mut watch).await;
    assert_eq!(b.revision, rm, "deleting an absent key makes no event");
}

/// Concurrent writers: the watch sees every revision once, in order.
pub async fn watch_concurrent_writers_in_order(store: Arc<dyn Store>) {
    const WRITERS: usize = 8;
    const WRITES: usize = 10;
    let start = store.revision().await.expect("revision");
    let mut watch = store.watch("conf/conc/", start + 1).await.expect("watch");
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..WRITES {
                put(store.as_ref(), &format!("conf/conc/{w}/{i}"), b"x").await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    let total = (WRITERS * WRITES) as u64;
    for n in 1..=total {
        let b = next_batch(&mut watch).await;
        assert_eq!(
            b.revision,
            start + n,
            "revisions arrive in order, without gaps or repeats"
        );
        assert_eq!(b.events.len(), 1);
    }
    assert_eq!(store.revision().await.expect("revision"), start + total);
}

/// Many tasks compare-and-swap the same key from the same revision: exactly one wins.
pub async fn concurrent_cas_one_winner(store: Arc<dyn Store>) {
    const CONTENDERS: usize = 16;
    let k = "conf/race/k";
    let seen = put(store.as_ref(), k, b"start").await;
    let mut tasks = Vec::new();
    for i in 0..CONTENDERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let r = store
                .txn(
                    Txn::new()
                        .when(Compare::ModRevision(k.into(), seen))
                        .then(Op::Put(k.into(), format!("winner {i}").into_bytes())),
                )
                .await
                .expect("txn");
            (i, r.succeeded)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, won) = t.await.expect("contender task");
        if won {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one winner, got {winners:?}");
    let kv = store.get(k).await.expect("get").expect("present");
    assert_eq!(kv.value, format!("winner {}", winners[0]).into_bytes());
    assert_eq!(kv.mod_revision, seen + 1);
    assert_eq!(
        store.revision().await.expect("revision"),
        seen + 1,
        "losers wrote nothing"
    );
}

/// After the backend compacts up to some revision, a watch from before it
/// fails with `Compacted`, and a watch from it still works. `compact(rev)`
/// must make revisions below `rev` unavailable to watches.
pub async fn watch_from_compacted_revision_fails<F>(store: Arc<dyn Store>, compact: F)
where
    F: AsyncFnOnce(Revision),
{
    let s = store.as_ref();
    let r1 = put(s, "conf/compact/a", b"1").await;
    put(s, "conf/compact/a", b"2").await;
    let r3 = put(s, "conf/compact/a", b"3").await;
    compact(r3).await;

    match s.watch("conf/compact/", r1).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!(requested, r1);
            assert!(
                oldest > r1 && oldest <= r3,
                "oldest available {oldest} within ({r1}, {r3}]"
            );
        }
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(_) => panic!("a watch from a compacted revision must fail"),
    }

    let mut watch = s
        .watch("conf/compact/", r3)
        .await
        .expect("watch from the compaction point");
    let b = next_batch(&mut watch).await;
    assert_eq!(
        (b.revision, summary(&b)),
        (r3, vec![put_ev("conf/compact/a", b"3")])
    );
    // Data is untouched by compaction.
    let kv = s
        .get("conf/compact/a")
        .await
        .expect("get")
        .expect("present");
    assert_eq!((kv.create_revision, kv.mod_revision), (r1, r3));
}
