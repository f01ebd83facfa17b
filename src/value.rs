//! The data that flows between tasks.
//!
//! `Value` is the project's own dynamic value. It exists because the wire and
//! journal codec (bincode) cannot decode self-describing types such as
//! `serde_json::Value`, and because task data needs bytes and tensors, which
//! JSON lacks. Two encodings, each for its purpose:
//!
//! - bincode (`Encode`/`Decode`): journal and wire. Compact, positional.
//! - serde (`Serialize`/`Deserialize`): human formats (JSON, YAML). Untagged:
//!   a list is a JSON array, a map a JSON object. Bytes render as
//!   `{"$bytes": "<base64>"}` and tensors as `{"$tensor": {...}}` so they survive
//!   a JSON round trip.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use bincode::de::Decoder;
use bincode::error::DecodeError;
use bincode::{Decode, Encode};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A map of values, ordered by key so outputs are deterministic.
pub type Map = BTreeMap<String, Value>;

/// Lists and maps nested deeper than this are refused wherever a value is
/// read (JSON, YAML, bincode on the wire and in the journal) or computed
/// from expressions. Everything that walks a value (clone, drop, compare,
/// the JSON and YAML writers) recurses once per level, so a bound here is
/// what keeps a hostile or corrupt input from overflowing a thread's
/// stack. The same limit as a workflow file's YAML, and below
/// `serde_json`'s own (127), so every value can be written as JSON and
/// read back.
pub const MAX_DEPTH: usize = 64;

/// The message for a value nested past [`MAX_DEPTH`].
pub const TOO_DEEP: &str = "value nested more than 64 levels deep";

thread_local! {
    /// Lists and maps open in the value being decoded on this thread.
    static DECODING: Cell<usize> = const { Cell::new(0) };
}

/// One list or map level of a value being decoded (serde or bincode, both
/// synchronous, so a thread-local count is exact); dropping it leaves the
/// level.
struct Level;

impl Level {
    /// Enters a level, or `None` when that would pass [`MAX_DEPTH`].
    fn enter() -> Option<Level> {
        DECODING.with(|open| {
            let n = open.get();
            (n < MAX_DEPTH).then(|| {
                open.set(n + 1);
                Level
            })
        })
    }
}

impl Drop for Level {
    fn drop(&mut self) {
        DECODING.with(|open| open.set(open.get().saturating_sub(1)));
    }
}

/// A dynamically typed value: task inputs, outputs, workflow inputs.
///
/// Encoded with bincode's derived layout (variant index, then the field);
/// decoded by hand to bound the nesting (see [`MAX_DEPTH`]).
#[derive(Debug, Clone, PartialEq, Default, Encode)]
pub enum Value {
    /// Absence of a value.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A UTF-8 string.
    String(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// An ordered list.
    List(Vec<Value>),
    /// A map with string keys.
    Map(Map),
    /// A dense tensor.
    Tensor(Tensor),
}

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// Unsigned byte.
    U8,
    /// Boolean, one byte each.
    Bool,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::U8 | DType::Bool => 1,
        }
    }
}

/// A dense, row-major tensor; `data` holds the elements little-endian.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct Tensor {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product() * dtype.size()` bytes, little-endian.
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

