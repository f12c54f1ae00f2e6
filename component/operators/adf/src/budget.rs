//! `MonitorBudget`: the monitoring calls (Get Pipeline Run, queryPipelineRuns,
//! queryActivityruns) of each factory, paced by one [`Pacer`] per factory so that all runs of
//! a factory together stay within `ADF_MONITOR_BUDGET_PER_MINUTE`, and paused for everyone when
//! Azure answers 429 with a `Retry-After`.
//!
//! Fair order: the callers of one factory wait in a FIFO queue (tokio's mutex is fair), so the
//! runs are served in the order they asked; a caller whose slot is further off than
//! [`MAX_QUEUE_WAIT`] is not queued but told when to come back, so a paused factory holds no
//! reconcile worker another factory could use.
//!
//! The leader is the only replica that polls; each factory's pacing state is written to the
//! KV bucket [`BUCKET`] (at most once a second per factory) and read back by a replica the
//! first time it paces that factory, or after it has not for a while, so a new leader goes on
//! from where the last one was. Without a bucket (none could be reached), the state is this
//! process's alone. What each factory used is published as the operator detail
//! [`DETAILS_SECTION`] at the same pace, for `opctl get -t operator -n NAME -d`.

pub mod pacer;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use operator_sdk::OperatorDetails;
use serde_json::{json, Value};
use tokio::sync::{Mutex, OnceCell};
use tracing::{debug, info, warn};

use self::pacer::{Pacer, PacerState};

/// The KV bucket holding each factory's pacing state.
/// A shared bucket (`OPERATOR_SHARED_BUCKETS`): every ADF operator pacing a factory shares it.
pub const BUCKET: &str = "shared-adf-monitor-budget";
/// The operator detail listing each factory's use of its budget.
pub const DETAILS_SECTION: &str = "monitoringBudget";
/// A caller whose slot is further off than this is told to come back instead of queueing.
pub const MAX_QUEUE_WAIT: Duration = Duration::from_secs(5);
/// A factory's state is written at most this often.
const SAVE_EVERY_MS: i64 = 1_000;
/// A factory not paced for this long is read back from the bucket before it is paced again:
/// another replica may have led meanwhile.
const RELOAD_AFTER_MS: i64 = 5_000;

/// One factory's pacer and what this replica knows of its persistence.
#[derive(Debug)]
struct Factory {
    pacer: Pacer,
    last_used_ms: i64,
    saved_ms: i64,
    reported_ms: i64,
}

/// Connects to the bucket on first use, inside the component's runtime.
pub type Connect =
    Box<dyn Fn() -> futures::future::BoxFuture<'static, Option<kv::Store>> + Send + Sync>;

/// The per-factory budget of monitoring calls.
pub struct MonitorBudget {
    per_minute: u32,
    factories: Mutex<HashMap<String, Arc<Mutex<Factory>>>>,
    connect: Option<Connect>,
    store: OnceCell<Option<kv::Store>>,
    /// Each factory's use, as last published, by key.
    published: std::sync::Mutex<BTreeMap<String, Value>>,
    details: Option<OperatorDetails>,
}

impl std::fmt::Debug for MonitorBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorBudget")
            .field("per_minute", &self.per_minute)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A KV key for a factory: its resource group and name, with what a key cannot hold escaped.
pub fn factory_key(resource_group: &str, factory: &str) -> String {
    let escape = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => (b as char).to_string(),
                other => format!("={other:02x}"),
            })
            .collect()
    };
    format!(
        "{}.{}",
        escape(&resource_group.to_ascii_lowercase()),
        escape(&factory.to_ascii_lowercase())
    )
}

impl MonitorBudget {
    /// A budget of `per_minute` calls per factory; `connect` opens the shared bucket.
    pub fn new(per_minute: u32, connect: Option<Connect>) -> Self {
        Self {
            per_minute,
            factories: Mutex::new(HashMap::new()),
            connect,
            store: OnceCell::new(),
            published: std::sync::Mutex::new(BTreeMap::new()),
            details: None,
        }
    }

