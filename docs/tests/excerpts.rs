//! Every Rust block of the guide is compiled or is a verbatim excerpt of a compiled file.
//!
//! The pages of `docs/` are the documentation of this crate's modules (`src/lib.rs`), so
//! rustdoc compiles each of their Rust blocks as a doctest, except those marked `ignore`. An
//! ignored block must be an excerpt: the line just above its fence reads
//! `<!-- excerpt: path -->`, with a path from the repository's root, and its lines occur, in
//! order and contiguous, in that file (trailing whitespace aside). A fence without a language
//! fails too, since rustdoc would take it for Rust.

use std::fmt::Write as _;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Rustdoc's own attributes: a block whose info string holds only these is Rust.
fn is_rustdoc_attribute(token: &str) -> bool {
    matches!(
        token,
        "rust" | "ignore" | "no_run" | "should_panic" | "compile_fail" | "test_harness"
    ) || token.starts_with("ignore-")
        || token.starts_with("edition")
        || token == "standalone_crate"
}

/// A fenced block of a page.
#[derive(Debug)]
struct Block {
    /// The line of the opening fence, from 1.
    line: usize,
    info: String,
    /// The lines between the fences, without the fence's indentation.
    body: Vec<String>,
    /// The excerpt marker on the line above the fence: its line and path.
    excerpt: Option<(usize, String)>,
}

impl Block {
    fn tokens(&self) -> Vec<&str> {
        self.info
            .split([',', ' ', '\t'])
            .filter(|token| !token.is_empty())
            .collect()
    }

    /// Whether rustdoc takes it for Rust: no language at all, `rust`, or only its attributes.
    fn is_rust(&self) -> bool {
        let tokens = self.tokens();
        tokens.contains(&"rust") || tokens.iter().all(|token| is_rustdoc_attribute(token))
    }

    fn is_ignored(&self) -> bool {
        self.tokens()
            .iter()
            .any(|token| *token == "ignore" || token.starts_with("ignore-"))
    }
}

/// What the check of one page found.
#[derive(Debug, Default)]
struct Report {
    /// Rust blocks that rustdoc compiles.
    doctests: usize,
    /// Blocks checked against the file they quote.
    excerpts: usize,
    /// One line per problem, naming the page and the line.
    problems: Vec<String>,
}

/// The excerpt marker a line holds, if any: `Ok(path)`, or `Err` for a malformed marker.
fn marker(line: &str) -> Option<Result<String, ()>> {
    let rest = line.trim().strip_prefix("<!--")?.trim_start();
    let rest = rest.strip_prefix("excerpt")?;
    let path = rest
        .strip_prefix(':')
        .and_then(|rest| rest.strip_suffix("-->"))
        .map(str::trim)
        .filter(|path| !path.is_empty());
    Some(path.map(str::to_owned).ok_or(()))
}

/// The fence a line opens or closes: its indentation, character, length and info string.
fn fence(line: &str) -> Option<(usize, char, usize, &str)> {
    let trimmed = line.trim_start();
    let indent = line.len() - trimmed.len();
    let ch = trimmed
        .chars()
        .next()
        .filter(|ch| *ch == '`' || *ch == '~')?;
    let len = trimmed.chars().take_while(|c| *c == ch).count();
    (len >= 3).then(|| (indent, ch, len, trimmed[len..].trim()))
}

fn is_list_item(line: &str) -> bool {
    let line = line.trim_start();
    let numbered = line.trim_start_matches(|c: char| c.is_ascii_digit());
    line.starts_with("- ")
        || line.starts_with("* ")
        || line.starts_with("+ ")
        || (numbered.len() < line.len()
            && (numbered.starts_with(". ") || numbered.starts_with(") ")))
}

