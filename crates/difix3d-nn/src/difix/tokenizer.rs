//! The CLIP byte-level BPE tokenizer of Stable Diffusion 2.1 / SD-Turbo, read from a diffusers
//! `tokenizer/` directory.
//!
//! The text encoder was trained on the ids that transformers' slow `CLIPTokenizer` (4.38) produces,
//! so this module reproduces that tokenizer step by step rather than the original OpenAI/open_clip
//! one (they differ in text cleaning and in how the pad token "!" is handled):
//!
//! 1. The text is split on the added tokens (the special tokens, and for SD 2.x the pad token "!"),
//!    exactly as `PreTrainedTokenizer.tokenize` does: an added token inside the text becomes its own
//!    id. That is why "wow!!" gives `wow</w>`, 0, 0 with SD 2.1's tokenizer and not `!!</w>`.
//! 2. Every other piece is cleaned as transformers does when `ftfy` is not installed (its
//!    `BasicTokenizer(strip_accents=False, do_split_on_punc=False)`): control, format, private-use
//!    and unassigned characters and U+FFFD are dropped, CJK ideographs get spaces around them, the
//!    text is split on whitespace and each word is lowercased.
//! 3. The CLIP regex splits words into pieces; each piece's UTF-8 bytes are mapped to printable
//!    characters (`bytes_to_unicode`) and merged by BPE, with `</w>` on the last symbol.
//! 4. `<|startoftext|>` + ids + `<|endoftext|>`, truncated and padded to `model_max_length` (77), as
//!    `tokenizer(prompt, padding="max_length", max_length=77, truncation=True)` does in the pipeline.
//!
//! Known difference: transformers NFC-normalises the cleaned text; this module does not (no Unicode
//! normalisation tables in our dependencies), so text that is not already in NFC (decomposed
//! accents such as "e\u{301}", CJK compatibility ideographs, the Ohm/Kelvin/Ångström signs) can
//! give other ids. Text typed or pasted normally is already NFC. (With the `unicode-normalization`
//! crate, NFC of the text after the CJK spacing in `tokenize_text` closes this gap.)
//! The Unicode tables differ too: Python 3.11 has Unicode 14, the `regex` crate a newer version,
//! so characters assigned since then are dropped as unassigned by Python and kept here.

use std::collections::HashMap;
use std::path::Path;

use regex::Regex;

use super::DifixError;

/// CLIP's context length; used when `tokenizer_config.json` does not give `model_max_length`.
const DEFAULT_MAX_LENGTH: usize = 77;
/// transformers reads at most this many merges (CLIP's 49408 tokens = 2 * 256 bytes + merges + 2).
const MAX_MERGES: usize = 49152 - 256 - 2;
/// transformers writes `int(1e30)` as `model_max_length` when it is unknown: anything above this is
/// treated as "not given" rather than padding to an absurd length.
const MAX_SANE_LENGTH: u64 = 1 << 16;
const START_OF_TEXT: &str = "<|startoftext|>";
const END_OF_TEXT: &str = "<|endoftext|>";

/// transformers' pre-tokenisation pattern (compiled with `re.IGNORECASE`).
const PATTERN: &str =
    r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
/// COMBINING GREEK YPOGEGRAMMENI, the one character the two regex engines disagree on.
const YPOGEGRAMMENI: char = '\u{345}';
/// Characters `BasicTokenizer._clean_text` drops: NUL, U+FFFD and every category C* character
/// except tab, newline and carriage return (which it turns into spaces).
const DROPPED: &str = r"[[\x{FFFD}\p{C}]--[\t\n\r]]";

/// A token that is never split: matched in the raw text before any cleaning.
#[derive(Debug, Clone)]
struct AddedToken {
    content: String,
    id: u32,
    /// Eats the whitespace on its left (transformers' `AddedToken.lstrip`).
    lstrip: bool,
    /// Eats the whitespace on its right.
    rstrip: bool,
}

