//! The statements the operator sends, built from quoted names: no text from a spec reaches the
//! server unquoted. PostgreSQL takes no bind parameters in `CREATE DATABASE` or `ALTER ROLE`, so
//! names are quoted as identifiers and the one literal (a password verifier) as a string.
//! A statement's `Display` never shows a password: only `SqlText::sql` does.

use std::fmt;

/// `"name"`, with inner double quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with inner single quotes doubled (the server runs with
/// `standard_conforming_strings`, on since 9.1, so backslashes are plain characters).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// One statement to run, and how it is described in logs and events.
#[derive(Clone, PartialEq, Eq)]
pub struct SqlText {
    sql: String,
    /// The statement with any password verifier left out.
    shown: String,
}

impl SqlText {
    fn plain(sql: String) -> Self {
        Self {
            shown: sql.clone(),
            sql,
        }
    }

    /// The text to send.
    pub fn sql(&self) -> &str {
        &self.sql
    }
}

impl fmt::Display for SqlText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for SqlText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SqlText({})", self.shown)
    }
}

pub fn create_database(name: &str, owner: &str, encoding: &str, limit: i32) -> SqlText {
    // template0: a new encoding needs a template without data in another one.
    SqlText::plain(format!(
        "CREATE DATABASE {} OWNER {} ENCODING {} TEMPLATE template0 CONNECTION LIMIT {limit}",
        ident(name),
        ident(owner),
        literal(encoding)
    ))
}

pub fn alter_database_owner(name: &str, owner: &str) -> SqlText {
    SqlText::plain(format!(
        "ALTER DATABASE {} OWNER TO {}",
        ident(name),
        ident(owner)
    ))
}

pub fn alter_database_limit(name: &str, limit: i32) -> SqlText {
    SqlText::plain(format!(
        "ALTER DATABASE {} CONNECTION LIMIT {limit}",
        ident(name)
    ))
}

pub fn drop_database(name: &str) -> SqlText {
    SqlText::plain(format!("DROP DATABASE IF EXISTS {}", ident(name)))
}

fn login(login: bool) -> &'static str {
    if login {
        "LOGIN"
    } else {
        "NOLOGIN"
    }
}

pub fn create_role(name: &str, can_login: bool) -> SqlText {
    SqlText::plain(format!("CREATE ROLE {} {}", ident(name), login(can_login)))
}

pub fn alter_role_login(name: &str, can_login: bool) -> SqlText {
    SqlText::plain(format!("ALTER ROLE {} {}", ident(name), login(can_login)))
}

/// Sets a password from its SCRAM verifier: neither the server's log nor its statistics ever
/// see the password itself.
pub fn alter_role_password(name: &str, verifier: &str) -> SqlText {
    SqlText {
        sql: format!("ALTER ROLE {} PASSWORD {}", ident(name), literal(verifier)),
        shown: format!("ALTER ROLE {} PASSWORD '…'", ident(name)),
    }
}

pub fn grant_membership(parent: &str, member: &str) -> SqlText {
    SqlText::plain(format!("GRANT {} TO {}", ident(parent), ident(member)))
}

pub fn revoke_membership(parent: &str, member: &str) -> SqlText {
    SqlText::plain(format!("REVOKE {} FROM {}", ident(parent), ident(member)))
}

pub fn drop_role(name: &str) -> SqlText {
    SqlText::plain(format!("DROP ROLE IF EXISTS {}", ident(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_literals_are_quoted_so_they_cannot_end_the_statement() {
        assert_eq!(ident("orders"), "\"orders\"");
        assert_eq!(
            ident("a\"; DROP TABLE x; --"),
            "\"a\"\"; DROP TABLE x; --\""
        );
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(
            create_database("shop-db", "app", "UTF8", -1).sql(),
            "CREATE DATABASE \"shop-db\" OWNER \"app\" ENCODING 'UTF8' TEMPLATE template0 CONNECTION LIMIT -1"
        );
        assert_eq!(
            grant_membership("readers", "app").sql(),
            "GRANT \"readers\" TO \"app\""
        );
    }

    #[test]
    fn a_password_statement_shows_no_verifier() {
        let statement = alter_role_password("app", "SCRAM-SHA-256$4096:c2FsdA==$a:b");
        assert!(statement.sql().contains("SCRAM-SHA-256$4096"));
        assert!(!statement.to_string().contains("SCRAM"));
        assert!(!format!("{statement:?}").contains("SCRAM"));
    }
}
