//! What `opctl apply` warns about in manifests that parse: a credential in an operator
//! component's `environmentVars`. Those are stored and shown as written (`get -d`, `render`, the
//! replicas' environment in a container's inspect), where a Secret's values are sealed at rest
//! and never shown; so each one found is named, with the Secret reference to use instead. The
//! value itself is never printed.

use operator_contract::Manifest;

/// One warning about one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// 1-based index of the document in the file.
    pub document: usize,
    /// The attribute path, e.g. `operator.components[0].environmentVars.AZURE_CLIENT_SECRET`.
    pub path: String,
    pub message: String,
}

/// Words that make a variable name a credential's, wherever they stand in it.
const CREDENTIAL_WORDS: &[&str] = &[
    "SECRET",
    "SECRETS",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "PWD",
    "TOKEN",
    "APIKEY",
    "CREDENTIAL",
    "CREDENTIALS",
    "PRIVATE",
    "CONNECTIONSTRING",
    "SAS",
];

/// Last words that make a name about a credential rather than one itself (`CLIENT_SECRET_NAME`,
/// `API_KEY_ID`, `TOKEN_URL`).
const NOT_A_VALUE_WORDS: &[&str] = &[
    "ID", "IDS", "NAME", "NAMES", "URL", "URI", "HOST", "PORT", "PATH", "FILE", "DIR", "ENDPOINT",
    "TYPE", "REF", "TTL", "EXPIRY", "HEADER", "LENGTH", "LEN", "SIZE", "VERSION", "ENABLED",
];

/// Every credential-looking `environmentVars` entry of every operator manifest.
pub fn credential_warnings(manifests: &[Manifest]) -> Vec<Warning> {
    let mut warnings = Vec::new();
    for (d, manifest) in manifests.iter().enumerate() {
        let Some(operator) = &manifest.operator else {
            continue;
        };
        for (i, component) in operator.components.iter().enumerate() {
            for (name, value) in &component.environment_vars {
                if let Some(why) = credential_reason(name, value) {
                    warnings.push(Warning {
                        document: d + 1,
                        path: format!("operator.components[{i}].environmentVars.{name}"),
                        message: format!(
                            "looks like a credential ({why}): environmentVars are stored and shown as written; put it in a Secret (type: secret, data: {{{name}: …}}) and consume it with operator.components[{i}].secrets: [{{name: SECRET, workspace: WS, keys: [{name}]}}]"
                        ),
                    });
                }
            }
        }
    }
    warnings
}

/// Why the variable looks like a credential, if it does.
fn credential_reason(name: &str, value: &str) -> Option<&'static str> {
    if value.trim().is_empty() {
        return None;
    }
    if name_is_credential(name) {
        return Some("its name");
    }
    value_is_credential(value)
}

fn name_is_credential(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    let words: Vec<&str> = upper.split('_').filter(|w| !w.is_empty()).collect();
    let Some(last) = words.last() else {
        return false;
    };
    if NOT_A_VALUE_WORDS.contains(last) {
        return false;
    }
    *last == "KEY" || words.iter().any(|w| CREDENTIAL_WORDS.contains(w))
}

/// What a value's shape gives away: a private key, a JWT, a password in a URL, an AWS access
/// key id, or a long random-looking token.
fn value_is_credential(value: &str) -> Option<&'static str> {
    let value = value.trim();
    if value.contains("-----BEGIN") && value.contains("PRIVATE KEY") {
        return Some("its value is a private key");
    }
    if let Some((_, rest)) = value.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if userinfo.contains(':') {
                return Some("its value is a URL with a password");
            }
        }
        return None;
    }
    if value.starts_with("eyJ") && value.split('.').count() == 3 {
        return Some("its value is a JSON Web Token");
    }
    if value.len() == 20
        && value.starts_with("AKIA")
        && value
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return Some("its value is an AWS access key id");
    }
    looks_random(value).then_some("its value looks like a generated token")
}

/// A long run of token characters that switches between upper case, lower case and digits as
/// often as random text does: names, words, paths and UUIDs do not.
fn looks_random(value: &str) -> bool {
    const MIN_LEN: usize = 20;
    let token_char = |c: char| c.is_ascii_alphanumeric() || "+/=_-.~".contains(c);
    if value.len() < MIN_LEN || !value.chars().all(token_char) || is_uuid(value) {
        return false;
    }
    let class = |c: char| {
        if c.is_ascii_uppercase() {
            0
        } else if c.is_ascii_lowercase() {
            1
        } else if c.is_ascii_digit() {
            2
        } else {
            3
        }
    };
    let classes: Vec<u8> = value.chars().map(class).collect();
    let used = (0..3).filter(|c| classes.contains(c)).count();
    let is_hex = value.chars().all(|c| c.is_ascii_hexdigit());
    if is_hex && value.len() >= 32 && used >= 2 {
        return true;
    }
    let switches = classes.windows(2).filter(|w| w[0] != w[1]).count();
    // Random base64 switches class at about 6 characters in 10; a CamelCase name or a word
    // with a number at the end, at 3 in 10 at most.
    used == 3 && switches * 10 >= (classes.len() - 1) * 4
}

