//! The election's gauges: whether a replica leads, and in which term.

use metrics::gauge;

/// 1 while this replica leads, by `operator` and `replica`.
pub const LEADER: &str = "operator_leader";
/// The term of this replica's latest leadership, by `operator` and `replica`.
pub const LEADER_TERM: &str = "operator_leader_term";

/// `replica` of `operator` leads in `term`, or (`leading` false) no longer does.
pub(crate) fn leadership(operator: &str, replica: &str, leading: bool, term: u64) {
    gauge!(LEADER, "operator" => operator.to_string(), "replica" => replica.to_string())
        .set(if leading { 1.0 } else { 0.0 });
    gauge!(LEADER_TERM, "operator" => operator.to_string(), "replica" => replica.to_string())
        .set(term as f64);
}
