//! `LeaderElection`: the actix shell around [`Campaign`]. It ticks, runs the KV operation the
//! campaign asks for (one at a time), watches the lease key, publishes the fence, records every
//! transition in the journal, heartbeats, and tells its subscribers `LeadershipAcquired` /
//! `LeadershipLost`.

use std::time::Duration;

use actix::prelude::*;
use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use operator_contract::election::{
    election_bucket, lease_key, replica_key, LeaseRecord, ReplicaHeartbeat, ReplicaRole,
};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, info_span, trace, warn};

use super::fence::{Fence, FenceState};
use super::journal::{Journal, JournalEvent};
use super::lease::{self, Write};
use super::messages::{
    KvFinished, LeadershipAcquired, LeadershipLost, LeaseObserved, PublishDetails, Resign,
    StepDown, Subscribe,
};
use super::state::{Campaign, LossReason, Step, Transition};
use super::{ElectionError, ElectionSettings};
use crate::metrics;

/// How long `Resign` waits for the release before answering anyway.
const RESIGN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait before watching the lease key again after the watch ended.
const REWATCH_DELAY: Duration = Duration::from_millis(500);

/// One replica's part in the election of its operator's leader.
pub struct LeaderElection {
    settings: ElectionSettings,
    kv: kv::Store,
    lease_key: String,
    replica_key: String,
    campaign: Campaign,
    fence: watch::Sender<FenceState>,
    journal: Journal,
    acquired_to: Vec<Recipient<LeadershipAcquired>>,
    lost_to: Vec<Recipient<LeadershipLost>>,
    campaigning: bool,
    started_at: DateTime<Utc>,
    acquired_at: DateTime<Utc>,
    role_since: DateTime<Utc>,
    last_heartbeat: Option<Instant>,
    heartbeat_busy: bool,
    renew_failures: u32,
    resigning: Vec<oneshot::Sender<()>>,
    /// `Resign` arrived: no more heartbeats.
    leaving: bool,
    /// The resignation is being finished (heartbeat removal under way).
    finishing: bool,
    /// What the operator publishes of itself, carried by each heartbeat.
    details: Option<watch::Receiver<serde_json::Value>>,
}

impl LeaderElection {
    /// Opens the cluster's bucket (with `replicas`) and starts the actor; it campaigns once it
    /// gets `Subscribe`. Returns its address and the fence it publishes.
    pub async fn start(
        js: &jetstream::Context,
        settings: ElectionSettings,
        replicas: usize,
    ) -> Result<(Addr<Self>, Fence), ElectionError> {
        let kv = lease::open_bucket(js, &election_bucket(&settings.cluster), replicas).await?;
        let (fence_tx, fence) = Fence::channel();
        let now = Utc::now();
        metrics::leadership(&settings.operator, &settings.replica, false, 0);
        let actor = Self {
            lease_key: lease_key(&settings.operator),
            replica_key: replica_key(&settings.operator, &settings.replica),
            campaign: Campaign::new(settings.replica.clone(), settings.timing()),
            fence: fence_tx,
            journal: Journal::open(settings.state_file.as_deref(), &settings.replica),
            acquired_to: Vec::new(),
            lost_to: Vec::new(),
            campaigning: false,
            started_at: now,
            acquired_at: now,
            role_since: now,
            last_heartbeat: None,
            heartbeat_busy: false,
            renew_failures: 0,
            resigning: Vec::new(),
            leaving: false,
            finishing: false,
            details: None,
            settings,
            kv,
        };
        Ok((actor.start(), fence))
    }

    fn tick_interval(&self) -> Duration {
        (self.settings.renew_interval / 10)
            .clamp(Duration::from_millis(20), Duration::from_millis(100))
    }

    /// Runs the campaign's next KV operation, if one is due.
    fn step(&mut self, ctx: &mut Context<Self>) {
        if !self.campaigning {
            return;
        }
        let now = Instant::now();
        let (step, transition) = self.campaign.next(now);
        if let Some(transition) = transition {
            self.announce(transition, ctx);
        }
        let kv = self.kv.clone();
        let key = self.lease_key.clone();
        match step {
            Step::Wait => {}
            Step::Read => self.run(ctx, async move {
                KvFinished::Read(lease::read(&kv, &key).await)
            }),
            Step::Create => {
                let record = self.lease_record(None);
                self.run(ctx, async move {
                    let result = lease::create(&kv, &key, &record).await;
                    KvFinished::Take {
                        sent_at: now,
                        result,
                    }
                })
            }
            Step::TakeOver { revision } => {
                let record = self.lease_record(None);
                self.run(ctx, async move {
                    let result = lease::update(&kv, &key, &record, revision).await;
                    KvFinished::Take {
                        sent_at: now,
                        result,
                    }
                })
            }
            Step::Renew { revision, term } => {
                let record = self.lease_record(Some(term));
                self.run(ctx, async move {
                    let result = lease::update(&kv, &key, &record, revision).await;
                    KvFinished::Renew {
                        term,
                        sent_at: now,
                        result,
                    }
                })
            }
            Step::Release { revision } => self.run(ctx, async move {
                KvFinished::Release(lease::release(&kv, &key, revision).await)
            }),
        }
        self.heartbeat_if_due(ctx, now);
    }

