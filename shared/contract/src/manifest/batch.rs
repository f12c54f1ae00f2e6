//! Reading a batch: a text of many documents, each checked on its own, so that one bad document
//! is answered with its index, type, name and reason while the others still apply. Only what
//! spoils the whole text (too large, too many documents, not YAML at all) refuses it whole.

use serde::de::DeserializeSeed;

use super::{bounded, with_position, Manifest, ManifestError, MAX_MANIFEST_BYTES};

/// The largest batch text accepted, in bytes: a request's bound, while each document keeps
/// [`MAX_MANIFEST_BYTES`].
pub const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// The most documents one batch may hold.
pub const MAX_BATCH_DOCUMENTS: usize = 10_000;

/// One document of a batch as read: where it is, what it says it is, and the manifest or why
/// it is not one.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchDocument {
    /// 1-based index of the document in the text (empty documents are not counted).
    pub document: usize,
    /// Its `type`, when it has a string there (also for a document refused).
    pub kind: Option<String>,
    /// Its `name`, when it has a string there (also for a document refused).
    pub name: Option<String>,
    pub manifest: Result<Manifest, ManifestError>,
}

impl Manifest {
    /// Reads every document of a batch text. The whole text is refused when it is larger than
    /// [`MAX_BATCH_BYTES`], holds more than [`MAX_BATCH_DOCUMENTS`] documents, none, or is not
    /// YAML or JSON; otherwise each document is a manifest or the reason it is not, on its own
    /// (at most [`MAX_MANIFEST_BYTES`] each, written as JSON).
    pub fn parse_batch(text: &str) -> Result<Vec<BatchDocument>, ManifestError> {
        if text.len() > MAX_BATCH_BYTES {
            return Err(ManifestError::at(
                "",
                format!("batch text is larger than {MAX_BATCH_BYTES} bytes; split it into several files"),
            ));
        }
        let budget = bounded::Budget::for_text(text.len());
        let mut values = Vec::new();
        for document in serde_norway::Deserializer::from_str(text) {
            let value = bounded::Bounded {
                budget: &budget,
                depth: 0,
            }
            .deserialize(document)
            .map_err(|e| {
                ManifestError::at("", format!("not valid YAML or JSON: {}", with_position(&e)))
            })?;
            if value.is_null() {
                continue;
            }
            if values.len() == MAX_BATCH_DOCUMENTS {
                return Err(ManifestError::at(
                    "",
                    format!("a batch holds at most {MAX_BATCH_DOCUMENTS} documents; split it into several files"),
                ));
            }
            values.push(value);
        }
        if values.is_empty() {
            return Err(ManifestError::at("", "no manifest found in the text"));
        }
        Ok(values
            .into_iter()
            .enumerate()
            .map(|(i, value)| {
                let text_of = |field: &str| value.get(field).and_then(|v| v.as_str()).map(str::to_string);
                let kind = text_of("type");
                let name = text_of("name");
                let manifest = match json_len(&value) {
                    len if len > MAX_MANIFEST_BYTES => Err(ManifestError::at(
                        "",
                        format!("the document is larger than {MAX_MANIFEST_BYTES} bytes as JSON ({len})"),
                    )),
                    _ => Manifest::from_value(value),
                };
                BatchDocument {
                    document: i + 1,
                    kind,
                    name,
                    manifest,
                }
            })
            .collect())
    }
}

/// The length of a value written as compact JSON, without writing it anywhere.
fn json_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a JSON value to a sink that never fails cannot fail.
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(name: &str) -> String {
        format!("name: {name}\nversion: v1\ntype: resource\nresource: {{operator: op, type: t, spec: {{}}}}\n")
    }

    #[test]
    fn a_bad_document_is_answered_on_its_own_with_its_index_type_and_name() {
        let text = [resource("r1"), resource("Bad_Name"), resource("r3")].join("---\n");
        let documents = Manifest::parse_batch(&text).expect("the text reads");
        assert_eq!(documents.len(), 3);
        assert!(documents[0].manifest.is_ok());
        assert!(documents[2].manifest.is_ok());
        let bad = &documents[1];
        assert_eq!(bad.document, 2);
        assert_eq!(bad.kind.as_deref(), Some("resource"));
        assert_eq!(bad.name.as_deref(), Some("Bad_Name"));
        let error = bad.manifest.as_ref().expect_err("refused");
        assert_eq!(error.path, "name");
    }

    #[test]
    fn a_batch_over_the_limits_is_refused_whole_with_the_limit() {
        let text = format!("{}---\n", resource("r")).repeat(MAX_BATCH_DOCUMENTS + 1);
        let error = Manifest::parse_batch(&text).expect_err("refused");
        assert!(error.reason.contains("at most 10000 documents"), "{error}");

        let big = format!("#{}\n{}", "x".repeat(MAX_BATCH_BYTES), resource("r"));
        let error = Manifest::parse_batch(&big).expect_err("refused");
        assert!(error.reason.contains("larger than"), "{error}");
    }

    #[test]
    fn a_batch_larger_than_one_manifest_reads_when_each_document_is_small() {
        // About 250 bytes a document, as a resource with a description: 1.5 MB in all.
        let description = format!("description: {}\n", "d".repeat(150));
        let text = (0..6_000)
            .map(|i| resource(&format!("resource-{i}")) + &description)
            .collect::<Vec<_>>()
            .join("---\n");
        assert!(text.len() > MAX_MANIFEST_BYTES);
        let documents = Manifest::parse_batch(&text).expect("the text reads");
        assert_eq!(documents.len(), 6_000);
        assert!(documents.iter().all(|d| d.manifest.is_ok()));
    }

    #[test]
    fn a_document_over_the_manifest_limit_is_refused_alone() {
        let spec = format!("{{blob: '{}'}}", "x".repeat(MAX_MANIFEST_BYTES));
        let big = format!("name: big\nversion: v1\ntype: resource\nresource: {{operator: op, type: t, spec: {spec}}}\n");
        let text = [resource("r1"), big].join("---\n");
        let documents = Manifest::parse_batch(&text).expect("the text reads");
        assert!(documents[0].manifest.is_ok());
        let error = documents[1].manifest.as_ref().expect_err("refused");
        assert!(
            error.reason.contains("larger than 1048576 bytes"),
            "{error}"
        );
        assert_eq!(documents[1].name.as_deref(), Some("big"));
    }
}
