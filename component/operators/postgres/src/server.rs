//! The PostgreSQL server as the reconciler sees it ([`Server`]): read a database or a role, run
//! statements. [`PgServer`] is the real one, over one `tokio-postgres` connection made again
//! when it breaks; the unit tests of the reconcile flow use a memory one.
//!
//! Connection details come from the libpq variables (`PGHOST`, `PGPORT`, `PGUSER`,
//! `PGPASSWORD`, `PGDATABASE`), which the orchestrator fills from a Secret. The password is in
//! no log line, error or `Debug` output.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use thiserror::Error;
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use tracing::{debug, info, warn};

use crate::plan::{DatabaseState, RoleState, StoredPassword};
use crate::sql::SqlText;

/// What the reconciler needs of a PostgreSQL server.
pub trait Server: Send + Sync + 'static {
    /// The role the operator logs in as: the owner of a database whose spec names none.
    fn login_role(&self) -> &str;

    /// The database `name`, if it exists.
    fn database(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<DatabaseState>, ServerError>> + Send;

    /// The role `name`, if it exists.
    fn role(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<RoleState>, ServerError>> + Send;

    /// Runs `statements` in order, each on its own (`CREATE DATABASE` cannot run in a
    /// transaction); stops at the first that fails.
    fn execute(
        &self,
        statements: &[SqlText],
    ) -> impl Future<Output = Result<(), ServerError>> + Send;
}

/// Why a call to the server failed.
#[derive(Debug, Error)]
pub enum ServerError {
    /// No connection could be made (or it broke).
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// Reading the catalog failed.
    #[error("reading {what} failed: {source}")]
    Read {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// A statement was refused.
    #[error("{statement}: {message}")]
    Refused {
        /// The statement as shown (no password).
        statement: String,
        /// The server's SQLSTATE.
        code: String,
        message: String,
    },
}

impl ServerError {
    /// A statement refusal, from the server's error.
    fn refused(statement: &SqlText, source: &tokio_postgres::Error) -> Self {
        let (code, message) = match source.as_db_error() {
            Some(db) => (db.code().code().to_string(), db.message().to_string()),
            None => (String::new(), source.to_string()),
        };
        Self::Refused {
            statement: statement.to_string(),
            code,
            message,
        }
    }

    /// True when trying again cannot help without a change of spec or of the server's
    /// settings: a privilege missing, a value the server refuses.
    pub fn is_terminal(&self) -> bool {
        let Self::Refused { code, .. } = self else {
            return false;
        };
        [
            SqlState::INSUFFICIENT_PRIVILEGE,
            SqlState::INVALID_PARAMETER_VALUE,
            SqlState::SYNTAX_ERROR,
            SqlState::FEATURE_NOT_SUPPORTED,
            SqlState::INVALID_NAME,
            SqlState::RESERVED_NAME,
        ]
        .iter()
        .any(|state| state.code() == code)
    }
}

/// A password that is never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(redacted)")
    }
}

fn password(value: &str) -> Result<Password, std::convert::Infallible> {
    Ok(Password(value.to_string()))
}

/// Where the server is and how to log in: libpq's variables.
#[derive(Debug, Clone, Args)]
pub struct ServerConfig {
    /// The server's host name, or the directory of its unix socket (a path starting with `/`).
    #[arg(long = "pg-host", env = "PGHOST", default_value = "localhost")]
    pub host: String,

    /// The server's port (with a unix socket directory: the socket's number).
    #[arg(long = "pg-port", env = "PGPORT", default_value_t = 5432)]
    pub port: u16,

    /// The role to log in as: it needs CREATEDB and CREATEROLE (a superuser can also compare
    /// passwords).
    #[arg(long = "pg-user", env = "PGUSER", default_value = "postgres")]
    pub user: String,

    /// Its password (from a Secret); never logged.
    #[arg(long = "pg-password", env = "PGPASSWORD", hide_env_values = true, value_parser = password)]
    pub password: Option<Password>,

    /// The database to connect to.
    #[arg(long = "pg-database", env = "PGDATABASE", default_value = "postgres")]
    pub database: String,

    /// How long a connection attempt may take, in seconds.
    #[arg(
        long = "pg-connect-timeout-s",
        env = "PG_CONNECT_TIMEOUT_S",
        default_value_t = 10
    )]
    pub connect_timeout_s: u64,
}

impl ServerConfig {
    /// `user@host:port/database`, without the password: what logs and errors name.
    pub fn target(&self) -> String {
        format!(
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }

    fn client_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.database)
            .application_name("postgres-operator")
            .connect_timeout(Duration::from_secs(self.connect_timeout_s.max(1)));
        if let Some(Password(password)) = &self.password {
            config.password(password);
        }
        config
    }
}