/// The CLIP tokenizer of a diffusers `tokenizer/` directory (see the module doc for the steps).
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    encoder: HashMap<String, u32>,
    /// Rank of each merge (lower merges first), keyed by the two symbols.
    bpe_ranks: HashMap<(String, String), usize>,
    byte_encoder: [char; 256],
    /// Longest first, so that a match is the longest one starting at a position.
    added: Vec<AddedToken>,
    bos_id: u32,
    eos_id: u32,
    unk_id: u32,
    pad_id: u32,
    max_length: usize,
    pattern: Regex,
    dropped: Regex,
}

impl ClipTokenizer {
    /// Reads `dir/vocab.json` and `dir/merges.txt`, and if present `dir/tokenizer_config.json` and
    /// `dir/special_tokens_map.json` (the latter wins, as in transformers) for the special tokens
    /// and `model_max_length`. Without them the CLIP defaults apply: `<|startoftext|>`,
    /// `<|endoftext|>` as end, unknown and pad token, and 77 tokens. SD 2.1 and SD-Turbo ship
    /// `"pad_token": "!"` (id 0) there, SD 1.x `<|endoftext|>`, so the files must be read.
    pub fn from_dir(dir: &Path) -> Result<Self, DifixError> {
        let vocab_path = dir.join("vocab.json");
        let encoder = read_vocab(&vocab_path)?;
        let bpe_ranks = read_merges(&dir.join("merges.txt"))?;

        let config_path = dir.join("tokenizer_config.json");
        let map_path = dir.join("special_tokens_map.json");
        let config = read_optional_json(&config_path)?;
        let map = read_optional_json(&map_path)?;

        let mut specials = SpecialTokens::default();
        let mut added = Vec::new();
        let mut max_length = DEFAULT_MAX_LENGTH;
        if let Some(config) = &config {
            specials.update(config, &config_path)?;
            added = read_added_tokens_decoder(config, &config_path)?;
            max_length = read_max_length(config, &config_path)?;
        }
        if let Some(map) = &map {
            specials.update(map, &map_path)?;
        }

        // Like `PreTrainedTokenizer.__init__`: every special token becomes an added token; one
        // that is neither in `added_tokens_decoder` nor in the vocabulary gets the next free id.
        for token in specials.all() {
            if added.iter().any(|a| a.content == token.content) {
                continue;
            }
            let id = match encoder.get(&token.content) {
                Some(&id) => id,
                None => {
                    let extra = added.iter().filter(|a| !encoder.contains_key(&a.content)).count();
                    (encoder.len() + extra) as u32
                }
            };
            added.push(AddedToken { id, ..token });
        }
        let id_of = |content: &str| -> u32 {
            added
                .iter()
                .find(|a| a.content == content)
                .map(|a| a.id)
                .unwrap_or_else(|| encoder[content])
        };
        let bos_id = id_of(&specials.bos.content);
        let eos_id = id_of(&specials.eos.content);
        let pad_id = id_of(&specials.pad.content);
        // transformers maps unknown pieces to the vocabulary's id of the unk token.
        let unk_id = encoder
            .get(&specials.unk.content)
            .copied()
            .unwrap_or_else(|| id_of(&specials.unk.content));
        added.sort_by_key(|a| std::cmp::Reverse(a.content.len()));

        Ok(Self {
            encoder,
            bpe_ranks,
            byte_encoder: bytes_to_unicode(),
            added,
            bos_id,
            eos_id,
            unk_id,
            pad_id,
            max_length,
            pattern: Regex::new(PATTERN).expect("CLIP pattern compiles"),
            dropped: Regex::new(DROPPED).expect("control-character class compiles"),
        })
    }

