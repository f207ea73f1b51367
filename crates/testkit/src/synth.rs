//! Deterministic JSON documents that validate against a JSON Schema, for the instant-reply
//! benchmark endpoint. [`synthesize`] walks a schema and builds the smallest plausible value:
//! objects carry every listed property (required and optional), strings are a few words from a
//! fixed vocabulary (honouring `enum`/`const`, `minLength`/`maxLength` and common `format`s),
//! numbers take `minimum` (or 1) clamped to `maximum`, booleans are `true`, arrays hold
//! `max(minItems, array_items)` items capped by `maxItems`. `$ref` into the same document
//! (`#/$defs/…`, `#/definitions/…`, `#`) is followed, `allOf` is merged, `anyOf`/`oneOf` take
//! their first branch, and recursion is bounded: past a depth limit arrays shrink to `minItems`
//! and objects to their required properties. The word choice comes from a caller-given seed, so
//! the same request always gets the same document and different requests usually differ.
//! `pattern`, `contains`, `not` and `if`/`then` are not modelled.

use serde_json::{Map, Number, Value};

/// Words the synthesiser draws strings from.
const WORDS: [&str; 64] = [
    "amber", "river", "quiet", "garden", "copper", "signal", "maple", "harbor", "lantern",
    "meadow", "silver", "canyon", "orbit", "pepper", "willow", "ember", "falcon", "granite",
    "island", "juniper", "kettle", "lemon", "marble", "nectar", "oak", "pebble", "quartz", "raven",
    "saffron", "timber", "umber", "velvet", "walnut", "yarrow", "zephyr", "basil", "cedar", "dune",
    "fern", "glacier", "hazel", "iris", "jasper", "kelp", "lilac", "moss", "north", "olive",
    "prairie", "quill", "ridge", "spruce", "tide", "upland", "vale", "wren", "birch", "coral",
    "delta", "echo", "flint", "grove", "heron", "ivy",
];

/// Nesting past this depth stops adding optional content, so recursive schemas terminate.
const DEPTH_LIMIT: usize = 12;
/// `$ref` chains longer than this are treated as unresolvable.
const REF_LIMIT: usize = 64;

/// 64-bit FNV-1a: a cheap, stable hash for seeding word choice from request bytes.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The `i`-th word for `seed`: a fixed permutation walk, so consecutive draws differ.
pub fn word(seed: u64, i: u64) -> &'static str {
    let mixed = seed
        .wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .rotate_left(17)
        .wrapping_mul(0xbf58_476d_1ce4_e5b9);
    WORDS[(mixed >> 58) as usize]
}

/// A value that validates against `schema` (given as the root document, so local `$ref`s
/// resolve). `array_items` is the preferred array length; `seed` picks the words.
pub fn synthesize(schema: &Value, array_items: usize, seed: u64) -> Value {
    let mut synth = Synth {
        root: schema,
        array_items,
        seed,
        draws: 0,
    };
    synth.value(schema, 0)
}

struct Synth<'a> {
    root: &'a Value,
    array_items: usize,
    seed: u64,
    draws: u64,
}

