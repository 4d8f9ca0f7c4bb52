//! The tensors of one state dict inside a torch zip checkpoint (what `torch.save` writes), read with
//! a small pickle interpreter of our own.
//!
//! burn-store's torch reader cannot read a nerfstudio checkpoint: besides the `pipeline` state dict,
//! the file pickles the optimisers' and schedulers' states, which hold numpy scalars (nerfstudio's
//! `ExponentialDecayScheduler` computes learning rates with `np.clip`, so `lr` and `_last_lr` are
//! `numpy.float64`) and dicts with integer keys set one at a time (the camera optimiser's Adam state
//! `{0: ...}`); burn-store stops at either. This interpreter treats every call it does not know as
//! an opaque value, so the rest of the file no longer matters, and rebuilds only torch tensors
//! (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`) from the archive's storages. It
//! interprets opcodes as data and never imports or runs anything; malformed input is an error.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// A stored tensor: shape and values converted to f32.
pub type Tensor = (Vec<usize>, Vec<f32>);

/// The largest element count of one tensor accepted (1 << 31 f32 values is 8 GiB).
const MAX_ELEMENTS: usize = 1 << 31;

#[derive(Clone, Debug)]
enum Value {
    Int(i64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Persistent(Box<Value>),
    Tensor(TensorRef),
    /// None, booleans, floats, bytes, and anything built by a call we do not interpret (numpy
    /// scalars, sets, ...): nothing a state dict's tensors need.
    Opaque,
    Mark,
}

#[derive(Clone, Debug)]
struct TensorRef {
    storage: String,
    dtype: String,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// The archive, the folder prefix of its entries and the entries of its root dict.
type Root = (zip::ZipArchive<std::fs::File>, String, Vec<(Value, Value)>);

/// Opens the torch archive at `path` and interprets its pickle, whose root must be a dict.
fn read_root(path: &Path) -> Result<Root, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| format!("not a torch zip archive: {e}"))?;
    let pickle_name = archive
        .file_names()
        .find(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .map(str::to_string)
        .ok_or("the archive has no data.pkl; not a torch checkpoint")?;
    let prefix = pickle_name[..pickle_name.len() - "data.pkl".len()].to_string();
    let pickle = read_entry(&mut archive, &pickle_name)?;
    let root = interpret(&pickle).map_err(|e| format!("{pickle_name}: {e}"))?;
    let Value::Dict(entries) = root else {
        return Err("the pickle's root is not a dict; not a nerfstudio checkpoint".into());
    };
    Ok((archive, prefix, entries))
}

/// The integer at the top-level dict entry `key` (nerfstudio's `step`), `None` when the entry is
/// absent or not an integer.
pub fn read_integer(path: &Path, key: &str) -> Result<Option<i64>, String> {
    let (_, _, entries) = read_root(path)?;
    Ok(entries.into_iter().find_map(|(k, v)| match (k, v) {
        (Value::Str(k), Value::Int(v)) if k == key => Some(v),
        _ => None,
    }))
}

/// The tensors of the top-level dict entry `key` (e.g. `pipeline`), by their state-dict key.
pub fn read_state_dict(path: &Path, key: &str) -> Result<HashMap<String, Tensor>, String> {
    let (archive, prefix, entries) = read_root(path)?;
    let state = top_level_dict(entries, key)?;
    let mut storages = Storages::new(archive, prefix);
    let mut tensors = HashMap::new();
    for (k, v) in state {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else {
            continue;
        };
        let tensor = storages.tensor(&t).map_err(|e| format!("`{name}`: {e}"))?;
        tensors.insert(name, tensor);
    }
    Ok(tensors)
}

/// The keys of the top-level state dict `key` in the order the file stores them (torch's
/// `state_dict()` order: each module's own tensors, then its children's, in registration order),
/// without reading their tensors.
pub fn read_state_dict_keys(path: &Path, key: &str) -> Result<Vec<String>, String> {
    let (_, _, entries) = read_root(path)?;
    let state = top_level_dict(entries, key)?;
    Ok(state
        .into_iter()
        .filter_map(|(k, v)| match (k, v) {
            (Value::Str(name), Value::Tensor(_)) => Some(name),
            _ => None,
        })
        .collect())
}

/// One parameter's state in a torch `Adam` state dict.
#[derive(Clone, Debug)]
pub struct AdamState {
    /// The steps this parameter has taken (`state[i]["step"]`).
    pub step: usize,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
}

/// The torch `Adam` state dicts in the top-level dict entry `key` (nerfstudio's `optimizers`: one per
/// parameter group name): per name, its parameters' states in the order of its `param_groups`'
/// `params`, `None` for a parameter that has no state yet (never stepped).
pub fn read_adam_states(path: &Path, key: &str) -> Result<HashMap<String, Vec<Option<AdamState>>>, String> {
    let (archive, prefix, entries) = read_root(path)?;
    let optimisers = top_level_dict(entries, key)?;
    let mut storages = Storages::new(archive, prefix);
    let mut out = HashMap::new();
    for (name, optimiser) in optimisers {
        let (Value::Str(name), Value::Dict(optimiser)) = (name, optimiser) else {
            continue;
        };
        let (Some(Value::Dict(state)), Some(Value::List(groups))) =
            (entry(&optimiser, "state"), entry(&optimiser, "param_groups"))
        else {
            return Err(format!(
                "`{key}.{name}` is not a torch optimiser state dict (no `state` and `param_groups`)"
            ));
        };
        let mut params = Vec::new();
        for group in groups {
            let Value::Dict(group) = group else {
                return Err(format!("`{key}.{name}`: a param group is not a dict"));
            };
            let Some(Value::List(ids)) = entry(group, "params") else {
                return Err(format!("`{key}.{name}`: a param group has no `params` list"));
            };
            params.extend(ids.iter().map(|id| match id {
                Value::Int(i) => Ok(*i),
                _ => Err(format!("`{key}.{name}`: a param id is not an integer")),
            }));
        }
        let mut states = Vec::new();
        for id in params {
            let id = id?;
            let saved = state.iter().find(|(k, _)| matches!(k, Value::Int(i) if *i == id));
            let Some((_, Value::Dict(saved))) = saved else {
                states.push(None);
                continue;
            };
            let context = format!("`{key}.{name}.state.{id}`");
            let mut moment = |k: &str| match entry(saved, k) {
                Some(Value::Tensor(t)) => storages.tensor(t).map_err(|e| format!("{context}.{k}: {e}")),
                _ => Err(format!("{context} has no `{k}` tensor")),
            };
            let (exp_avg, exp_avg_sq) = (moment("exp_avg")?, moment("exp_avg_sq")?);
            let step = match entry(saved, "step") {
                Some(Value::Int(step)) => usize::try_from(*step).ok(),
                Some(Value::Tensor(t)) => count(&storages.tensor(t)?.1),
                _ => None,
            }
            .ok_or_else(|| format!("{context} has no step count"))?;
            states.push(Some(AdamState {
                step,
                exp_avg,
                exp_avg_sq,
            }));
        }
        out.insert(name, states);
    }
    Ok(out)
}

/// The value at the string key `key` of a dict's entries.
fn entry<'a>(dict: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    dict.iter()
        .find(|(k, _)| matches!(k, Value::Str(k) if k == key))
        .map(|(_, v)| v)
}

