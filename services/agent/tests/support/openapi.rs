//! Just enough of OpenAPI 3.0 for the dashboard tests: load
//! `services/agent/openapi.yaml`, list its operations, and validate a JSON
//! value against one of its schemas.
//!
//! The validator is strict on purpose: a schema keyword it does not know
//! fails the test rather than being skipped, so a constraint written in
//! the file is never silently unchecked.

use std::collections::BTreeMap;

use serde_json::Value;

const KNOWN_KEYWORDS: [&str; 10] = [
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "minimum",
    "nullable",
    "description",
    "$ref",
];

pub struct Spec {
    doc: Value,
}

/// One documented response: its content type and body schema, if any.
#[derive(Clone, Debug)]
pub struct Documented {
    pub content_type: Option<String>,
    pub schema: Option<Value>,
}

#[derive(Clone, Debug)]
pub struct Operation {
    pub path: String,
    pub method: String,
    pub secured: bool,
    pub responses: BTreeMap<u16, Documented>,
}

impl Spec {
    pub fn load() -> Spec {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
        let text = std::fs::read_to_string(path).expect("openapi.yaml is readable");
        let doc: Value = serde_norway::from_str(&text).expect("openapi.yaml is valid YAML");
        assert_eq!(
            doc["openapi"].as_str(),
            Some("3.0.3"),
            "the validator speaks OpenAPI 3.0"
        );
        Spec { doc }
    }

    pub fn schema(&self, name: &str) -> Value {
        let schema = &self.doc["components"]["schemas"][name];
        assert!(schema.is_object(), "no schema {name} in openapi.yaml");
        schema.clone()
    }

    pub fn operations(&self) -> Vec<Operation> {
        let mut ops = Vec::new();
        let paths = self.doc["paths"].as_object().expect("paths is a map");
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("a path item is a map") {
                let responses = op["responses"]
                    .as_object()
                    .expect("responses is a map")
                    .iter()
                    .map(|(code, r)| {
                        let content = r["content"].as_object().and_then(|c| c.iter().next());
                        let documented = Documented {
                            content_type: content.map(|(t, _)| t.clone()),
                            schema: content.and_then(|(_, c)| c.get("schema").cloned()),
                        };
                        (code.parse::<u16>().expect("status codes are numbers"), documented)
                    })
                    .collect();
                ops.push(Operation {
                    path: path.clone(),
                    method: method.to_uppercase(),
                    secured: op.get("security").is_some(),
                    responses,
                });
            }
        }
        ops
    }

    /// Every way `value` breaks `schema`, as `path: problem` lines.
    pub fn validate(&self, schema: &Value, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(schema, value, "$", &mut errors);
        errors
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let object = schema.as_object().expect("a schema is a map");
        for key in object.keys() {
            assert!(
                KNOWN_KEYWORDS.contains(&key.as_str()),
                "the test's validator does not support the keyword {key:?} (at {at})"
            );
        }
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .expect("only local schema references");
            return self.check(&self.schema(name), value, at, errors);
        }
        if value.is_null() {
            if schema.get("nullable") != Some(&Value::Bool(true)) {
                errors.push(format!("{at}: null where the schema does not allow it"));
            }
            return;
        }
        let ty = schema
            .get("type")
            .and_then(Value::as_str)
            .expect("every schema has a type");
        let type_ok = match ty {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            other => panic!("unknown type {other:?} at {at}"),
        };
        if !type_ok {
            errors.push(format!("{at}: expected {ty}, found {value}"));
            return;
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            if !options.contains(value) {
                errors.push(format!("{at}: {value} is not one of {options:?}"));
            }
        }
        if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), value.as_f64()) {
            if n < min {
                errors.push(format!("{at}: {n} is below the minimum {min}"));
            }
        }
        if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
            for (i, item) in values.iter().enumerate() {
                self.check(items, item, &format!("{at}[{i}]"), errors);
            }
        }
        if let Some(map) = value.as_object() {
            let properties = schema.get("properties").and_then(Value::as_object);
            for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                let name = name.as_str().expect("required names are strings");
                if !map.contains_key(name) {
                    errors.push(format!("{at}: required field {name:?} is missing"));
                }
            }
            for (key, field) in map {
                match properties.and_then(|p| p.get(key)) {
                    Some(sub) => self.check(sub, field, &format!("{at}.{key}"), errors),
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        errors.push(format!("{at}: field {key:?} is not in the schema"));
                    }
                    None => {}
                }
            }
        }
    }
}
