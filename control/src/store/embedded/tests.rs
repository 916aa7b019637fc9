//! Tests of the embedded store: the conformance suite on a temp file, then
//! what only a file backend has (reopen, exclusive open, compaction, lag
//! recovery, a real crash).

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::Arc;

use futures_util::StreamExt;
use tempfile::TempDir;

use super::{EmbeddedOptions, EmbeddedStore};
use crate::store::conformance::{self, delete, next_batch, put};
use crate::store::{Compare, EventKind, Op, Store, StoreError, Txn};

/// A fresh store in a temp dir (keep the dir alive as long as the store).
fn fresh(options: EmbeddedOptions) -> (TempDir, Arc<EmbeddedStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open_with(&dir.path().join("store.redb"), options).expect("open");
    (dir, store)
}

/// One `#[tokio::test]` per conformance check, each on its own file.
macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_dir, store) = fresh(EmbeddedOptions::default());
            conformance::$name(store).await;
        }
    )*};
}

conformance_tests!(
    get_put_delete,
    range_prefix_order_and_isolation,
    cas_success_and_failure,
    multi_key_atomicity,
    create_and_mod_revisions,
    last_write_per_key_wins,
    watch_replays_then_live,
    watch_from_now,
    watch_prefix_filtering,
    watch_delivers_deletes,
    watch_concurrent_writers_in_order,
    concurrent_cas_one_winner,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_checks_in_sequence_on_one_store() {
    // The checks use disjoint prefixes, so they also pass one after another
    // on a store that already holds data (as on a shared etcd).
    let (_dir, store) = fresh(EmbeddedOptions::default());
    for (name, check) in conformance::ALL {
        tracing::debug!(check = name, "running");
        check(store.clone()).await;
    }
}

#[tokio::test]
async fn watch_from_compacted_revision_fails() {
    let (_dir, store) = fresh(EmbeddedOptions::default());
    let compacting = store.clone();
    conformance::watch_from_compacted_revision_fails(store, async move |rev| {
        compacting.compact(rev).await.expect("compact");
    })
    .await;
}

#[tokio::test]
async fn revision_data_and_log_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let store = EmbeddedStore::open(&path).expect("open");
    let r1 = put(store.as_ref(), "k/a", b"1").await;
    let r2 = put(store.as_ref(), "k/a", b"2").await;
    let r3 = put(store.as_ref(), "k/b", b"3").await;
    let r4 = delete(store.as_ref(), "k/b").await;
    let before = store.range("k/").await.expect("range");
    drop(store);

    let store = EmbeddedStore::open(&path).expect("reopen");
    assert_eq!(store.revision().await.expect("revision"), r4);
    assert_eq!(store.range("k/").await.expect("range"), before);
    let kv = store.get("k/a").await.expect("get").expect("present");
    assert_eq!((kv.create_revision, kv.mod_revision), (r1, r2));

    // The watch log is on disk too: a watcher can resume across a restart.
    let mut watch = store.watch("k/", r3).await.expect("watch");
    let b = next_batch(&mut watch).await;
    assert_eq!((b.revision, b.events[0].kind.clone()), (r3, EventKind::Put));
    let b = next_batch(&mut watch).await;
    assert_eq!(
        (b.revision, b.events[0].kind.clone()),
        (r4, EventKind::Delete)
    );

    // Revisions continue, never restart.
    assert_eq!(put(store.as_ref(), "k/c", b"4").await, r4 + 1);
    assert_eq!(next_batch(&mut watch).await.revision, r4 + 1);
}

#[tokio::test]
async fn second_open_of_the_same_file_is_refused_with_a_hint() {
    let (dir, store) = fresh(EmbeddedOptions::default());
    let path = dir.path().join("store.redb");
    let err = EmbeddedStore::open(&path).expect_err("second open must fail");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Backend(_)), "{msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "names the file: {msg}"
    );
    assert!(msg.contains("another trellis-control"), "says why: {msg}");

    // Once the first is dropped, the file opens again.
    drop(store);
    EmbeddedStore::open(&path).expect("open after drop");
}

