//! Conversions between Symphony's tensors and values and tract's tensors.
//!
//! Symphony's [`Tensor`] keeps its elements as little-endian bytes in a
//! plain `Vec<u8>`; tract's tensor owns an aligned buffer of native
//! elements. Going either way is therefore one copy (tract cannot adopt an
//! unaligned foreign buffer), plus a byte swap on big-endian hosts. Nothing
//! here panics on malformed data: lengths are checked first.

use tract_onnx::prelude::{DatumType, Tensor as TractTensor};

use crate::value::{DType, Tensor, Value};

/// The tract element type for `dtype`.
pub(super) fn datum_type(dtype: DType) -> DatumType {
    match dtype {
        DType::F32 => DatumType::F32,
        DType::F64 => DatumType::F64,
        DType::I32 => DatumType::I32,
        DType::I64 => DatumType::I64,
        DType::U8 => DatumType::U8,
        DType::Bool => DatumType::Bool,
    }
}

/// Symphony's element type for a tract one, `None` when it has none.
pub(super) fn dtype_of(dt: DatumType) -> Option<DType> {
    Some(match dt {
        DatumType::F32 => DType::F32,
        DatumType::F64 => DType::F64,
        DatumType::I32 => DType::I32,
        DatumType::I64 => DType::I64,
        DatumType::U8 => DType::U8,
        DatumType::Bool => DType::Bool,
        _ => return None,
    })
}

/// Bytes a tensor of `dtype` and `shape` holds; `None` on overflow.
pub(super) fn byte_len(dtype: DType, shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
}

/// Turns little-endian elements of `size` bytes into native ones, or back
/// (the same swap either way); nothing to do on little-endian hosts.
fn swap_little_endian(bytes: &mut [u8], size: usize) {
    if cfg!(target_endian = "big") && size > 1 {
        for element in bytes.chunks_exact_mut(size) {
            element.reverse();
        }
    }
}

/// Copies a Symphony tensor into a tract one.
///
/// # Errors
///
/// When the data length does not match the shape.
pub(super) fn to_tract(t: &Tensor) -> Result<TractTensor, String> {
    let expected = byte_len(t.dtype, &t.shape);
    if expected != Some(t.data.len()) {
        return Err(data_len_message(t));
    }
    if t.dtype == DType::Bool {
        // Any non-zero byte is true: a `bool` holding another bit pattern
        // would be undefined behaviour.
        let bools: Vec<bool> = t.data.iter().map(|&b| b != 0).collect();
        return TractTensor::from_shape(&t.shape, &bools).map_err(|e| e.to_string());
    }
    let mut out = TractTensor::zero_dt(datum_type(t.dtype), &t.shape).map_err(|e| e.to_string())?;
    let bytes = out.as_bytes_mut();
    bytes.copy_from_slice(&t.data);
    swap_little_endian(bytes, t.dtype.size());
    Ok(out)
}

/// Copies a tract tensor into a Symphony one.
///
/// # Errors
///
/// When the element type has no [`DType`].
pub(super) fn from_tract(t: &TractTensor) -> Result<Tensor, String> {
    let dtype = dtype_of(t.datum_type())
        .ok_or_else(|| format!("the model gives {:?} elements", t.datum_type()))?;
    let mut data = t.as_bytes().to_vec();
    swap_little_endian(&mut data, dtype.size());
    Ok(Tensor {
        dtype,
        shape: t.shape().to_vec(),
        data,
    })
}

/// The message for a tensor whose data does not fill its shape.
pub(super) fn data_len_message(t: &Tensor) -> String {
    let shape = super::describe_tensor(t.dtype, &t.shape);
    match byte_len(t.dtype, &t.shape) {
        Some(n) => format!(
            "tensor data is {} bytes, but {shape} needs {n}",
            t.data.len()
        ),
        None => format!("tensor shape {shape} is too large"),
    }
}

