//! The architecture's rules, checked.
//!
//! The crate graph: the workspace's engine crates (`crates/*`) depend on no GUI crate (eframe, egui,
//! winit, rfd), not even through another dependency, and never on the app crate (the root package).
//! Cargo itself refuses cycles between crates.
//!
//! The module graph: the top-level modules of every crate together form no cycle (a module's
//! `use crate::X` names what it stands on, and nothing it stands on may stand on it; an engine
//! crate's root brings the modules of the crates below it in under their own names, so `crate::X`
//! may name a module of another crate), and the library never reaches into the binary's `app` (GUI)
//! or `cli`.
//!
//! The graph is read from the source text: `crate::X` (and, in the binary, `difix3d::X`; anywhere,
//! `difix3d_<crate>::X`) names top-level module X, and a `super::` chain that climbs out of its
//! top-level module names the module it lands in. Comments and string literals are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The binary's own top-level modules (declared in `main.rs`).
const BINARY_MODULES: [&str; 2] = ["app", "cli"];

/// Crates that open windows, draw widgets or show dialogs: only the app crate may use them.
const GUI_CRATES: [&str; 6] = ["eframe", "egui", "egui-wgpu", "egui-winit", "winit", "rfd"];

/// An edge's evidence: the file and line of one use.
type Edges = BTreeMap<(String, String), String>;