/// The count a one-value tensor holds (a step, a level count), `None` unless it is one
/// non-negative whole number.
pub fn count(values: &[f32]) -> Option<usize> {
    match values {
        [v] if *v >= 0.0 && v.fract() == 0.0 => Some(*v as usize),
        _ => None,
    }
}

/// The dict at the top-level entry `key`, or an error listing the entries there are.
fn top_level_dict(entries: Vec<(Value, Value)>, key: &str) -> Result<Vec<(Value, Value)>, String> {
    let mut top_keys = Vec::new();
    let mut found = None;
    for (k, v) in entries {
        if let Value::Str(k) = k {
            if k == key {
                found = Some(v);
            }
            top_keys.push(k);
        }
    }
    match found {
        Some(Value::Dict(dict)) => Ok(dict),
        _ => Err(format!("no `{key}` state dict (top-level keys: {top_keys:?})")),
    }
}

/// The archive's storages, each read once.
struct Storages {
    archive: zip::ZipArchive<std::fs::File>,
    prefix: String,
    read: HashMap<String, Vec<u8>>,
}

impl Storages {
    fn new(archive: zip::ZipArchive<std::fs::File>, prefix: String) -> Self {
        Self {
            archive,
            prefix,
            read: HashMap::new(),
        }
    }

    fn tensor(&mut self, t: &TensorRef) -> Result<Tensor, String> {
        if !self.read.contains_key(&t.storage) {
            let entry = format!("{}data/{}", self.prefix, t.storage);
            let bytes = read_entry(&mut self.archive, &entry)?;
            self.read.insert(t.storage.clone(), bytes);
        }
        let values = materialise(t, &self.read[&t.storage])?;
        Ok((t.size.clone(), values))
    }
}