impl Value {
    /// The value's type as a word users see in messages (`list`, `string`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Map(_) => "map",
            Value::Tensor(_) => "tensor",
        }
    }

    /// Whether the value is `Null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Truthiness used by `when`, `&&`, `||` and `!`: null, false, 0, "" and
    /// empty collections are false.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::String(s) => !s.is_empty(),
            Value::Bytes(b) => !b.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Tensor(_) => true,
        }
    }

    /// The value as a float when it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The value as an integer when it is an integer (or an integral float).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Float(f) if f.fract() == 0.0 && f.is_finite() => Some(*f as i64),
            _ => None,
        }
    }

    /// The value as a string slice when it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a list when it is one.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// The value as a map when it is one.
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Field of a map, `None` for anything else or a missing key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_map().and_then(|m| m.get(key))
    }

    /// How deeply lists and maps nest: 0 for a scalar (bytes and tensors
    /// included), 1 for a list of scalars. Walks the value without
    /// recursing, so it is safe on any value.
    pub fn depth(&self) -> usize {
        let mut deepest = 0;
        let mut stack: Vec<(&Value, usize)> = vec![(self, 0)];
        while let Some((value, depth)) = stack.pop() {
            match value {
                Value::List(items) => {
                    deepest = deepest.max(depth + 1);
                    stack.extend(items.iter().map(|v| (v, depth + 1)));
                }
                Value::Map(map) => {
                    deepest = deepest.max(depth + 1);
                    stack.extend(map.values().map(|v| (v, depth + 1)));
                }
                _ => {}
            }
        }
        deepest
    }

    /// Converts from `serde_json::Value`.
    pub fn from_json(json: serde_json::Value) -> Value {
        serde_json::from_value(json).unwrap_or(Value::Null)
    }

    /// Converts to `serde_json::Value` (bytes and tensors as tagged objects).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Renders the value as text for string interpolation: strings as they
    /// are, everything else as compact JSON.
    pub fn to_text(&self) -> String {
        match self {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_json().to_string(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json().to_string())
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v)
    }
}
impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::List(v)
    }
}
impl From<Map> for Value {
    fn from(v: Map) -> Self {
        Value::Map(v)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::String(v) => s.serialize_str(v),
            Value::Bytes(b) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("$bytes", &base64_bytes::encode(b))?;
                m.end()
            }
            Value::List(l) => {
                let mut seq = s.serialize_seq(Some(l.len()))?;
                for v in l {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Map(map) => {
                let mut m = s.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
            Value::Tensor(t) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("$tensor", t)?;
                m.end()
            }
        }
    }
}

impl<Context> Decode<Context> for Value {
    fn decode<D: Decoder<Context = Context>>(d: &mut D) -> Result<Value, DecodeError> {
        // The variant indices of the derived `Encode`, in declaration order.
        Ok(match u32::decode(d)? {
            0 => Value::Null,
            1 => Value::Bool(bool::decode(d)?),
            2 => Value::Int(i64::decode(d)?),
            3 => Value::Float(f64::decode(d)?),
            4 => Value::String(String::decode(d)?),
            5 => Value::Bytes(Vec::decode(d)?),
            6 => {
                let _level = Level::enter().ok_or(DecodeError::Other(TOO_DEEP))?;
                Value::List(Vec::decode(d)?)
            }
            7 => {
                let _level = Level::enter().ok_or(DecodeError::Other(TOO_DEEP))?;
                Value::Map(Map::decode(d)?)
            }
            8 => Value::Tensor(Tensor::decode(d)?),
            found => {
                return Err(DecodeError::UnexpectedVariant {
                    type_name: "Value",
                    allowed: &bincode::error::AllowedEnumVariants::Range { min: 0, max: 8 },
                    found,
                });
            }
        })
    }
}

bincode::impl_borrow_decode!(Value);

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let _level = Level::enter().ok_or_else(|| de::Error::custom(TOO_DEEP))?;
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::List(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let _level = Level::enter().ok_or_else(|| de::Error::custom(TOO_DEEP))?;
        let mut map = Map::new();
        while let Some((k, v)) = access.next_entry::<String, Value>()? {
            map.insert(k, v);
        }
        // Tagged forms produced by `Serialize` come back as what they were.
        if map.len() == 1 {
            if let Some(Value::String(b64)) = map.get("$bytes") {
                let bytes = base64_bytes::decode(b64).map_err(de::Error::custom)?;
                return Ok(Value::Bytes(bytes));
            }
            if let Some(t) = map.get("$tensor") {
                let tensor: Tensor =
                    serde_json::from_value(t.to_json()).map_err(de::Error::custom)?;
                return Ok(Value::Tensor(tensor));
            }
        }
        Ok(Value::Map(map))
    }
}