#[test]
fn top_level_modules_form_no_cycle() {
    let edges = module_edges(super::repo());
    assert!(
        edges.keys().any(|(from, to)| from == "difix" && to == "nn"),
        "the scan found no use of nn by difix: it no longer reads the sources right"
    );
    let cycles = cycles(&edges);
    assert!(
        cycles.is_empty(),
        "top-level modules of src/ that use each other (each needs the other to be understood; move \
         the shared piece into a home of its own):\n{}",
        cycles
            .iter()
            .map(|cycle| describe(cycle, &edges))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_library_never_uses_the_binary() {
    let edges = module_edges(super::repo());
    let library = library_modules(super::repo());
    let wrong: Vec<String> = edges
        .iter()
        .filter(|((from, to), _)| library.contains_key(from) && BINARY_MODULES.contains(&to.as_str()))
        .map(|((from, to), at)| format!("{from} -> {to} ({at})"))
        .collect();
    assert!(
        wrong.is_empty(),
        "library modules using the binary's GUI/CLI: {wrong:?}"
    );
}

/// A module uses only its own crate's modules and those of the crates its crate depends on, so the
/// crate graph is the architecture: no module reaches a crate its crate does not name.
#[test]
fn modules_use_only_their_crate_and_the_crates_below_it() {
    let repo = super::repo();
    let owner = library_modules(repo);
    let lock = lock_graph(repo);
    let edges = module_edges(repo);
    assert!(
        owner.len() > 10 && owner.values().collect::<BTreeSet<_>>().len() >= 2,
        "{owner:?}"
    );
    let wrong: Vec<String> = edges
        .iter()
        .filter_map(|((from, to), at)| {
            let (from_crate, to_crate) = (owner.get(from)?, owner.get(to)?);
            let below = lock.get(from_crate).is_some_and(|deps| deps.contains(to_crate));
            (from_crate != to_crate && !below).then(|| format!("{from} ({from_crate}) -> {to} ({to_crate}) at {at}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "modules using a crate their crate does not depend on: {wrong:?}"
    );
}

/// The engine crates know no GUI: neither they nor anything they pull in is a windowing or widget
/// crate, and none of them depends on the app crate.
#[test]
fn engine_crates_know_no_gui() {
    let repo = super::repo();
    let lock = lock_graph(repo);
    let engine = engine_crates(repo);
    assert!(engine.len() >= 2, "no engine crates found under crates/: {engine:?}");
    assert!(
        lock.get("difix3d").is_some_and(|deps| deps.contains("eframe")),
        "Cargo.lock no longer shows the app's eframe: the check no longer reads it right"
    );
    for name in &engine {
        let reached = reachable(&lock, name);
        let gui: Vec<&str> = GUI_CRATES
            .iter()
            .copied()
            .filter(|gui| reached.contains(*gui))
            .collect();
        assert!(
            gui.is_empty(),
            "engine crate {name} depends (maybe indirectly) on GUI crates {gui:?}"
        );
        assert!(
            !reached.contains("difix3d"),
            "engine crate {name} depends on the app crate"
        );
    }
}

/// The engine crates: the packages under `crates/`, by name.
fn engine_crates(repo: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo.join("crates"))
        .expect("crates/")
        .map(|e| e.expect("readable entry").path().join("Cargo.toml"))
        .filter(|manifest| manifest.is_file())
        .map(|manifest| package_name(&manifest))
        .collect();
    names.sort();
    names
}

/// The `name` of a manifest's `[package]`.
fn package_name(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest).expect("a readable Cargo.toml");
    text.lines()
        .skip_while(|line| line.trim() != "[package]")
        .find_map(|line| {
            line.trim()
                .strip_prefix("name = ")
                .map(|name| name.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("{}: no package name", manifest.display()))
}

/// Each package of `Cargo.lock` with the names of its direct dependencies (every feature's: the
/// lock file records them all, so this errs on the side of finding too many).
fn lock_graph(repo: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(repo.join("Cargo.lock")).expect("Cargo.lock");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for block in text.split("[[package]]").skip(1) {
        let name = block
            .lines()
            .find_map(|line| line.strip_prefix("name = "))
            .expect("a package name")
            .trim_matches('"')
            .to_string();
        let deps = graph.entry(name).or_default();
        if let Some(list) = block.split("dependencies = [").nth(1) {
            let list = list.split(']').next().unwrap_or_default();
            // Entries are "name" or "name version" (when several versions are locked).
            deps.extend(list.split(',').filter_map(|entry| {
                let entry = entry.trim().trim_matches('"');
                entry.split_whitespace().next().map(str::to_string)
            }));
        }
    }
    graph
}

/// Every package `from` depends on, directly or not.
fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(name) = stack.pop() {
        for dep in graph.get(&name).into_iter().flatten() {
            if seen.insert(dep.clone()) {
                stack.push(dep.clone());
            }
        }
    }
    seen
}

/// The source folders of the workspace: the app crate's `src/` and each engine crate's, with the
/// crate's package name.
fn crate_sources(repo: &Path) -> Vec<(String, PathBuf)> {
    let mut sources = vec![("difix3d".to_string(), repo.join("src"))];
    for name in engine_crates(repo) {
        sources.push((name.clone(), repo.join("crates").join(&name).join("src")));
    }
    sources
}

/// A cycle found in a small made-up graph, and none in a layered one: the check itself works.
#[test]
fn the_cycle_check_finds_cycles() {
    let graph = |pairs: &[(&str, &str)]| -> Edges {
        pairs
            .iter()
            .map(|(a, b)| ((a.to_string(), b.to_string()), String::new()))
            .collect()
    };
    assert!(cycles(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])).is_empty());
    let edges = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("a", "c")]);
    let found = cycles(&edges);
    assert_eq!(found, vec![vec!["a".to_string(), "b".into(), "c".into()]]);
    assert_eq!(
        describe(&found[0], &edges),
        "{a, b, c}, for example:\n  a -> c ()\n  c -> a ()"
    );
    // `super::super` out of a nested file lands in another top-level module.
    let uses = uses_in(
        "use super::super::render::GpuContext;\nmod tests { use super::x; }",
        &["train", "step"],
    );
    assert_eq!(uses, vec![("render".to_string(), 1)]);
    // Groups name each of their paths; comments and strings name nothing.
    let uses = uses_in(
        "use crate::{data::Camera, scene};\n// crate::app\nlet s = \"crate::cli\";",
        &["view"],
    );
    assert_eq!(uses, vec![("data".to_string(), 1), ("scene".to_string(), 1)]);
}