/// Splits a page into its fenced blocks, reporting what rustdoc would compile unseen: an
/// indented code block, an unclosed fence or a marker above no fence.
fn blocks(page: &str, text: &str, problems: &mut Vec<String>) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut index = 0;
    // Whether the last paragraph outside fences belongs to a list item (indented continuations
    // of a list item are not code).
    let mut in_list = false;
    while index < lines.len() {
        let line = lines[index];
        let number = index + 1;
        let Some((indent, ch, len, info)) = fence(line) else {
            if let Some(Err(())) = marker(line) {
                problems.push(format!(
                    "{page}:{number}: malformed excerpt marker `{}`: write \
                     `<!-- excerpt: path/from/the/repository/root -->`",
                    line.trim()
                ));
            }
            let blank_before = index == 0 || lines[index - 1].trim().is_empty();
            let code_indent = line.starts_with("    ") || line.starts_with('\t');
            if blank_before && code_indent && !line.trim().is_empty() && !in_list {
                problems.push(format!(
                    "{page}:{number}: an indented code block, which rustdoc compiles as Rust: \
                     fence it with a language instead"
                ));
            }
            if is_list_item(line) {
                in_list = true;
            } else if !line.trim().is_empty() && !line.starts_with(' ') {
                in_list = false;
            }
            index += 1;
            continue;
        };
        let excerpt = match index.checked_sub(1).and_then(|above| marker(lines[above])) {
            Some(Ok(path)) => Some((index, path)),
            _ => None,
        };
        let mut body = Vec::new();
        let mut closed = false;
        index += 1;
        while index < lines.len() {
            let inner = lines[index];
            index += 1;
            if let Some((_, close_ch, close_len, rest)) = fence(inner)
                && close_ch == ch
                && close_len >= len
                && rest.is_empty()
            {
                closed = true;
                break;
            }
            let strip = inner.len() - inner.trim_start().len();
            body.push(inner[strip.min(indent)..].to_owned());
        }
        if !closed {
            problems.push(format!("{page}:{number}: this fence is never closed"));
        }
        blocks.push(Block {
            line: number,
            info: info.to_owned(),
            body,
            excerpt,
        });
    }
    for (index, line) in lines.iter().enumerate() {
        if let Some(Ok(path)) = marker(line) {
            let next = lines.get(index + 1).copied().unwrap_or_default();
            if fence(next).is_none() {
                problems.push(format!(
                    "{page}:{}: the excerpt marker of {path} is not on the line just above a \
                     fence",
                    index + 1
                ));
            }
        }
    }
    blocks
}

/// Checks that `excerpt` is a contiguous run of whole lines of `file`, ignoring trailing
/// whitespace; otherwise says where the closest run departs from it.
fn check_verbatim(excerpt: &[String], file: &str) -> Result<(), String> {
    let file: Vec<&str> = file.lines().map(str::trim_end).collect();
    let excerpt: Vec<&str> = excerpt.iter().map(|line| line.trim_end()).collect();
    if excerpt.iter().all(|line| line.is_empty()) {
        return Err("the excerpt is empty".to_owned());
    }
    // The start in the file that matches the most lines of the excerpt, from its first.
    let mut best: Option<(usize, usize)> = None;
    for start in 0..file.len() {
        let matched = excerpt
            .iter()
            .zip(&file[start..])
            .take_while(|(quoted, original)| quoted == original)
            .count();
        if matched == excerpt.len() {
            return Ok(());
        }
        if matched > 0 && best.is_none_or(|(_, most)| matched > most) {
            best = Some((start, matched));
        }
    }
    Err(match best {
        None => format!("its first line `{}` is not in the file", excerpt[0]),
        Some((start, matched)) => {
            let original = file.get(start + matched).copied();
            format!(
                "its line {} reads `{}` where the file's line {} reads {}",
                matched + 1,
                excerpt[matched],
                start + matched + 1,
                original.map_or_else(
                    || "nothing (the file ends)".to_owned(),
                    |o| format!("`{o}`")
                ),
            )
        }
    })
}

/// Whether an excerpt's path stays inside the repository.
fn is_relative_inside(path: &str) -> bool {
    Path::new(path)
        .components()
        .all(|component| matches!(component, Component::Normal(_) | Component::CurDir))
}

