//! The fuzz harness's seeded generator: a small RNG, mutations of binary files, text files and JSON
//! documents, and the runner that gives every case a time limit and judges its outcome.
//!
//! Every mutation is described in words (`"truncated at byte 17"`, `"f32 at 112 := NaN"`), so a
//! failing case can be reproduced by reading the report: the seed and the case index rebuild it.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The default seed; `DIFIX3D_FUZZ_SEED` picks another.
const DEFAULT_SEED: u64 = 0x0D1F_1C3D;

/// How many mutated inputs one reader gets: `default` in the ordinary suite, or
/// `DIFIX3D_FUZZ_CASES` (the long slice, e.g. 100000) when it is set.
pub fn case_count(default: usize) -> usize {
    std::env::var("DIFIX3D_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The same for readers that build a network per case (model folders, pickles): the long slice
/// gives them a fiftieth of `DIFIX3D_FUZZ_CASES`, since each case costs a model load.
pub fn heavy_case_count(default: usize) -> usize {
    if long_slice() {
        (case_count(default) / 50).max(default)
    } else {
        default
    }
}

/// Whether the long slice was asked for (`DIFIX3D_FUZZ_CASES` is set).
pub fn long_slice() -> bool {
    std::env::var_os("DIFIX3D_FUZZ_CASES").is_some()
}

/// The run's seed, mixed with a per-reader salt so readers do not all draw the same sequence.
pub fn seed(salt: &str) -> u64 {
    let base = std::env::var("DIFIX3D_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    salt.bytes()
        .fold(base, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3))
}

/// The library's SplitMix64 ([`difix3d::rng::Rng`]) with the choices the mutators need.
pub struct Rng(difix3d::rng::Rng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(difix3d::rng::Rng(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        self.0.below(n)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Floats that parse but break assumptions.
pub const SPECIAL_F32: [f32; 9] = [
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::MAX,
    -f32::MAX,
    1e30,
    -1e30,
    0.0,
    -1.0,
];

pub const SPECIAL_F64: [f64; 9] = [
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::MAX,
    1e300,
    -1e300,
    1e39, // finite as f64, infinite as f32
    0.0,
    -1.0,
];

/// Counts that lie: none, one, and far more than any file could hold.
pub const SPECIAL_COUNTS: [u64; 9] = [
    0,
    1,
    2,
    0x7FFF_FFFF,
    0xFFFF_FFFF,
    0x1_0000_0000,
    1 << 40,
    1 << 62,
    u64::MAX,
];

/// Number tokens for text formats (PLY headers, COLMAP text, JSON).
pub const SPECIAL_TOKENS: [&str; 22] = [
    "0",
    "-0",
    "1",
    "-1",
    "2",
    "-2147483649",
    "2147483648",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "1e308",
    "-1e308",
    "1e39",
    "1e-400",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "0.5",
    "x",
];

/// Where the numbers of a binary file sit, so mutations can lie about counts or plant NaNs.
#[derive(Clone, Copy, Debug)]
pub enum Field {
    /// A little-endian f32 (or big-endian when `big` is set).
    F32 {
        at: usize,
        big: bool,
    },
    F64 {
        at: usize,
    },
    /// An element count stored as an unsigned integer of `width` bytes (4 or 8), little-endian.
    Count {
        at: usize,
        width: usize,
    },
}

/// A binary file and the layout facts the mutations use.
#[derive(Clone)]
pub struct BinarySeed {
    pub bytes: Vec<u8>,
    /// Length of the header (0 when there is none): truncations are drawn from the header, the
    /// body and the last bytes alike.
    pub header_len: usize,
    pub fields: Vec<Field>,
}

/// One mutation of a binary file, chosen by `rng`; returns the new bytes and what was done.
pub fn mutate_binary(rng: &mut Rng, seed: &BinarySeed) -> (Vec<u8>, String) {
    let mut bytes = seed.bytes.clone();
    let len = bytes.len();
    match rng.below(if seed.fields.is_empty() { 4 } else { 6 }) {
        0 => {
            // Truncation, by offset class: in the header, at its end, in the body, the last byte.
            let at = match rng.below(4) {
                0 => rng.below(seed.header_len.max(1)),
                1 => seed.header_len.min(len.saturating_sub(1)),
                2 => seed.header_len + rng.below((len - seed.header_len).max(1)),
                _ => len.saturating_sub(1 + rng.below(8.min(len))),
            };
            bytes.truncate(at.min(len));
            (bytes, format!("truncated at byte {at} of {len}"))
        }
        1 => {
            let flips = 1 + rng.below(3);
            let mut what = Vec::new();
            for _ in 0..flips {
                let at = rng.below(len);
                let mask = 1u8 << rng.below(8);
                bytes[at] ^= mask;
                what.push(format!("{at}^{mask:#04x}"));
            }
            (bytes, format!("bit flips {}", what.join(", ")))
        }
        2 => {
            let at = rng.below(len);
            let value = *rng.pick(&[0x00u8, 0xFF, 0x7F, 0x80]);
            let run = 1 + rng.below(8);
            for b in bytes.iter_mut().skip(at).take(run) {
                *b = value;
            }
            (bytes, format!("{run} bytes at {at} := {value:#04x}"))
        }
        3 => {
            // Splice: a chunk removed, or duplicated in place.
            let at = rng.below(len);
            let span = 1 + rng.below(64.min(len - at));
            if rng.chance(0.5) {
                bytes.drain(at..at + span);
                (bytes, format!("{span} bytes removed at {at}"))
            } else {
                let chunk = bytes[at..at + span].to_vec();
                bytes.splice(at..at, chunk);
                (bytes, format!("{span} bytes duplicated at {at}"))
            }
        }
        _ => {
            let field = *rng.pick(&seed.fields);
            poke(rng, &mut bytes, field)
        }
    }
}

/// Writes a special value into one numeric field.
fn poke(rng: &mut Rng, bytes: &mut Vec<u8>, field: Field) -> (Vec<u8>, String) {
    let what = match field {
        Field::F32 { at, big } => {
            let v = *rng.pick(&SPECIAL_F32);
            let b = if big { v.to_be_bytes() } else { v.to_le_bytes() };
            bytes[at..at + 4].copy_from_slice(&b);
            format!("f32 at {at} := {v}")
        }
        Field::F64 { at } => {
            let v = *rng.pick(&SPECIAL_F64);
            bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
            format!("f64 at {at} := {v}")
        }
        Field::Count { at, width } => {
            let v = *rng.pick(&SPECIAL_COUNTS);
            let b = v.to_le_bytes();
            bytes[at..at + width].copy_from_slice(&b[..width]);
            format!("count at {at} := {v:#x} (as {width} bytes)")
        }
    };
    (std::mem::take(bytes), what)
}

/// Every truncation of `bytes` up to `limit` cases (all offsets when the file is that small,
/// otherwise evenly spread ones plus the first and last 64).
pub fn truncations(len: usize, limit: usize) -> Vec<usize> {
    if len <= limit {
        return (0..len).collect();
    }
    let mut at: Vec<usize> = (0..64).chain(len - 64..len).collect();
    let rest = limit.saturating_sub(at.len()).max(1);
    at.extend((0..rest).map(|i| 64 + i * (len - 128) / rest));
    at.sort_unstable();
    at.dedup();
    at
}

/// One mutation of a text file: a number token replaced by a special one, a line dropped or
/// repeated, a truncation, or a byte flip (which may leave invalid UTF-8).
pub fn mutate_text(rng: &mut Rng, text: &str) -> (Vec<u8>, String) {
    let numbers = number_spans(text);
    let choice = rng.below(10);
    if choice < 5 && !numbers.is_empty() {
        let (start, end) = *rng.pick(&numbers);
        let token = *rng.pick(&SPECIAL_TOKENS);
        let mut out = String::with_capacity(text.len() + 24);
        out.push_str(&text[..start]);
        out.push_str(token);
        out.push_str(&text[end..]);
        return (
            out.into_bytes(),
            format!("number `{}` at {start} := `{token}`", &text[start..end]),
        );
    }
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    match choice {
        5 | 6 if lines.len() > 1 => {
            let i = rng.below(lines.len());
            let mut out: Vec<&str> = lines.clone();
            let what = if choice == 5 {
                out.remove(i);
                format!("line {} removed", i + 1)
            } else {
                out.insert(i, lines[i]);
                format!("line {} repeated", i + 1)
            };
            (out.concat().into_bytes(), what)
        }
        7 => {
            let at = rng.below(text.len().max(1));
            (
                text.as_bytes()[..at].to_vec(),
                format!("truncated at byte {at} of {}", text.len()),
            )
        }
        _ => {
            let mut bytes = text.as_bytes().to_vec();
            let at = rng.below(bytes.len().max(1));
            let mask = 1u8 << rng.below(8);
            if let Some(b) = bytes.get_mut(at) {
                *b ^= mask;
            }
            (bytes, format!("bit flip {at}^{mask:#04x}"))
        }
    }
}

/// Byte ranges of the number-like tokens of `text` (digits with an optional sign, dot, exponent).
pub fn number_spans(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_number = bytes[i].is_ascii_digit()
            || (matches!(bytes[i], b'-' | b'+' | b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit));
        let after_word = i > 0 && (bytes[i - 1].is_ascii_alphabetic() || bytes[i - 1] == b'_');
        if starts_number && !after_word {
            let start = i;
            i += 1;
            while i < bytes.len()
                && (bytes[i].is_ascii_digit()
                    || matches!(bytes[i], b'.' | b'e' | b'E')
                    || (matches!(bytes[i], b'-' | b'+') && matches!(bytes[i - 1], b'e' | b'E')))
            {
                i += 1;
            }
            spans.push((start, i));
        } else {
            i += 1;
        }
    }
    spans
}

/// One structural mutation of a JSON document: a number, string or value somewhere in it replaced
/// by a special one, a key removed, an array emptied or grown; or, one time in four, a text
/// mutation of its serialisation (bare `NaN`, truncation, flips).
pub fn mutate_json(rng: &mut Rng, doc: &serde_json::Value) -> (Vec<u8>, String) {
    if rng.chance(0.25) {
        return mutate_text(rng, &serde_json::to_string_pretty(doc).expect("JSON serialises"));
    }
    let mut doc = doc.clone();
    let mut paths = Vec::new();
    collect_paths(&doc, &mut String::new(), &mut paths);
    let (path, _) = rng.pick(&paths).clone();
    let target = doc.pointer_mut(&path).expect("the path was just collected");
    use serde_json::{json, Value};
    let what = match rng.below(8) {
        0..=2 => {
            let token = *rng.pick(&SPECIAL_TOKENS);
            // Tokens JSON has no literal for (nan, inf) go in as strings, which a reader must refuse.
            *target = serde_json::from_str(token).unwrap_or_else(|_| Value::String(token.into()));
            format!("{path} := {token}")
        }
        3 => {
            let replacement = rng
                .pick(&[
                    json!(null),
                    json!([]),
                    json!({}),
                    json!(""),
                    json!(true),
                    json!([1e308, -1e308]),
                    json!("../../../../etc/passwd"),
                ])
                .clone();
            let what = format!("{path} := {replacement}");
            *target = replacement;
            what
        }
        4 => match target {
            Value::Array(items) if !items.is_empty() => {
                let copies = *rng.pick(&[1usize, 2, 50]);
                let first = items[0].clone();
                items.extend(std::iter::repeat_n(first, copies));
                format!("{path}: first item repeated {copies} more times")
            }
            Value::Array(_) | Value::Object(_) => {
                let empty = if target.is_array() { json!([]) } else { json!({}) };
                *target = empty;
                format!("{path} emptied")
            }
            _ => {
                *target = json!(-1e308);
                format!("{path} := -1e308")
            }
        },
        _ => {
            // Remove the member at `path` (or the last item of an array).
            let (parent, key) = path.rsplit_once('/').expect("a member path has a slash");
            let key = key.replace("~1", "/").replace("~0", "~");
            match doc.pointer_mut(parent) {
                Some(Value::Object(map)) => {
                    map.remove(&key);
                }
                Some(Value::Array(items)) => {
                    items.pop();
                }
                _ => {}
            }
            format!("{path} removed")
        }
    };
    (
        serde_json::to_string_pretty(&doc)
            .expect("JSON serialises")
            .into_bytes(),
        what,
    )
}

/// JSON pointers to every value below the root.
fn collect_paths(value: &serde_json::Value, prefix: &mut String, out: &mut Vec<(String, ())>) {
    let mut visit = |key: String, child: &serde_json::Value| {
        let len = prefix.len();
        prefix.push('/');
        prefix.push_str(&key.replace('~', "~0").replace('/', "~1"));
        out.push((prefix.clone(), ()));
        collect_paths(child, prefix, out);
        prefix.truncate(len);
    };
    match value {
        serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| visit(k.clone(), v)),
        serde_json::Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| visit(i.to_string(), v)),
        _ => {}
    }
}

/// Collects what went wrong over many cases and fails once, listing the first few, so one run
/// reports every class of problem rather than the first.
pub struct Verdicts {
    reader: &'static str,
    cases: usize,
    rejected: usize,
    accepted: usize,
    failures: Vec<String>,
    slowest: Duration,
}

/// The longest any one case may take before it counts as a hang. Generous: debug builds on a
/// busy two-core machine; a hang is forever, not a few seconds.
pub const CASE_LIMIT: Duration = Duration::from_secs(20);

impl Verdicts {
    pub fn new(reader: &'static str) -> Self {
        Self {
            reader,
            cases: 0,
            rejected: 0,
            accepted: 0,
            failures: Vec::new(),
            slowest: Duration::ZERO,
        }
    }

    /// Runs `read` on its own thread with [`CASE_LIMIT`] and judges it: a panic or a hang fails;
    /// an error must name `file` (its file name is enough); a success must pass `accept`.
    pub fn run<T: Send + 'static>(
        &mut self,
        case: &str,
        file: &Path,
        read: impl FnOnce() -> Result<T, String> + Send + 'static,
        accept: impl FnOnce(&T) -> Result<(), String>,
    ) {
        self.cases += 1;
        let (tx, rx) = mpsc::channel();
        let start = Instant::now();
        let worker = std::thread::Builder::new()
            .name(format!("fuzz {}", self.reader))
            .spawn(move || {
                let _ = tx.send(read());
            })
            .expect("spawn a fuzz worker");
        let outcome = rx.recv_timeout(CASE_LIMIT);
        self.slowest = self.slowest.max(start.elapsed());
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let failure = match outcome {
            Ok(Ok(value)) => {
                let _ = worker.join();
                self.accepted += 1;
                accept(&value)
                    .err()
                    .map(|why| format!("accepted an invalid input: {why}"))
            }
            Ok(Err(message)) => {
                let _ = worker.join();
                self.rejected += 1;
                (!message.contains(&name)).then(|| format!("the error does not name {name}: {message}"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Some("panicked (see the panic message above)".into()),
            // The worker is left running: the test fails anyway and the process ends with it.
            Err(mpsc::RecvTimeoutError::Timeout) => Some(format!("no answer within {CASE_LIMIT:?} (a hang)")),
        };
        if let Some(failure) = failure {
            self.failures.push(format!("case {case}: {failure}"));
        }
    }

    /// Prints the tally and fails the test when any case failed.
    pub fn finish(self) {
        eprintln!(
            "fuzz {}: {} cases, {} rejected with an error, {} read as valid, slowest {:?}",
            self.reader, self.cases, self.rejected, self.accepted, self.slowest
        );
        if !self.failures.is_empty() {
            let shown: Vec<&String> = self.failures.iter().take(20).collect();
            panic!(
                "fuzz {}: {} of {} cases failed (first {}):\n{}",
                self.reader,
                self.failures.len(),
                self.cases,
                shown.len(),
                shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
            );
        }
    }
}

#[test]
fn number_spans_find_numbers_but_not_names() {
    let text = "element vertex 12\nproperty float f_dc_0 -1.5e-3 x2";
    let found: Vec<&str> = number_spans(text).iter().map(|&(a, b)| &text[a..b]).collect();
    assert_eq!(found, ["12", "-1.5e-3"]);
}

#[test]
fn the_generator_is_deterministic() {
    let mut a = Rng::new(seed("x"));
    let mut b = Rng::new(seed("x"));
    let seed_bytes = BinarySeed {
        bytes: (0..=255).collect(),
        header_len: 16,
        fields: vec![Field::F32 { at: 16, big: false }, Field::Count { at: 0, width: 8 }],
    };
    for _ in 0..100 {
        assert_eq!(mutate_binary(&mut a, &seed_bytes), mutate_binary(&mut b, &seed_bytes));
    }
}