impl<'a> Synth<'a> {
    fn next_word(&mut self) -> &'static str {
        let w = word(self.seed, self.draws);
        self.draws += 1;
        w
    }

    /// The schema a local `$ref` (`#`, `#/$defs/x`, `#/definitions/x`, …) points at.
    fn target(&self, reference: &str) -> Option<&'a Value> {
        match reference.strip_prefix('#')? {
            "" => Some(self.root),
            pointer => self.root.pointer(pointer),
        }
    }

    /// Follows `$ref` chains (local pointers into the root) to the schema they name; `None`
    /// when one cannot be resolved.
    fn resolve<'s>(&self, mut schema: &'s Value) -> Option<&'s Value>
    where
        'a: 's,
    {
        for _ in 0..REF_LIMIT {
            let Some(reference) = schema.get("$ref").and_then(Value::as_str) else {
                return Some(schema);
            };
            // A `$ref` with sibling keywords (2019-09 and later): merged by `flatten`.
            if schema.as_object().is_some_and(|o| o.len() > 1) {
                return Some(schema);
            }
            schema = self.target(reference)?;
        }
        None
    }

    /// Merges `allOf` parts and `$ref` targets with their siblings into one schema object.
    fn flatten(&self, schema: &Value, into: &mut Map<String, Value>, depth: usize) {
        if depth > REF_LIMIT {
            return;
        }
        let Some(obj) = schema.as_object() else {
            return;
        };
        for (key, val) in obj {
            match key.as_str() {
                "$ref" => {
                    if let Some(target) = val.as_str().and_then(|r| self.target(r)) {
                        self.flatten(target, into, depth + 1);
                    }
                }
                "allOf" => {
                    for part in val.as_array().into_iter().flatten() {
                        self.flatten(part, into, depth + 1);
                    }
                }
                "properties" => {
                    let props = into
                        .entry("properties")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let (Some(dst), Some(src)) = (props.as_object_mut(), val.as_object()) {
                        for (name, sub) in src {
                            dst.entry(name.clone()).or_insert_with(|| sub.clone());
                        }
                    }
                }
                "required" => {
                    let req = into
                        .entry("required")
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let (Some(dst), Some(src)) = (req.as_array_mut(), val.as_array()) {
                        for name in src {
                            if !dst.contains(name) {
                                dst.push(name.clone());
                            }
                        }
                    }
                }
                "minimum" | "exclusiveMinimum" | "minLength" | "minItems" | "minProperties" => {
                    keep_larger(into, key, val);
                }
                "maximum" | "exclusiveMaximum" | "maxLength" | "maxItems" | "maxProperties" => {
                    keep_smaller(into, key, val);
                }
                _ => {
                    into.entry(key.clone()).or_insert_with(|| val.clone());
                }
            }
        }
    }

    fn value(&mut self, schema: &Value, depth: usize) -> Value {
        match schema {
            Value::Bool(true) => return Value::String(self.next_word().to_owned()),
            Value::Object(_) => {}
            _ => return Value::Null,
        }
        let Some(schema) = self.resolve(schema) else {
            return Value::Null;
        };
        let Some(obj) = schema.as_object() else {
            return self.value(schema, depth + 1);
        };
        if obj.contains_key("allOf") || obj.contains_key("$ref") {
            let mut merged = Map::new();
            self.flatten(schema, &mut merged, 0);
            merged.remove("allOf");
            merged.remove("$ref");
            return self.value(&Value::Object(merged), depth + 1);
        }
        if let Some(c) = obj.get("const") {
            return c.clone();
        }
        if let Some(first) = obj
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            return first.clone();
        }
        for key in ["anyOf", "oneOf"] {
            let Some(first) = obj
                .get(key)
                .and_then(Value::as_array)
                .and_then(|b| b.first())
            else {
                continue;
            };
            if obj.len() == 1 {
                return self.value(first, depth + 1);
            }
            // Sibling keywords constrain the branch too: generate from both merged.
            let mut merged = Map::new();
            for (k, v) in obj {
                if k != key {
                    merged.insert(k.clone(), v.clone());
                }
            }
            let branch = Value::Object(
                [(
                    "allOf".to_owned(),
                    Value::Array(vec![first.clone(), Value::Object(merged)]),
                )]
                .into_iter()
                .collect(),
            );
            return self.value(&branch, depth + 1);
        }
        match type_of(obj) {
            "object" => self.object(obj, depth),
            "array" => self.array(obj, depth),
            "integer" => integer(obj),
            "number" => number(obj),
            "boolean" => Value::Bool(true),
            "null" => Value::Null,
            _ => self.string(obj),
        }
    }

    fn object(&mut self, obj: &Map<String, Value>, depth: usize) -> Value {
        let required: Vec<&str> = obj
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let additional = obj.get("additionalProperties");
        let mut out = Map::new();
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                if depth >= DEPTH_LIMIT && !required.contains(&name.as_str()) {
                    continue;
                }
                let v = self.value(sub, depth + 1);
                out.insert(name.clone(), v);
            }
        }
        let missing: Vec<String> = required
            .iter()
            .filter(|n| !out.contains_key(**n))
            .map(|n| (*n).to_owned())
            .collect();
        let min_props = as_usize(obj.get("minProperties")).unwrap_or(0);
        let open = !matches!(additional, Some(Value::Bool(false)));
        let extras = (1..).map(|i| format!("extra{i}"));
        for name in missing.into_iter().chain(extras) {
            if out.len() >= min_props && !required.contains(&name.as_str()) {
                break;
            }
            if !open && !required.contains(&name.as_str()) {
                break;
            }
            let v = match additional {
                Some(a @ Value::Object(_)) => self.value(a, depth + 1),
                _ => Value::String(self.next_word().to_owned()),
            };
            out.insert(name, v);
        }
        Value::Object(out)
    }

    fn array(&mut self, obj: &Map<String, Value>, depth: usize) -> Value {
        let min = as_usize(obj.get("minItems")).unwrap_or(0);
        let max = as_usize(obj.get("maxItems")).unwrap_or(usize::MAX);
        let want = if depth >= DEPTH_LIMIT {
            min
        } else {
            min.max(self.array_items)
        };
        let n = want.min(max);
        let prefix: &[Value] = obj
            .get("prefixItems")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice);
        let items = obj.get("items");
        let unique = obj.get("uniqueItems") == Some(&Value::Bool(true));
        let mut out: Vec<Value> = Vec::with_capacity(n);
        let mut tries = 0;
        while out.len() < n && tries < n * 4 + 4 {
            tries += 1;
            let i = out.len();
            let v = match (prefix.get(i), items) {
                (Some(p), _) => self.value(p, depth + 1),
                (None, Some(Value::Bool(false))) => break,
                (None, Some(s)) => self.value(s, depth + 1),
                (None, None) => Value::String(self.next_word().to_owned()),
            };
            if unique && out.contains(&v) {
                let v = bump(v, i);
                if !out.contains(&v) {
                    out.push(v);
                }
                continue;
            }
            out.push(v);
        }
        Value::Array(out)
    }

    fn string(&mut self, obj: &Map<String, Value>) -> Value {
        let min = as_usize(obj.get("minLength")).unwrap_or(0);
        let max = as_usize(obj.get("maxLength")).unwrap_or(usize::MAX);
        let mut s = match obj.get("format").and_then(Value::as_str) {
            Some("date") => "2024-01-01".to_owned(),
            Some("date-time") => "2024-01-01T00:00:00Z".to_owned(),
            Some("time") => "00:00:00Z".to_owned(),
            Some("email") => "user@example.com".to_owned(),
            Some("uri" | "url" | "iri") => "https://example.com/".to_owned(),
            Some("uuid") => "00000000-0000-4000-8000-000000000000".to_owned(),
            Some("ipv4") => "127.0.0.1".to_owned(),
            Some("ipv6") => "::1".to_owned(),
            Some("hostname") => "example.com".to_owned(),
            _ => {
                let a = self.next_word();
                let b = self.next_word();
                format!("{a} {b}")
            }
        };
        while s.chars().count() < min {
            s.push(' ');
            s.push_str(self.next_word());
        }
        if s.chars().count() > max {
            s = s.chars().take(max).collect();
        }
        Value::String(s)
    }
}

