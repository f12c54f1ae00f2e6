use super::*;

const SEED_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/examples");

fn read_example(name: &str) -> String {
    std::fs::read_to_string(format!("{SEED_DIR}/{name}")).expect("example manifest is readable")
}

#[test]
fn the_seed_manifests_parse_as_they_are() {
    let operator =
        Manifest::parse_one(&read_example("adf-operator.yaml")).expect("operator parses");
    assert_eq!(operator.kind, ManifestKind::Operator);
    let section = operator.operator.expect("operator section");
    assert_eq!(section.components[0].replicas, 2);
    assert_eq!(
        section.components[0].environment_vars["METRIC_PORT"],
        "30001"
    );
    assert_eq!(
        section.components[0].environment_vars["MESSAGE_DURABILITY"],
        "true"
    );
    assert_eq!(section.enabled_workspaces, vec!["public", "sandbox"]);
    let run = Manifest::parse_one(&read_example("adf-pipeline-run.yaml")).expect("resource parses");
    assert_eq!(
        run.resource.expect("resource section").resource_type,
        "pipeline-run"
    );
    let secret = Manifest::parse_one(&read_example("adf-secret.yaml")).expect("secret parses");
    assert_eq!(secret.secret.expect("secret section").data.len(), 4);
}

#[test]
fn several_documents_in_one_file_parse_in_order() {
    let text = format!(
        "{}\n---\n{}",
        read_example("adf-secret.yaml"),
        read_example("adf-pipeline-run.yaml")
    );
    let all = Manifest::parse_all(&text).expect("both parse");
    assert_eq!(
        all.iter().map(|m| m.kind).collect::<Vec<_>>(),
        vec![ManifestKind::Secret, ManifestKind::Resource]
    );
}

#[test]
fn json_input_parses_too() {
    let text = r#"{"name": "r1", "version": "v1", "type": "resource",
                   "resource": {"operator": "op", "type": "t", "spec": {"a": 1}}}"#;
    assert_eq!(Manifest::parse_one(text).expect("json parses").name, "r1");
}

#[test]
fn a_misspelt_attribute_is_named_with_its_path() {
    let text = read_example("adf-operator.yaml").replace("replicas: 2", "replica: 2");
    let err = Manifest::parse_one(&text).expect_err("misspelling refused");
    assert!(err.path.starts_with("operator.components[0]"), "{err}");
    assert!(err.reason.contains("replica"), "{err}");
}

#[test]
fn a_wrong_type_is_named_with_its_path() {
    let text = read_example("adf-operator.yaml").replace("replicas: 2", "replicas: two");
    let err = Manifest::parse_one(&text).expect_err("wrong type refused");
    assert_eq!(err.path, "operator.components[0].replicas", "{err}");
}

#[test]
fn a_missing_mandatory_attribute_is_reported() {
    let text = "name: r1\ntype: resource\nresource: {operator: op, type: t}\n";
    let err = Manifest::parse_one(text).expect_err("missing version refused");
    assert!(err.reason.contains("version"), "{err}");
}

#[test]
fn the_failing_document_is_named_when_a_file_has_several() {
    let text = format!("{}\n---\nname: Bad Name\nversion: v1\ntype: secret\nsecret: {{type: key-value, acl: r, data: {{a: b}}}}\n", read_example("adf-secret.yaml"));
    let err = Manifest::parse_all(&text).expect_err("bad name refused");
    assert_eq!(err.document, Some(2));
    assert_eq!(err.path, "name");
}

#[test]
fn a_section_that_does_not_match_the_type_is_refused() {
    let text = "name: r1\nversion: v1\ntype: secret\nresource: {operator: op, type: t}\n";
    let err = Manifest::parse_one(text).expect_err("mismatch refused");
    assert_eq!(err.path, "secret");
}

#[test]
fn a_broken_schema_is_refused_naming_the_resource_type() {
    let text = read_example("adf-operator.yaml")
        .replace("\"type\": \"object\",\n", "\"type\": \"objekt\",\n");
    let err = Manifest::parse_one(&text).expect_err("broken schema refused");
    assert!(err.path.ends_with("specSchema.jsonSchema"), "{err}");
    assert!(err.reason.contains("pipeline-run"), "{err}");
}

#[test]
fn secret_values_never_show_in_debug_output() {
    let secret = Manifest::parse_one(&read_example("adf-secret.yaml")).expect("secret parses");
    let printed = format!("{secret:?}");
    assert!(!printed.contains("replace-me"), "{printed}");
    assert!(printed.contains("AZURE_CLIENT_SECRET"));
}

#[test]
fn empty_text_is_an_error() {
    assert!(Manifest::parse_all("").is_err());
    assert!(Manifest::parse_all("---\n").is_err());
}

/// Two levels of aliases: 1,000 references to a list of 1,000 references to a list of
/// `leaves` scalars, a few kilobytes that would expand to a billion values.
fn alias_bomb(leaves: usize) -> String {
    let leaf = vec!["x"; leaves].join(", ");
    let middle = vec!["*a"; 1000].join(", ");
    let top = vec!["*b"; 1000].join(", ");
    format!("a: &a [{leaf}]\nb: &b [{middle}]\nc: [{top}]\n")
}