    /// Publishes each factory's use as the operator detail [`DETAILS_SECTION`].
    pub fn with_details(mut self, details: OperatorDetails) -> Self {
        self.details = Some(details);
        self
    }

    /// Publishes `key`'s use at `now_ms`: calls in the last minute against the budget, and
    /// until when Azure paused it.
    fn publish(&self, key: &str, pacer: &mut Pacer, now_ms: i64) {
        let Some(details) = &self.details else {
            return;
        };
        let at = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.to_rfc3339());
        let row = json!({
            "factory": key,
            "usedLastMinute": pacer.used_last_minute(now_ms),
            "budgetPerMinute": self.per_minute,
            "pausedUntil": pacer.paused(now_ms).then(|| at(pacer.state().paused_until_ms)).flatten(),
            "at": at(now_ms),
        });
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        published.insert(key.to_string(), row);
        details.set(
            DETAILS_SECTION,
            json!(published.values().collect::<Vec<_>>()),
        );
    }

    async fn store(&self) -> Option<&kv::Store> {
        self.store
            .get_or_init(|| async {
                match &self.connect {
                    Some(connect) => connect().await,
                    None => None,
                }
            })
            .await
            .as_ref()
    }

    async fn factory(&self, key: &str) -> Arc<Mutex<Factory>> {
        let mut factories = self.factories.lock().await;
        factories
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Factory {
                    pacer: Pacer::new(self.per_minute, PacerState::default()),
                    last_used_ms: i64::MIN,
                    saved_ms: i64::MIN,
                    reported_ms: i64::MIN,
                }))
            })
            .clone()
    }

    /// Waits for the factory's next slot and takes it; `Err(wait)` when the slot is further
    /// off than [`MAX_QUEUE_WAIT`] (come back then).
    pub async fn acquire(&self, key: &str) -> Result<(), Duration> {
        let factory = self.factory(key).await;
        let mut factory = factory.lock().await;
        let now = now_ms();
        if now.saturating_sub(factory.last_used_ms) > RELOAD_AFTER_MS {
            if let Some(state) = self.load(key).await {
                factory.pacer = Pacer::new(self.per_minute, state);
            }
        }
        factory.last_used_ms = now;
        let slot = factory.pacer.slot(now);
        let wait = Duration::from_millis(u64::try_from(slot - now).unwrap_or(0));
        if wait > MAX_QUEUE_WAIT {
            return Err(wait);
        }
        if !wait.is_zero() {
            // Sleeping with the lock held keeps the queue behind in order.
            tokio::time::sleep(wait).await;
        }
        // The spacing counts from when the call really goes: a sleep that overran must not
        // let the next call go early.
        let slot = now_ms().max(slot);
        factory.pacer.take(slot);
        factory.last_used_ms = slot;
        if slot.saturating_sub(factory.reported_ms) >= pacer::MINUTE_MS {
            factory.reported_ms = slot;
            let used = factory.pacer.used_last_minute(slot);
            info!(factory = %key, used_last_minute = used, budget_per_minute = self.per_minute, paused = factory.pacer.paused(slot), "monitoring budget");
        }
        if slot.saturating_sub(factory.saved_ms) >= SAVE_EVERY_MS {
            factory.saved_ms = slot;
            self.publish(key, &mut factory.pacer, slot);
            self.save(key, factory.pacer.state()).await;
        }
        Ok(())
    }

    /// Azure answered 429 with `retry_after`: the factory's calls wait that long, everyone's.
    pub async fn pause(&self, key: &str, retry_after: Duration) {
        let factory = self.factory(key).await;
        let mut factory = factory.lock().await;
        let until = now_ms() + i64::try_from(retry_after.as_millis()).unwrap_or(i64::MAX / 2);
        factory.pacer.pause(until);
        info!(factory = %key, pause_ms = retry_after.as_millis() as u64, "monitoring of the factory paused by Azure's Retry-After");
        let now = now_ms();
        factory.saved_ms = now;
        self.publish(key, &mut factory.pacer, now);
        self.save(key, factory.pacer.state()).await;
    }

    /// Calls made in the last minute, by factory, and whether each is paused.
    #[cfg(test)]
    pub async fn usage(&self) -> Vec<(String, usize, bool)> {
        let factories: Vec<_> = self
            .factories
            .lock()
            .await
            .iter()
            .map(|(k, f)| (k.clone(), f.clone()))
            .collect();
        let now = now_ms();
        let mut usage = Vec::new();
        for (key, factory) in factories {
            let mut factory = factory.lock().await;
            let paused = factory.pacer.paused(now);
            usage.push((key, factory.pacer.used_last_minute(now), paused));
        }
        usage.sort();
        usage
    }

    async fn load(&self, key: &str) -> Option<PacerState> {
        let store = self.store().await?;
        match store.get(key).await {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(state) => {
                    debug!(factory = %key, "monitoring budget state read back");
                    Some(state)
                }
                Err(e) => {
                    warn!(factory = %key, error = %e, "monitoring budget state unreadable; starting afresh");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                warn!(factory = %key, error = %e, "monitoring budget state not read");
                None
            }
        }
    }

    async fn save(&self, key: &str, state: &PacerState) {
        let Some(store) = self.store().await else {
            return;
        };
        let bytes = match serde_json::to_vec(state) {
            Ok(bytes) => bytes,
            Err(e) => {
                warn!(error = %e, "monitoring budget state not encoded");
                return;
            }
        };
        if let Err(e) = store.put(key, bytes.into()).await {
            warn!(factory = %key, error = %e, "monitoring budget state not saved");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factory_keys_are_valid_kv_keys_and_tell_factories_apart() {
        assert_eq!(factory_key("Engineering", "adf-1"), "engineering.adf-1");
        assert_eq!(factory_key("rg.(prod)", "f"), "rg=2e=28prod=29.f");
        assert_ne!(factory_key("a.b", "c"), factory_key("a", "b.c"));
    }

    #[tokio::test]
    async fn callers_of_one_factory_are_served_in_turn_within_the_budget() {
        // 1,000 a minute: one call every 61 ms.
        let budget = Arc::new(MonitorBudget::new(1_000, None));
        let started = std::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let budget = budget.clone();
            tasks.push(tokio::spawn(async move { budget.acquire("rg.f").await }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("joined"), Ok(()));
        }
        assert!(
            started.elapsed() >= Duration::from_millis(540),
            "{:?}",
            started.elapsed()
        );
        // Another factory is not held back by this one.
        let other = std::time::Instant::now();
        assert_eq!(budget.acquire("rg.g").await, Ok(()));
        assert!(other.elapsed() < Duration::from_millis(40));
        assert_eq!(
            budget.usage().await,
            vec![("rg.f".into(), 10, false), ("rg.g".into(), 1, false)]
        );
    }

    #[tokio::test]
    async fn a_paused_factory_sends_callers_away_until_the_pause_ends() {
        let budget = MonitorBudget::new(600, None);
        budget.pause("rg.f", Duration::from_secs(30)).await;
        let wait = budget.acquire("rg.f").await.expect_err("paused");
        assert!(wait > Duration::from_secs(29), "{wait:?}");
        assert_eq!(budget.usage().await, vec![("rg.f".into(), 0, true)]);
    }

    #[tokio::test]
    async fn each_factory_s_use_is_published_as_an_operator_detail() {
        let details = OperatorDetails::new();
        let budget = MonitorBudget::new(600, None).with_details(details.clone());
        assert_eq!(budget.acquire("rg.f").await, Ok(()));
        budget.pause("rg.g", Duration::from_secs(30)).await;
        let rows = details.get()[DETAILS_SECTION].clone();
        let rows = rows.as_array().expect("a list of factories");
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0]["factory"], "rg.f");
        assert_eq!(rows[0]["usedLastMinute"], 1);
        assert_eq!(rows[0]["budgetPerMinute"], 600);
        assert!(rows[0]["pausedUntil"].is_null(), "{rows:?}");
        assert_eq!(rows[1]["factory"], "rg.g");
        assert!(rows[1]["pausedUntil"].is_string(), "{rows:?}");
    }
}