    /// Token ids of `text` as the text encoder expects them: <|startoftext|>, BPE tokens,
    /// <|endoftext|>, truncated to max_length (keeping the end token) and padded with the pad
    /// token to max_length (77).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos_id);
        let mut tokens = self.tokenize(text);
        tokens.truncate(self.max_length - 2);
        ids.extend(tokens);
        ids.push(self.eos_id);
        ids.resize(self.max_length, self.pad_id);
        ids
    }

    /// The fixed length of every [`encode`](Self::encode) result: the text encoder's number of
    /// positions (`model_max_length`).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Ids of `text` without start, end or padding (`PreTrainedTokenizer.tokenize` + ids).
    fn tokenize(&self, text: &str) -> Vec<u32> {
        // Split on the added tokens, remembering which pieces are added tokens.
        let mut pieces: Vec<(&str, Option<usize>)> = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < text.len() {
            let rest = &text[i..];
            if let Some(k) = self.added.iter().position(|a| rest.starts_with(a.content.as_str())) {
                if start < i {
                    pieces.push((&text[start..i], None));
                }
                pieces.push((&text[i..i + self.added[k].content.len()], Some(k)));
                i += self.added[k].content.len();
                start = i;
            } else {
                i += rest.chars().next().map_or(1, char::len_utf8);
            }
        }
        if start < text.len() {
            pieces.push((&text[start..], None));
        }
        for j in 0..pieces.len() {
            let Some(k) = pieces[j].1 else { continue };
            let token = &self.added[k];
            if token.rstrip && j + 1 < pieces.len() && pieces[j + 1].1.is_none() {
                pieces[j + 1].0 = pieces[j + 1].0.trim_start();
            }
            if token.lstrip && j > 0 && pieces[j - 1].1.is_none() {
                pieces[j - 1].0 = pieces[j - 1].0.trim_end();
            }
        }

        let mut ids = Vec::new();
        for (piece, added) in pieces {
            match added {
                Some(k) => ids.push(self.added[k].id),
                None if piece.is_empty() => {}
                None => self.tokenize_text(piece, &mut ids),
            }
        }
        ids
    }

    /// `CLIPTokenizer._tokenize` without ftfy, then the vocabulary lookup.
    fn tokenize_text(&self, text: &str, ids: &mut Vec<u32>) {
        let cleaned = self.dropped.replace_all(text, "");
        let mut spaced = String::with_capacity(cleaned.len());
        for c in cleaned.chars() {
            if is_cjk_ideograph(c) {
                spaced.push(' ');
                spaced.push(c);
                spaced.push(' ');
            } else {
                spaced.push(c);
            }
        }
        // BasicTokenizer turns tab, newline, CR and Zs into spaces and then splits with Python's
        // `str.split()` (which also breaks on U+2028/U+2029): once the C* characters are gone,
        // that is exactly Rust's whitespace set.
        // transformers NFC-normalises here (`unicodedata.normalize("NFC", ...)`).
        let spaced: String = unicode_normalization::UnicodeNormalization::nfc(spaced.as_str()).collect();
        let words: Vec<String> = spaced.split_whitespace().map(str::to_lowercase).collect();
        let mut text = words.join(" ");
        if text.contains(YPOGEGRAMMENI) {
            // Python's `regex` module matches U+0345 with no alternative of the case-insensitive
            // pattern (the `regex` crate folds it into `\p{L}` as it folds to "ι"), so findall
            // skips it; a space is skipped the same way and joins nothing.
            text = text.replace(YPOGEGRAMMENI, " ");
        }

        let mut encoded = String::new();
        for piece in self.pattern.find_iter(&text) {
            encoded.clear();
            encoded.extend(piece.as_str().bytes().map(|b| self.byte_encoder[b as usize]));
            if encoded == START_OF_TEXT || encoded == END_OF_TEXT {
                // transformers' BPE cache holds these two as whole tokens.
                ids.push(self.lookup(&encoded));
                continue;
            }
            for symbol in self.bpe(&encoded) {
                ids.push(self.lookup(&symbol));
            }
        }
    }

    fn lookup(&self, token: &str) -> u32 {
        self.encoder.get(token).copied().unwrap_or(self.unk_id)
    }

    /// Byte-pair merges of one pre-token, lowest rank first, `</w>` marking the word end.
    fn bpe(&self, token: &str) -> Vec<String> {
        let mut word: Vec<String> = token.chars().map(String::from).collect();
        if let Some(last) = word.last_mut() {
            last.push_str("</w>");
        }
        while word.len() > 1 {
            let best = word
                .windows(2)
                .filter_map(|w| self.bpe_ranks.get(&(w[0].clone(), w[1].clone())).map(|&r| (r, w)))
                .min_by_key(|&(r, _)| r)
                .map(|(_, w)| (w[0].clone(), w[1].clone()));
            let Some((first, second)) = best else { break };
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == first && word[i + 1] == second {
                    merged.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut word[i]));
                    i += 1;
                }
            }
            word = merged;
        }
        word
    }
}

