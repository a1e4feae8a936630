//! The shell commands of README.md and docs/OPERATIONS.md run as written. Each section's
//! `sh` blocks become one bash script, run in a fresh directory (holding a copy of `compose/` and `scripts/`) with two stand-ins:
//! `cargo run --release -- ARGS` runs this build's `bourse ARGS`, and `curl` fails when a
//! call prints nothing or answers a JSON error (a streaming `curl -N` is cut after 3 s and
//! fails if the stream ended before).
//! Commands that start servers (`demo`, `node`) run in the background until the next block
//! that starts servers, or the end of the section; the script waits for their `/readyz`.
//! A section whose text says a server is running (the tour: `cargo run --release -- demo`)
//! gets it started first. Not run here: `websocat` sessions (a tool the README asks the
//! reader to install), the benchmark commands (run with tiny parameters in
//! tests/commands.rs, and the criterion benches once each by `cargo test --all-targets`),
//! and the long soak of OPERATIONS "Testing" (CI runs its short form).
//!
//! The servers listen on the README's fixed ports (8080-8082, 7101-7103); tests/demo.rs is
//! the only other test using them, in another test binary, and cargo runs test binaries
//! one at a time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

/// The `sh` blocks under each `##` section, in order: (section title, blocks).
fn sections(readme: &str) -> Vec<(String, Vec<Vec<String>>)> {
    let mut out: Vec<(String, Vec<Vec<String>>)> = Vec::new();
    let mut block: Option<Vec<String>> = None;
    for line in readme.lines() {
        if let Some(b) = block.as_mut() {
            if line.starts_with("```") {
                let b = block.take().unwrap_or_default();
                if let Some(last) = out.last_mut() {
                    last.1.push(b);
                }
            } else {
                b.push(line.to_string());
            }
            continue;
        }
        if let Some(title) = line.strip_prefix("## ") {
            out.push((title.trim().to_string(), Vec::new()));
        } else if line.trim() == "```sh" {
            block = Some(Vec::new());
        }
    }
    out
}

