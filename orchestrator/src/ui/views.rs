//! What the pages show: the templates' data, the error pages, and the small formatting rules
//! (status colours with their words, times in UTC that the browser shows in its own zone).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use chrono::{DateTime, Utc};

use crate::error::ControlError;

/// What every page has around its main part.
pub struct Chrome {
    pub title: String,
    /// The signed-in user's name; `None` on the sign-in and error pages.
    pub user: Option<String>,
    pub csrf: String,
    /// Where the page's live updates come from (`/ui/events?...`), empty for none.
    pub events: String,
    /// Which entry of the navigation is current.
    pub section: &'static str,
}

/// A time as the pages show it: UTC in the markup, local time once the script has run.
pub struct Time {
    /// RFC 3339, for the `datetime` attribute and the script.
    pub iso: String,
    /// `2026-12-06 14:20:05 UTC`, shown on hover and without the script.
    pub utc: String,
}

impl Time {
    pub fn of(at: DateTime<Utc>) -> Self {
        Self {
            iso: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            utc: at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        }
    }

    /// A time given as text by a component, when it reads as one.
    pub fn parse(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| Self::of(t.with_timezone(&Utc)))
    }
}

/// How long ago, the way `opctl get` shows the AGE column.
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - since).num_seconds().max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// A duration in milliseconds, for people.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        ms if ms < 1000 => format!("{ms} ms"),
        ms if ms < 120_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms => format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// The colour class of a status word; the word itself is always shown beside it.
pub fn tone(status: &str) -> &'static str {
    match status.to_ascii_lowercase().as_str() {
        "succeeded" | "active" | "ready" | "running" | "leader" | "true" | "created"
        | "updated" | "unchanged" => "ok",
        "failed" | "error" | "cancelled" | "canceled" | "timedout" | "exited" | "false"
        | "unresponsive" => "bad",
        "pending" | "queued" | "inprogress" | "in progress" | "deleting" | "starting"
        | "restarting" | "stopping" | "cancelling" | "unknown" => "busy",
        _ => "plain",
    }
}

/// Why a page could not be shown.
#[derive(Debug)]
pub enum UiError {
    /// No session: the sign-in page, coming back to `next` after.
    SignIn { next: String },
    /// A state-changing form without this session's token.
    Forgery,
    /// What the API would have answered.
    Control(ControlError),
}

impl From<ControlError> for UiError {
    fn from(e: ControlError) -> Self {
        Self::Control(e)
    }
}

impl From<actix::MailboxError> for UiError {
    fn from(e: actix::MailboxError) -> Self {
        Self::Control(e.into())
    }
}

impl std::fmt::Display for UiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SignIn { .. } => f.write_str("sign in first"),
            Self::Forgery => f.write_str(
                "the form does not carry this session's token; reload the page and try again",
            ),
            Self::Control(e) => write!(f, "{e}"),
        }
    }
}

#[derive(Template)]
#[template(path = "ui/error.html")]
struct ErrorPage {
    chrome: Chrome,
    heading: String,
    message: String,
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::SignIn { .. } => StatusCode::SEE_OTHER,
            Self::Forgery => StatusCode::FORBIDDEN,
            Self::Control(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::SignIn { next } = self {
            return HttpResponse::SeeOther()
                .insert_header((
                    header::LOCATION,
                    format!("/ui/sign-in?next={}", encode_query(next)),
                ))
                .finish();
        }
        let status = self.status_code();
        let heading = match status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::BAD_REQUEST => "Not valid",
            _ => "Something failed",
        };
        let page = ErrorPage {
            chrome: Chrome {
                title: heading.into(),
                user: None,
                csrf: String::new(),
                events: String::new(),
                section: "",
            },
            heading: heading.into(),
            message: self.to_string(),
        };
        html(status, &page)
    }
}

/// A rendered page with the headers every page gets: no caching, no framing, and scripts,
/// styles and forms only from this origin.
pub fn html(status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header(("x-content-type-options", "nosniff"))
            .insert_header(("referrer-policy", "same-origin"))
            .insert_header((
                "content-security-policy",
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            ))
            .body(body),
        Err(e) => HttpResponse::InternalServerError()
            .content_type("text/plain; charset=utf-8")
            .body(format!("cannot render the page: {e}")),
    }
}

/// Percent-encodes a value for a query string.
pub fn encode_query(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_opctl() {
        let now = Utc::now();
        assert_eq!(age(now - chrono::Duration::seconds(5), now), "5s");
        assert_eq!(age(now - chrono::Duration::minutes(30), now), "30m");
        assert_eq!(age(now - chrono::Duration::hours(30), now), "30h");
        assert_eq!(age(now - chrono::Duration::days(3), now), "3d");
    }

    #[test]
    fn every_status_has_a_tone_and_unknown_words_stay_plain() {
        assert_eq!(tone("succeeded"), "ok");
        assert_eq!(tone("InProgress"), "busy");
        assert_eq!(tone("failed"), "bad");
        assert_eq!(tone("<script>"), "plain");
    }

    #[test]
    fn queries_are_encoded() {
        assert_eq!(encode_query("/ui/a b?x=1&y"), "/ui/a%20b%3Fx%3D1%26y");
    }
}
