//! The orchestrator store's fencing, checked on a single nats-server (`orchestrator_replicas`)
//! and on a three-node cluster (`cluster`), whose replicated streams check one write at a time
//! against the fence key and refuse the others meanwhile (error 10164).

use std::time::Duration;

use operator_tests::TestSystem;

/// The orchestrator's store on `js`, its buckets with `replicas`: JetStream refuses the writes
/// of a leader once a successor has fenced the store, a leader of an older term cannot fence it
/// back, and a leader whose lease lapsed writes nothing; concurrent writes of one leader all
/// land. Panics on the first refusal missed or made wrongly.
pub async fn check_store_fencing(
    js: &async_nats::jetstream::Context,
    replicas: usize,
) -> anyhow::Result<()> {
    use operator_election::{Fence, FenceState};
    use operator_orchestrator::auth::USERS_BUCKET;
    use operator_orchestrator::records::Record;
    use operator_orchestrator::secret_keys::SecretKeyring;
    use operator_orchestrator::store::{Bucket, JetStreamStore, RecordStore, StoreError};

    let keys = tempfile::tempdir()?;
    let keyring = || SecretKeyring::from_file(&keys.path().join("secret-keys"));
    let leading = |term| {
        let (state, fence) = Fence::channel();
        let _ = state.send(FenceState::Leading {
            term,
            valid_until: tokio::time::Instant::now() + Duration::from_secs(60),
        });
        (state, fence)
    };
    let manifest = |spec: &str| {
        operator_contract::Manifest::parse_one(&TestSystem::job("x", spec)).expect("a manifest")
    };
    let (_lease_1, fence_1) = leading(1);
    let first = JetStreamStore::open(js, keyring()?, replicas)
        .await?
        .lead(js.clone(), 1, "first", fence_1)
        .await?;
    let record = Record::new(manifest("{durationMs: 1}"), Some("public".into()));
    let revision = first.create(Bucket::Resources, "public.x", &record).await?;
    // The users' bucket, written by the leader alone too.
    let users_1 = first.leader_bucket(js, USERS_BUCKET).await?;
    users_1.put("alice", b"{\"v\":1}".to_vec()).await?;
    // Each is checked against the same fence key; none may be refused for another's check.
    let writes = (0..32).map(|i| {
        let (first, record) = (&first, &record);
        async move {
            first
                .create(Bucket::Resources, &format!("public.c{i}"), record)
                .await
        }
    });
    for (i, written) in futures::future::join_all(writes)
        .await
        .into_iter()
        .enumerate()
    {
        assert!(written.is_ok(), "concurrent write {i}: {written:?}");
    }

    let (_lease_2, fence_2) = leading(2);
    let second = JetStreamStore::open(js, keyring()?, replicas)
        .await?
        .lead(js.clone(), 2, "second", fence_2)
        .await?;
    let stale = Record::new(manifest("{durationMs: 2}"), Some("public".into()));
    let refused = first
        .update(Bucket::Resources, "public.x", &stale, revision)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { .. })),
        "the deposed leader's write: {refused:?}"
    );
    let refused = first.delete(Bucket::Resources, "public.x", revision).await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { .. })),
        "{refused:?}"
    );
    // The successor fences the users' bucket as it opens it: the deposed leader can neither
    // change nor delete a user from then on, and the successor can.
    let users_2 = second.leader_bucket(js, USERS_BUCKET).await?;
    let refused = users_1.put("alice", b"{\"v\":2}".to_vec()).await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { .. })),
        "the deposed leader's user write: {refused:?}"
    );
    let refused = users_1.delete("alice").await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { .. })),
        "the deposed leader's user delete: {refused:?}"
    );
    let alice = users_2.kv().get("alice").await?.expect("alice kept");
    assert_eq!(&alice[..], b"{\"v\":1}", "the first leader's user stands");
    users_2.put("alice", b"{\"v\":3}".to_vec()).await?;
    let stored = second
        .get(Bucket::Resources, "public.x")
        .await?
        .expect("kept");
    assert_eq!(
        stored.record.manifest, record.manifest,
        "the first leader's record stands"
    );
    second
        .update(Bucket::Resources, "public.x", &stale, stored.revision)
        .await?;

    // A leader of an older term cannot fence the store back.
    let (_lease_old, fence_old) = leading(1);
    let late = JetStreamStore::open(js, keyring()?, replicas)
        .await?
        .lead(js.clone(), 1, "late", fence_old)
        .await;
    assert!(
        matches!(late, Err(StoreError::Fenced { .. })),
        "{:?}",
        late.err()
    );
    // Nor write once its own lease has lapsed, even before any successor.
    let (lapsing, fence_3) = leading(3);
    let third = JetStreamStore::open(js, keyring()?, replicas)
        .await?
        .lead(js.clone(), 3, "third", fence_3)
        .await?;
    lapsing.send(FenceState::Following)?;
    let refused = third.create(Bucket::Resources, "public.y", &record).await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { .. })),
        "{refused:?}"
    );
    Ok(())
}
