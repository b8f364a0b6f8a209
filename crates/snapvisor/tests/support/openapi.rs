//! The daemon's OpenAPI description as a test oracle: the file must be valid OpenAPI 3
//! (openapiv3 reads it; every `$ref` resolves; every path parameter is declared), and
//! every request body a test sends and every response it gets must conform to it (bodies
//! validated against the schemas with jsonschema; OpenAPI 3.0's `nullable` becomes a
//! `null` type first).

use openapiv3::OpenAPI;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;

pub struct Spec {
    doc: Value,
    validators: Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>,
}

/// `nullable: true` as JSON Schema says it.
fn nullable_to_null_type(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true)) {
                if let Some(t) = map.get("type").cloned() {
                    map.insert("type".into(), serde_json::json!([t, "null"]));
                }
            }
            map.values_mut().for_each(nullable_to_null_type);
        }
        Value::Array(items) => items.iter_mut().for_each(nullable_to_null_type),
        _ => {}
    }
}

fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

impl Spec {
    pub fn load() -> Self {
        let text = snapvisor::server::OPENAPI;
        let api: OpenAPI = serde_yaml_ng::from_str(text).expect("openapi.yaml is not valid OpenAPI 3");
        assert!(api.openapi.starts_with("3."), "version {}", api.openapi);
        let mut doc: Value = serde_yaml_ng::from_str(text).expect("openapi.yaml is not YAML");
        check_refs(&doc, &doc);
        check_path_parameters(&doc);
        nullable_to_null_type(&mut doc);
        Spec { doc, validators: Mutex::default() }
    }

    /// The path template and operation for `method path` (path without its query).
    fn operation(&self, method: &str, path: &str) -> (String, &Value) {
        let path = path.split('?').next().unwrap();
        let segments: Vec<&str> = path.split('/').collect();
        let paths = self.doc["paths"].as_object().unwrap();
        for (template, item) in paths {
            let t: Vec<&str> = template.split('/').collect();
            let matches = t.len() == segments.len()
                && t.iter().zip(&segments).all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s);
            if matches {
                let op = item
                    .get(method.to_lowercase())
                    .unwrap_or_else(|| panic!("{method} {template} is not in openapi.yaml"));
                return (template.clone(), op);
            }
        }
        panic!("{path} is not in openapi.yaml");
    }

    fn validator(&self, pointer: &str) -> std::sync::Arc<jsonschema::Validator> {
        let mut cache = self.validators.lock().unwrap();
        cache
            .entry(pointer.to_string())
            .or_insert_with(|| {
                let mut root = self.doc.clone();
                // A URI fragment: the braces of path templates are percent-encoded.
                let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
                root["$ref"] = Value::String(format!("#{fragment}"));
                std::sync::Arc::new(
                    jsonschema::options()
                        .with_draft(jsonschema::Draft::Draft7)
                        .build(&root)
                        .unwrap_or_else(|e| panic!("schema at {pointer}: {e}")),
                )
            })
            .clone()
    }

    fn errors(&self, pointer: &str, value: &Value) -> Vec<String> {
        let validator = self.validator(pointer);
        let errors: Vec<String> =
            validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path)).collect();
        errors
    }

    /// Whether a JSON request body conforms; the reasons if not.
    pub fn request_errors(&self, method: &str, path: &str, body: &Value) -> Vec<String> {
        let (template, op) = self.operation(method, path);
        assert!(op["requestBody"]["content"]["application/json"].is_object(), "{method} {template} takes no JSON body");
        let pointer = format!(
            "/paths/{}/{}/requestBody/content/application~1json/schema",
            escape_pointer(&template),
            method.to_lowercase()
        );
        self.errors(&pointer, body)
    }

    /// Panics unless the response conforms: a documented status (or `default`), its content
    /// type, its body's schema, and Retry-After on 429 and 503.
    pub fn check_response(&self, method: &str, path: &str, response: &snapvisor::cli::client::Response) {
        let (template, op) = self.operation(method, path);
        let status = response.status.as_u16().to_string();
        let (code, mut resp) = match op["responses"].get(&status) {
            Some(r) => (status.clone(), r),
            None => (
                "default".to_string(),
                op["responses"].get("default").unwrap_or_else(|| {
                    panic!("{method} {template}: status {status} is not documented (body {:?})", response.body)
                }),
            ),
        };
        let mut base = format!("/paths/{}/{}/responses/{code}", escape_pointer(&template), method.to_lowercase());
        if let Some(r) = resp.get("$ref").and_then(Value::as_str) {
            base = r.trim_start_matches('#').to_string();
            resp = self.doc.pointer(&base).unwrap();
        }
        let body = &response.body;
        let Some(content) = resp.get("content").and_then(Value::as_object) else {
            assert!(body.is_empty(), "{method} {path}: {status} has no documented body, got {body:?}");
            return;
        };
        let ctype = response.headers.get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let media = content.keys().find(|m| ctype.starts_with(m.as_str())).unwrap_or_else(|| {
            panic!("{method} {path}: content type {ctype:?} is not one of {:?}", content.keys().collect::<Vec<_>>())
        });
        if media == "application/json" {
            let value: Value =
                serde_json::from_slice(body).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e})"));
            let errors = self.errors(&format!("{base}/content/application~1json/schema"), &value);
            assert!(errors.is_empty(), "{method} {path} ({status}) does not conform: {errors:?}\n{value}");
        }
        if matches!(response.status.as_u16(), 429 | 503) {
            assert!(response.headers.get("retry-after").is_some(), "{method} {path}: {status} without Retry-After");
        }
    }
}

/// Every `$ref` points at something in the document.
fn check_refs(doc: &Value, v: &Value) {
    match v {
        Value::Object(map) => {
            if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("external $ref {r}"));
                assert!(doc.pointer(pointer).is_some(), "$ref {r} resolves to nothing");
            }
            map.values().for_each(|v| check_refs(doc, v));
        }
        Value::Array(items) => items.iter().for_each(|v| check_refs(doc, v)),
        _ => {}
    }
}

/// Every `{param}` of a path is declared as a path parameter (on the path or the operation).
fn check_path_parameters(doc: &Value) {
    let resolve = |p: &Value| -> Value {
        match p.get("$ref").and_then(Value::as_str) {
            Some(r) => doc.pointer(r.trim_start_matches('#')).unwrap().clone(),
            None => p.clone(),
        }
    };
    for (template, item) in doc["paths"].as_object().unwrap() {
        let params: Vec<&str> = template.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).collect();
        for (method, op) in item.as_object().unwrap().iter().filter(|(k, _)| *k != "parameters") {
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {template} has no responses");
            let declared: Vec<Value> = item
                .get("parameters")
                .into_iter()
                .chain(op.get("parameters"))
                .flat_map(|p| p.as_array().unwrap().iter().map(resolve))
                .filter(|p| p["in"] == "path")
                .collect();
            for name in &params {
                assert!(declared.iter().any(|p| p["name"] == *name), "{method} {template}: {{{name}}} undeclared");
            }
        }
    }
}
