//! A small YAML writer for the configs and the card's front matter: maps in block style,
//! lists of scalars in flow style, lists of maps in block style. Strings are left plain only
//! when YAML 1.1 (PyYAML, which every trainer here uses) reads them back as the same string;
//! floats always carry a decimal point, because PyYAML reads `1e-05` as a string.
//!
//! It writes values we build; it is not a general serializer and reads nothing.

use serde_json::Value;

/// Words YAML 1.1 reads as something other than a string.
const RESERVED: [&str; 22] = [
    "true", "false", "yes", "no", "on", "off", "null", "~", "True", "False", "Yes", "No", "On",
    "Off", "Null", "NULL", "TRUE", "FALSE", "YES", "NO", "ON", "OFF",
];

fn plain_ok(s: &str) -> bool {
    let safe_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-./+@".contains(c));
    let starts_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '.' || c == '_');
    safe_chars && starts_ok && !RESERVED.contains(&s)
}

/// A scalar as YAML: strings plain or JSON-quoted (a valid YAML double-quoted scalar).
pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) if plain_ok(s) => s.clone(),
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if !n.is_i64() && !n.is_u64() => float(f),
            _ => n.to_string(),
        },
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// A float with a decimal point and no exponent.
pub fn float(f: f64) -> String {
    let s = format!("{f}");
    if s.contains('.') || !f.is_finite() {
        s
    } else {
        format!("{s}.0")
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

fn write_value(out: &mut String, indent: usize, key: &str, v: &Value) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) if map.is_empty() => out.push_str(&format!("{pad}{key}: {{}}\n")),
        Value::Object(map) => {
            out.push_str(&format!("{pad}{key}:\n"));
            write_map(out, indent + 2, map);
        }
        Value::Array(items) if items.iter().all(is_scalar) => {
            let items: Vec<String> = items.iter().map(scalar).collect();
            out.push_str(&format!("{pad}{key}: [{}]\n", items.join(", ")));
        }
        Value::Array(items) => {
            out.push_str(&format!("{pad}{key}:\n"));
            for item in items {
                write_item(out, indent, item);
            }
        }
        v => out.push_str(&format!("{pad}{key}: {}\n", scalar(v))),
    }
}

/// One `- ` item of a block list: a map's first key sits on the dash line.
fn write_item(out: &mut String, indent: usize, item: &Value) {
    let pad = " ".repeat(indent);
    match item {
        Value::Object(map) if !map.is_empty() => {
            let mut inner = String::new();
            write_map(&mut inner, indent + 2, map);
            let inner = inner.replacen(&format!("{pad}  "), &format!("{pad}- "), 1);
            out.push_str(&inner);
        }
        v if is_scalar(v) => out.push_str(&format!("{pad}- {}\n", scalar(v))),
        v => out.push_str(&format!("{pad}- {v}\n")),
    }
}

fn write_map(out: &mut String, indent: usize, map: &serde_json::Map<String, Value>) {
    for (k, v) in map {
        write_value(out, indent, &scalar(&Value::String(k.clone())), v);
    }
}

/// A YAML document from a JSON object (other values are written as a one-key document).
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(map) => write_map(&mut out, 0, map),
        other => write_value(&mut out, 0, "value", other),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_block_maps_flow_lists_and_safe_scalars() {
        let doc = json!({
            "stage": "dpo", "pref_ftx": 1.0, "learning_rate": 0.00001, "n": 3, "bf16": true,
            "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5],
            "odd": "yes", "text": "a: b # c", "num_like": "0.1",
            "datasets": [{"path": "./a.jsonl", "type": "chat_template.default", "roles": {"user": ["user"]}}],
        });
        let y = to_yaml(&doc);
        let expected = "stage: dpo\npref_ftx: 1.0\nlearning_rate: 0.00001\nn: 3\nbf16: true\n\
loss_type: [sigmoid, sft]\nloss_weights: [1.0, 0.5]\nodd: \"yes\"\ntext: \"a: b # c\"\n\
num_like: \"0.1\"\ndatasets:\n- path: ./a.jsonl\n  type: chat_template.default\n  roles:\n    user: [user]\n";
        assert_eq!(y, expected);
    }
}