/// Standard base64 with padding, for bytes inside JSON.
pub(crate) mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn encode(data: &[u8]) -> String {
        STANDARD.encode(data)
    }

    pub(crate) fn decode(text: &str) -> Result<Vec<u8>, String> {
        STANDARD.decode(text).map_err(|e| e.to_string())
    }

    pub(crate) fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(data))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        decode(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_every_kind() {
        let mut map = Map::new();
        map.insert("b".into(), Value::Bytes(vec![0, 1, 2, 250]));
        map.insert(
            "t".into(),
            Value::Tensor(Tensor {
                dtype: DType::F32,
                shape: vec![1, 2],
                data: vec![0; 8],
            }),
        );
        map.insert(
            "l".into(),
            Value::List(vec![Value::Int(1), Value::Float(1.5)]),
        );
        map.insert("s".into(), Value::from("x"));
        let v = Value::Map(map);
        let json = serde_json::to_string(&v).unwrap();
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v, back);
    }

    #[test]
    fn bincode_round_trip() {
        let v = Value::List(vec![Value::Null, Value::Bool(true), Value::from("é")]);
        let cfg = crate::codec::config();
        let bytes = bincode::encode_to_vec(&v, cfg).unwrap();
        let (back, _): (Value, usize) = bincode::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(v, back);
    }

    #[test]
    fn bincode_round_trip_keeps_every_variant() {
        let mut map = Map::new();
        map.insert("k".into(), Value::List(vec![Value::Map(Map::new())]));
        let all = Value::List(vec![
            Value::Null,
            Value::Bool(false),
            Value::Int(i64::MIN),
            Value::Float(-0.5),
            Value::from("s"),
            Value::Bytes(vec![1, 2]),
            Value::Map(map),
            Value::Tensor(Tensor {
                dtype: DType::I32,
                shape: vec![2],
                data: vec![0; 8],
            }),
        ]);
        let cfg = crate::codec::config();
        let bytes = bincode::encode_to_vec(&all, cfg).unwrap();
        let (back, used): (Value, usize) = bincode::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!((back, used), (all, bytes.len()));
        let bad = bincode::decode_from_slice::<Value, _>(&[9], cfg).unwrap_err();
        assert!(bad.to_string().contains("Value"), "{bad}");
    }

    /// `n` lists, one inside the other, around a null.
    fn nested(n: usize) -> Value {
        let mut v = Value::Null;
        for _ in 0..n {
            v = Value::List(vec![v]);
        }
        v
    }

    #[test]
    fn depth_counts_lists_and_maps() {
        assert_eq!(Value::Int(1).depth(), 0);
        assert_eq!(nested(3).depth(), 3);
        let mut map = Map::new();
        map.insert("a".into(), nested(2));
        map.insert("b".into(), Value::Null);
        assert_eq!(Value::List(vec![Value::Null, Value::Map(map)]).depth(), 4);
        assert!(TOO_DEEP.contains(&MAX_DEPTH.to_string()));
    }

    #[test]
    fn values_at_the_limit_decode_and_deeper_ones_are_refused() {
        let cfg = crate::codec::config();
        let at_limit = nested(MAX_DEPTH);
        let bytes = bincode::encode_to_vec(&at_limit, cfg).unwrap();
        let (back, _): (Value, usize) = bincode::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, at_limit);
        let json = serde_json::to_string(&at_limit).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), at_limit);

        // A hostile frame: a million lists, one inside the other, in 2 MB.
        // Decoding stops at the limit instead of overflowing the stack.
        let mut frame = [6_u8, 1].repeat(1_000_000);
        frame.push(0);
        let err = bincode::decode_from_slice::<Value, _>(&frame, cfg).unwrap_err();
        assert!(err.to_string().contains(TOO_DEEP), "{err}");
        // The count is back to zero after the error: a value decodes again.
        let (back, _): (Value, usize) = bincode::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, at_limit);

        // The same through serde, from a deserializer with no limit of its
        // own (a `serde_json::Value`), lists and maps.
        let mut list = serde_json::Value::Null;
        let mut map = serde_json::Value::Null;
        for _ in 0..MAX_DEPTH + 1 {
            list = serde_json::Value::Array(vec![list]);
            map = serde_json::json!({ "a": map });
        }
        for json in [list, map] {
            let err = Value::deserialize(json).unwrap_err();
            assert!(err.to_string().contains(TOO_DEEP), "{err}");
        }
        let deeper = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(serde_json::from_str::<Value>(&deeper).is_err());
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_bytes::encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_bytes::encode(b"fo"), "Zm8=");
        assert_eq!(base64_bytes::decode("Zm8=").unwrap(), b"fo");
        assert!(base64_bytes::decode("!!").is_err());
    }
}