#[tokio::test]
async fn a_file_that_is_not_a_store_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("garbage");
    std::fs::write(&path, vec![0x5a; 8192]).expect("write garbage");
    let err = EmbeddedStore::open(&path).expect_err("garbage must not open");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn dropping_the_store_ends_watches_and_frees_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let store = EmbeddedStore::open(&path).expect("open");
    let mut watch = store.watch("", 0).await.expect("watch");
    drop(store);
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), watch.next())
        .await
        .expect("the stream ends promptly");
    assert!(end.is_none(), "stream ends when the store is dropped");
    // A live watch stream must not keep the file locked.
    let mut again = store_watch_holder(&path).await;
    assert!(again.next().await.is_none());
}

/// Open the file, start a watch, drop the store: the stream of a dropped store.
async fn store_watch_holder(path: &std::path::Path) -> crate::store::WatchStream {
    let store = EmbeddedStore::open(path).expect("reopen while an old watch stream lives");
    let watch = store.watch("", 0).await.expect("watch");
    drop(store);
    watch
}

#[tokio::test]
async fn log_retention_compacts_old_revisions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let options = EmbeddedOptions {
        log_retention: 5,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open_with(&path, options).expect("open");
    for i in 0..10 {
        put(store.as_ref(), &format!("k/{i}"), b"x").await;
    }
    // Revisions 6..=10 are kept.
    match store.watch("k/", 5).await {
        Err(StoreError::Compacted { requested, oldest }) => assert_eq!((requested, oldest), (5, 6)),
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(_) => panic!("revision 5 is compacted"),
    }
    let mut watch = store
        .watch("k/", 6)
        .await
        .expect("watch from the oldest kept");
    for rev in 6..=10 {
        assert_eq!(next_batch(&mut watch).await.revision, rev);
    }
    // All keys are still there: compaction only drops history.
    assert_eq!(store.range("k/").await.expect("range").0.len(), 10);

    // The compaction point is stored, not recomputed.
    drop(watch);
    drop(store);
    let store = EmbeddedStore::open(&path).expect("reopen with default retention");
    assert!(matches!(
        store.watch("k/", 5).await,
        Err(StoreError::Compacted { oldest: 6, .. })
    ));
    // watch from 0 is never compacted.
    let _from_now = store.watch("k/", 0).await.expect("watch from now");
}

#[tokio::test]
async fn a_watcher_behind_the_live_channel_catches_up_from_the_log() {
    let (_dir, store) = fresh(EmbeddedOptions {
        watch_buffer: 2,
        ..EmbeddedOptions::default()
    });
    let mut watch = store.watch("k/", 0).await.expect("watch");
    let start = store.revision().await.expect("revision");
    // Not polling the watch while 20 batches go through a channel of 2.
    for i in 0..20 {
        put(store.as_ref(), &format!("k/{i}"), b"x").await;
    }
    for n in 1..=20 {
        let b = next_batch(&mut watch).await;
        assert_eq!(b.revision, start + n, "no gap and no repeat after lagging");
        assert_eq!(b.events[0].kv.key, format!("k/{}", n - 1));
    }
    let r = put(store.as_ref(), "k/live", b"x").await;
    assert_eq!(next_batch(&mut watch).await.revision, r, "and live again");
}

#[tokio::test]
async fn a_watcher_behind_the_log_gets_compacted_and_the_stream_ends() {
    let (_dir, store) = fresh(EmbeddedOptions {
        watch_buffer: 2,
        log_retention: 5,
    });
    let mut watch = store.watch("k/", 0).await.expect("watch");
    for i in 0..20 {
        put(store.as_ref(), &format!("k/{i}"), b"x").await;
    }
    let item = tokio::time::timeout(std::time::Duration::from_secs(10), watch.next())
        .await
        .expect("an answer");
    match item {
        Some(Err(StoreError::Compacted { requested, oldest })) => {
            assert_eq!((requested, oldest), (1, 16));
        }
        other => panic!("expected a Compacted error, got {other:?}"),
    }
    assert!(
        watch.next().await.is_none(),
        "the stream ends after the error"
    );
}

#[tokio::test]
async fn watch_across_many_catch_up_chunks() {
    // More revisions than one log read returns.
    let (_dir, store) = fresh(EmbeddedOptions::default());
    let n = super::CATCH_UP_CHUNK as u64 * 2 + 3;
    let txn = |i: u64| Txn::new().then(Op::Put(format!("k/{}", i % 2), i.to_be_bytes().to_vec()));
    for i in 0..n {
        store.txn(txn(i)).await.expect("txn");
    }
    // Watch only k/1: half the revisions are filtered out.
    let mut watch = store.watch("k/1", 1).await.expect("watch");
    for i in (1..n).step_by(2) {
        let b = next_batch(&mut watch).await;
        assert_eq!(b.revision, i + 1);
    }
    let r = put(store.as_ref(), "k/1", b"live").await;
    assert_eq!(next_batch(&mut watch).await.revision, r);
}