fn read_entry(archive: &mut zip::ZipArchive<std::fs::File>, name: &str) -> Result<Vec<u8>, String> {
    let mut entry = archive.by_name(name).map_err(|e| format!("cannot find {name}: {e}"))?;
    let mut bytes = Vec::new();
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {name}: {e}"))?;
    Ok(bytes)
}

/// The tensor's elements (row-major over its size, following its strides) as f32.
fn materialise(t: &TensorRef, storage: &[u8]) -> Result<Vec<f32>, String> {
    let width = match t.dtype.as_str() {
        "FloatStorage" | "IntStorage" => 4,
        "DoubleStorage" | "LongStorage" => 8,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        "ByteStorage" | "CharStorage" | "BoolStorage" => 1,
        other => return Err(format!("unsupported storage type {other}")),
    };
    let count = t
        .size
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| format!("shape {:?} is too large", t.size))?;
    let available = storage.len() / width;
    let mut values = Vec::with_capacity(count);
    let mut index = vec![0usize; t.size.len()];
    for _ in 0..count {
        let mut at = t.offset;
        for (i, s) in index.iter().zip(&t.stride) {
            at = i
                .checked_mul(*s)
                .and_then(|v| at.checked_add(v))
                .ok_or("a stride points outside its storage")?;
        }
        if at >= available {
            return Err(format!(
                "element {at} is outside its storage of {available} (the file is truncated or damaged)"
            ));
        }
        let b = &storage[at * width..(at + 1) * width];
        values.push(match t.dtype.as_str() {
            "FloatStorage" => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            "IntStorage" => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
            "DoubleStorage" => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32,
            "LongStorage" => i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32,
            "HalfStorage" => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            "BFloat16Storage" => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            "ShortStorage" => i16::from_le_bytes([b[0], b[1]]) as f32,
            "CharStorage" => b[0] as i8 as f32,
            _ => b[0] as f32, // ByteStorage, BoolStorage
        });
        // The next index, row-major.
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < t.size[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(values)
}

/// Runs the pickle and returns what it builds.
fn interpret(pickle: &[u8]) -> Result<Value, String> {
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u64, Value> = HashMap::new();
    let mut at = 0usize;
    let truncated = || "the pickle is truncated".to_string();
    let underflow = || "the pickle pops from an empty stack".to_string();
    macro_rules! take {
        ($n:expr) => {{
            let n: usize = $n;
            let end = at.checked_add(n).ok_or_else(truncated)?;
            let bytes = pickle.get(at..end).ok_or_else(truncated)?;
            at = end;
            bytes
        }};
    }
    macro_rules! uint {
        ($n:expr) => {{
            let mut v = 0u64;
            for (i, b) in take!($n).iter().enumerate() {
                v |= u64::from(*b) << (8 * i);
            }
            v
        }};
    }
    macro_rules! pop {
        () => {
            stack.pop().ok_or_else(underflow)?
        };
    }
    let until_mark = |stack: &mut Vec<Value>| -> Result<Vec<Value>, String> {
        let mark = stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or("the pickle has no MARK to pop to")?;
        let items = stack.split_off(mark + 1);
        stack.pop();
        Ok(items)
    };
    let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).map_err(|_| "a string is not UTF-8".to_string());
    let length = |v: u64| usize::try_from(v).map_err(|_| "a pickle length does not fit in memory".to_string());
    loop {
        let op = *take!(1).first().ok_or_else(truncated)?;
        match op {
            b'.' => return stack.pop().ok_or_else(underflow),
            0x80 => {
                take!(1);
            }
            0x95 => {
                take!(8);
            }
            b'(' => stack.push(Value::Mark),
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b'N' => stack.push(Value::Opaque),
            0x88 => stack.push(Value::Opaque),
            0x89 => stack.push(Value::Opaque),
            b'K' => stack.push(Value::Int(uint!(1) as i64)),
            b'M' => stack.push(Value::Int(uint!(2) as i64)),
            b'J' => stack.push(Value::Int(i64::from(uint!(4) as u32 as i32))),
            0x8a => {
                let n = length(uint!(1))?;
                let bytes = take!(n);
                if n > 8 {
                    stack.push(Value::Opaque);
                } else {
                    let mut v = 0i64;
                    for (i, b) in bytes.iter().enumerate() {
                        v |= i64::from(*b) << (8 * i);
                    }
                    if n > 0 && n < 8 && bytes[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    stack.push(Value::Int(v));
                }
            }
            b'G' => {
                take!(8);
                stack.push(Value::Opaque);
            }
            b'X' => {
                let n = length(uint!(4))?;
                let s = text(take!(n))?;
                stack.push(Value::Str(s));
            }
            0x8c => {
                let n = length(uint!(1))?;
                let s = text(take!(n))?;
                stack.push(Value::Str(s));
            }
            0x8d => {
                let n = length(uint!(8))?;
                let s = text(take!(n))?;
                stack.push(Value::Str(s));
            }
            b'U' | b'C' => {
                let n = length(uint!(1))?;
                take!(n);
                stack.push(Value::Opaque);
            }
            b'T' | b'B' => {
                let n = length(uint!(4))?;
                take!(n);
                stack.push(Value::Opaque);
            }
            0x8e | 0x96 => {
                let n = length(uint!(8))?;
                take!(n);
                stack.push(Value::Opaque);
            }
            b'c' => {
                let mut line = || -> Result<String, String> {
                    let end = pickle[at.min(pickle.len())..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .ok_or_else(truncated)?;
                    let s = text(&pickle[at..at + end])?;
                    at += end + 1;
                    Ok(s)
                };
                let module = line()?;
                let name = line()?;
                stack.push(Value::Global(module, name));
            }
            0x93 => {
                let name = pop!();
                let module = pop!();
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(Value::Global(m, n)),
                    _ => stack.push(Value::Opaque),
                }
            }
            b't' => {
                let items = until_mark(&mut stack)?;
                stack.push(Value::Tuple(items));
            }
            0x85 => {
                let a = pop!();
                stack.push(Value::Tuple(vec![a]));
            }
            0x86 => {
                let b = pop!();
                let a = pop!();
                stack.push(Value::Tuple(vec![a, b]));
            }
            0x87 => {
                let c = pop!();
                let b = pop!();
                let a = pop!();
                stack.push(Value::Tuple(vec![a, b, c]));
            }
            b'l' => {
                let items = until_mark(&mut stack)?;
                stack.push(Value::List(items));
            }
            b'd' => {
                let items = until_mark(&mut stack)?;
                stack.push(Value::Dict(pairs(items)?));
            }
            b'a' => {
                let v = pop!();
                match stack.last_mut() {
                    Some(Value::List(list)) => list.push(v),
                    Some(_) => {}
                    None => return Err(underflow()),
                }
            }
            b'e' => {
                let items = until_mark(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::List(list)) => list.extend(items),
                    Some(_) => {}
                    None => return Err(underflow()),
                }
            }
            b's' => {
                let v = pop!();
                let k = pop!();
                match stack.last_mut() {
                    Some(Value::Dict(dict)) => dict.push((k, v)),
                    Some(_) => {}
                    None => return Err(underflow()),
                }
            }
            b'u' => {
                let items = pairs(until_mark(&mut stack)?)?;
                match stack.last_mut() {
                    Some(Value::Dict(dict)) => dict.extend(items),
                    Some(_) => {}
                    None => return Err(underflow()),
                }
            }
            0x8f => stack.push(Value::Opaque),
            0x90 => {
                until_mark(&mut stack)?;
            }
            0x91 => {
                until_mark(&mut stack)?;
                stack.push(Value::Opaque);
            }
            b'Q' => {
                let pid = pop!();
                stack.push(Value::Persistent(Box::new(pid)));
            }
            b'R' => {
                let args = pop!();
                let callable = pop!();
                stack.push(call(callable, args)?);
            }
            0x81 => {
                pop!();
                pop!();
                stack.push(Value::Opaque);
            }
            0x92 => {
                pop!();
                pop!();
                pop!();
                stack.push(Value::Opaque);
            }
            b'b' => {
                let state = pop!();
                match (stack.last_mut(), state) {
                    (Some(Value::Dict(dict)), Value::Dict(items)) => dict.extend(items),
                    (Some(_), _) => {}
                    (None, _) => return Err(underflow()),
                }
            }
            b'q' => {
                let i = uint!(1);
                memo.insert(i, stack.last().cloned().ok_or_else(underflow)?);
            }
            b'r' => {
                let i = uint!(4);
                memo.insert(i, stack.last().cloned().ok_or_else(underflow)?);
            }
            0x94 => {
                let i = memo.len() as u64;
                memo.insert(i, stack.last().cloned().ok_or_else(underflow)?);
            }
            b'h' => {
                let i = uint!(1);
                stack.push(memo.get(&i).cloned().ok_or("the pickle reads an unset memo entry")?);
            }
            b'j' => {
                let i = uint!(4);
                stack.push(memo.get(&i).cloned().ok_or("the pickle reads an unset memo entry")?);
            }
            b'0' => {
                pop!();
            }
            b'1' => {
                until_mark(&mut stack)?;
            }
            b'2' => {
                let top = stack.last().cloned().ok_or_else(underflow)?;
                stack.push(top);
            }
            other => return Err(format!("unsupported pickle opcode 0x{other:02x} at byte {}", at - 1)),
        }
    }
}

