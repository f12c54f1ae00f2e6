//! The supervisor's pure state: which replicas exist, in which phase, and the restart policy.
//! No I/O and no actix: `converge` compares the desired replicas with the known ones and says
//! what to start and stop; the actor carries the actions out and reports back.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One replica slot: a component and its index (`0..replicas`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaId {
    pub component: String,
    pub index: u32,
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.component, self.index)
    }
}

/// What should run of one component: how many replicas, of which configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub component: String,
    pub replicas: u32,
    /// The hash of everything but the replica count; a replica of another hash is replaced.
    pub hash: String,
}

/// When a replica that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// The delay after the first exit in a row; it doubles on each further one.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// A replica that ran this long before exiting starts its exits-in-a-row count afresh.
    pub stable_after: Duration,
    /// At most this many restarts within `window`; past it the replica stays exited.
    pub max_restarts: usize,
    pub window: Duration,
}

impl Default for RestartPolicy {
    /// 1 s doubling up to 60 s; reset after 60 s of running; at most 10 restarts in 10 minutes.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
            max_restarts: 10,
            window: Duration::from_secs(600),
        }
    }
}

impl RestartPolicy {
    /// The delay before the restart that follows exit number `in_a_row` (1 for the first).
    pub fn delay(&self, in_a_row: u32) -> Duration {
        let factor = 2u32.saturating_pow(in_a_row.saturating_sub(1).min(31));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// How a replica ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The exit code; 128 + the signal's number for a process killed by a signal.
    pub code: Option<i64>,
    /// What happened, for people (`exited with code 3`, `cannot start: …`).
    pub reason: String,
}

/// Where a replica is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Being launched.
    Starting,
    /// Launched; `since` it last started.
    Running { since: Instant },
    /// Exited; started again at `due`.
    Restarting { due: Instant },
    /// Exited and not restarted: too many restarts in the policy's window.
    Exited,
    /// Being stopped and removed.
    Stopping,
}

/// One replica as the supervisor knows it.
#[derive(Debug, Clone)]
pub struct Replica {
    pub hash: String,
    /// Which launch of the slot this is; reports about an older launch are ignored.
    pub launch: u64,
    pub phase: Phase,
    /// The process id or container name of the current launch, once known.
    pub handle_id: Option<String>,
    /// Restarts since the slot was created.
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    in_a_row: u32,
    recent_restarts: VecDeque<Instant>,
}

/// Something the actor must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Launch the replica with this configuration hash.
    Start {
        id: ReplicaId,
        launch: u64,
        hash: String,
    },
    /// Stop the replica's launch and remove what is left of it.
    Stop { id: ReplicaId, launch: u64 },
}

/// What an exit leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterExit {
    /// Started again after the delay.
    RestartIn(Duration),
    /// Not restarted: the policy's limit is reached.
    GaveUp,
    /// Not a report about a current launch, or the replica is being stopped anyway.
    Ignored,
}

/// A replica found already running when the supervisor starts (a container from before an
/// orchestrator restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: ReplicaId,
    pub hash: String,
    pub handle_id: String,
    /// `None` while it runs; its exit when it has stopped.
    pub exit: Option<Exit>,
}

/// Every replica of one operator.
#[derive(Debug, Clone)]
pub struct Replicas {
    policy: RestartPolicy,
    slots: BTreeMap<ReplicaId, Replica>,
    next_launch: u64,
}