/// Environment variable that turns [`crash_child_process`] into the writer
/// the crash test kills.
const CRASH_DIR_ENV: &str = "TRELLIS_STORE_CRASH_TEST_DIR";

/// Child half of [`acknowledged_writes_survive_sigkill`]: does nothing in a
/// normal test run; with [`CRASH_DIR_ENV`] set, writes keys one txn at a
/// time and prints `ACK <i> <revision>` after each txn returned, forever.
#[tokio::test]
async fn crash_child_process() {
    let Ok(dir) = std::env::var(CRASH_DIR_ENV) else {
        return;
    };
    let store = EmbeddedStore::open(&std::path::Path::new(&dir).join("store.redb")).expect("open");
    for i in 0u64.. {
        let key = format!("crash/{i:08}");
        let r = store
            .txn(
                Txn::new()
                    .when(Compare::ModRevision(key.clone(), 0))
                    .then(Op::Put(key, vec![0xab; 512]))
                    .then(Op::Put("crash/last".into(), i.to_be_bytes().to_vec())),
            )
            .await
            .expect("txn");
        assert!(r.succeeded);
        println!("ACK {i} {}", r.revision);
    }
}

/// Run the test binary again as a writer, SIGKILL it mid-write, reopen:
/// every acknowledged txn is there, whole, and nothing half-written is.
/// (This is a process crash; the page cache survives it, so it proves
/// atomicity and recovery, not the fsync itself.)
#[test]
fn acknowledged_writes_survive_sigkill() {
    const ACKS_BEFORE_KILL: u64 = 30;
    let dir = tempfile::tempdir().expect("tempdir");
    let module = module_path!();
    let test_name = format!(
        "{}::crash_child_process",
        module.split_once("::").map_or(module, |(_, rest)| rest)
    );
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", &test_name, "--nocapture", "--test-threads=1"])
        .env(CRASH_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut last_ack: Option<(u64, u64)> = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child stdout");
        let mut parts = line.split_whitespace();
        if parts.next() != Some("ACK") {
            continue;
        }
        let i: u64 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .expect("ack index");
        let rev: u64 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .expect("ack revision");
        last_ack = Some((i, rev));
        if i + 1 >= ACKS_BEFORE_KILL {
            break;
        }
    }
    // Child::kill is SIGKILL on Unix: no destructor, no clean close.
    child.kill().expect("kill child");
    child.wait().expect("reap child");
    let Some((last_i, last_rev)) = last_ack else {
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        panic!("the child acknowledged nothing; stderr:\n{err}");
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store =
            EmbeddedStore::open(&dir.path().join("store.redb")).expect("reopen after SIGKILL");
        let revision = store.revision().await.expect("revision");
        assert!(
            revision >= last_rev,
            "acknowledged revision {last_rev} lost (now {revision})"
        );
        let (kvs, _) = store.range("crash/").await.expect("range");
        let numbered: Vec<_> = kvs.iter().filter(|kv| kv.key != "crash/last").collect();
        // Each txn wrote one numbered key and crash/last at one revision:
        // the keys are 0..n with no hole, and crash/last names n - 1.
        let n = numbered.len() as u64;
        assert!(n > last_i, "acknowledged key {last_i} lost ({n} keys)");
        for (i, kv) in numbered.iter().enumerate() {
            assert_eq!(kv.key, format!("crash/{i:08}"));
            assert_eq!(kv.mod_revision, i as u64 + 1, "one revision per txn");
        }
        let last = store
            .get("crash/last")
            .await
            .expect("get")
            .expect("present");
        assert_eq!(
            last.value,
            (n - 1).to_be_bytes(),
            "crash/last from the same txn as the newest key"
        );
        assert_eq!(revision, n, "the revision matches the txns that are there");
        // The log is intact and in step with the data.
        let mut watch = store.watch("crash/", revision).await.expect("watch");
        let b = next_batch(&mut watch).await;
        assert_eq!(b.revision, revision);
        assert_eq!(b.events.len(), 2);
        // And the store takes writes again.
        let r = put(store.as_ref(), "crash/after", b"ok").await;
        assert_eq!(r, revision + 1);
    });
}
