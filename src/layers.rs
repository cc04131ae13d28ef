//! Tests only: the crate's top-level modules form layers, not a web. Each
//! module may use the modules below it and none above, so that a module can be
//! read, tested and changed knowing only what it builds on (the generated wire
//! code knows no node; the node knows no gateway; the gateway knows no
//! launcher). The check reads the sources: every `crate::name` path outside
//! comments and test code is an edge, and the graph of edges must have no
//! cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules `lib.rs` declares.
fn modules(src: &Path) -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs is readable");
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = ["pub mod ", "pub(crate) mod ", "mod "]
                .iter()
                .find_map(|p| l.strip_prefix(p))?;
            rest.strip_suffix(';').map(str::to_string)
        })
        .collect()
}

/// The files of module `name`: `name.rs` and everything under `name/`, except
/// test-only files.
fn files(src: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let file = src.join(format!("{name}.rs"));
    if file.exists() {
        found.push(file);
    }
    let mut dirs = vec![src.join(name)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if matches!(stem, "fuzz" | "tests") {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found
}

/// The top-level modules the code (not comments, not the `mod tests`
/// module) of `text` names by `crate::` paths, with the line of each. A
/// `crate::{..}` group may span lines. (Paths that climb with `super::` out
/// of a top-level module, and `//` inside string literals, are not read.)
fn uses(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut code = String::new();
    for (i, line) in lines.iter().enumerate() {
        if *line == "#[cfg(test)]" && lines.get(i + 1).is_some_and(|n| n.starts_with("mod tests")) {
            break;
        }
        code.push_str(line.split("//").next().unwrap_or(""));
        code.push('\n');
    }
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let ident = |from: &str| -> String {
        from.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut named = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            named.push((ident(rest), line_of(at)));
            continue;
        };
        // `crate::{a, b::{c, d}}`: the first segment of each item at the
        // group's own depth.
        let mut depth = 0;
        let mut item_starts = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => item_starts = true,
                c if item_starts && (c.is_alphanumeric() || c == '_') => {
                    item_starts = false;
                    let start = at + "crate::{".len() + i;
                    named.push((ident(&group[i..]), line_of(start)));
                }
                _ => {}
            }
        }
    }
    named
}

/// For each module, the modules it uses, with one place each is used from.
fn graph(src: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let modules = modules(src);
    let mut graph = BTreeMap::new();
    for name in &modules {
        let mut edges = BTreeMap::new();
        for file in files(src, name) {
            let text = std::fs::read_to_string(&file).expect("a source file is readable");
            for (used, line) in uses(&text) {
                if used != *name && modules.contains(&used) {
                    edges.entry(used).or_insert_with(|| {
                        format!(
                            "{}:{line}",
                            file.strip_prefix(src).unwrap_or(&file).display()
                        )
                    });
                }
            }
        }
        graph.insert(name.clone(), edges);
    }
    graph
}

/// A cycle in `graph`, as the modules along it, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        at: &str,
        graph: &BTreeMap<String, BTreeMap<String, String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(at) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = path.iter().position(|m| m == at).unwrap_or(0);
                let mut found = path[from..].to_vec();
                found.push(at.to_string());
                return Some(found);
            }
            None => {}
        }
        marks.insert(at.to_string(), Mark::Open);
        path.push(at.to_string());
        for next in graph.get(at).into_iter().flat_map(BTreeMap::keys) {
            if let Some(found) = visit(next, graph, marks, path) {
                return Some(found);
            }
        }
        path.pop();
        marks.insert(at.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut marks, &mut Vec::new()))
}

#[test]
fn paths_are_read_from_code_not_comments() {
    let text = "use crate::ring::Member;\n\
                // crate::gateway is mentioned\n\
                use crate::{node::{Node, View}, store};\n\
                let x = crate::clock::now_micros(); // crate::cli\n\
                use crate::{\n    metrics::Count,\n    routing,\n};\n\
                #[cfg(test)]\n\
                fn helper() {}\n\
                use crate::transport;\n\
                #[cfg(test)]\n\
                mod tests {\n\
                use crate::registry;\n";
    let named = uses(text);
    let names: Vec<&str> = named.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        names,
        [
            "ring",
            "node",
            "store",
            "clock",
            "metrics",
            "routing",
            "transport"
        ]
    );
    assert_eq!(named[4].1, 6, "a group's item is placed on its own line");
}

#[test]
fn a_cycle_is_found_and_a_layering_is_not() {
    let edges = |list: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (from, to) in list {
            g.entry(from.to_string())
                .or_default()
                .insert(to.to_string(), String::new());
            g.entry(to.to_string()).or_default();
        }
        g
    };
    assert_eq!(cycle(&edges(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    assert_eq!(
        cycle(&edges(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn the_top_level_modules_have_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    assert!(graph.contains_key("node") && graph["node"].contains_key("ring"));
    if let Some(found) = cycle(&graph) {
        let places: Vec<String> = found
            .windows(2)
            .map(|w| format!("{} -> {} ({})", w[0], w[1], graph[&w[0]][&w[1]]))
            .collect();
        panic!(
            "the modules use each other in a cycle:\n{}",
            places.join("\n")
        );
    }
}
