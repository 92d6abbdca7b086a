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
