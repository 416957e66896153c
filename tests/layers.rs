//! The module graph: every module imports only from its own layer or the layers below it,
//! no two modules import each other (directly or round a longer loop), and inside the
//! larger module trees the same holds between their parts.
//!
//! Read from the source (`crate::…` and `super::…` paths outside comments and test
//! modules), so the check needs no build of its own. `cargo test --test layers --
//! --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module not listed here fails the test: a new module must
/// be given its place.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundations",
        &[
            "config",
            "format",
            "json_object",
            "reply",
            "rewrite",
            "routes",
        ],
    ),
    ("domain", &["gepa"]),
    ("persistence", &["store"]),
    (
        "edges",
        &[
            "admin", "auth", "capture", "errors", "logging", "metrics", "proposer", "proxy",
            "request", "respond", "upstream",
        ],
    ),
    ("application", &["gateway", "server"]),
];

/// Module trees whose parts form a graph of their own, checked for cycles too. A part
/// imports a sibling from the sibling itself, not through the tree root's re-exports
/// (which would hide the real edge).
const TREES: &[&str] = &["admin", "config", "gepa", "store"];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn layer_of(top: &str) -> usize {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&top))
        .unwrap_or_else(|| panic!("module `{top}` has no layer: add it to LAYERS"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/gepa/session/mod.rs` is `["gepa", "session"]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and without its `#[cfg(test)] mod tests` (tests
/// may use what they like, as may the test modules kept in files of their own).
fn code(text: &str) -> String {
    let body = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let text: Vec<char> = body
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
        .chars()
        .collect();
    // Join `use` groups that span lines: drop the blanks after `{` or `,` and before `}`.
    let mut out = String::with_capacity(text.len());
    for (i, &c) in text.iter().enumerate() {
        let after_open = out.ends_with('{') || out.ends_with(',');
        let before_close = text[i..].iter().find(|c| !c.is_whitespace()) == Some(&'}');
        if c.is_whitespace() && (after_open || before_close) {
            continue;
        }
        out.push(c);
    }
    out
}

/// `a::{b, c::d}` into `a::b` and `a::c::d` (one level of braces is all the code uses).
fn expand(rest: &str) -> Vec<String> {
    match rest.find('{') {
        None => vec![rest.trim_end_matches(',').to_string()],
        Some(i) => rest[i + 1..]
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| format!("{}{s}", &rest[..i]))
            .collect(),
    }
}

/// The absolute module paths a file names through `crate::` and `super::`.
fn imports(module: &[String], is_mod_file: bool, text: &str) -> Vec<Vec<String>> {
    // `super` of `a/b.rs` (module a::b) and of `a/b/mod.rs` (also a::b) is `a`.
    let _ = is_mod_file;
    let parent = &module[..module.len().saturating_sub(1)];
    let code = code(text);
    let words = code
        .split(|c: char| !(c.is_alphanumeric() || "_:{,".contains(c)))
        .filter(|w| !w.is_empty());
    let mut out = Vec::new();
    for w in words {
        let (mut base, mut rest) = if let Some(rest) = w.strip_prefix("crate::") {
            (Vec::new(), rest)
        } else if let Some(rest) = w.strip_prefix("super::") {
            (parent.to_vec(), rest)
        } else {
            continue;
        };
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        for item in expand(rest) {
            let mut full = base.clone();
            full.extend(
                item.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
            out.push(full);
        }
    }
    out
}

struct ModuleGraph {
    /// Between top-level modules.
    top: Graph,
    /// Between the parts of each tree, keyed by the tree.
    trees: BTreeMap<String, Graph>,
    /// Imports of a sibling through the tree root's re-exports.
    through_root: Vec<String>,
}

fn module_graph() -> ModuleGraph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: Vec<Vec<String>> = files.iter().map(|f| module_path(&src, f)).collect();
    let parts_of = |tree: &str| -> BTreeSet<String> {
        modules
            .iter()
            .filter(|m| m.len() >= 2 && m[0] == tree)
            .map(|m| m[1].clone())
            .collect()
    };
    let mut g = ModuleGraph {
        top: Graph::new(),
        trees: BTreeMap::new(),
        through_root: Vec::new(),
    };
    for (file, module) in files.iter().zip(&modules) {
        // The crate root wires, and test modules (`tests.rs`) may use what they like.
        let is_test_module = module.last().is_some_and(|m| m == "tests");
        if module.is_empty() || module == &["lib"] || module == &["main"] || is_test_module {
            continue;
        }
        let from_top = module[0].clone();
        g.top.entry(from_top.clone()).or_default();
        let is_mod_file = file.file_name().is_some_and(|n| n == "mod.rs");
        let text = std::fs::read_to_string(file).unwrap();
        for to in imports(module, is_mod_file, &text) {
            let Some(to_top) = to.first() else { continue };
            if *to_top != from_top {
                g.top
                    .entry(from_top.clone())
                    .or_default()
                    .insert(to_top.clone());
                continue;
            }
            if !TREES.contains(&from_top.as_str()) || module.len() < 2 {
                continue;
            }
            let parts = parts_of(&from_top);
            let Some(to_part) = to.get(1) else { continue };
            if !parts.contains(to_part) {
                g.through_root
                    .push(format!("{} uses {}", module.join("::"), to.join("::")));
                continue;
            }
            if *to_part != module[1] {
                let tree = g.trees.entry(from_top.clone()).or_default();
                tree.entry(module[1].clone())
                    .or_default()
                    .insert(to_part.clone());
            }
        }
    }
    g
}

fn print(name: &str, graph: &Graph) {
    println!("{name}:");
    for (from, tos) in graph {
        let tos: Vec<&str> = tos.iter().map(String::as_str).collect();
        println!("  {from} -> {}", tos.join(", "));
    }
}

/// The first loop found by a depth-first search, as a path.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &Graph,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if !done.insert(n.to_string()) {
            return None;
        }
        stack.push(n.to_string());
        for next in graph.get(n).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let g = module_graph();
    print("modules", &g.top);
    let upward: Vec<String> = g
        .top
        .iter()
        .flat_map(|(from, tos)| tos.iter().map(move |to| (from, to)))
        .filter(|(from, to)| layer_of(to) > layer_of(from))
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect();
    assert!(
        upward.is_empty(),
        "imports from a higher layer: {upward:#?}"
    );
}

#[test]
fn the_module_graph_has_no_cycles() {
    let g = module_graph();
    if let Some(cycle) = find_cycle(&g.top) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
    for (tree, graph) in &g.trees {
        print(tree, graph);
        if let Some(cycle) = find_cycle(graph) {
            panic!("import cycle in {tree}: {}", cycle.join(" -> "));
        }
    }
    assert!(
        g.through_root.is_empty(),
        "parts that import a sibling through the tree root (import it from the sibling \
         itself): {:#?}",
        g.through_root
    );
}