/// The type to generate: the first non-null of `type`, else one implied by the keywords.
fn type_of(obj: &Map<String, Value>) -> &str {
    match obj.get("type") {
        Some(Value::String(t)) => t,
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .or_else(|| ts.first().and_then(Value::as_str))
            .unwrap_or("string"),
        _ => {
            let has = |k: &str| obj.contains_key(k);
            if has("properties") || has("required") || has("additionalProperties") {
                "object"
            } else if has("items") || has("prefixItems") || has("minItems") || has("maxItems") {
                "array"
            } else if has("minimum") || has("maximum") || has("multipleOf") {
                "number"
            } else {
                "string"
            }
        }
    }
}

fn as_usize(v: Option<&Value>) -> Option<usize> {
    v.and_then(Value::as_f64).map(|f| f.max(0.0) as usize)
}

/// The lower bound (inclusive) and upper bound (inclusive) a number must fall in.
fn bounds(obj: &Map<String, Value>, step: f64) -> (Option<f64>, Option<f64>) {
    let lo = match (
        obj.get("minimum").and_then(Value::as_f64),
        obj.get("exclusiveMinimum").and_then(Value::as_f64),
    ) {
        (Some(a), Some(b)) => Some(a.max(b + step)),
        (Some(a), None) => Some(a),
        (None, Some(b)) => Some(b + step),
        (None, None) => None,
    };
    let hi = match (
        obj.get("maximum").and_then(Value::as_f64),
        obj.get("exclusiveMaximum").and_then(Value::as_f64),
    ) {
        (Some(a), Some(b)) => Some(a.min(b - step)),
        (Some(a), None) => Some(a),
        (None, Some(b)) => Some(b - step),
        (None, None) => None,
    };
    (lo, hi)
}

