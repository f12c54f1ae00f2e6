//! The Operations view: web pages for operators, resources and their runs, served by the
//! leading orchestrator under `/ui/`. Pages are rendered on the server (askama templates,
//! escaped by default); a little JavaScript follows the store's change stream over server-sent
//! events and re-renders the page's main part on a change. Nothing is fetched from elsewhere:
//! the stylesheet and the script are in the binary.
//!
//! Sign-in takes an API key once and keeps a session (see `session`); every action goes
//! through the same checks as the API (`auth::Caller`, `api::apply_one`).

mod assets;
mod events;
mod pages;
mod session;
mod views;

use actix_web::web;

pub use session::{Sessions, SESSIONS_BUCKET};

/// Mounts the pages under `/ui/`; needs [`Sessions`], the manager and the users as app data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui", web::get().to(pages::home)).service(
        web::scope("/ui")
            .route("/", web::get().to(pages::home))
            .route("/assets/{file}", web::get().to(assets::serve))
            .route("/sign-in", web::get().to(pages::sign_in_form))
            .route("/sign-in", web::post().to(pages::sign_in))
            .route("/sign-out", web::post().to(pages::sign_out))
            .route("/operators", web::get().to(pages::operators))
            .route("/operators/{name}/scale", web::post().to(pages::scale))
            .route("/resources", web::get().to(pages::resources_home))
            .route("/apply", web::get().to(pages::apply_form))
            .route("/apply", web::post().to(pages::apply))
            .route("/events", web::get().to(events::stream))
            .route(
                "/workspaces/{ws}/resources",
                web::get().to(pages::resources),
            )
            .route(
                "/workspaces/{ws}/resources/{name}",
                web::get().to(pages::resource),
            )
            .route(
                "/workspaces/{ws}/resources/{name}/delete",
                web::get().to(pages::delete_form),
            )
            .route(
                "/workspaces/{ws}/resources/{name}/delete",
                web::post().to(pages::delete),
            )
            .default_service(web::to(pages::not_found)),
    );
}

/// Whether a path is the web view's: it signs in with its own session, not an API key.
pub fn is_ui_path(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}
