//! `ReplicaRole`: what this replica does on the election's news. Taking the lead is handed to
//! the daemon (which builds the actor tree then); losing it ends the process at once, since a
//! deposed leader must stop acting and its successor has fenced the store against it.

use actix::prelude::*;
use operator_election::{LeadershipAcquired, LeadershipLost, Term};
use tokio::sync::mpsc;
use tracing::error;

/// The exit code of a replica that lost the lead: restart it, it comes back as a follower.
pub const EXIT_LEADERSHIP_LOST: i32 = 75;

/// Receives the election's notifications for the daemon.
pub struct ReplicaRole {
    acquired: mpsc::UnboundedSender<Term>,
}

impl ReplicaRole {
    /// The actor, and where the terms it leads in arrive.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Term>) {
        let (acquired, terms) = mpsc::unbounded_channel();
        (Self { acquired }, terms)
    }
}

impl Actor for ReplicaRole {
    type Context = Context<Self>;
}

impl Handler<LeadershipAcquired> for ReplicaRole {
    type Result = ();

    fn handle(&mut self, msg: LeadershipAcquired, _: &mut Context<Self>) {
        let _ = self.acquired.send(msg.term);
    }
}

impl Handler<LeadershipLost> for ReplicaRole {
    type Result = ();

    fn handle(&mut self, msg: LeadershipLost, _: &mut Context<Self>) {
        error!(
            term = msg.term,
            reason = %msg.reason,
            "this orchestrator no longer leads; exiting to start again as a follower"
        );
        std::process::exit(EXIT_LEADERSHIP_LOST);
    }
}