fn is_uuid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operator_with_env(env: &[(&str, &str)]) -> Manifest {
        let vars: String = env
            .iter()
            .map(|(k, v)| format!("        {k}: '{v}'\n"))
            .collect();
        let text = format!(
            "name: op\nversion: v1\ntype: operator\noperator:\n  natsClusterConfig: {{name: n, compute: c}}\n  components:\n    - name: c\n      type: worker\n      compute: c\n      image: i:1\n      replicas: 1\n      environmentVars:\n{vars}  resources:\n    - name: t\n  enabledWorkspaces: [public]\n"
        );
        Manifest::parse_one(&text).expect("test operator parses")
    }

    fn flagged(env: &[(&str, &str)]) -> Vec<String> {
        credential_warnings(&[operator_with_env(env)])
            .into_iter()
            .map(|w| w.path.rsplit('.').next().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn credential_names_are_flagged_and_their_ids_names_and_urls_are_not() {
        let env = [
            ("AZURE_CLIENT_SECRET", "replace-me"),
            ("DB_PASSWORD", "x"),
            ("GITHUB_TOKEN", "x"),
            ("STORAGE_ACCOUNT_KEY", "x"),
            ("API_KEY", "x"),
            ("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000002"),
            ("API_KEY_ID", "abc"),
            ("TOKEN_URL", "https://login.example.com/token"),
            ("CLIENT_SECRET_NAME", "adf"),
            ("KEYSPACE", "shop"),
            ("EMPTY_SECRET", ""),
        ];
        let mut found = flagged(&env);
        found.sort();
        assert_eq!(
            found,
            [
                "API_KEY",
                "AZURE_CLIENT_SECRET",
                "DB_PASSWORD",
                "GITHUB_TOKEN",
                "STORAGE_ACCOUNT_KEY"
            ]
        );
    }

    #[test]
    fn credential_values_are_flagged_whatever_the_name() {
        let env = [
            ("A", "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MEFCQ0RFRg"),
            ("B", "nats://user:hunter2@nats:4222"),
            ("C", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"),
            ("D", "AKIAIOSFODNN7EXAMPLE"),
            (
                "E",
                "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
            ),
            (
                "F",
                "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            ),
        ];
        let mut found = flagged(&env);
        found.sort();
        assert_eq!(found, ["A", "B", "C", "D", "E", "F"]);
    }

    #[test]
    fn the_seed_settings_and_ordinary_values_are_not_flagged() {
        let env = [
            (
                "ENTITY_OF_INTEREST_MESSAGE_QUEUE",
                "azure-entities-adf-52323",
            ),
            ("ENTITY_OF_INTEREST_MESSAGE_STREAM", "dataos-azure-entities"),
            (
                "ENTITY_OF_INTEREST_MESSAGE_QUERY_REPLY_SUBJECT",
                "dataos.operator.adf.reply",
            ),
            ("OPERATOR_STATE_STORE_TYPE", "jetstream_kv"),
            (
                "AZURE_SUBSCRIPTION_ID",
                "00000000-0000-0000-0000-000000000003",
            ),
            ("APP_NAME", "MyApplicationName2024"),
            ("NATS_URL", "nats://nats:4222"),
            ("DATA_DIR", "/var/lib/operator/state/v2"),
        ];
        assert_eq!(flagged(&env), Vec::<String>::new());
    }

    #[test]
    fn a_warning_names_the_document_and_path_and_never_the_value() {
        let warnings = credential_warnings(&[
            Manifest::parse_one(
                "name: s\nversion: v1\ntype: secret\nsecret: {type: key-value, acl: r, data: {A: b}}\n",
            )
            .expect("secret parses"),
            operator_with_env(&[("AZURE_CLIENT_SECRET", "hunter2-value")]),
        ]);
        assert_eq!(warnings.len(), 1);
        let warning = &warnings[0];
        assert_eq!(warning.document, 2);
        assert_eq!(
            warning.path,
            "operator.components[0].environmentVars.AZURE_CLIENT_SECRET"
        );
        assert!(warning.message.contains("Secret"), "{}", warning.message);
        assert!(!warning.message.contains("hunter2"), "{}", warning.message);
    }
}
