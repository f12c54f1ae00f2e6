//! The query language of queryPipelineRuns and queryActivityruns: the lastUpdated window,
//! filters, ordering and paging, read from the request body and applied to run snapshots.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::clock::parse_timestamp;
use crate::run::{ActivityRunView, RunView};

/// Runs per page, as ADF pages them.
pub const PAGE_SIZE: usize = 100;

const CONTINUATION_PREFIX: &str = "standin-offset-";

/// A field a filter or an ordering can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    PipelineName,
    Status,
    RunStart,
    RunEnd,
    RunGroupId,
    ActivityName,
    ActivityType,
    ActivityRunStart,
    ActivityRunEnd,
}

impl Operand {
    const ALL: [Self; 9] = [
        Self::PipelineName,
        Self::Status,
        Self::RunStart,
        Self::RunEnd,
        Self::RunGroupId,
        Self::ActivityName,
        Self::ActivityType,
        Self::ActivityRunStart,
        Self::ActivityRunEnd,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::PipelineName => "PipelineName",
            Self::Status => "Status",
            Self::RunStart => "RunStart",
            Self::RunEnd => "RunEnd",
            Self::RunGroupId => "RunGroupId",
            Self::ActivityName => "ActivityName",
            Self::ActivityType => "ActivityType",
            Self::ActivityRunStart => "ActivityRunStart",
            Self::ActivityRunEnd => "ActivityRunEnd",
        }
    }

    fn is_time(self) -> bool {
        matches!(
            self,
            Self::RunStart | Self::RunEnd | Self::ActivityRunStart | Self::ActivityRunEnd
        )
    }
}

/// Which endpoint a query is for; each allows its own operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    PipelineRuns,
    ActivityRuns,
}

