//! Property tests of the manifest parser: arbitrary text, and the shipped examples mutated byte
//! by byte, never panic, and every refusal says where (a document, an attribute path, a line)
//! and why. 256 cases each; `PROPTEST_CASES` raises it.

use proptest::prelude::*;

use super::*;

const EXAMPLES: [&str; 4] = [
    include_str!("../../../../deploy/examples/adf-operator.yaml"),
    include_str!("../../../../deploy/examples/adf-secret.yaml"),
    include_str!("../../../../deploy/examples/adf-pipeline-run.yaml"),
    include_str!("../../../../deploy/examples/demo-operator.yaml"),
];

/// How a byte of an example is changed.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, u8),
    Delete(usize),
    Insert(usize, u8),
    /// Copies a run of the text elsewhere (a repeated key, a stray block).
    Duplicate(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that matter to YAML and JSON, and any other byte.
    let byte = prop_oneof![
        prop::sample::select(b":-[]{}&*!|>'\"#,\n \t%@`?.0aZ".to_vec()),
        any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1..64usize, any::<usize>())
            .prop_map(|(from, len, to)| Mutation::Duplicate(from, len, to)),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Replace(i, b) if !bytes.is_empty() => bytes[i % len] = b,
            Mutation::Delete(i) if !bytes.is_empty() => {
                bytes.remove(i % len);
            }
            Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            Mutation::Duplicate(from, n, to) if !bytes.is_empty() => {
                let from = from % len;
                let run = bytes[from..(from + n).min(bytes.len())].to_vec();
                let to = to % (bytes.len() + 1);
                bytes.splice(to..to, run);
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A refusal says where and why: a syntax error its line, anything else the attribute it is
/// about (its path, or a field named in the reason), or what is wrong with the text as a whole.
fn assert_clear(err: &ManifestError) {
    let shown = err.to_string();
    assert!(!err.reason.trim().is_empty(), "no reason: {shown:?}");
    let whole_text = [
        "no manifest found",
        "expected one manifest",
        "larger than",
        "expands to more than",
        "nest deeper than",
        "a manifest is a mapping",
    ]
    .iter()
    .any(|phrase| err.reason.contains(phrase));
    let located = if err.reason.starts_with("not valid YAML or JSON") {
        err.reason.contains(" line ") || whole_text
    } else {
        !err.path.is_empty() || err.reason.contains('`') || whole_text
    };
    assert!(located, "a refusal that says not where: {shown:?}");
}

/// 256 cases, or `PROPTEST_CASES`; shared by the crate's property tests.
pub(crate) fn config() -> ProptestConfig {
    // PROPTEST_CASES, when set, wins over this default.
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics_and_refusals_say_where(text in any::<String>()) {
        if let Err(err) = Manifest::parse_all(&text) {
            assert_clear(&err);
        }
    }

    #[test]
    fn arbitrary_bytes_read_as_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(err) = Manifest::parse_all(&String::from_utf8_lossy(&bytes)) {
            assert_clear(&err);
        }
    }

    #[test]
    fn mutated_examples_parse_or_are_refused_clearly(
        example in 0..EXAMPLES.len(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let text = mutate(EXAMPLES[example], &mutations);
        match Manifest::parse_all(&text) {
            // What parses passed every check: its names stay valid.
            Ok(manifests) => {
                for m in manifests {
                    prop_assert!(crate::names::validate_name("name", &m.name).is_ok());
                }
            }
            Err(err) => assert_clear(&err),
        }
    }

    #[test]
    fn arbitrary_json_values_never_panic(value in json_value()) {
        if let Err(err) = Manifest::from_value(value.clone()) {
            assert_clear(&err);
        }
        let text = value.to_string();
        if let Err(err) = Manifest::parse_all(&text) {
            assert_clear(&err);
        }
    }
}

/// JSON values a few levels deep, with keys a manifest has among others.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "name",
            "version",
            "type",
            "operator",
            "resource",
            "secret",
            "spec",
            "data",
            "components",
            "resources",
            "workspace",
            "acl",
        ])
        .prop_map(str::to_string),
        "[a-zA-Z_]{0,8}",
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "operator", "resource", "secret", "v1", "public", "Bad Name", "a.b", "*", "",
        ])
        .prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