/// The top-level modules the library crates declare (each engine crate's `lib.rs`), with the
/// package that owns each.
fn library_modules(repo: &Path) -> BTreeMap<String, String> {
    let mut owner = BTreeMap::new();
    for (name, src) in crate_sources(repo) {
        let lib = std::fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
        let tokens = tokens(&lib);
        for w in tokens.windows(2).filter(|w| w[0].0 == "mod") {
            let previous = owner.insert(w[1].0.clone(), name.clone());
            assert!(previous.is_none(), "module {} is declared by two crates", w[1].0);
        }
    }
    owner
}

/// Every (from, to) pair of distinct top-level modules where `from` uses `to`, with one place it
/// does, over every crate of the workspace.
fn module_edges(repo: &Path) -> Edges {
    let library = library_modules(repo);
    let mut edges = Edges::new();
    for (_, src) in crate_sources(repo) {
        for file in rust_files(&src) {
            let relative = file.strip_prefix(&src).expect("under src");
            let mut path: Vec<String> = relative
                .iter()
                .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            if path.last().is_some_and(|last| last == "mod") {
                path.pop();
            }
            // lib.rs and main.rs are the roots: what they declare or bring in is not a use.
            if path.len() == 1 && (path[0] == "lib" || path[0] == "main") {
                continue;
            }
            let from = path[0].clone();
            let text = std::fs::read_to_string(&file).expect("readable source");
            let binary = BINARY_MODULES.contains(&from.as_str());
            let shown = file.strip_prefix(repo).expect("under the repository");
            for (to, line) in uses_in(&text, &path.iter().map(String::as_str).collect::<Vec<_>>()) {
                // In the binary, `crate::X` is the binary's own module; the library is `difix3d::X`.
                let known = library.contains_key(&to) || BINARY_MODULES.contains(&to.as_str());
                if to != from && known && (binary || library.contains_key(&from)) {
                    edges
                        .entry((from.clone(), to))
                        .or_insert_with(|| format!("{}:{line}", shown.display()));
                }
            }
        }
    }
    edges
}

