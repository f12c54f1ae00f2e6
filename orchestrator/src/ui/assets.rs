//! The stylesheet and the script, built into the binary: nothing is fetched from elsewhere.

use actix_web::{web, HttpResponse};

use super::views::UiError;
use crate::error::ControlError;

const STYLE: &str = include_str!("assets/app.css");
const SCRIPT: &str = include_str!("assets/app.js");

pub async fn serve(file: web::Path<String>) -> Result<HttpResponse, UiError> {
    let (body, content_type) = match file.as_str() {
        "app.css" => (STYLE, "text/css; charset=utf-8"),
        "app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        other => return Err(ControlError::NotFound(format!("there is no asset {other}")).into()),
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-content-type-options", "nosniff"))
        .body(body))
}
