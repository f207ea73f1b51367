//! JSON rows to a Parquet file, with the schema inferred from the rows: strings, booleans,
//! integers, floats, lists of strings, a `{role, content}` message (a struct) and a list of
//! messages (`list<struct<role, content>>`, the shape Hugging Face `datasets` reads back as
//! a list of dicts). Written with the `parquet` crate's low-level column writer, computing
//! definition and repetition levels here, so arrow is not needed.
//!
//! It is for the export's own rows, which have these shapes; any other shape (a nested
//! object, a list of numbers) is an error naming the column, not a guess.

use std::path::Path;
use std::sync::Arc;

use parquet::basic::{Compression, LogicalType, Repetition, Type as Physical};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{Type, TypePtr};
use serde_json::Value;

use crate::error::ExportError;

/// Rows per row group.
const ROW_GROUP: usize = 10_000;

/// The shape of one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Str,
    Bool,
    Int,
    Float,
    StrList,
    Message,
    MessageList,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Str => "a string",
            Shape::Bool => "a boolean",
            Shape::Int => "an integer",
            Shape::Float => "a number",
            Shape::StrList => "a list of strings",
            Shape::Message => "a message",
            Shape::MessageList => "a list of messages",
        }
    }
}

fn is_message(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        o.len() == 2 && o.get("role").is_some_and(Value::is_string) && o["content"].is_string()
    })
}

/// The shape of one value; `None` for null (any shape), `Err` for one we do not write.
fn shape_of(v: &Value) -> Result<Option<Shape>, &'static str> {
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::String(_) => Shape::Str,
        Value::Bool(_) => Shape::Bool,
        Value::Number(n) if n.is_i64() => Shape::Int,
        Value::Number(_) => Shape::Float,
        Value::Array(items) if items.iter().all(Value::is_string) && !items.is_empty() => {
            Shape::StrList
        }
        Value::Array(items) if items.iter().all(is_message) => Shape::MessageList,
        Value::Array(_) => return Err("a list that is neither strings nor messages"),
        v if is_message(v) => Shape::Message,
        Value::Object(_) => return Err("an object that is not a {role, content} message"),
    }))
}

/// Joins two shapes of one column: integers widen to floats, an empty list takes the other
/// list's shape.
fn join(a: Shape, b: Shape) -> Option<Shape> {
    use Shape::*;
    match (a, b) {
        _ if a == b => Some(a),
        (Int, Float) | (Float, Int) => Some(Float),
        (StrList, MessageList) | (MessageList, StrList) => None,
        _ => None,
    }
}

/// Column names and shapes, in order of first appearance.
fn infer(path: &Path, rows: &[Value]) -> Result<Vec<(String, Shape)>, ExportError> {
    let mut columns: Vec<(String, Option<Shape>)> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let object = row
            .as_object()
            .ok_or_else(|| ExportError::bad(path, format!("row {} is not an object", i + 1)))?;
        for (key, value) in object {
            let shape = shape_of(value).map_err(|what| {
                ExportError::bad(path, format!("column `{key}`, row {}: {what}", i + 1))
            })?;
            // An empty list is a list of messages unless another row says otherwise.
            let shape = match (shape, value) {
                (Some(Shape::MessageList), Value::Array(a)) if a.is_empty() => None,
                _ => shape,
            };
            let pos = match columns.iter().position(|(k, _)| k == key) {
                Some(pos) => pos,
                None => {
                    columns.push((key.clone(), None));
                    columns.len() - 1
                }
            };
            let slot = &mut columns[pos].1;
            *slot = match (*slot, shape) {
                (None, s) | (s, None) => s,
                (Some(a), Some(b)) => Some(join(a, b).ok_or_else(|| {
                    ExportError::bad(
                        path,
                        format!(
                            "column `{key}`: row {} holds {} where earlier rows hold {}",
                            i + 1,
                            b.name(),
                            a.name()
                        ),
                    )
                })?),
            };
        }
    }
    Ok(columns
        .into_iter()
        // A column that is null (or an empty list) in every row: strings / message lists.
        .map(|(k, s)| {
            let all_lists = rows.iter().any(|r| r.get(&k).is_some_and(Value::is_array));
            let fallback = if all_lists {
                Shape::MessageList
            } else {
                Shape::Str
            };
            (k, s.unwrap_or(fallback))
        })
        .collect())
}