/// GPT-2/CLIP's reversible map from bytes to printable characters, so that BPE never sees
/// whitespace or control characters.
fn bytes_to_unicode() -> [char; 256] {
    let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    let mut map = ['\0'; 256];
    let mut n = 0;
    for b in 0..256u32 {
        let c = if printable(b) {
            b
        } else {
            n += 1;
            255 + n
        };
        map[b as usize] = char::from_u32(c).expect("code points below 0x200 are chars");
    }
    map
}

/// The CJK ranges of BERT's `_is_chinese_char`, which `BasicTokenizer` surrounds with spaces.
fn is_cjk_ideograph(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B820..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

fn read_text(path: &Path) -> Result<String, DifixError> {
    std::fs::read_to_string(path).map_err(|e| DifixError::io(path, e))
}

fn read_vocab(path: &Path) -> Result<HashMap<String, u32>, DifixError> {
    let value: serde_json::Value = serde_json::from_str(&read_text(path)?)
        .map_err(|e| DifixError::format(path, format!("not valid JSON: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(DifixError::format(path, "expected a JSON object mapping tokens to ids"));
    };
    if map.is_empty() {
        return Err(DifixError::format(path, "the vocabulary is empty"));
    }
    map.into_iter()
        .map(|(token, id)| match id.as_u64().and_then(|id| u32::try_from(id).ok()) {
            Some(id) => Ok((token, id)),
            None => Err(DifixError::format(
                path,
                format!("token {token:?} has id {id}, not a non-negative integer"),
            )),
        })
        .collect()
}

/// Merge ranks as transformers reads them: the whole file trimmed, its first line (the
/// `#version` header) skipped, at most [`MAX_MERGES`] lines, blank lines ignored.
fn read_merges(path: &Path) -> Result<HashMap<(String, String), usize>, DifixError> {
    let text = read_text(path)?;
    let trimmed = text.trim();
    let first_line = text[..text.len() - text.trim_start().len()].matches('\n').count() + 1;
    let mut ranks = HashMap::new();
    for (rank, (n, line)) in trimmed.split('\n').enumerate().skip(1).take(MAX_MERGES).enumerate() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            [] => {}
            // A repeated merge keeps its last rank, as Python's dict does.
            [a, b] => {
                ranks.insert((a.to_string(), b.to_string()), rank);
            }
            _ => {
                return Err(DifixError::format(
                    path,
                    format!(
                        "line {}: expected two symbols separated by a space, got {line:?}",
                        first_line + n
                    ),
                ))
            }
        }
    }
    Ok(ranks)
}

fn read_optional_json(path: &Path) -> Result<Option<serde_json::Value>, DifixError> {
    if !path.exists() {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_str(&read_text(path)?)
        .map_err(|e| DifixError::format(path, format!("not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(DifixError::format(path, "expected a JSON object"));
    }
    Ok(Some(value))
}

/// A token given as `"text"` or as transformers' serialised `AddedToken` object; `null` and `""`
/// give `None` (transformers skips empty tokens, and one would match everywhere).
fn parse_token(value: &serde_json::Value, path: &Path, key: &str) -> Result<Option<AddedToken>, DifixError> {
    let token = |content: &str, lstrip, rstrip| AddedToken {
        content: content.to_string(),
        id: 0,
        lstrip,
        rstrip,
    };
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) if s.is_empty() => Ok(None),
        serde_json::Value::String(s) => Ok(Some(token(s, false, false))),
        serde_json::Value::Object(o) => match o.get("content").and_then(|c| c.as_str()) {
            Some("") => Ok(None),
            Some(content) => {
                let flag = |name: &str| o.get(name).and_then(|v| v.as_bool()).unwrap_or(false);
                Ok(Some(token(content, flag("lstrip"), flag("rstrip"))))
            }
            None => Err(DifixError::format(path, format!("`{key}` has no string \"content\""))),
        },
        _ => Err(DifixError::format(
            path,
            format!("`{key}` must be a string or an object with \"content\""),
        )),
    }
}

/// The special tokens of `CLIPTokenizer`, with its defaults.
struct SpecialTokens {
    bos: AddedToken,
    eos: AddedToken,
    unk: AddedToken,
    pad: AddedToken,
    additional: Vec<AddedToken>,
}

impl Default for SpecialTokens {
    fn default() -> Self {
        let token = |content: &str| AddedToken {
            content: content.to_string(),
            id: 0,
            lstrip: false,
            rstrip: false,
        };
        Self {
            bos: token(START_OF_TEXT),
            eos: token(END_OF_TEXT),
            unk: token(END_OF_TEXT),
            // transformers' CLIPTokenizer default ("hack to enable padding"); SD 2.x overrides it.
            pad: token(END_OF_TEXT),
            additional: Vec::new(),
        }
    }
}

impl SpecialTokens {
    /// Overrides the tokens that `file` (tokenizer_config.json or special_tokens_map.json) names;
    /// `null` keeps the current one.
    fn update(&mut self, file: &serde_json::Value, path: &Path) -> Result<(), DifixError> {
        for (key, slot) in [
            ("bos_token", &mut self.bos),
            ("eos_token", &mut self.eos),
            ("unk_token", &mut self.unk),
            ("pad_token", &mut self.pad),
        ] {
            if let Some(value) = file.get(key) {
                if let Some(token) = parse_token(value, path, key)? {
                    *slot = token;
                }
            }
        }
        match file.get("additional_special_tokens") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(items)) => {
                for item in items {
                    if let Some(token) = parse_token(item, path, "additional_special_tokens")? {
                        if !self.additional.iter().any(|a| a.content == token.content) {
                            self.additional.push(token);
                        }
                    }
                }
            }
            Some(_) => return Err(DifixError::format(path, "`additional_special_tokens` must be a list")),
        }
        Ok(())
    }

    /// In transformers' `all_special_tokens_extended` order.
    fn all(&self) -> Vec<AddedToken> {
        let mut all = vec![self.bos.clone(), self.eos.clone(), self.unk.clone(), self.pad.clone()];
        all.extend(self.additional.iter().cloned());
        all
    }
}

