//! The daemon's modules form layers (docs/architecture.md): no module may
//! depend, directly or through others, on a module that depends on it. A
//! test here reads `redirector/src` and fails on any import cycle, between
//! files or between top-level modules.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Module path (`session::relay`) → source without comments and tests.
    fn modules(root: &Path) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                if p.extension().is_none_or(|x| x != "rs") {
                    continue;
                }
                let Ok(rel) = p.strip_prefix(root) else {
                    continue;
                };
                let rel = rel.with_extension("");
                let mut parts: Vec<String> = rel
                    .iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect();
                if parts.last().is_some_and(|l| l == "mod") {
                    parts.pop();
                }
                let name = parts.join("::");
                if name == "lib" || name == "main" {
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let code = text
                    .split("#[cfg(test)]\nmod tests")
                    .next()
                    .unwrap_or_default()
                    .lines()
                    .map(|l| l.split("//").next().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n");
                out.insert(name, code);
            }
        }
        out
    }

    /// Paths after `prefix` (`crate::`, `super::`), with `{a, b}` groups
    /// expanded one level.
    fn paths_after(code: &str, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        for (i, _) in code.match_indices(prefix) {
            if i > 0 && code[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &code[i + prefix.len()..];
            let path: String = rest.chars().take_while(|c| ident(*c)).collect();
            let path = path.trim_end_matches(':').to_string();
            let after = &rest[path.len()..];
            if after.starts_with("::{") || (path.is_empty() && after.starts_with('{')) {
                let open = after.find('{').unwrap_or(0);
                let close = after.find('}').unwrap_or(after.len());
                for item in after[open + 1..close].split(',') {
                    let item: String = item.trim().chars().take_while(|c| ident(*c)).collect();
                    if !item.is_empty() {
                        out.push(if path.is_empty() {
                            item
                        } else {
                            format!("{path}::{item}")
                        });
                    }
                }
            }
            if !path.is_empty() {
                out.push(path);
            }
        }
        out
    }

    fn resolve(mods: &BTreeMap<String, String>, path: &str) -> Option<String> {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|i| parts[..i].join("::"))
            .find(|m| mods.contains_key(m))
    }

    fn edges(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (m, code) in mods {
            let parent = m.rsplit_once("::").map(|(p, _)| p.to_string());
            let mut targets = paths_after(code, "crate::");
            for p in paths_after(code, "super::") {
                targets.push(match &parent {
                    Some(parent) => format!("{parent}::{p}"),
                    None => p,
                });
            }
            let set = g.entry(m.clone()).or_default();
            for t in targets {
                if let Some(r) = resolve(mods, &t) {
                    // A module's own descendants and ancestors are not edges.
                    if r != *m
                        && !m.starts_with(&format!("{r}::"))
                        && !r.starts_with(&format!("{m}::"))
                    {
                        set.insert(r);
                    }
                }
            }
        }
        g
    }

    /// A cycle through `start`, if any.
    fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
        fn visit(
            g: &BTreeMap<String, BTreeSet<String>>,
            v: &str,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(i) = path.iter().position(|p| p == v) {
                let mut c = path[i..].to_vec();
                c.push(v.to_string());
                return Some(c);
            }
            if done.contains(v) {
                return None;
            }
            path.push(v.to_string());
            for w in g.get(v).into_iter().flatten() {
                if let Some(c) = visit(g, w, path, done) {
                    return Some(c);
                }
            }
            path.pop();
            done.insert(v.to_string());
            None
        }
        let mut done = BTreeSet::new();
        g.keys()
            .find_map(|v| visit(g, v, &mut Vec::new(), &mut done))
    }

    #[test]
    fn no_import_cycles_in_the_daemon() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../redirector/src");
        let mods = modules(&root);
        assert!(
            mods.len() > 30,
            "found only {} modules under {}",
            mods.len(),
            root.display()
        );
        let files = edges(&mods);
        assert!(
            files
                .get("session::driver")
                .is_some_and(|e| e.contains("datapath")),
            "the scanner must see the driver using the data path: {files:?}"
        );
        if let Some(c) = cycle(&files) {
            panic!("import cycle between files: {}", c.join(" -> "));
        }
        let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (m, targets) in &files {
            let a = m.split("::").next().unwrap_or_default().to_string();
            let entry = top.entry(a.clone()).or_default();
            for t in targets {
                let b = t.split("::").next().unwrap_or_default().to_string();
                if a != b {
                    entry.insert(b);
                }
            }
        }
        if let Some(c) = cycle(&top) {
            panic!("import cycle between top-level modules: {}", c.join(" -> "));
        }
    }
}