fn string_leaf(name: &str, repetition: Repetition) -> TypePtr {
    Arc::new(
        Type::primitive_type_builder(name, Physical::BYTE_ARRAY)
            .with_repetition(repetition)
            .with_logical_type(Some(LogicalType::String))
            .build()
            .expect("a valid string leaf"),
    )
}

fn message_group(name: &str, repetition: Repetition) -> TypePtr {
    Arc::new(
        Type::group_type_builder(name)
            .with_repetition(repetition)
            .with_fields(vec![
                string_leaf("role", Repetition::REQUIRED),
                string_leaf("content", Repetition::REQUIRED),
            ])
            .build()
            .expect("a valid message group"),
    )
}

/// The standard three-level list: `OPTIONAL group name (LIST) { REPEATED group list { element } }`.
fn list_of(name: &str, element: TypePtr) -> TypePtr {
    let list = Type::group_type_builder("list")
        .with_repetition(Repetition::REPEATED)
        .with_fields(vec![element])
        .build()
        .expect("a valid list group");
    Arc::new(
        Type::group_type_builder(name)
            .with_repetition(Repetition::OPTIONAL)
            .with_logical_type(Some(LogicalType::List))
            .with_fields(vec![Arc::new(list)])
            .build()
            .expect("a valid list"),
    )
}

fn column_type(name: &str, shape: Shape) -> TypePtr {
    let primitive = |physical| {
        Arc::new(
            Type::primitive_type_builder(name, physical)
                .with_repetition(Repetition::OPTIONAL)
                .build()
                .expect("a valid primitive"),
        )
    };
    match shape {
        Shape::Str => string_leaf(name, Repetition::OPTIONAL),
        Shape::Bool => primitive(Physical::BOOLEAN),
        Shape::Int => primitive(Physical::INT64),
        Shape::Float => primitive(Physical::DOUBLE),
        Shape::StrList => list_of(name, string_leaf("element", Repetition::REQUIRED)),
        Shape::Message => message_group(name, Repetition::OPTIONAL),
        Shape::MessageList => list_of(name, message_group("element", Repetition::REQUIRED)),
    }
}

/// One leaf column's data for a row group: values with their definition and repetition
/// levels.
struct Leaf<T> {
    values: Vec<T>,
    def: Vec<i16>,
    rep: Vec<i16>,
}

impl<T> Default for Leaf<T> {
    fn default() -> Self {
        Self {
            values: Vec::new(),
            def: Vec::new(),
            rep: Vec::new(),
        }
    }
}

impl<T> Leaf<T> {
    fn push(&mut self, value: Option<T>, def: i16, rep: i16) {
        self.values.extend(value);
        self.def.push(def);
        self.rep.push(rep);
    }
}

fn bytes(s: &str) -> ByteArray {
    ByteArray::from(s.as_bytes().to_vec())
}

/// A list column's leaf: `pick` takes the leaf's string from each element. Levels: 0 null,
/// 1 empty list, 2 an element.
fn list_leaf(rows: &[Value], key: &str, pick: impl Fn(&Value) -> &str) -> Leaf<ByteArray> {
    let mut leaf = Leaf::default();
    for row in rows {
        match row.get(key).and_then(Value::as_array) {
            None => leaf.push(None, 0, 0),
            Some(items) if items.is_empty() => leaf.push(None, 1, 0),
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    leaf.push(Some(bytes(pick(item))), 2, i16::from(i > 0));
                }
            }
        }
    }
    leaf
}

