use super::*;

const SEED_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples");

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