/// The real server, over one connection shared by the reconciles (statements of one client
/// run one after another; the operator's reconciles are few and short).
pub struct PgServer {
    config: ServerConfig,
    client: Mutex<Option<Arc<Client>>>,
}

impl fmt::Debug for PgServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgServer")
            .field("target", &self.config.target())
            .finish_non_exhaustive()
    }
}

impl PgServer {
    /// A server reached with `config`; the connection is made at the first call.
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config,
            client: Mutex::new(None),
        }
    }

    /// The open connection, made (again) when there is none or it broke.
    async fn client(&self) -> Result<Arc<Client>, ServerError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let target = self.config.target();
        let (client, connection) =
            self.config
                .client_config()
                .connect(NoTls)
                .await
                .map_err(|source| ServerError::Connect {
                    target: target.clone(),
                    source,
                })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                warn!(error = %e, "postgresql connection closed");
            }
        });
        info!(target = %target, "connected to postgresql");
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }
}

const DATABASE_QUERY: &str = "SELECT pg_catalog.pg_get_userbyid(datdba)::text, \
     pg_catalog.pg_encoding_to_char(encoding)::text, datconnlimit \
     FROM pg_catalog.pg_database WHERE datname = $1";
const ROLE_QUERY: &str = "SELECT rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = $1";
const PASSWORD_QUERY: &str = "SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1";
const MEMBER_OF_QUERY: &str = "SELECT g.rolname::text FROM pg_catalog.pg_auth_members m \
     JOIN pg_catalog.pg_roles g ON g.oid = m.roleid \
     JOIN pg_catalog.pg_roles u ON u.oid = m.member \
     WHERE u.rolname = $1 ORDER BY 1";

fn read(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ServerError {
    move |source| ServerError::Read { what, source }
}

impl Server for PgServer {
    fn login_role(&self) -> &str {
        &self.config.user
    }

    async fn database(&self, name: &str) -> Result<Option<DatabaseState>, ServerError> {
        let client = self.client().await?;
        let row = client
            .query_opt(DATABASE_QUERY, &[&name])
            .await
            .map_err(read("pg_database"))?;
        Ok(row.map(|row| DatabaseState {
            owner: row.get(0),
            encoding: row.get(1),
            connection_limit: row.get(2),
        }))
    }

    async fn role(&self, name: &str) -> Result<Option<RoleState>, ServerError> {
        let client = self.client().await?;
        let Some(row) = client
            .query_opt(ROLE_QUERY, &[&name])
            .await
            .map_err(read("pg_roles"))?
        else {
            return Ok(None);
        };
        let password = match client.query_opt(PASSWORD_QUERY, &[&name]).await {
            Ok(Some(row)) => match row.get::<_, Option<String>>(0) {
                Some(hash) => StoredPassword::Hash(hash),
                None => StoredPassword::None,
            },
            Ok(None) => StoredPassword::None,
            Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                debug!("pg_authid not readable: passwords are not compared");
                StoredPassword::Unreadable
            }
            Err(e) => return Err(read("pg_authid")(e)),
        };
        let member_of = client
            .query(MEMBER_OF_QUERY, &[&name])
            .await
            .map_err(read("pg_auth_members"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        Ok(Some(RoleState {
            login: row.get(0),
            password,
            member_of,
        }))
    }

    async fn execute(&self, statements: &[SqlText]) -> Result<(), ServerError> {
        let client = self.client().await?;
        for statement in statements {
            client
                .batch_execute(statement.sql())
                .await
                .map_err(|e| ServerError::refused(statement, &e))?;
            info!(statement = %statement, "statement run");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerConfig,
    }

    #[test]
    fn the_password_is_read_but_never_shown() {
        let cli = Cli::try_parse_from([
            "postgres-operator",
            "--pg-host",
            "/run/pg",
            "--pg-password",
            "hunter2",
        ])
        .expect("parses");
        assert_eq!(cli.server.password, Some(Password("hunter2".into())));
        assert!(!format!("{cli:?}").contains("hunter2"));
        assert!(!cli.server.target().contains("hunter2"));
        let server = PgServer::new(cli.server);
        assert!(!format!("{server:?}").contains("hunter2"));
    }

    #[test]
    fn refusals_a_retry_cannot_fix_are_terminal() {
        let refused = |code: &str| ServerError::Refused {
            statement: "x".into(),
            code: code.into(),
            message: String::new(),
        };
        assert!(refused("42501").is_terminal(), "insufficient privilege");
        assert!(!refused("55006").is_terminal(), "database in use");
        assert!(!refused("2BP01").is_terminal(), "dependent objects");
        assert!(!refused("42704").is_terminal(), "a role not there yet");
    }
}