/// A flat leaf: level 1 when present, 0 when null or missing.
fn flat_leaf<T>(rows: &[Value], get: impl Fn(&Value) -> Option<T>) -> Leaf<T> {
    let mut leaf = Leaf::default();
    for row in rows {
        let value = get(row);
        let def = i16::from(value.is_some());
        leaf.push(value, def, 0);
    }
    leaf
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

type Writer = SerializedFileWriter<Vec<u8>>;

fn write_row_group(
    writer: &mut Writer,
    columns: &[(String, Shape)],
    rows: &[Value],
) -> parquet::errors::Result<()> {
    let mut group = writer.next_row_group()?;
    for (key, shape) in columns {
        let key = key.as_str();
        let field = |r: &Value| r.get(key).filter(|v| !v.is_null()).cloned();
        macro_rules! leaf {
            ($ty:ty, $leaf:expr) => {{
                let leaf = $leaf;
                let mut col = group.next_column()?.expect("a column per leaf");
                col.typed::<$ty>()
                    .write_batch(&leaf.values, Some(&leaf.def), Some(&leaf.rep))?;
                col.close()?;
            }};
        }
        match shape {
            Shape::Str => leaf!(
                ByteArrayType,
                flat_leaf(rows, |r| field(r).map(|v| bytes(text(&v))))
            ),
            Shape::Bool => leaf!(
                BoolType,
                flat_leaf(rows, |r| field(r).and_then(|v| v.as_bool()))
            ),
            Shape::Int => leaf!(
                Int64Type,
                flat_leaf(rows, |r| field(r).and_then(|v| v.as_i64()))
            ),
            Shape::Float => leaf!(
                DoubleType,
                flat_leaf(rows, |r| field(r).and_then(|v| v.as_f64()))
            ),
            Shape::StrList => leaf!(ByteArrayType, list_leaf(rows, key, text)),
            Shape::Message => {
                for part in ["role", "content"] {
                    leaf!(
                        ByteArrayType,
                        flat_leaf(rows, |r| field(r).map(|m| bytes(text(&m[part]))))
                    );
                }
            }
            Shape::MessageList => {
                for part in ["role", "content"] {
                    leaf!(ByteArrayType, list_leaf(rows, key, |m| text(&m[part])));
                }
            }
        }
    }
    group.close()?;
    Ok(())
}

/// Writes `rows` (JSON objects) to the Parquet file `path`, atomically. The rows must not be
/// empty: an empty file has no schema to infer.
pub fn write_parquet(path: &Path, rows: &[Value]) -> Result<(), ExportError> {
    if rows.is_empty() {
        return Err(ExportError::bad(path, "no rows to write"));
    }
    let columns = infer(path, rows)?;
    let schema = Type::group_type_builder("schema")
        .with_fields(
            columns
                .iter()
                .map(|(name, shape)| column_type(name, *shape))
                .collect(),
        )
        .build()
        .map_err(|e| ExportError::bad(path, e.to_string()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!("demorecon {}", env!("CARGO_PKG_VERSION")))
        .build();
    // In memory, then published atomically: an export's files are small next to a run.
    let bytes = (|| -> parquet::errors::Result<Vec<u8>> {
        let mut writer = SerializedFileWriter::new(Vec::new(), Arc::new(schema), Arc::new(props))?;
        for chunk in rows.chunks(ROW_GROUP) {
            write_row_group(&mut writer, &columns, chunk)?;
        }
        writer.into_inner()
    })()
    .map_err(|e| ExportError::bad(path, format!("writing Parquet: {e}")))?;
    demorecon_io::write_atomic(path, &bytes).map_err(|e| ExportError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use serde_json::json;

    fn read_back(path: &Path) -> (String, Vec<String>) {
        let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
        let schema = format!("{:?}", reader.metadata().file_metadata().schema());
        let rows = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| r.unwrap().to_string())
            .collect();
        (schema, rows)
    }

    #[test]
    fn rows_round_trip_through_parquet_with_nested_messages() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.parquet");
        let rows = vec![
            json!({"prompt": [{"role": "user", "content": "p1"}],
                   "chosen": {"role": "assistant", "content": "c1 ✓"},
                   "label": true, "n": 1, "w": 0.5, "subs": ["a", "b"], "vid": null}),
            json!({"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "p2"}],
                   "chosen": {"role": "assistant", "content": "c2"},
                   "label": false, "n": 2, "w": 1, "subs": [], "vid": "s/v0"}),
        ];
        write_parquet(&path, &rows).unwrap();
        let (schema, back) = read_back(&path);
        assert!(schema.contains("prompt"), "{schema}");
        assert_eq!(back.len(), 2);
        assert!(
            back[0].contains("p1") && back[0].contains("c1 ✓"),
            "{}",
            back[0]
        );
        assert!(
            back[1].contains("\"s\"") && back[1].contains("p2"),
            "{}",
            back[1]
        );
        assert!(back[0].contains("vid: null"), "{}", back[0]);
        assert!(back[1].contains("w: 1.0"), "{}", back[1]);
    }

    #[test]
    fn shapes_it_cannot_write_are_named_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.parquet");
        let err = write_parquet(&path, &[json!({"a": {"b": 1}})]).unwrap_err();
        assert!(err.to_string().contains("column `a`, row 1"), "{err}");
        let err = write_parquet(&path, &[json!({"a": "x"}), json!({"a": true})]).unwrap_err();
        assert!(err.to_string().contains("row 2 holds a boolean"), "{err}");
        assert!(write_parquet(&path, &[]).is_err());
        assert!(!path.exists());
    }
}