/// Checks one page; `read` gives the text of a file by its path from the repository's root.
fn check_page(page: &str, text: &str, read: &dyn Fn(&str) -> Option<String>) -> Report {
    let mut report = Report::default();
    for block in blocks(page, text, &mut report.problems) {
        let line = block.line;
        if block.info.is_empty() {
            report.problems.push(format!(
                "{page}:{line}: a fence without a language, which rustdoc compiles as Rust: tag \
                 it (```text, ```sh, ```sql, ```toml, ```rust...)"
            ));
            continue;
        }
        let compiled = block.is_rust() && !block.is_ignored();
        match &block.excerpt {
            Some((_, path)) if compiled => report.problems.push(format!(
                "{page}:{line}: a ```{} block under an excerpt marker of {path}: an excerpt is \
                 ```rust,ignore, or drop the marker and let the doctest compile it",
                block.info
            )),
            Some((marker_line, path)) => {
                report.excerpts += 1;
                if !is_relative_inside(path) {
                    report.problems.push(format!(
                        "{page}:{marker_line}: the excerpt's path {path} is not a path from the \
                         repository's root"
                    ));
                    continue;
                }
                if block.is_rust() && !path.ends_with(".rs") {
                    report.problems.push(format!(
                        "{page}:{marker_line}: a Rust excerpt of {path}, which is not a Rust \
                         source file that the build compiles"
                    ));
                    continue;
                }
                let Some(file) = read(path) else {
                    report.problems.push(format!(
                        "{page}:{line}: an excerpt of {path}, which does not exist"
                    ));
                    continue;
                };
                if let Err(drift) = check_verbatim(&block.body, &file) {
                    report.problems.push(format!(
                        "{page}:{line}: the excerpt of {path} is not verbatim: {drift}"
                    ));
                }
            }
            None if compiled => report.doctests += 1,
            None if block.is_rust() => report.problems.push(format!(
                "{page}:{line}: a ```{} block that nothing checks: compile it (no `ignore`, with \
                 hidden `# ` lines for its context) or quote a compiled file, under a line \
                 `<!-- excerpt: path/from/the/repository/root -->`",
                block.info
            )),
            None => {}
        }
    }
    report
}

fn read_from_root(path: &str) -> Option<String> {
    fs::read_to_string(root().join(path)).ok()
}