/// Builds a tensor of `dtype` from a nested list of numbers or bools (or a
/// lone number): the nesting is the shape.
///
/// # Errors
///
/// A ragged list, an item of the wrong kind, or a number `dtype` cannot
/// hold; the message points at the item (`item [0][2]: …`).
pub(super) fn tensor_from_list(value: &Value, dtype: DType) -> Result<Tensor, String> {
    let mut shape = Vec::new();
    let mut probe = value;
    while let Value::List(items) = probe {
        shape.push(items.len());
        match items.first() {
            Some(first) => probe = first,
            None => break,
        }
    }
    let mut data = Vec::new();
    let mut path = Vec::with_capacity(shape.len());
    fill(value, &shape, dtype, &mut path, &mut data)?;
    Ok(Tensor { dtype, shape, data })
}

fn fill(
    value: &Value,
    shape: &[usize],
    dtype: DType,
    path: &mut Vec<usize>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let depth = path.len();
    if depth == shape.len() {
        return push_scalar(value, dtype, out).map_err(|e| format!("{}{e}", item(path)));
    }
    let Value::List(items) = value else {
        return Err(format!(
            "{}ragged list: expected a list of {}, got {}",
            item(path),
            shape[depth],
            value.type_name()
        ));
    };
    if items.len() != shape[depth] {
        return Err(format!(
            "{}ragged list: {} items, expected {}",
            item(path),
            items.len(),
            shape[depth]
        ));
    }
    for (i, v) in items.iter().enumerate() {
        path.push(i);
        fill(v, shape, dtype, path, out)?;
        path.pop();
    }
    Ok(())
}

/// `item [1][3]: ` for a path, nothing for the top.
fn item(path: &[usize]) -> String {
    if path.is_empty() {
        return String::new();
    }
    let idx: String = path.iter().map(|i| format!("[{i}]")).collect();
    format!("item {idx}: ")
}

fn push_scalar(v: &Value, dtype: DType, out: &mut Vec<u8>) -> Result<(), String> {
    match dtype {
        DType::F32 => out.extend_from_slice(&(number(v)? as f32).to_le_bytes()),
        DType::F64 => out.extend_from_slice(&number(v)?.to_le_bytes()),
        DType::I64 => out.extend_from_slice(&integer(v)?.to_le_bytes()),
        DType::I32 => {
            let i = integer(v)?;
            let i = i32::try_from(i).map_err(|_| format!("{i} is out of range for int32"))?;
            out.extend_from_slice(&i.to_le_bytes());
        }
        DType::U8 => {
            let i = integer(v)?;
            let i = u8::try_from(i).map_err(|_| format!("{i} is out of range for uint8"))?;
            out.push(i);
        }
        DType::Bool => match v {
            Value::Bool(b) => out.push(u8::from(*b)),
            other => return Err(format!("expected a bool, got {}", other.type_name())),
        },
    }
    Ok(())
}

fn number(v: &Value) -> Result<f64, String> {
    match v {
        Value::Int(i) => Ok(*i as f64),
        Value::Float(f) => Ok(*f),
        other => Err(format!("expected a number, got {}", other.type_name())),
    }
}