/// A block's commands: continuation lines joined, comments and blank lines dropped.
fn commands(block: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in block {
        let trimmed = line.trim_end();
        if current.is_empty() && (trimmed.trim_start().starts_with('#') || trimmed.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

/// The gateway ports a server-starting command serves, if it is one.
fn serves(cmd: &str) -> Option<Vec<u16>> {
    let args = cmd.split("cargo run --release -- ").nth(1)?;
    let args: Vec<&str> = args.split('#').next()?.split_whitespace().collect();
    match args.as_slice() {
        ["demo"] => Some(vec![8080]),
        ["demo", "--nodes", n] => {
            let n: u16 = n.parse().ok()?;
            Some((0..n).map(|i| 8080 + i).collect())
        }
        ["node", "--config", file] => {
            let k = file
                .strip_prefix("compose/node")
                .and_then(|f| f.strip_suffix(".toml"))
                .and_then(|k| k.parse::<u16>().ok());
            Some(vec![k.map_or(8080, |k| 8079 + k)])
        }
        _ => None,
    }
}

const PRELUDE: &str = r#"set -euo pipefail
cargo() {
  [ "${1:-} ${2:-} ${3:-}" = "run --release --" ] || { echo "README: unexpected cargo $*" >&2; return 1; }
  shift 3
  # A server started in the background is the bourse process itself, so stopping it
  # stops bourse, not a shell around it.
  if [ -n "${CARGO_EXEC:-}" ]; then exec "$BOURSE" "$@"; fi
  "$BOURSE" "$@"
}
curl() {
  local a stream=0 out
  for a in "$@"; do [[ $a =~ ^-[a-zA-Z]*N ]] && stream=1; done
  if (( stream )); then
    # A stream is open until cut: timeout's 124. Anything else ended it early.
    local rc=0
    out=$(timeout 3 curl "$@") || rc=$?
    printf '%s\n' "$out"
    [ "$rc" = 124 ] || { echo "README: the stream ended early ($rc): curl $*" >&2; return 1; }
  else
    out=$(command curl --max-time 10 "$@")
    printf '%s\n' "$out"
    [ -n "$out" ] || { echo "README: no output from: curl $*" >&2; return 1; }
  fi
  if [[ $out == *'"error":{'* ]]; then echo "README: an error from: curl $*" >&2; return 1; fi
}
servers=()
stop_servers() {
  local p
  for p in "${servers[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${servers[@]}"; do wait "$p" 2>/dev/null || true; done
  servers=()
}
trap stop_servers EXIT
trap 'exit 1' INT TERM
ready() {
  local port i
  for port in "$@"; do
    for i in $(seq 600); do
      [ "$(command curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && break
      sleep 0.1
    done
    [ "$(command curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] ||
      { echo "README: nothing ready on $port" >&2; return 1; }
  done
}
"#;

/// The bash script of one section; `before` is a server the section's text says is
/// running already.
fn script(before: Option<&str>, blocks: &[Vec<String>]) -> String {
    let mut s = String::from(PRELUDE);
    let before = before.map(|cmd| vec![cmd.to_string()]);
    for block in before.iter().chain(blocks) {
        let cmds = commands(block);
        if cmds.first().is_some_and(|c| c.starts_with("websocat")) {
            continue;
        }
        let starts: Vec<&String> = cmds.iter().filter(|c| serves(c).is_some()).collect();
        if !starts.is_empty() {
            s.push_str("stop_servers\n");
        }
        let mut ports = Vec::new();
        for cmd in &cmds {
            s.push_str(&format!("echo '$ '{}\n", shell_quote(cmd)));
            if let Some(p) = serves(cmd) {
                ports.extend(p);
                s.push_str(&format!(
                    "CARGO_EXEC=1 {cmd} > server-$RANDOM.log 2>&1 &\nservers+=($!)\n"
                ));
            } else {
                if !ports.is_empty() {
                    // The servers started so far serve before the next command runs.
                    let list: Vec<String> = ports.drain(..).map(|p| p.to_string()).collect();
                    s.push_str(&format!("ready {}\n", list.join(" ")));
                }
                s.push_str(cmd);
                s.push('\n');
            }
        }
        if !ports.is_empty() {
            let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
            s.push_str(&format!("ready {}\n", list.join(" ")));
        }
    }
    s.push_str("stop_servers\necho README-SECTION-OK\n");
    s
}

/// The sections run: (file, `##` title, the server its text says is running).
const RUN: &[(&str, &str, Option<&str>)] = &[
    (
        "README.md",
        "A five-minute tour",
        Some("cargo run --release -- demo"),
    ),
    ("README.md", "Running a node from a config file", None),
    ("README.md", "A local cluster", None),
    ("docs/OPERATIONS.md", "A cluster", None),
    (
        "docs/OPERATIONS.md",
        "`bourse ctl`",
        Some("cargo run --release -- demo --nodes 3"),
    ),
];

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn the_documented_commands_run_as_written() {
    for port in [8080, 8081, 8082, 7101, 7102, 7103] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "the README's port {port} is taken on this machine"
        );
    }
    let root = env!("CARGO_MANIFEST_DIR");
    for (file, title, before) in RUN {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let found = sections(&text);
        let (_, blocks) = found
            .iter()
            .find(|(t, _)| t == title)
            .unwrap_or_else(|| panic!("{file} has no section {title:?}"));
        assert!(!blocks.is_empty(), "{file} {title}: no sh blocks");
        let dir = common::temp_dir("readme");
        let copied = Command::new("cp")
            .args([
                "-r",
                &format!("{root}/compose"),
                &format!("{root}/scripts"),
                dir.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(copied.success());
        let text = script(*before, blocks);
        let out = Command::new("timeout")
            .args(["300", "bash", "-c", &text])
            .current_dir(&dir)
            .env("BOURSE", env!("CARGO_BIN_EXE_bourse"))
            // Cheap password hashing keeps the tour quick; everything else is the default.
            .env("BOURSE_AUTH__ARGON2_MEMORY_KIB", "64")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("== {file}: {title}\n{stdout}");
        let logs: String = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- {}\n{}",
                    e.path().display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect();
        assert!(
            out.status.success() && stdout.contains("README-SECTION-OK"),
            "{file} section {title:?} failed ({}):\n{stdout}\n{stderr}\n{logs}",
            out.status
        );
        let _ = std::fs::remove_dir_all(&dir);
        // The ports are free again for the next section.
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_script_builder_reads_blocks_as_a_reader_would() {
    let readme = "## A\n```sh\n# c\nX=$(a \\\n  b)\ncurl -s x # y\n```\n```python\nno\n```\n## B\n```sh\ncargo run --release -- demo --nodes 3\n```\n";
    let s = sections(readme);
    assert_eq!(s.len(), 2);
    let cmds = commands(&s[0].1[0]);
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    assert!(
        cmds[0].starts_with("X=$(a ") && cmds[0].ends_with(" b)"),
        "{cmds:?}"
    );
    assert_eq!(cmds[1], "curl -s x # y");
    assert_eq!(s[1].1.len(), 1);
    assert_eq!(
        serves("cargo run --release -- demo --nodes 3"),
        Some(vec![8080, 8081, 8082])
    );
    assert_eq!(
        serves("cargo run --release -- node --config compose/node2.toml"),
        Some(vec![8081])
    );
    assert_eq!(serves("cargo run --release -- ctl cluster"), None);
}
