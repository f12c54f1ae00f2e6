//! Validation of every name that ends up in a NATS subject, a KV key, a container name or a path.

use thiserror::Error;

/// The longest name accepted for an operator, resource, secret, workspace or resource type.
pub const MAX_NAME_LEN: usize = 48;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{what} is empty")]
    Empty { what: &'static str },
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("{what} '{name}' is longer than {MAX_NAME_LEN} characters")]
    TooLong { what: &'static str, name: String },
    /// The name has a character outside lowercase letters, digits and hyphens, or starts or
    /// ends with a hyphen.
    #[error("{what} '{name}' must be lowercase letters, digits and hyphens, starting and ending with a letter or digit")]
    BadCharacters { what: &'static str, name: String },
}

/// Checks that `name` is lowercase letters, digits and inner hyphens, at most [`MAX_NAME_LEN`] long.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            what,
            name: name.chars().take(MAX_NAME_LEN).collect::<String>() + "…",
        });
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if !name.chars().all(allowed) || name.starts_with('-') || name.ends_with('-') {
        return Err(NameError::BadCharacters {
            what,
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Whether `key` can name an environment variable: letters, digits and `_`, not starting with
/// a digit.
pub fn is_env_var_name(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variable_names_are_letters_digits_and_underscores() {
        assert!(is_env_var_name("AZURE_CLIENT_ID"));
        assert!(is_env_var_name("_x1"));
        for bad in ["", "1ABC", "A-B", "A.B", "A B"] {
            assert!(!is_env_var_name(bad), "{bad} accepted");
        }
    }

    #[test]
    fn lowercase_names_with_inner_hyphens_are_accepted() {
        assert!(validate_name("name", "pipeline-run-1").is_ok());
        assert!(validate_name("name", "a").is_ok());
    }

    #[test]
    fn names_with_dots_capitals_or_edge_hyphens_are_refused() {
        for bad in ["a.b", "Abc", "-a", "a-", "a b", "a*", "a>", ""] {
            assert!(validate_name("name", bad).is_err(), "{bad} accepted");
        }
        assert!(matches!(
            validate_name("name", &"a".repeat(MAX_NAME_LEN + 1)),
            Err(NameError::TooLong { .. })
        ));
    }
}