impl QueryKind {
    fn filter_operands(self) -> &'static [Operand] {
        match self {
            Self::PipelineRuns => &[
                Operand::PipelineName,
                Operand::Status,
                Operand::RunStart,
                Operand::RunEnd,
                Operand::RunGroupId,
            ],
            Self::ActivityRuns => &[
                Operand::ActivityName,
                Operand::ActivityType,
                Operand::Status,
                Operand::ActivityRunStart,
                Operand::ActivityRunEnd,
            ],
        }
    }

    fn order_operands(self) -> &'static [Operand] {
        match self {
            Self::PipelineRuns => &[
                Operand::RunStart,
                Operand::RunEnd,
                Operand::PipelineName,
                Operand::Status,
            ],
            Self::ActivityRuns => &[
                Operand::ActivityRunStart,
                Operand::ActivityRunEnd,
                Operand::ActivityName,
                Operand::Status,
            ],
        }
    }

    /// The order when the body asks for none: oldest first.
    fn default_order(self) -> Operand {
        match self {
            Self::PipelineRuns => Operand::RunStart,
            Self::ActivityRuns => Operand::ActivityRunStart,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
    GreaterThan,
    GreaterThanOrEquals,
    LessThan,
    LessThanOrEquals,
}

impl Operator {
    const ALL: [Self; 8] = [
        Self::Equals,
        Self::NotEquals,
        Self::In,
        Self::NotIn,
        Self::GreaterThan,
        Self::GreaterThanOrEquals,
        Self::LessThan,
        Self::LessThanOrEquals,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Equals => "Equals",
            Self::NotEquals => "NotEquals",
            Self::In => "In",
            Self::NotIn => "NotIn",
            Self::GreaterThan => "GreaterThan",
            Self::GreaterThanOrEquals => "GreaterThanOrEquals",
            Self::LessThan => "LessThan",
            Self::LessThanOrEquals => "LessThanOrEquals",
        }
    }

    fn is_set(self) -> bool {
        matches!(self, Self::In | Self::NotIn)
    }

    fn is_comparison(self) -> bool {
        !matches!(
            self,
            Self::Equals | Self::NotEquals | Self::In | Self::NotIn
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
enum FilterValues {
    Text(Vec<String>),
    Time(Vec<DateTime<Utc>>),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    operand: Operand,
    operator: Operator,
    values: FilterValues,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ascending,
    Descending,
}

/// A checked query, ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    updated_after: DateTime<Utc>,
    updated_before: DateTime<Utc>,
    filters: Vec<Filter>,
    order: Vec<(Operand, Direction)>,
    offset: usize,
}

/// Why a query body was refused; answered as 400 BadRequest.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(String);

/// The value of one field of a row, for filtering and ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field<'a> {
    Text(&'a str),
    Id(Uuid),
    /// `None` for an end that has not come yet.
    Time(Option<DateTime<Utc>>),
}

/// A row a query can select: a pipeline run or an activity run.
pub trait Queryable {
    fn field(&self, operand: Operand) -> Field<'_>;
    fn last_updated(&self) -> DateTime<Utc>;
    /// Breaks ties, so pages never shuffle rows that compare equal.
    fn identity(&self) -> Uuid;
}

/// One page of rows and the token for the next, if any.
#[derive(Debug)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub continuation_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawQuery {
    last_updated_after: Option<String>,
    last_updated_before: Option<String>,
    continuation_token: Option<String>,
    filters: Option<Vec<RawFilter>>,
    order_by: Option<Vec<RawOrder>>,
}

#[derive(Debug, Deserialize)]
struct RawFilter {
    operand: String,
    operator: String,
    #[serde(default)]
    values: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOrder {
    order_by: String,
    order: String,
}

fn invalid(message: impl Into<String>) -> QueryError {
    QueryError(message.into())
}

/// Reads and checks a RunFilterParameters body; every name matches case-insensitively, as
/// .NET's enum binding does.
pub fn parse(kind: QueryKind, body: &[u8]) -> Result<Query, QueryError> {
    let raw: RawQuery = if body.iter().all(u8::is_ascii_whitespace) {
        RawQuery::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| invalid(format!("The request body is not a valid filter: {e}.")))?
    };
    let updated_after = required_time("lastUpdatedAfter", raw.last_updated_after.as_deref())?;
    let updated_before = required_time("lastUpdatedBefore", raw.last_updated_before.as_deref())?;
    let filters = raw
        .filters
        .unwrap_or_default()
        .into_iter()
        .map(|filter| parse_filter(kind, filter))
        .collect::<Result<Vec<_>, _>>()?;
    let mut order = raw
        .order_by
        .unwrap_or_default()
        .into_iter()
        .map(|order| parse_order(kind, order))
        .collect::<Result<Vec<_>, _>>()?;
    if order.is_empty() {
        order.push((kind.default_order(), Direction::Ascending));
    }
    let offset = match raw.continuation_token.as_deref().map(str::trim) {
        None | Some("") => 0,
        Some(token) => token
            .strip_prefix(CONTINUATION_PREFIX)
            .and_then(|offset| offset.parse().ok())
            .ok_or_else(|| invalid(format!("The continuationToken '{token}' is invalid.")))?,
    };
    Ok(Query {
        updated_after,
        updated_before,
        filters,
        order,
        offset,
    })
}

fn required_time(name: &str, text: Option<&str>) -> Result<DateTime<Utc>, QueryError> {
    let text = text.ok_or_else(|| invalid(format!("The '{name}' property is required.")))?;
    parse_timestamp(text).ok_or_else(|| {
        invalid(format!(
            "The '{name}' value '{text}' is not a valid DateTime."
        ))
    })
}

fn parse_filter(kind: QueryKind, raw: RawFilter) -> Result<Filter, QueryError> {
    let operand = named(&Operand::ALL, Operand::name, &raw.operand)
        .filter(|operand| kind.filter_operands().contains(operand))
        .ok_or_else(|| {
            invalid(format!(
                "The filter operand '{}' is not supported here; use one of {}.",
                raw.operand,
                names(kind.filter_operands(), Operand::name)
            ))
        })?;
    let operator = named(&Operator::ALL, Operator::name, &raw.operator).ok_or_else(|| {
        invalid(format!(
            "The filter operator '{}' is invalid.",
            raw.operator
        ))
    })?;
    if operator.is_comparison() && !operand.is_time() {
        return Err(invalid(format!(
            "The filter operator '{}' cannot be used with operand '{}'.",
            operator.name(),
            operand.name()
        )));
    }
    let count_fits = if operator.is_set() {
        !raw.values.is_empty()
    } else {
        raw.values.len() == 1
    };
    if !count_fits {
        return Err(invalid(format!(
            "The filter operator '{}' takes {} value(s), got {}.",
            operator.name(),
            if operator.is_set() {
                "one or more"
            } else {
                "exactly one"
            },
            raw.values.len()
        )));
    }
    let values = if operand.is_time() {
        let times = raw
            .values
            .iter()
            .map(|text| {
                parse_timestamp(text).ok_or_else(|| {
                    invalid(format!(
                        "The filter value '{text}' of operand '{}' is not a valid DateTime.",
                        operand.name()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        FilterValues::Time(times)
    } else {
        FilterValues::Text(raw.values)
    };
    Ok(Filter {
        operand,
        operator,
        values,
    })
}

fn parse_order(kind: QueryKind, raw: RawOrder) -> Result<(Operand, Direction), QueryError> {
    let operand = named(&Operand::ALL, Operand::name, &raw.order_by)
        .filter(|operand| kind.order_operands().contains(operand))
        .ok_or_else(|| {
            invalid(format!(
                "The orderBy '{}' is not supported here; use one of {}.",
                raw.order_by,
                names(kind.order_operands(), Operand::name)
            ))
        })?;
    let direction = if raw.order.eq_ignore_ascii_case("ASC") {
        Direction::Ascending
    } else if raw.order.eq_ignore_ascii_case("DESC") {
        Direction::Descending
    } else {
        return Err(invalid(format!(
            "The order '{}' is invalid; use ASC or DESC.",
            raw.order
        )));
    };
    Ok((operand, direction))
}

fn named<T: Copy>(all: &[T], name: fn(T) -> &'static str, text: &str) -> Option<T> {
    all.iter()
        .copied()
        .find(|item| name(*item).eq_ignore_ascii_case(text.trim()))
}

fn names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> String {
    all.iter()
        .map(|item| name(*item))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Filter {
    /// Text matches case-insensitively (ADF names are case-insensitive) and ids by value. A
    /// time field that is still unset (the end of a running run) matches no filter at all.
    fn matches(&self, field: Field<'_>) -> bool {
        let listed = match (&self.values, field) {
            (FilterValues::Text(values), Field::Text(actual)) => values
                .iter()
                .any(|value| value.trim().eq_ignore_ascii_case(actual)),
            (FilterValues::Text(values), Field::Id(actual)) => values
                .iter()
                .any(|value| Uuid::parse_str(value.trim()).is_ok_and(|id| id == actual)),
            (FilterValues::Time(values), Field::Time(Some(actual))) => {
                let bound = values.first().copied().unwrap_or(actual);
                match self.operator {
                    Operator::GreaterThan => return actual > bound,
                    Operator::GreaterThanOrEquals => return actual >= bound,
                    Operator::LessThan => return actual < bound,
                    Operator::LessThanOrEquals => return actual <= bound,
                    _ => values.contains(&actual),
                }
            }
            _ => return false,
        };
        match self.operator {
            Operator::Equals | Operator::In => listed,
            Operator::NotEquals | Operator::NotIn => !listed,
            // Parsing allows comparisons on times only, which returned above.
            _ => false,
        }
    }
}

/// Orders two fields: text case-insensitively, times with "not yet" first, as SQL orders NULL.
fn compare_fields(left: Field<'_>, right: Field<'_>) -> Ordering {
    match (left, right) {
        (Field::Text(left), Field::Text(right)) => left
            .to_ascii_lowercase()
            .cmp(&right.to_ascii_lowercase())
            .then_with(|| left.cmp(right)),
        (left, right) => left.cmp(&right),
    }
}

/// The rows updated inside the window (both ends inclusive) that pass every filter, ordered,
/// and the page the continuation token points at.
pub fn select<T: Queryable>(rows: Vec<T>, query: &Query) -> Page<T> {
    let mut selected: Vec<T> = rows
        .into_iter()
        .filter(|row| {
            let updated = row.last_updated();
            updated >= query.updated_after
                && updated <= query.updated_before
                && query
                    .filters
                    .iter()
                    .all(|filter| filter.matches(row.field(filter.operand)))
        })
        .collect();
    selected.sort_by(|left, right| {
        query
            .order
            .iter()
            .map(|(operand, direction)| {
                let ordering = compare_fields(left.field(*operand), right.field(*operand));
                match direction {
                    Direction::Ascending => ordering,
                    Direction::Descending => ordering.reverse(),
                }
            })
            .find(|ordering| ordering.is_ne())
            .unwrap_or_else(|| left.identity().cmp(&right.identity()))
    });
    let total = selected.len();
    let next_offset = query.offset.saturating_add(PAGE_SIZE);
    let rows = selected
        .into_iter()
        .skip(query.offset)
        .take(PAGE_SIZE)
        .collect();
    Page {
        rows,
        continuation_token: (next_offset < total)
            .then(|| format!("{CONTINUATION_PREFIX}{next_offset}")),
    }
}

impl Queryable for RunView {
    fn field(&self, operand: Operand) -> Field<'_> {
        match operand {
            Operand::PipelineName => Field::Text(&self.pipeline_name),
            Operand::Status => Field::Text(self.status.as_str()),
            Operand::RunStart => Field::Time(Some(self.run_start)),
            Operand::RunEnd => Field::Time(self.run_end),
            Operand::RunGroupId => Field::Id(self.run_group_id),
            _ => Field::Text(""),
        }
    }

    fn last_updated(&self) -> DateTime<Utc> {
        self.last_updated
    }

    fn identity(&self) -> Uuid {
        self.run_id
    }
}

impl Queryable for ActivityRunView {
    fn field(&self, operand: Operand) -> Field<'_> {
        match operand {
            Operand::ActivityName => Field::Text(&self.activity_name),
            Operand::ActivityType => Field::Text(&self.activity_type),
            Operand::Status => Field::Text(self.status.as_str()),
            Operand::ActivityRunStart => Field::Time(Some(self.start)),
            Operand::ActivityRunEnd => Field::Time(self.end),
            _ => Field::Text(""),
        }
    }

    fn last_updated(&self) -> DateTime<Utc> {
        ActivityRunView::last_updated(self)
    }

    fn identity(&self) -> Uuid {
        self.activity_run_id
    }
}

#[cfg(test)]
mod tests;
