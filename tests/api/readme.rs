//! README.md's Rust client example is `examples/verify_api_key.rs`, which
//! `cargo test` compiles and CI runs against the walkthrough's server, so
//! the README shows code that builds and works.

/// The body of the README's only ```rust block.
fn readme_rust_block() -> String {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("```rust\n")
        .expect("README.md has a ```rust block")
        + "```rust\n".len();
    let length = readme[start..]
        .find("```\n")
        .expect("the ```rust block is closed");
    assert!(
        !readme[start + length..].contains("```rust\n"),
        "README.md has more than one ```rust block; check each against an example"
    );
    readme[start..start + length].to_owned()
}

#[test]
fn readme_client_example_is_examples_verify_api_key_rs() {
    let example = include_str!("../../examples/verify_api_key.rs");
    assert_eq!(
        readme_rust_block(),
        example,
        "README.md's ```rust block must be examples/verify_api_key.rs, verbatim"
    );
}

/// The paths CONTRIBUTING.md's "Layout" block names (the first word of
/// each line that starts in the first column).
fn readme_layout_paths() -> Vec<String> {
    let contributing = include_str!("../../CONTRIBUTING.md");
    let section = &contributing[contributing
        .find("## Layout\n")
        .expect("CONTRIBUTING.md has a Layout section")..];
    let start = section
        .find("```text\n")
        .expect("the Layout section has a block")
        + 8;
    let block = &section[start..start + section[start..].find("```\n").expect("closed")];
    block
        .lines()
        .filter(|line| !line.starts_with(' '))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn readme_layout_names_paths_that_exist_and_every_top_level_source_file() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let listed = readme_layout_paths();
    for path in &listed {
        assert!(
            root.join(path).exists(),
            "CONTRIBUTING.md's Layout names {path}, which does not exist"
        );
    }
    for entry in std::fs::read_dir(root.join("src")).expect("src/ is readable") {
        let name = entry.expect("a directory entry").file_name();
        let name = name.to_string_lossy();
        let is_dir = root.join("src").join(&*name).is_dir();
        let path = if is_dir {
            format!("src/{name}/")
        } else {
            format!("src/{name}")
        };
        assert!(
            listed.contains(&path),
            "CONTRIBUTING.md's Layout does not mention {path}"
        );
    }
}