fn integer(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        // 2^63 is exactly representable; everything below it fits.
        Value::Float(f) if f.fract() == 0.0 && *f >= -(2f64.powi(63)) && *f < 2f64.powi(63) => {
            Ok(*f as i64)
        }
        Value::Float(f) => Err(format!("{f} is not an integer")),
        other => Err(format!("expected an integer, got {}", other.type_name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn list(items: Vec<Value>) -> Value {
        Value::List(items)
    }

    #[test]
    fn nested_list_gives_shape_and_converted_items() {
        let v = list(vec![
            list(vec![Value::Int(1), Value::Float(2.5)]),
            list(vec![Value::Float(-3.0), Value::Int(4)]),
        ]);
        let t = tensor_from_list(&v, DType::F32).unwrap();
        assert_eq!(t.shape, vec![2, 2]);
        assert_eq!(f32s(&t), vec![1.0, 2.5, -3.0, 4.0]);

        let t = tensor_from_list(&Value::Float(7.0), DType::I64).unwrap();
        assert!(t.shape.is_empty());
        assert_eq!(t.data, 7i64.to_le_bytes().to_vec());

        let t = tensor_from_list(&list(vec![]), DType::F32).unwrap();
        assert_eq!((t.shape, t.data.len()), (vec![0], 0));
    }

    #[test]
    fn ragged_or_wrong_items_are_errors_naming_the_item() {
        let ragged = list(vec![
            list(vec![Value::Int(1), Value::Int(2)]),
            list(vec![Value::Int(3)]),
        ]);
        let e = tensor_from_list(&ragged, DType::F32).unwrap_err();
        assert_eq!(e, "item [1]: ragged list: 1 items, expected 2");

        let too_shallow = list(vec![list(vec![Value::Int(1)]), Value::Int(2)]);
        let e = tensor_from_list(&too_shallow, DType::F32).unwrap_err();
        assert_eq!(e, "item [1]: ragged list: expected a list of 1, got int");

        let too_deep = list(vec![Value::Int(1), list(vec![Value::Int(2)])]);
        let e = tensor_from_list(&too_deep, DType::F32).unwrap_err();
        assert_eq!(e, "item [1]: expected a number, got list");

        let s = list(vec![Value::from("x")]);
        let e = tensor_from_list(&s, DType::F64).unwrap_err();
        assert_eq!(e, "item [0]: expected a number, got string");
    }

    #[test]
    fn integer_types_check_fraction_and_range() {
        let e = tensor_from_list(&list(vec![Value::Float(1.5)]), DType::I64).unwrap_err();
        assert_eq!(e, "item [0]: 1.5 is not an integer");
        let e = tensor_from_list(&list(vec![Value::Int(256)]), DType::U8).unwrap_err();
        assert_eq!(e, "item [0]: 256 is out of range for uint8");
        let e = tensor_from_list(&list(vec![Value::Int(1 << 40)]), DType::I32).unwrap_err();
        assert!(e.contains("out of range for int32"), "{e}");
        let e = tensor_from_list(&list(vec![Value::Float(1e300)]), DType::I64).unwrap_err();
        assert!(e.contains("is not an integer"), "{e}");
        let t = tensor_from_list(&list(vec![Value::Int(255)]), DType::U8).unwrap();
        assert_eq!(t.data, vec![255]);
        let e = tensor_from_list(&list(vec![Value::Int(1)]), DType::Bool).unwrap_err();
        assert_eq!(e, "item [0]: expected a bool, got int");
    }

    #[test]
    fn round_trip_through_tract_keeps_every_dtype() {
        let cases = [
            (DType::F32, 1.5f32.to_le_bytes().repeat(6)),
            (DType::F64, (-2.25f64).to_le_bytes().repeat(6)),
            (DType::I32, (-7i32).to_le_bytes().repeat(6)),
            (DType::I64, (i64::MAX).to_le_bytes().repeat(6)),
            (DType::U8, vec![0, 1, 2, 3, 254, 255]),
            (DType::Bool, vec![0, 1, 0, 1, 1, 0]),
        ];
        for (dtype, data) in cases {
            let t = Tensor {
                dtype,
                shape: vec![2, 3],
                data,
            };
            let back = from_tract(&to_tract(&t).unwrap()).unwrap();
            assert_eq!(back, t, "{dtype:?}");
        }
    }

    #[test]
    fn bool_bytes_other_than_one_read_as_true() {
        let t = Tensor {
            dtype: DType::Bool,
            shape: vec![3],
            data: vec![0, 7, 255],
        };
        let back = from_tract(&to_tract(&t).unwrap()).unwrap();
        assert_eq!(back.data, vec![0, 1, 1]);
    }

    #[test]
    fn wrong_data_length_is_an_error() {
        let short = Tensor {
            dtype: DType::F32,
            shape: vec![1, 4],
            data: vec![0; 15],
        };
        assert_eq!(
            to_tract(&short).unwrap_err(),
            "tensor data is 15 bytes, but float32 [1, 4] needs 16"
        );
        let huge = Tensor {
            dtype: DType::F64,
            shape: vec![usize::MAX, 2],
            data: vec![],
        };
        assert!(to_tract(&huge).unwrap_err().contains("too large"));
    }

    #[test]
    fn unsupported_tract_types_are_errors() {
        let t = TractTensor::from_shape(&[2], &[1i16, 2]).unwrap();
        assert!(from_tract(&t).unwrap_err().contains("I16"));
    }
}