impl Replicas {
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            slots: BTreeMap::new(),
            next_launch: 1,
        }
    }

    fn launch_number(&mut self) -> u64 {
        let launch = self.next_launch;
        self.next_launch += 1;
        launch
    }

    /// Takes over replicas found running (or exited) from an earlier orchestrator; returns
    /// the launch number each was given, so their exits can be reported.
    pub fn adopt(&mut self, found: Vec<Found>, now: Instant) -> Vec<(ReplicaId, u64)> {
        let mut adopted = Vec::new();
        for f in found {
            let launch = self.launch_number();
            let phase = match f.exit {
                None => {
                    adopted.push((f.id.clone(), launch));
                    Phase::Running { since: now }
                }
                Some(_) => Phase::Restarting { due: now },
            };
            self.slots.insert(
                f.id,
                Replica {
                    hash: f.hash,
                    launch,
                    phase,
                    handle_id: Some(f.handle_id),
                    restarts: 0,
                    last_exit: f.exit,
                    in_a_row: 0,
                    recent_restarts: VecDeque::new(),
                },
            );
        }
        adopted
    }

    /// Compares what should run with what does and says what to start and stop. A replica of
    /// another configuration is stopped first and started anew once it is gone. With
    /// `retry_exited`, replicas the policy gave up on are started again (a re-apply).
    pub fn converge(
        &mut self,
        desired: &[Desired],
        retry_exited: bool,
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let wanted = |id: &ReplicaId| {
            desired
                .iter()
                .find(|d| d.component == id.component && id.index < d.replicas)
        };
        for (id, replica) in &mut self.slots {
            // A launch still under way is stopped once it has started (or failed).
            if matches!(replica.phase, Phase::Stopping | Phase::Starting) {
                continue;
            }
            match wanted(id) {
                Some(d) if d.hash == replica.hash => {
                    if retry_exited && replica.phase == Phase::Exited {
                        replica.phase = Phase::Restarting { due: now };
                        replica.in_a_row = 0;
                        replica.recent_restarts.clear();
                    }
                }
                _ => {
                    replica.phase = Phase::Stopping;
                    actions.push(Action::Stop {
                        id: id.clone(),
                        launch: replica.launch,
                    });
                }
            }
        }
        for d in desired {
            for index in 0..d.replicas {
                let id = ReplicaId {
                    component: d.component.clone(),
                    index,
                };
                if !self.slots.contains_key(&id) {
                    let launch = self.launch_number();
                    self.slots.insert(
                        id.clone(),
                        Replica {
                            hash: d.hash.clone(),
                            launch,
                            phase: Phase::Starting,
                            handle_id: None,
                            restarts: 0,
                            last_exit: None,
                            in_a_row: 0,
                            recent_restarts: VecDeque::new(),
                        },
                    );
                    actions.push(Action::Start {
                        id,
                        launch,
                        hash: d.hash.clone(),
                    });
                }
            }
        }
        actions.extend(self.due_restarts(now));
        actions
    }

    /// Every replica whose restart is due now, marked as starting again.
    pub fn due_restarts(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        for (id, replica) in &mut self.slots {
            if matches!(replica.phase, Phase::Restarting { due } if due <= now) {
                replica.launch = self.next_launch;
                self.next_launch += 1;
                replica.phase = Phase::Starting;
                replica.handle_id = None;
                actions.push(Action::Start {
                    id: id.clone(),
                    launch: replica.launch,
                    hash: replica.hash.clone(),
                });
            }
        }
        actions
    }

    fn current(&mut self, id: &ReplicaId, launch: u64) -> Option<&mut Replica> {
        self.slots.get_mut(id).filter(|r| r.launch == launch)
    }

    /// The launch is up, with this process id or container name.
    pub fn started(&mut self, id: &ReplicaId, launch: u64, handle_id: String, now: Instant) {
        if let Some(replica) = self.current(id, launch) {
            replica.handle_id = Some(handle_id);
            if replica.phase == Phase::Starting {
                replica.phase = Phase::Running { since: now };
            }
        }
    }

    /// The launch ended (or never started); decides when, and whether, it starts again.
    pub fn exited(&mut self, id: &ReplicaId, launch: u64, exit: Exit, now: Instant) -> AfterExit {
        let policy = self.policy;
        let Some(replica) = self.current(id, launch) else {
            return AfterExit::Ignored;
        };
        let ran_for = match replica.phase {
            Phase::Running { since } => now.saturating_duration_since(since),
            Phase::Starting => Duration::ZERO,
            Phase::Restarting { .. } | Phase::Exited | Phase::Stopping => {
                return AfterExit::Ignored
            }
        };
        replica.last_exit = Some(exit);
        if ran_for >= policy.stable_after {
            replica.in_a_row = 0;
        }
        replica.in_a_row += 1;
        while replica
            .recent_restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > policy.window)
        {
            replica.recent_restarts.pop_front();
        }
        if replica.recent_restarts.len() >= policy.max_restarts {
            replica.phase = Phase::Exited;
            return AfterExit::GaveUp;
        }
        let delay = policy.delay(replica.in_a_row);
        replica.recent_restarts.push_back(now);
        replica.restarts += 1;
        replica.phase = Phase::Restarting { due: now + delay };
        AfterExit::RestartIn(delay)
    }

    /// The launch was stopped and removed: the slot is free.
    pub fn stopped(&mut self, id: &ReplicaId, launch: u64) {
        if self
            .slots
            .get(id)
            .is_some_and(|r| r.launch == launch && r.phase == Phase::Stopping)
        {
            self.slots.remove(id);
        }
    }

    /// Whether no replica is left, in any phase.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The replica in a slot.
    pub fn get(&self, id: &ReplicaId) -> Option<&Replica> {
        self.slots.get(id)
    }

    /// What `opctl get -t operator -d` shows of each replica.
    pub fn views(&self, now: Instant) -> Vec<ReplicaView> {
        self.slots
            .iter()
            .map(|(id, r)| {
                let (state, seconds) = match r.phase {
                    Phase::Starting => (ReplicaState::Starting, None),
                    Phase::Running { since } => (
                        ReplicaState::Running,
                        Some(now.saturating_duration_since(since).as_secs()),
                    ),
                    Phase::Restarting { due } => (
                        ReplicaState::Restarting,
                        Some(due.saturating_duration_since(now).as_secs()),
                    ),
                    Phase::Exited => (ReplicaState::Exited, None),
                    Phase::Stopping => (ReplicaState::Stopping, None),
                };
                ReplicaView {
                    component: id.component.clone(),
                    replica: id.index,
                    state,
                    id: r.handle_id.clone(),
                    restarts: r.restarts,
                    exit_code: r.last_exit.as_ref().and_then(|e| e.code),
                    message: r.last_exit.as_ref().map(|e| e.reason.clone()),
                    uptime_seconds: seconds.filter(|_| state == ReplicaState::Running),
                    restart_in_seconds: seconds.filter(|_| state == ReplicaState::Restarting),
                }
            })
            .collect()
    }
}