/// The top-level modules a file at module path `path` names, with the line of each use.
fn uses_in(text: &str, path: &[&str]) -> Vec<(String, usize)> {
    let tokens = tokens(text);
    let mut found = Vec::new();
    // Inline modules (`mod tests { ... }`) open at a brace depth; `super` inside them climbs out of
    // them first.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let (token, line) = (&tokens[i].0, tokens[i].1);
        match token.as_str() {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last() == Some(&depth) {
                    inline.pop();
                }
            }
            "mod" if tokens.get(i + 2).is_some_and(|t| t.0 == "{") => inline.push(depth),
            name if (name == "crate" || name == "difix3d" || name.starts_with("difix3d_"))
                && tokens.get(i + 1).is_some_and(|t| t.0 == "::") =>
            {
                found.extend(heads(&tokens, i + 2).into_iter().map(|name| (name, line)));
            }
            "super" => {
                // Climb: the file's module path plus its open inline modules, one level per `super`.
                let mut level = path.len() + inline.len();
                let mut j = i;
                while tokens.get(j).is_some_and(|t| t.0 == "super") && tokens.get(j + 1).is_some_and(|t| t.0 == "::") {
                    level = level.saturating_sub(1);
                    j += 2;
                }
                // Landing at the crate root, the next name is a top-level module.
                if level == 0 {
                    found.extend(heads(&tokens, j).into_iter().map(|name| (name, line)));
                }
                i = j.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The first name of the path at `at`, or of each path in a `{a::b, c}` group there.
fn heads(tokens: &[(String, usize)], at: usize) -> Vec<String> {
    match tokens.get(at).map(|t| t.0.as_str()) {
        None => Vec::new(),
        Some("{") => {
            let mut names = Vec::new();
            let mut depth = 0;
            for (k, (token, _)) in tokens.iter().enumerate().skip(at) {
                match token.as_str() {
                    "{" => depth += 1,
                    "}" => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ if depth == 1 && (tokens[k - 1].0 == "{" || tokens[k - 1].0 == ",") => names.push(token.clone()),
                    _ => {}
                }
            }
            names
        }
        Some(name) => vec![name.to_string()],
    }
}

/// Identifiers, `::`, braces and other punctuation with their line numbers; comments, strings and
/// character literals left out.
fn tokens(text: &str) -> Vec<(String, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut nesting = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    nesting += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    nesting -= 1;
                    i += 2;
                    if nesting == 0 {
                        break;
                    }
                } else {
                    line += usize::from(chars[i] == '\n');
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && raw_string_end(&chars, i).is_some() {
            let end = raw_string_end(&chars, i).expect("checked");
            line += chars[i..end].iter().filter(|&&c| c == '\n').count();
            i = end;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                line += usize::from(chars[i] == '\n');
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\'') or a lifetime ('a): skip the literal only.
            match (next, chars.get(i + 2)) {
                (Some('\\'), _) => {
                    i += 3;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                }
                (Some(_), Some('\'')) => i += 3,
                _ => i += 1,
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((chars[start..i].iter().collect(), line));
        } else if c == ':' && next == Some(':') {
            out.push(("::".into(), line));
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push((c.to_string(), line));
            }
            i += 1;
        }
    }
    out
}

/// Where a raw string literal (`r"..."`, `r#"..."#`) starting at `start` ends, or `None` if `r`
/// starts no raw string there (an identifier such as `r#type`).
fn raw_string_end(chars: &[char], start: usize) -> Option<usize> {
    if start > 0 && (chars[start - 1].is_alphanumeric() || chars[start - 1] == '_') {
        return None;
    }
    let hashes = chars[start + 1..].iter().take_while(|&&c| c == '#').count();
    let open = start + 1 + hashes;
    if chars.get(open) != Some(&'"') {
        return None;
    }
    let close: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
    let rest: String = chars[open + 1..].iter().collect();
    let offset = rest.find(&close)?;
    Some(open + 1 + rest[..offset].chars().count() + close.chars().count())
}

/// `.rs` files under `dir`, in name order.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("readable folder")
        .map(|e| e.expect("readable entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The strongly connected components with more than one module (Tarjan's algorithm), each sorted.
fn cycles(edges: &Edges) -> Vec<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().push(to);
        next.entry(to).or_default();
    }
    struct Search<'a> {
        next: &'a BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Search<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            let next = self.next;
            for &w in &next[v] {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut search = Search {
        next: &next,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for &v in next.keys() {
        if !search.index.contains_key(v) {
            search.visit(v);
        }
    }
    search.found
}

/// The modules of one strongly connected component and a shortest cycle through its first module,
/// each use with where it happens.
fn describe(component: &[String], edges: &Edges) -> String {
    let start = &component[0];
    // Breadth-first from `start` inside the component until an edge leads back to it.
    let mut came_from: BTreeMap<&String, &String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut last = None;
    while let Some(v) = queue.pop_front() {
        if edges.contains_key(&(v.clone(), start.clone())) {
            last = Some(v);
            break;
        }
        for ((from, to), _) in edges.iter().filter(|((from, _), _)| from == v) {
            if component.contains(to) && to != start && !came_from.contains_key(to) {
                came_from.insert(to, from);
                queue.push_back(to);
            }
        }
    }
    let mut path = vec![start.clone()];
    let mut v = last.expect("a strongly connected component has a cycle through each module");
    while v != start {
        path.push(v.clone());
        v = came_from[v];
    }
    path[1..].reverse();
    path.push(start.clone());
    let steps: Vec<String> = path
        .windows(2)
        .map(|w| format!("  {} -> {} ({})", w[0], w[1], edges[&(w[0].clone(), w[1].clone())]))
        .collect();
    format!("{{{}}}, for example:\n{}", component.join(", "), steps.join("\n"))
}
