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

/// The longest Kubernetes port name (an IANA service name).
pub const MAX_PORT_NAME_LEN: usize = 15;

/// The longest DNS label: `<operator>-<component>` names a Deployment, a Service and a Docker
/// network alias.
pub const MAX_DNS_LABEL_LEN: usize = 63;

/// Checks a container image reference, `[registry[:port]/]path[:tag][@algorithm:hex]`, as
/// Docker and Kubernetes read it: lowercase path components, a tag of at most 128 word
/// characters, dots and hyphens, no whitespace.
pub fn validate_image_reference(image: &str) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("'{image}' is not an image reference: {why}"));
    if image.is_empty() {
        return Err("must not be empty".into());
    }
    if image.len() > 512 || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return refuse("no whitespace, at most 512 characters");
    }
    let (name_and_tag, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        let valid = digest.split_once(':').is_some_and(|(algorithm, hex)| {
            !algorithm.is_empty()
                && algorithm
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c))
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !valid {
            return refuse("a digest is ALGORITHM:HEX, e.g. sha256:<64 hex digits>");
        }
    }
    let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_and_tag[..last_slash + i],
            Some(&name_and_tag[last_slash + i + 1..]),
        ),
        None => (name_and_tag, None),
    };
    if let Some(tag) = tag {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            return refuse("a tag is at most 128 letters, digits, '_', '.' or '-'");
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 {
        let first = components[0];
        if first.contains(['.', ':']) || first == "localhost" {
            let (host, port) = first.split_once(':').unwrap_or((first, "1"));
            let host_ok = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
            if !host_ok || port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
                return refuse("the registry is HOST or HOST:PORT");
            }
            components.remove(0);
        }
    }
    let path_ok = |c: &str| {
        !c.is_empty()
            && c.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && c.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && c.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
    };
    if name.len() > 255 || !components.iter().all(|c| path_ok(c)) {
        return refuse(
            "the repository is lowercase letters, digits and '.', '_' or '-' between '/'",
        );
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
    fn image_references_as_docker_reads_them_are_accepted_and_others_refused() {
        for good in [
            "adf-operator:latest",
            "demo-operator",
            "registry.example.com:5000/team/adf-operator:v1.2_3",
            "localhost/x",
            "ghcr.io/org/img@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(validate_image_reference(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Adf-Operator",
            "adf operator",
            "adf:tag with space",
            "adf:",
            "a//b",
            "img@md5",
            "host:port:x/y",
            "img:-tag",
        ] {
            let error = validate_image_reference(bad).expect_err(bad);
            assert!(!error.is_empty());
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