/// The state of a replica as shown to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaState {
    Starting,
    Running,
    Restarting,
    Exited,
    Stopping,
}

/// One replica in `opctl get -t operator -n NAME -d`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaView {
    pub component: String,
    pub replica: u32,
    pub state: ReplicaState,
    /// The process id, container name or pod name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub restarts: u32,
    /// The last exit's code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// The last exit, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_in_seconds: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(component: &str, replicas: u32, hash: &str) -> Desired {
        Desired {
            component: component.into(),
            replicas,
            hash: hash.into(),
        }
    }

    fn id(component: &str, index: u32) -> ReplicaId {
        ReplicaId {
            component: component.into(),
            index,
        }
    }

    fn starts(actions: &[Action]) -> Vec<ReplicaId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Start { id, .. } => Some(id.clone()),
                Action::Stop { .. } => None,
            })
            .collect()
    }

    fn stops(actions: &[Action]) -> Vec<ReplicaId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Stop { id, .. } => Some(id.clone()),
                Action::Start { .. } => None,
            })
            .collect()
    }

    /// Starts every replica and reports each as up.
    fn running(replicas: &mut Replicas, want: &[Desired], now: Instant) {
        for action in replicas.converge(want, false, now) {
            if let Action::Start { id, launch, .. } = action {
                replicas.started(&id, launch, format!("pid-{id}"), now);
            }
        }
    }

    fn launch_of(replicas: &Replicas, replica: &ReplicaId) -> u64 {
        replicas.get(replica).map(|r| r.launch).unwrap_or_default()
    }

    fn crash(code: i64) -> Exit {
        Exit {
            code: Some(code),
            reason: format!("exited with code {code}"),
        }
    }

    #[test]
    fn missing_replicas_are_started_and_nothing_more_once_they_run() {
        let now = Instant::now();
        let mut replicas = Replicas::new(RestartPolicy::default());
        let want = [desired("adf", 2, "h1")];
        let actions = replicas.converge(&want, false, now);
        assert_eq!(starts(&actions), [id("adf", 0), id("adf", 1)]);
        for action in actions {
            if let Action::Start { id, launch, .. } = action {
                replicas.started(&id, launch, "x".into(), now);
            }
        }
        assert!(replicas.converge(&want, false, now).is_empty());
        assert!(replicas
            .views(now)
            .iter()
            .all(|v| v.state == ReplicaState::Running));
    }

    #[test]
    fn scaling_up_starts_the_new_indexes_and_scaling_down_stops_the_highest() {
        let now = Instant::now();
        let mut replicas = Replicas::new(RestartPolicy::default());
        running(&mut replicas, &[desired("adf", 2, "h1")], now);
        let up = replicas.converge(&[desired("adf", 3, "h1")], false, now);
        assert_eq!(starts(&up), [id("adf", 2)]);
        assert!(stops(&up).is_empty());
        let new = id("adf", 2);
        replicas.started(&new, launch_of(&replicas, &new), "c2".into(), now);
        let down = replicas.converge(&[desired("adf", 1, "h1")], false, now);
        assert_eq!(stops(&down), [id("adf", 1), id("adf", 2)]);
        assert!(starts(&down).is_empty());
    }

    #[test]
    fn a_changed_configuration_replaces_each_replica_once_the_old_one_is_gone() {
        let now = Instant::now();
        let mut replicas = Replicas::new(RestartPolicy::default());
        running(&mut replicas, &[desired("adf", 1, "h1")], now);
        let old = launch_of(&replicas, &id("adf", 0));
        let actions = replicas.converge(&[desired("adf", 1, "h2")], false, now);
        assert_eq!(stops(&actions), [id("adf", 0)]);
        assert!(
            starts(&actions).is_empty(),
            "nothing starts beside the old one"
        );
        // Converging again while it stops does not stop it twice.
        assert!(replicas
            .converge(&[desired("adf", 1, "h2")], false, now)
            .is_empty());
        replicas.stopped(&id("adf", 0), old);
        let actions = replicas.converge(&[desired("adf", 1, "h2")], false, now);
        assert!(
            matches!(&actions[..], [Action::Start { hash, .. }] if hash == "h2"),
            "{actions:?}"
        );
    }

    #[test]
    fn a_removed_component_is_stopped_and_its_slots_freed() {
        let now = Instant::now();
        let mut replicas = Replicas::new(RestartPolicy::default());
        running(
            &mut replicas,
            &[desired("a", 1, "h"), desired("b", 1, "h")],
            now,
        );
        let actions = replicas.converge(&[desired("a", 1, "h")], false, now);
        assert_eq!(stops(&actions), [id("b", 0)]);
        replicas.stopped(&id("b", 0), launch_of(&replicas, &id("b", 0)));
        assert_eq!(replicas.views(now).len(), 1);
        replicas.converge(&[], false, now);
        replicas.stopped(&id("a", 0), launch_of(&replicas, &id("a", 0)));
        assert!(replicas.is_empty());
    }

    #[test]
    fn a_replica_still_starting_is_stopped_only_once_its_launch_is_over() {
        let now = Instant::now();
        let mut replicas = Replicas::new(RestartPolicy::default());
        let actions = replicas.converge(&[desired("adf", 1, "h")], false, now);
        let r = id("adf", 0);
        assert_eq!(starts(&actions), std::slice::from_ref(&r));
        assert!(replicas.converge(&[], false, now).is_empty());
        replicas.started(&r, launch_of(&replicas, &r), "c".into(), now);
        assert_eq!(stops(&replicas.converge(&[], false, now)), [r]);
    }

    #[test]
    fn an_exited_replica_restarts_after_a_delay_that_doubles_while_it_keeps_failing() {
        let policy = RestartPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
            ..RestartPolicy::default()
        };
        let mut now = Instant::now();
        let mut replicas = Replicas::new(policy);
        let want = [desired("adf", 1, "h")];
        running(&mut replicas, &want, now);
        let r = id("adf", 0);
        let mut delays = Vec::new();
        for _ in 0..4 {
            let launch = launch_of(&replicas, &r);
            match replicas.exited(&r, launch, crash(3), now) {
                AfterExit::RestartIn(delay) => delays.push(delay),
                other => panic!("{other:?}"),
            }
            let view = &replicas.views(now)[0];
            assert_eq!(view.state, ReplicaState::Restarting);
            assert_eq!(view.exit_code, Some(3));
            // Not before it is due.
            assert!(replicas.due_restarts(now).is_empty());
            now += delays[delays.len() - 1];
            let actions = replicas.converge(&want, false, now);
            assert_eq!(starts(&actions), std::slice::from_ref(&r));
            let launch = launch_of(&replicas, &r);
            replicas.started(&r, launch, "pid".into(), now);
        }
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 350, 350]);
        assert_eq!(replicas.views(now)[0].restarts, 4);
    }

    #[test]
    fn a_replica_that_ran_long_enough_starts_its_backoff_afresh() {
        let policy = RestartPolicy {
            initial: Duration::from_millis(100),
            stable_after: Duration::from_secs(60),
            ..RestartPolicy::default()
        };
        let mut now = Instant::now();
        let mut replicas = Replicas::new(policy);
        let want = [desired("adf", 1, "h")];
        running(&mut replicas, &want, now);
        let r = id("adf", 0);
        let first = replicas.exited(&r, launch_of(&replicas, &r), crash(1), now);
        assert_eq!(first, AfterExit::RestartIn(Duration::from_millis(100)));
        now += Duration::from_millis(100);
        running(&mut replicas, &want, now);
        now += Duration::from_secs(61);
        let after_a_long_run = replicas.exited(&r, launch_of(&replicas, &r), crash(1), now);
        assert_eq!(
            after_a_long_run,
            AfterExit::RestartIn(Duration::from_millis(100))
        );
    }

    /// 1 ms restarts, at most `max_restarts` in `window`.
    fn limited(max_restarts: usize, window: Duration) -> RestartPolicy {
        RestartPolicy {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(1),
            max_restarts,
            window,
            ..RestartPolicy::default()
        }
    }

    /// Makes one running replica crash and come back `times` times, `every` apart.
    fn crash_loop(
        replicas: &mut Replicas,
        want: &[Desired],
        times: u32,
        every: Duration,
    ) -> Instant {
        let mut now = Instant::now();
        running(replicas, want, now);
        let r = id("adf", 0);
        for _ in 0..times {
            let outcome = replicas.exited(&r, launch_of(replicas, &r), crash(2), now);
            assert!(matches!(outcome, AfterExit::RestartIn(_)), "{outcome:?}");
            now += every;
            running(replicas, want, now);
        }
        now
    }

    #[test]
    fn past_the_restart_limit_in_the_window_a_replica_stays_exited_until_re_applied() {
        let mut replicas = Replicas::new(limited(3, Duration::from_secs(60)));
        let want = [desired("adf", 1, "h")];
        let now = crash_loop(&mut replicas, &want, 3, Duration::from_millis(1));
        let r = id("adf", 0);
        let outcome = replicas.exited(&r, launch_of(&replicas, &r), crash(2), now);
        assert_eq!(outcome, AfterExit::GaveUp);
        assert!(replicas.converge(&want, false, now).is_empty());
        let view = &replicas.views(now)[0];
        assert_eq!(
            (view.state, view.exit_code),
            (ReplicaState::Exited, Some(2))
        );
        // A re-apply tries again.
        assert_eq!(starts(&replicas.converge(&want, true, now)), [r]);
    }

    #[test]
    fn restarts_older_than_the_window_do_not_count_toward_the_limit() {
        let mut replicas = Replicas::new(limited(2, Duration::from_secs(10)));
        let want = [desired("adf", 1, "h")];
        // Five crashes, 6 s apart: never more than two in any 10 s.
        crash_loop(&mut replicas, &want, 5, Duration::from_secs(6));
        assert_eq!(replicas.views(Instant::now())[0].restarts, 5);
    }

    #[test]
    fn reports_about_an_older_launch_are_ignored() {
        let now = Instant::now();
        let mut replicas = Replicas::new(RestartPolicy::default());
        let want = [desired("adf", 1, "h")];
        running(&mut replicas, &want, now);
        let r = id("adf", 0);
        let old = launch_of(&replicas, &r);
        replicas.exited(&r, old, crash(1), now);
        let later = now + Duration::from_secs(5);
        running(&mut replicas, &want, later);
        assert_eq!(
            replicas.exited(&r, old, crash(1), later),
            AfterExit::Ignored
        );
        assert_eq!(replicas.views(later)[0].state, ReplicaState::Running);
    }

    #[test]
    fn an_exit_while_stopping_does_not_restart_and_only_the_stop_frees_the_slot() {
        let now = Instant::now();
        let mut replicas = Replicas::new(RestartPolicy::default());
        running(&mut replicas, &[desired("adf", 1, "h")], now);
        let r = id("adf", 0);
        let launch = launch_of(&replicas, &r);
        replicas.converge(&[], false, now);
        assert_eq!(
            replicas.exited(&r, launch, crash(143), now),
            AfterExit::Ignored
        );
        assert_eq!(replicas.views(now)[0].state, ReplicaState::Stopping);
        replicas.stopped(&r, launch);
        assert!(replicas.views(now).is_empty());
    }

    #[test]
    fn adopted_containers_keep_running_and_exited_ones_restart_at_once() {
        let now = Instant::now();
        let mut replicas = Replicas::new(RestartPolicy::default());
        let adopted = replicas.adopt(
            vec![
                Found {
                    id: id("adf", 0),
                    hash: "h".into(),
                    handle_id: "c0".into(),
                    exit: None,
                },
                Found {
                    id: id("adf", 1),
                    hash: "h".into(),
                    handle_id: "c1".into(),
                    exit: Some(crash(137)),
                },
            ],
            now,
        );
        assert_eq!(adopted.len(), 1);
        let actions = replicas.converge(&[desired("adf", 2, "h")], false, now);
        assert_eq!(starts(&actions), [id("adf", 1)]);
        assert!(stops(&actions).is_empty());
    }
}