/// `added_tokens_decoder` of tokenizer_config.json: `{"0": {"content": "!", ...}, ...}`.
fn read_added_tokens_decoder(config: &serde_json::Value, path: &Path) -> Result<Vec<AddedToken>, DifixError> {
    let Some(decoder) = config.get("added_tokens_decoder") else {
        return Ok(Vec::new());
    };
    let Some(decoder) = decoder.as_object() else {
        return Err(DifixError::format(path, "`added_tokens_decoder` must be an object"));
    };
    let mut added = Vec::new();
    for (id, value) in decoder {
        let key = format!("added_tokens_decoder.{id}");
        let id = id
            .parse::<u32>()
            .map_err(|_| DifixError::format(path, format!("`{key}`: the key must be a token id")))?;
        if let Some(token) = parse_token(value, path, &key)? {
            added.push(AddedToken { id, ..token });
        }
    }
    Ok(added)
}

fn read_max_length(config: &serde_json::Value, path: &Path) -> Result<usize, DifixError> {
    match config.get("model_max_length") {
        None | Some(serde_json::Value::Null) => Ok(DEFAULT_MAX_LENGTH),
        Some(value) => match (value.as_u64(), value.as_f64()) {
            (Some(n), _) if (2..=MAX_SANE_LENGTH).contains(&n) => Ok(n as usize),
            (_, Some(x)) if x > MAX_SANE_LENGTH as f64 => Ok(DEFAULT_MAX_LENGTH),
            _ => Err(DifixError::format(
                path,
                format!("`model_max_length` is {value}; it must be an integer of at least 2 (start and end tokens)"),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A tiny CLIP-like tokenizer: the 512 byte symbols, a few merges, then the two specials.
    fn tiny_dir(extra_files: &[(&str, &str)]) -> tempfile::TempDir {
        let merges = [
            ("h", "e"),
            ("l", "l"),
            ("he", "ll"),
            ("o", "</w>"),
            ("hell", "o</w>"),
            ("'", "s</w>"),
            ("i", "t</w>"),
        ];
        // CLIP's order: the printable bytes first (so "!" is 0), i.e. by code point.
        let mut bytes = bytes_to_unicode();
        bytes.sort();
        let mut vocab: Vec<String> = bytes.iter().map(|c| c.to_string()).collect();
        vocab.extend(bytes.iter().map(|c| format!("{c}</w>")));
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.push(START_OF_TEXT.into());
        vocab.push(END_OF_TEXT.into());
        let vocab: serde_json::Map<String, serde_json::Value> = vocab
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, serde_json::Value::from(i)))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("vocab.json"), serde_json::to_string(&vocab).unwrap()).unwrap();
        let mut text = String::from("#version: 0.2\n");
        for (a, b) in merges {
            text += &format!("{a} {b}\n");
        }
        fs::write(dir.path().join("merges.txt"), text).unwrap();
        for (name, content) in extra_files {
            fs::write(dir.path().join(name), content).unwrap();
        }
        dir
    }

    fn id(tok: &ClipTokenizer, token: &str) -> u32 {
        tok.encoder[token]
    }

    /// The ids between the start and the end token, for readable assertions.
    fn body(tok: &ClipTokenizer, text: &str) -> Vec<u32> {
        tok.tokenize(text)
    }

    #[test]
    fn bytes_to_unicode_matches_gpt2_table() {
        let map = bytes_to_unicode();
        assert_eq!(map[b'!' as usize], '!');
        assert_eq!(map[b' ' as usize], '\u{120}'); // "Ġ"
        assert_eq!(map[0], '\u{100}');
        assert_eq!(map[0xAD], '\u{143}');
        let mut sorted = map.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
    }

    #[test]
    fn defaults_without_special_token_files() {
        let dir = tiny_dir(&[]);
        let tok = ClipTokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(tok.max_length(), 77);
        assert_eq!(tok.bos_id, id(&tok, START_OF_TEXT));
        assert_eq!(tok.eos_id, id(&tok, END_OF_TEXT));
        assert_eq!(tok.pad_id, id(&tok, END_OF_TEXT));
        let ids = tok.encode("Hello");
        assert_eq!(ids.len(), 77);
        assert_eq!(&ids[..3], &[tok.bos_id, id(&tok, "hello</w>"), tok.eos_id]);
        assert!(ids[3..].iter().all(|&i| i == tok.pad_id));
        // "!" is an ordinary symbol here: "!!" stays one pre-token.
        assert_eq!(body(&tok, "!!"), vec![id(&tok, "!"), id(&tok, "!</w>")]);
    }

    #[test]
    fn bpe_merges_by_rank_and_marks_word_end() {
        let dir = tiny_dir(&[]);
        let tok = ClipTokenizer::from_dir(dir.path()).unwrap();
        // "hello": h e l l o</w> -> he l l o</w> -> he ll o</w> -> hell o</w> -> hello</w>.
        assert_eq!(body(&tok, "HELLO"), vec![id(&tok, "hello</w>")]);
        // "hell": the last "l" carries </w>, so "l l" (rank 1) cannot merge it.
        assert_eq!(
            body(&tok, "hell"),
            vec![id(&tok, "he"), id(&tok, "l"), id(&tok, "l</w>")]
        );
    }

    #[test]
    fn pre_tokens_contractions_digits_and_cleaning() {
        let dir = tiny_dir(&[]);
        let tok = ClipTokenizer::from_dir(dir.path()).unwrap();
        // 's is its own piece; digits are split one by one; punctuation runs stay together.
        assert_eq!(body(&tok, "it's"), vec![id(&tok, "it</w>"), id(&tok, "'s</w>")]);
        assert_eq!(body(&tok, "42"), vec![id(&tok, "4</w>"), id(&tok, "2</w>")]);
        assert_eq!(body(&tok, "?."), vec![id(&tok, "?"), id(&tok, ".</w>")]);
        // Control and format characters vanish, whitespace runs collapse.
        assert_eq!(body(&tok, "\u{0}h\u{200D}ello\t\n \u{3000}it"), body(&tok, "hello it"));
        assert_eq!(body(&tok, "   "), Vec::<u32>::new());
        // A CJK ideograph is its own word even inside letters: "a" + "中" + "b".
        let zhong: Vec<u32> = "中"
            .bytes()
            .map(|b| tok.byte_encoder[b as usize])
            .enumerate()
            .map(|(i, c)| {
                if i == 2 {
                    id(&tok, &format!("{c}</w>"))
                } else {
                    id(&tok, &c.to_string())
                }
            })
            .collect();
        let mut expected = vec![id(&tok, "a</w>")];
        expected.extend(zhong);
        expected.push(id(&tok, "b</w>"));
        assert_eq!(body(&tok, "a中b"), expected);
        // U+0345 matches nothing in Python's case-insensitive pattern: skipped, not glued.
        assert_eq!(body(&tok, "it\u{345}it"), vec![id(&tok, "it</w>"), id(&tok, "it</w>")]);
        // The special tokens written in the text are kept whole, in any case.
        assert_eq!(
            body(&tok, "hello<|endoftext|>"),
            vec![id(&tok, "hello</w>"), tok.eos_id]
        );
        assert_eq!(body(&tok, "<|ENDOFTEXT|>"), vec![tok.eos_id]);
    }

    #[test]
    fn unknown_symbols_map_to_unk() {
        // A vocabulary without "x</w>" (as could only happen with a damaged file).
        let dir = tiny_dir(&[]);
        let tok = ClipTokenizer::from_dir(dir.path()).unwrap();
        let mut tok = tok;
        tok.encoder.remove("x</w>");
        assert_eq!(tok.unk_id, id(&tok, END_OF_TEXT));
        assert_eq!(body(&tok, "x"), vec![tok.unk_id]);
    }

    #[test]
    fn truncates_keeping_the_end_token() {
        let dir = tiny_dir(&[]);
        let tok = ClipTokenizer::from_dir(dir.path()).unwrap();
        let ids = tok.encode(&"hello ".repeat(100));
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[0], tok.bos_id);
        assert!(ids[1..76].iter().all(|&i| i == id(&tok, "hello</w>")));
        assert_eq!(ids[76], tok.eos_id);
    }

    #[test]
    fn sd21_pad_token_is_read_and_splits_the_text() {
        // SD 2.1 / SD-Turbo: `"pad_token": "!"` in both files, "!" declared as added token 0.
        let config = r#"{"added_tokens_decoder": {"0": {"content": "!", "lstrip": false, "normalized": false,
            "rstrip": false, "single_word": false, "special": true}}, "model_max_length": 77,
            "pad_token": "!", "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}"#;
        let map = r#"{"pad_token": "!", "unk_token": {"content": "<|endoftext|>", "lstrip": false, "normalized": true,
            "rstrip": false, "single_word": false}}"#;
        let dir = tiny_dir(&[("tokenizer_config.json", config), ("special_tokens_map.json", map)]);
        let tok = ClipTokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(tok.pad_id, 0);
        let ids = tok.encode("hello!!");
        assert_eq!(&ids[..5], &[tok.bos_id, id(&tok, "hello</w>"), 0, 0, tok.eos_id]);
        assert!(ids[5..].iter().all(|&i| i == 0));
        // Without the files "!!" would have been one pre-token (see `defaults_...`).
        assert_eq!(body(&tok, "?!?"), vec![id(&tok, "?</w>"), 0, id(&tok, "?</w>")]);
    }

    #[test]
    fn special_tokens_map_wins_and_objects_are_accepted() {
        let config = r#"{"pad_token": "<|endoftext|>", "model_max_length": 10}"#;
        let map = r#"{"pad_token": {"content": "!", "lstrip": false, "rstrip": true}}"#;
        let dir = tiny_dir(&[("tokenizer_config.json", config), ("special_tokens_map.json", map)]);
        let tok = ClipTokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(tok.max_length(), 10);
        assert_eq!(tok.pad_id, 0);
        let ids = tok.encode("it! hello");
        assert_eq!(
            ids,
            vec![
                tok.bos_id,
                id(&tok, "it</w>"),
                0,
                id(&tok, "hello</w>"),
                tok.eos_id,
                0,
                0,
                0,
                0,
                0
            ]
        );
    }

    #[test]
    fn empty_or_null_tokens_keep_the_defaults() {
        let config = r#"{"pad_token": "", "unk_token": null, "added_tokens_decoder": {"5": {"content": ""}}}"#;
        let dir = tiny_dir(&[("tokenizer_config.json", config)]);
        let tok = ClipTokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(tok.pad_id, id(&tok, END_OF_TEXT));
        assert_eq!(tok.unk_id, id(&tok, END_OF_TEXT));
        assert_eq!(body(&tok, "hello"), vec![id(&tok, "hello</w>")]);
    }

    #[test]
    fn huge_model_max_length_means_unset() {
        let dir = tiny_dir(&[(
            "tokenizer_config.json",
            r#"{"model_max_length": 1000000000000000019884624838656}"#,
        )]);
        assert_eq!(ClipTokenizer::from_dir(dir.path()).unwrap().max_length(), 77);
        let dir = tiny_dir(&[("tokenizer_config.json", r#"{"model_max_length": 1}"#)]);
        let err = ClipTokenizer::from_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("tokenizer_config.json") && err.contains("model_max_length"),
            "{err}"
        );
    }

    #[test]
    fn bad_files_name_the_file() {
        let empty = tempfile::tempdir().unwrap();
        let err = ClipTokenizer::from_dir(empty.path()).unwrap_err();
        assert!(
            matches!(err, DifixError::Io { .. }) && err.to_string().contains("vocab.json"),
            "{err}"
        );

        let dir = tiny_dir(&[]);
        fs::write(dir.path().join("merges.txt"), "#version: 0.2\nh e\nh e l\n").unwrap();
        let err = ClipTokenizer::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("merges.txt") && err.contains("line 3"), "{err}");

        fs::write(dir.path().join("merges.txt"), "#version: 0.2\n").unwrap();
        fs::write(dir.path().join("vocab.json"), "[1, 2]").unwrap();
        let err = ClipTokenizer::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("vocab.json") && err.contains("object"), "{err}");

        fs::write(dir.path().join("vocab.json"), r#"{"a": -1}"#).unwrap();
        let err = ClipTokenizer::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("vocab.json") && err.contains("\"a\""), "{err}");

        let dir = tiny_dir(&[("special_tokens_map.json", r#"{"pad_token": 5}"#)]);
        let err = ClipTokenizer::from_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("special_tokens_map.json") && err.contains("pad_token"),
            "{err}"
        );

        let dir = tiny_dir(&[("tokenizer_config.json", "{not json")]);
        let err = ClipTokenizer::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("tokenizer_config.json") && err.contains("JSON"), "{err}");
    }
}