#[test]
fn yaml_aliases_that_expand_past_the_texts_size_are_refused_quickly() {
    let started = std::time::Instant::now();
    let err = Manifest::parse_all(&alias_bomb(1000)).expect_err("bomb refused");
    assert!(
        err.reason.contains("aliases repeat too much") || err.reason.contains("repetition limit"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_few_aliases_still_parse() {
    let text = "name: &n r1\nversion: v1\ntype: resource\nresource: {operator: op, type: t, spec: {a: &s [1, 2], b: *s, c: *n}}\n";
    let manifest = Manifest::parse_one(text).expect("aliases within bounds parse");
    let spec = manifest.resource.expect("resource").spec;
    assert_eq!(spec["b"], serde_json::json!([1, 2]));
}

#[test]
fn nesting_deeper_than_the_bound_is_refused_with_a_clear_reason() {
    let deep = |n: usize| {
        format!(
            "name: r1\nversion: v1\ntype: resource\nresource: {{operator: op, type: t, spec: {{a: {}1{}}}}}\n",
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    assert!(Manifest::parse_one(&deep(MAX_NESTING_DEPTH - 4)).is_ok());
    let err = Manifest::parse_one(&deep(MAX_NESTING_DEPTH)).expect_err("too deep");
    assert!(err.reason.contains("nest deeper than 64"), "{err}");
    let json = format!("{}{}", "[".repeat(500), "]".repeat(500));
    assert!(Manifest::parse_all(&json).is_err());
}

/// The ADF example with one line replaced.
fn operator_with(from: &str, to: &str) -> Result<Manifest, ManifestError> {
    let text = read_example("adf-operator.yaml");
    assert!(text.contains(from), "the example has no {from:?}");
    Manifest::parse_one(&text.replace(from, to))
}

#[test]
fn names_that_reach_nats_containers_or_kubernetes_are_refused_naming_the_field() {
    for (from, to, path) in [
        (
            "image: adf-operator:latest",
            "image: Adf Operator",
            "operator.components[0].image",
        ),
        (
            "- name: metrics",
            "- name: metrics-port-of-adf",
            "operator.components[0].ports[0].name",
        ),
        (
            "- name: metrics",
            "- name: Metrics",
            "operator.components[0].ports[0].name",
        ),
        (
            "ENTITY_OF_INTEREST_MESSAGE_STREAM: dataos-azure-entities",
            "ENTITY_OF_INTEREST_MESSAGE_STREAM: dataos.azure.entities",
            "operator.components[0].environmentVars.ENTITY_OF_INTEREST_MESSAGE_STREAM",
        ),
        (
            "ENTITY_OF_INTEREST_MESSAGE_QUERY_REPLY_SUBJECT: dataos.operator.adf.reply",
            "ENTITY_OF_INTEREST_MESSAGE_QUERY_REPLY_SUBJECT: dataos.operator.*.reply",
            "operator.components[0].environmentVars.ENTITY_OF_INTEREST_MESSAGE_QUERY_REPLY_SUBJECT",
        ),
        (
            "ENTITY_OF_INTEREST_MESSAGE_QUEUE: azure-entities-adf-52323",
            "ENTITY_OF_INTEREST_MESSAGE_QUEUE: azure entities",
            "operator.components[0].environmentVars.ENTITY_OF_INTEREST_MESSAGE_QUEUE",
        ),
        (
            "ELECTION_CLUSTER_NAME: azure-operators",
            "ELECTION_CLUSTER_NAME: azure.operators",
            "operator.components[0].environmentVars.ELECTION_CLUSTER_NAME",
        ),
        (
            "OPERATOR_SHARED_BUCKETS: shared-adf-monitor-budget",
            "OPERATOR_SHARED_BUCKETS: shared-adf-monitor-budget, orchestrator-resources",
            "operator.components[0].environmentVars.OPERATOR_SHARED_BUCKETS",
        ),
        (
            "- name: adf-controller",
            "- name: adf-controller-with-a-name-long-enough-to-overflow",
            "operator.components[0].name",
        ),
        (
            "name: adf-nats",
            "name: adf_nats",
            "operator.natsClusterConfig.name",
        ),
    ] {
        let err = operator_with(from, to).expect_err(to);
        assert_eq!(err.path, path, "{to}: {err}");
        assert!(!err.reason.is_empty(), "{to}: {err}");
    }
}

#[test]
fn a_query_subject_may_be_a_whole_token_wildcard() {
    let manifest = operator_with(
        "ENTITY_OF_INTEREST_MESSAGE_QUEUE: azure-entities-adf-52323",
        "ENTITY_OF_INTEREST_MESSAGE_QUERY_SUBJECT: dataos.operator.*.query",
    );
    assert!(manifest.is_ok(), "{manifest:?}");
    let err = operator_with(
        "ENTITY_OF_INTEREST_MESSAGE_QUEUE: azure-entities-adf-52323",
        "ENTITY_OF_INTEREST_MESSAGE_QUERY_SUBJECT: dataos.operator.a*.query",
    )
    .expect_err("a wildcard inside a token is refused");
    assert!(
        err.path
            .ends_with("ENTITY_OF_INTEREST_MESSAGE_QUERY_SUBJECT"),
        "{err}"
    );
}