/// Alternating keys and values as pairs.
fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("a dict in the pickle has a key without a value".into());
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// What REDUCE builds: torch tensors and parameters, ordered dicts; anything else is opaque.
fn call(callable: Value, args: Value) -> Result<Value, String> {
    let Value::Global(module, name) = callable else {
        return Ok(Value::Opaque);
    };
    let Value::Tuple(mut args) = args else {
        return Ok(Value::Opaque);
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => Ok(Value::Dict(Vec::new())),
        ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => {
            Ok(if args.is_empty() {
                Value::Opaque
            } else {
                args.swap_remove(0)
            })
        }
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            let bad = || "a tensor record in the pickle is malformed".to_string();
            let [storage, offset, size, stride, ..] = args.as_slice() else {
                return Err(bad());
            };
            let Value::Persistent(pid) = storage else {
                return Err(bad());
            };
            // ('storage', torch.FloatStorage, key, location, numel)
            let Value::Tuple(pid) = pid.as_ref() else {
                return Err(bad());
            };
            let (Some(Value::Global(_, dtype)), Some(Value::Str(key))) = (pid.get(1), pid.get(2)) else {
                return Err(bad());
            };
            let dims = |v: &Value| -> Result<Vec<usize>, String> {
                match v {
                    Value::Tuple(items) => items
                        .iter()
                        .map(|d| match d {
                            Value::Int(i) => usize::try_from(*i).map_err(|_| bad()),
                            _ => Err(bad()),
                        })
                        .collect(),
                    _ => Err(bad()),
                }
            };
            let Value::Int(offset) = offset else { return Err(bad()) };
            let size = dims(size)?;
            let stride = dims(stride)?;
            if stride.len() != size.len() {
                return Err(bad());
            }
            Ok(Value::Tensor(TensorRef {
                storage: key.clone(),
                dtype: dtype.clone(),
                offset: usize::try_from(*offset).map_err(|_| bad())?,
                size,
                stride,
            }))
        }
        _ => Ok(Value::Opaque),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_pickles_are_errors() {
        for pickle in [
            &b""[..],
            b"\x80\x02}q\x00(X\x03\x00\x00\x00ab",
            b"\x80\x02s.",
            b"\xff",
            b"\x80\x02(u.",
        ] {
            assert!(interpret(pickle).is_err(), "{pickle:?}");
        }
        // A dict with an integer key set by SETITEM and a numpy-like call: fine.
        let ok = b"\x80\x02}q\x00K\x00cnumpy\nscalar\nq\x01(X\x01\x00\x00\x00at\x81s.";
        assert!(matches!(interpret(ok), Ok(Value::Dict(_))));
    }
}