/// The guide's pages, by file name.
fn pages() -> Vec<String> {
    let mut pages: Vec<String> = fs::read_dir(root().join("docs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .collect();
    pages.sort();
    pages
}

#[test]
fn every_rust_block_of_the_guide_is_compiled_or_a_verbatim_excerpt() {
    let lib = read_from_root("docs/src/lib.rs").unwrap_or_default();
    let mut problems = Vec::new();
    let mut summary = String::new();
    let (mut doctests, mut excerpts) = (0, 0);
    let pages = pages();
    assert!(pages.len() >= 10, "found only {pages:?} in docs/");
    for page in &pages {
        let path = format!("docs/{page}");
        let Some(text) = read_from_root(&path) else {
            problems.push(format!("{path}: cannot be read"));
            continue;
        };
        // A page that is not a module's documentation would have its blocks compiled by no one.
        if !lib.contains(&format!("include_str!(\"../{page}\")")) {
            problems.push(format!(
                "{path}: not included in docs/src/lib.rs, so its Rust blocks are not \
                 compiled: add `#[doc = include_str!(\"../{page}\")] pub mod ... {{}}`"
            ));
        }
        let report = check_page(&path, &text, &read_from_root);
        let _ = writeln!(
            summary,
            "{path}: {} compiled, {} excerpts",
            report.doctests, report.excerpts
        );
        doctests += report.doctests;
        excerpts += report.excerpts;
        problems.extend(report.problems);
    }
    println!("{summary}in all: {doctests} compiled, {excerpts} excerpts");
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
    assert!(
        doctests + excerpts > 20 && doctests > 10 && excerpts > 10,
        "only {doctests} compiled blocks and {excerpts} excerpts: is the parser still finding \
         the fences?"
    );
}

// The checker itself, on small pages.

const SOURCE: &str = "fn main() {\n    let x = 1;\n    println!(\"{x}\");\n}\n";

fn check_sample(text: &str) -> Report {
    let read = |path: &str| (path == "src/main.rs").then(|| SOURCE.to_owned());
    check_page("sample.md", text, &read)
}

#[test]
fn a_verbatim_excerpt_passes_with_trailing_whitespace_ignored() {
    let page = "Text.\n\n<!-- excerpt: src/main.rs -->\n```rust,ignore\n    let x = 1;   \n    println!(\"{x}\");\n```\n";
    let report = check_sample(page);
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!((report.doctests, report.excerpts), (0, 1));
}

#[test]
fn a_drifted_excerpt_fails_naming_the_page_line_and_difference() {
    let page = "<!-- excerpt: src/main.rs -->\n```rust,ignore\n    let x = 1;\n    println!(\"{y}\");\n```\n";
    let report = check_sample(page);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let problem = &report.problems[0];
    assert!(problem.starts_with("sample.md:2: the excerpt of src/main.rs is not verbatim"));
    assert!(
        problem.contains("its line 2 reads `    println!(\"{y}\");`"),
        "{problem}"
    );
    assert!(
        problem.contains("the file's line 3 reads `    println!(\"{x}\");`"),
        "{problem}"
    );
}

#[test]
fn an_excerpt_with_other_indentation_or_gaps_fails() {
    let dedented = "<!-- excerpt: src/main.rs -->\n```rust,ignore\nlet x = 1;\n```\n";
    assert_eq!(check_sample(dedented).problems.len(), 1);
    let gap = "<!-- excerpt: src/main.rs -->\n```rust,ignore\nfn main() {\n}\n```\n";
    assert_eq!(check_sample(gap).problems.len(), 1);
    let past_the_end = "<!-- excerpt: src/main.rs -->\n```rust,ignore\n}\n}\n```\n";
    let problems = check_sample(past_the_end).problems;
    assert!(
        problems[0].contains("nothing (the file ends)"),
        "{problems:?}"
    );
}

#[test]
fn an_excerpt_of_a_missing_file_fails() {
    let page = "<!-- excerpt: src/gone.rs -->\n```rust,ignore\nfn main() {\n```\n";
    let problems = check_sample(page).problems;
    assert_eq!(
        problems,
        ["sample.md:2: an excerpt of src/gone.rs, which does not exist"]
    );
}

#[test]
fn an_ignored_rust_block_without_a_marker_fails() {
    for info in ["rust,ignore", "ignore", "rust, ignore-wasm32"] {
        let page = format!("Some text.\n\n```{info}\nlet x = 1;\n```\n");
        let problems = check_sample(&page).problems;
        assert_eq!(problems.len(), 1, "{info}: {problems:?}");
        assert!(
            problems[0].starts_with("sample.md:3: a ```"),
            "{problems:?}"
        );
    }
    // A marker must be on the line just above the fence.
    let apart = "<!-- excerpt: src/main.rs -->\n\n```rust,ignore\nfn main() {\n```\n";
    assert_eq!(check_sample(apart).problems.len(), 2);
}

#[test]
fn an_untagged_fence_fails() {
    let page = "# Title\n\n```\nanything\n```\n\n~~~\nmore\n~~~\n";
    let problems = check_sample(page).problems;
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("sample.md:3: a fence without a language"));
    assert!(problems[1].starts_with("sample.md:7: a fence without a language"));
}

#[test]
fn compiled_and_other_blocks_are_counted_or_left_alone() {
    let page = "```rust\nlet x = 1;\n```\n\n```rust,no_run\nlet y = 2;\n```\n\n```no_run\n```\n\n```sh\ncargo test\n```\n\n```text\n```\n";
    let report = check_sample(page);
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!((report.doctests, report.excerpts), (3, 0));
}

#[test]
fn a_fence_inside_a_block_does_not_close_or_open_one() {
    let page = "````text\n```rust,ignore\n````\n\n```rust\n    let indented = 1;\n```\n";
    let report = check_sample(page);
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(report.doctests, 1);
}

#[test]
fn an_indented_code_block_fails_but_a_list_continuation_does_not() {
    let code = "Text.\n\n    let x = 1;\n";
    assert_eq!(check_sample(code).problems.len(), 1);
    let list = "- an item\n\n    its second paragraph\n";
    assert_eq!(check_sample(list).problems, Vec::<String>::new());
}

#[test]
fn malformed_and_misplaced_markers_fail() {
    let malformed = "<!-- excerpt src/main.rs -->\n```rust,ignore\nfn main() {\n```\n";
    // The malformed marker, and then the block it fails to mark.
    assert_eq!(check_sample(malformed).problems.len(), 2);
    let outside = "<!-- excerpt: ../secret.rs -->\n```rust,ignore\nfn main() {\n```\n";
    assert_eq!(check_sample(outside).problems.len(), 1);
    let not_rust = "<!-- excerpt: README.md -->\n```rust,ignore\nfn main() {\n```\n";
    assert_eq!(check_sample(not_rust).problems.len(), 1);
    let compiled = "<!-- excerpt: src/main.rs -->\n```rust\nfn main() {\n```\n";
    assert_eq!(check_sample(compiled).problems.len(), 1);
    let unclosed = "```rust\nfn main() {\n";
    assert_eq!(check_sample(unclosed).problems.len(), 1);
}