    fn run(
        &mut self,
        ctx: &mut Context<Self>,
        operation: impl std::future::Future<Output = KvFinished> + 'static,
    ) {
        ctx.spawn(operation.into_actor(self).map(|finished, act, ctx| {
            act.finished(finished, ctx);
        }));
    }

    fn lease_record(&self, term: Option<u64>) -> LeaseRecord {
        let now = Utc::now();
        LeaseRecord {
            holder: self.settings.replica.clone(),
            term,
            acquired_at: if term.is_some() {
                self.acquired_at
            } else {
                now
            },
            renewed_at: now,
            ttl_ms: self.settings.ttl.as_millis() as u64,
        }
    }

    fn finished(&mut self, finished: KvFinished, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let mut again = true;
        let transition = match finished {
            KvFinished::Read(result) => {
                if let Err(e) = &result {
                    debug!(error = %e, "lease not read");
                    again = false;
                }
                self.campaign.read_finished(result.ok(), now)
            }
            KvFinished::Take { sent_at, result } => match result {
                Ok(Write::Done(revision)) => self.campaign.acquired(revision, sent_at),
                Ok(Write::Conflict) => {
                    debug!("another replica took the lease first");
                    self.campaign.not_acquired();
                    None
                }
                Err(e) => {
                    debug!(error = %e, "lease not taken");
                    self.campaign.not_acquired();
                    again = false;
                    None
                }
            },
            KvFinished::Renew {
                term,
                sent_at,
                result,
            } => match result {
                Ok(Write::Done(revision)) => {
                    if self.renew_failures > 0 {
                        info!(term, failures = self.renew_failures, "lease renewed again");
                    }
                    self.renew_failures = 0;
                    self.campaign.renewed(term, revision, sent_at);
                    self.fence.send_replace(self.campaign.fence());
                    None
                }
                Ok(Write::Conflict) => self.campaign.renewal_refused(term, now),
                Err(e) => {
                    self.renew_failures += 1;
                    if self.renew_failures == 1 {
                        warn!(term, error = %e, "lease not renewed; retrying until its deadline");
                    }
                    self.campaign.renewal_failed();
                    again = false;
                    None
                }
            },
            KvFinished::Release(result) => {
                match result {
                    Ok(()) => debug!("lease released"),
                    Err(e) => {
                        debug!(error = %e, "lease not released (taken over, or NATS away); it lapses")
                    }
                }
                self.campaign.released();
                None
            }
        };
        if let Some(transition) = transition {
            self.announce(transition, ctx);
        }
        if again {
            self.step(ctx);
        }
        self.finish_resigning(ctx);
    }

    fn announce(&mut self, transition: Transition, ctx: &mut Context<Self>) {
        // The fence changes before anyone is told, so no one acts on a stale view.
        self.fence.send_replace(self.campaign.fence());
        self.role_since = Utc::now();
        let _span = info_span!("election.transition", replica = %self.settings.replica).entered();
        match transition {
            Transition::Acquired { term } => {
                self.acquired_at = self.role_since;
                metrics::leadership(&self.settings.operator, &self.settings.replica, true, term);
                info!(term, cluster = %self.settings.cluster, "leadership acquired");
                self.journal
                    .record(JournalEvent::Acquired, Some(term), None);
                for to in &self.acquired_to {
                    to.do_send(LeadershipAcquired {
                        term,
                        since: self.role_since,
                    });
                }
            }
            Transition::Lost { term, reason } => {
                metrics::leadership(&self.settings.operator, &self.settings.replica, false, term);
                let event = if reason == LossReason::Released {
                    info!(term, "leadership released");
                    JournalEvent::Released
                } else {
                    warn!(term, reason = %reason, "leadership lost");
                    JournalEvent::Lost
                };
                self.journal
                    .record(event, Some(term), Some(reason.to_string()));
                for to in &self.lost_to {
                    to.do_send(LeadershipLost {
                        term,
                        reason: reason.to_string(),
                    });
                }
            }
        }
        self.last_heartbeat = None;
        self.heartbeat_if_due(ctx, Instant::now());
    }