fn integer(obj: &Map<String, Value>) -> Value {
    let (lo, hi) = bounds(obj, 1.0);
    let mut v = lo.map_or(1.0, f64::ceil);
    if let Some(hi) = hi {
        v = v.min(hi.floor());
    }
    if let Some(m) = obj
        .get("multipleOf")
        .and_then(Value::as_f64)
        .filter(|m| *m > 0.0)
    {
        v = (v / m).ceil() * m;
    }
    Value::Number(Number::from(v as i64))
}

fn number(obj: &Map<String, Value>) -> Value {
    // Exclusive bounds are stepped inside below: by half the gap, or by one when open.
    let (lo, hi) = bounds(obj, 0.0);
    let ex_lo = obj.get("exclusiveMinimum").and_then(Value::as_f64);
    let ex_hi = obj.get("exclusiveMaximum").and_then(Value::as_f64);
    let mut v = lo.unwrap_or(1.0);
    if ex_lo.is_some_and(|e| v <= e) {
        v = match hi {
            Some(h) if h > v => (v + h) / 2.0,
            _ => v + 1.0,
        };
    }
    if let Some(h) = hi
        && (v > h || ex_hi.is_some_and(|e| v >= e))
    {
        v = match lo {
            Some(l) if l < h => (l + h) / 2.0,
            _ => h - 1.0,
        };
    }
    if let Some(m) = obj
        .get("multipleOf")
        .and_then(Value::as_f64)
        .filter(|m| *m > 0.0)
    {
        v = (v / m).ceil() * m;
    }
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        Value::Number(Number::from(v as i64))
    } else {
        Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

/// Makes a duplicate array item distinct where its type allows it.
fn bump(v: Value, i: usize) -> Value {
    match v {
        Value::String(s) => Value::String(format!("{s} {i}")),
        Value::Number(n) if n.is_i64() => {
            Value::Number(Number::from(n.as_i64().unwrap_or(0) + i as i64))
        }
        other => other,
    }
}

fn keep_larger(into: &mut Map<String, Value>, key: &str, val: &Value) {
    match (into.get(key).and_then(Value::as_f64), val.as_f64()) {
        (Some(a), Some(b)) if a >= b => {}
        _ => {
            into.insert(key.to_owned(), val.clone());
        }
    }
}

fn keep_smaller(into: &mut Map<String, Value>, key: &str, val: &Value) {
    match (into.get(key).and_then(Value::as_f64), val.as_f64()) {
        (Some(a), Some(b)) if a <= b => {}
        _ => {
            into.insert(key.to_owned(), val.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(schema: Value) -> Value {
        let validator = jsonschema::validator_for(&schema).expect("schema compiles");
        for seed in [0, 1, 42, u64::MAX] {
            for items in [0, 1, 4, 9] {
                let v = synthesize(&schema, items, seed);
                let errors: Vec<String> =
                    validator.iter_errors(&v).map(|e| e.to_string()).collect();
                assert!(errors.is_empty(), "{v} fails {schema}: {errors:?}");
            }
        }
        synthesize(&schema, 4, 7)
    }

    #[test]
    fn decomposition_like_schema() {
        let v = check(json!({
            "type": "object",
            "properties": {
                "facts": {"type": "array", "items": {"type": "string", "minLength": 3}},
                "sub_instructions": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 6},
                "note": {"type": ["string", "null"]}
            },
            "required": ["facts", "sub_instructions"],
            "additionalProperties": false
        }));
        assert_eq!(v["facts"].as_array().map(Vec::len), Some(4));
        assert_eq!(v["sub_instructions"].as_array().map(Vec::len), Some(4));
        assert!(
            v["note"].is_string(),
            "optional properties are filled too: {v}"
        );
    }

    #[test]
    fn enums_consts_numbers_and_booleans() {
        let v = check(json!({
            "type": "object",
            "properties": {
                "kind": {"type": "string", "enum": ["contradict", "parallel"]},
                "version": {"const": 3},
                "valid": {"type": "boolean"},
                "score": {"type": "integer", "minimum": 5, "maximum": 9},
                "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                "even": {"type": "integer", "minimum": 3, "multipleOf": 2},
                "count": {"type": "integer"},
                "code": {"type": "string", "minLength": 20, "maxLength": 24},
                "when": {"type": "string", "format": "date"}
            },
            "required": ["kind", "valid"]
        }));
        assert_eq!(v["kind"], "contradict");
        assert_eq!(v["version"], 3);
        assert_eq!(v["valid"], true);
        assert_eq!(v["score"], 5);
        assert_eq!(v["even"], 4);
        assert_eq!(v["count"], 1);
    }

    #[test]
    fn array_bounds() {
        let v = check(json!({"type": "array", "items": {"type": "integer"}, "minItems": 6}));
        assert_eq!(v.as_array().map(Vec::len), Some(6));
        let v = check(json!({"type": "array", "items": {"type": "string"}, "maxItems": 2}));
        assert_eq!(v.as_array().map(Vec::len), Some(2));
        check(
            json!({"type": "array", "items": {"type": "integer", "minimum": 1}, "uniqueItems": true, "minItems": 3}),
        );
        check(
            json!({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "boolean"}], "items": false}),
        );
    }

    #[test]
    fn refs_defs_and_combinators() {
        let v = check(json!({
            "$defs": {
                "variant": {
                    "type": "object",
                    "properties": {
                        "modified": {"type": "string"},
                        "edit": {"$ref": "#/$defs/edit"}
                    },
                    "required": ["modified", "edit"]
                },
                "edit": {"type": "string", "enum": ["contradict", "parallel"]},
                "tree": {
                    "type": "object",
                    "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/tree"}}}
                }
            },
            "type": "object",
            "properties": {
                "variants": {"type": "array", "items": {"$ref": "#/$defs/variant"}, "minItems": 1},
                "maybe": {"anyOf": [{"type": "integer", "minimum": 2}, {"type": "null"}]},
                "either": {"oneOf": [{"type": "boolean"}, {"type": "string"}]},
                "both": {"allOf": [
                    {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                    {"properties": {"b": {"$ref": "#/$defs/edit"}}, "required": ["b"]}
                ]},
                "tree": {"$ref": "#/$defs/tree"}
            },
            "required": ["variants"]
        }));
        assert_eq!(v["variants"][0]["edit"], "contradict");
        assert_eq!(v["maybe"], 2);
        assert_eq!(v["both"]["b"], "contradict");
    }

    #[test]
    fn definitions_and_sibling_ref() {
        check(json!({
            "definitions": {"name": {"type": "string", "minLength": 1}},
            "type": "object",
            "properties": {"name": {"$ref": "#/definitions/name", "maxLength": 40}},
            "required": ["name"],
            "minProperties": 3
        }));
    }

    #[test]
    fn seeds_pick_words_deterministically() {
        let schema = json!({"type": "object", "properties": {"s": {"type": "string"}}});
        assert_eq!(synthesize(&schema, 4, 9), synthesize(&schema, 4, 9));
        let distinct: std::collections::HashSet<String> = (0..50)
            .map(|seed| synthesize(&schema, 4, fnv1a(&[seed])).to_string())
            .collect();
        assert!(distinct.len() > 25, "{distinct:?}");
    }
}
