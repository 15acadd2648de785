//! The README and `docs/` stay true to the tree: every link and anchor
//! resolves, the README's contents list its sections, every TOML example
//! parses (the README's minimal configuration loads as Ordo's settings), and
//! the alert table names exactly the shipped alert rules. (The key and
//! metric tables are checked beside the code: `src/config/tests.rs`,
//! `src/telemetry/metrics.rs`.)

use std::path::{Path, PathBuf};

/// The user documentation: the README and every page under `docs/`.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir("docs")
        .expect("docs/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 4, "{docs:?}");
    pages.extend(docs);
    pages
}

/// The text of `page` outside fenced code blocks, line by line.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The fenced blocks of `text` in `language`.
fn blocks(text: &str, language: &str) -> Vec<String> {
    let mut out = Vec::new();
    // Inside a fence: Some(Some(text)) for a block in `language`, Some(None)
    // for another.
    let mut open: Option<Option<String>> = None;
    for line in text.lines() {
        if let Some(tag) = line.strip_prefix("```") {
            match open.take() {
                Some(Some(block)) => out.push(block),
                Some(None) => {}
                None => open = Some((tag.trim() == language).then(String::new)),
            }
            continue;
        }
        if let Some(Some(block)) = open.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    out
}

/// GitHub's anchor of a heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    prose(&text)
        .into_iter()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

/// `[text](target)` targets of a line.
fn links(line: &str) -> Vec<&str> {
    line.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &line[at + 2..];
            rest.find(')').map(|end| &rest[..end])
        })
        .collect()
}

#[test]
fn every_link_and_anchor_resolves() {
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let dir = page.parent().unwrap_or(Path::new("."));
        for line in prose(&text) {
            for target in links(line) {
                if target.starts_with("http://") || target.starts_with("https://") {
                    continue;
                }
                let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
                let file = if file.is_empty() {
                    page.clone()
                } else {
                    dir.join(file)
                };
                assert!(
                    file.exists(),
                    "{}: the link {target} names {}, which does not exist",
                    page.display(),
                    file.display()
                );
                if !anchor.is_empty() {
                    assert!(
                        anchors(&file).iter().any(|a| a == anchor),
                        "{}: the link {target}: {} has no heading #{anchor}",
                        page.display(),
                        file.display()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 40, "only {checked} links found");
}

#[test]
fn the_readme_lists_each_of_its_sections_and_links_each_docs_page() {
    let text = std::fs::read_to_string("README.md").unwrap();
    let lines = prose(&text);
    let contents: Vec<&str> = lines
        .iter()
        .skip_while(|l| **l != "## Contents")
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .flat_map(|l| links(l))
        .collect();
    let sections: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("## "))
        .filter(|h| *h != "Contents")
        .map(|h| format!("#{}", slug(h)))
        .collect();
    assert_eq!(contents, sections, "README's contents against its sections");
    for page in pages().iter().skip(1) {
        let target = page.display().to_string();
        assert!(
            text.contains(&format!("]({target})")),
            "README does not link {target}"
        );
    }
}

#[test]
fn every_toml_example_parses_and_the_minimal_configuration_loads() {
    let mut parsed = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for block in blocks(&text, "toml") {
            config::Config::builder()
                .add_source(config::File::from_str(&block, config::FileFormat::Toml))
                .build()
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: a TOML example does not parse: {e}\n{block}",
                        page.display()
                    )
                });
            parsed += 1;
        }
    }
    assert!(parsed >= 8, "{parsed} TOML examples");
    // The README's first configuration is a whole one.
    let readme = std::fs::read_to_string("README.md").unwrap();
    let minimal = blocks(&readme, "toml")
        .into_iter()
        .next()
        .expect("a TOML block");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ordo.toml");
    // Its password file, where the configuration says, is here.
    let password = dir.path().join("postgres-password");
    std::fs::write(&password, "secret\n").unwrap();
    let text = minimal.replace(
        "/var/run/secrets/ordo/postgres-password",
        password.to_str().unwrap(),
    );
    assert_ne!(
        text, minimal,
        "the minimal configuration reads a password file"
    );
    std::fs::write(&path, &text).unwrap();
    let settings = ordo::config::Settings::load_with_env(Some(&path), &[])
        .unwrap_or_else(|e| panic!("README's minimal configuration: {e}\n{minimal}"));
    assert_eq!(settings.source.topics, vec!["accounts".to_string()]);
}

#[test]
fn the_alert_table_names_exactly_the_shipped_rules() {
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string("deploy/prometheus/alerts.yml").unwrap())
            .unwrap();
    let mut shipped: Vec<String> = rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect();
    shipped.sort();
    let page = std::fs::read_to_string("docs/metrics.md").unwrap();
    let mut documented: Vec<String> = page
        .lines()
        .filter_map(|l| l.strip_prefix("| `Ordo"))
        .filter_map(|l| l.split('`').next())
        .map(|name| format!("Ordo{name}"))
        .collect();
    documented.sort();
    assert!(shipped.len() >= 5, "{shipped:?}");
    assert_eq!(
        documented, shipped,
        "docs/metrics.md's alert table against deploy/prometheus/alerts.yml"
    );
}