    fn heartbeat_if_due(&mut self, ctx: &mut Context<Self>, now: Instant) {
        let due = self
            .last_heartbeat
            .is_none_or(|last| now >= last + self.settings.renew_interval);
        if self.leaving || self.heartbeat_busy || !due {
            return;
        }
        self.last_heartbeat = Some(now);
        self.heartbeat_busy = true;
        let term = self.campaign.term();
        let heartbeat = ReplicaHeartbeat {
            replica: self.settings.replica.clone(),
            role: if term.is_some() {
                ReplicaRole::Leader
            } else {
                ReplicaRole::Follower
            },
            term,
            since: self.role_since,
            started_at: self.started_at,
            heartbeat_at: Utc::now(),
            interval_ms: self.settings.renew_interval.as_millis() as u64,
            ttl_ms: self.settings.ttl.as_millis() as u64,
            expected_replicas: self.settings.expected_replicas,
            details: self
                .details
                .as_ref()
                .map(|details| details.borrow().clone())
                .filter(|details| !details.is_null()),
        };
        let (kv, key) = (self.kv.clone(), self.replica_key.clone());
        let write = async move { lease::heartbeat(&kv, &key, &heartbeat).await };
        ctx.spawn(write.into_actor(self).map(|result, act, _| {
            act.heartbeat_busy = false;
            if let Err(e) = result {
                debug!(error = %e, "heartbeat not written");
            }
        }));
    }

    /// Answers `Resign` once the lease is given up: removes the heartbeat first.
    fn finish_resigning(&mut self, ctx: &mut Context<Self>) {
        if self.resigning.is_empty() || !self.campaign.is_settled() || self.finishing {
            return;
        }
        self.finishing = true;
        self.journal.record(JournalEvent::Stopped, None, None);
        let (kv, key) = (self.kv.clone(), self.replica_key.clone());
        let remove = async move { lease::remove_heartbeat(&kv, &key).await };
        ctx.spawn(remove.into_actor(self).map(|result, act, ctx| {
            if let Err(e) = result {
                debug!(error = %e, "heartbeat not removed");
            }
            for done in act.resigning.drain(..) {
                let _ = done.send(());
            }
            ctx.stop();
        }));
    }

    fn watch_lease(&self, ctx: &mut Context<Self>) {
        let (kv, key, addr) = (self.kv.clone(), self.lease_key.clone(), ctx.address());
        tokio::spawn(async move {
            while addr.connected() {
                match kv.watch(&key).await {
                    Ok(mut entries) => {
                        while let Some(entry) = entries.next().await {
                            match entry {
                                Ok(entry) => {
                                    addr.do_send(LeaseObserved(lease::observation(Some(entry))))
                                }
                                Err(e) => {
                                    debug!(error = %e, "lease watch failed");
                                    break;
                                }
                            }
                            if !addr.connected() {
                                return;
                            }
                        }
                    }
                    Err(e) => debug!(error = %e, "lease key not watched"),
                }
                tokio::time::sleep(REWATCH_DELAY).await;
            }
        });
    }
}

impl Actor for LeaderElection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        info!(
            cluster = %self.settings.cluster,
            replica = %self.settings.replica,
            ttl_ms = self.settings.ttl.as_millis() as u64,
            renew_interval_ms = self.settings.renew_interval.as_millis() as u64,
            expected_replicas = self.settings.expected_replicas,
            "leader election started"
        );
        ctx.run_interval(self.tick_interval(), |act, ctx| act.step(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.fence.send_replace(FenceState::Following);
    }
}

impl Handler<PublishDetails> for LeaderElection {
    type Result = ();

    fn handle(&mut self, msg: PublishDetails, _ctx: &mut Self::Context) {
        self.details = Some(msg.0);
    }
}

impl Handler<Subscribe> for LeaderElection {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, ctx: &mut Self::Context) {
        if let Some(term) = self.campaign.term() {
            msg.acquired.do_send(LeadershipAcquired {
                term,
                since: self.acquired_at,
            });
        }
        self.acquired_to.push(msg.acquired);
        self.lost_to.push(msg.lost);
        if !self.campaigning {
            self.campaigning = true;
            self.journal.record(JournalEvent::Started, None, None);
            self.watch_lease(ctx);
            self.step(ctx);
        }
    }
}

impl Handler<LeaseObserved> for LeaderElection {
    type Result = ();

    fn handle(&mut self, msg: LeaseObserved, ctx: &mut Self::Context) {
        trace!(observation = ?msg.0, "lease observed");
        if let Some(transition) = self.campaign.observe(msg.0, Instant::now()) {
            self.announce(transition, ctx);
        }
        self.step(ctx);
    }
}

impl Handler<StepDown> for LeaderElection {
    type Result = ();

    fn handle(&mut self, msg: StepDown, ctx: &mut Self::Context) {
        if let Some(transition) = self
            .campaign
            .step_down(msg.term, msg.reason, Instant::now())
        {
            self.announce(transition, ctx);
        }
        self.step(ctx);
    }
}

impl Handler<Resign> for LeaderElection {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: Resign, ctx: &mut Self::Context) -> Self::Result {
        let (done, resigned) = oneshot::channel();
        self.resigning.push(done);
        self.leaving = true;
        if let Some(transition) = self.campaign.resign(Instant::now()) {
            self.announce(transition, ctx);
        }
        self.campaigning = true;
        self.step(ctx);
        self.finish_resigning(ctx);
        Box::pin(async move {
            if tokio::time::timeout(RESIGN_TIMEOUT, resigned)
                .await
                .is_err()
            {
                warn!("lease not released in time; it lapses after its TTL");
            }
        })
    }
}
