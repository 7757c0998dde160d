use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temp workspace with its own store, and the `pipeline` binary to drive.
pub struct TestContext {
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "command failed\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn code(self, code: i32) -> Run {
        assert_eq!(self.code, code, "unexpected exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_pipeline")
}

impl TestContext {
    pub fn new() -> TestContext {
        TestContext { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn store(&self) -> PathBuf {
        self.path(".pipeline")
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command.current_dir(self.dir.path()).env_remove("PIPELINE_STORE").env_remove("PIPELINE_JOBS").args(args);
        command
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.command(args).output().expect("run pipeline").into()
    }

    /// `pipeline status FILE --json`, parsed.
    pub fn status(&self, file: &str, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["status", file, "--json"];
        args.extend_from_slice(extra);
        let run = self.run(&args).ok();
        serde_json::from_str(&run.stdout).expect("status json")
    }

    /// Outcome of each stage in the newest run: name -> "hit" | "ran" | ...
    pub fn last_outcomes(&self) -> std::collections::BTreeMap<String, String> {
        let run = self.last_run();
        run["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["name"].as_str().unwrap().to_string(), s["outcome"].as_str().unwrap().to_string()))
            .collect()
    }

    pub fn last_run(&self) -> serde_json::Value {
        let run = self.run(&["show", "last", "--json"]).ok();
        serde_json::from_str(&run.stdout).expect("run json")
    }

    /// Output hashes of every stage of the newest run: "stage.output" -> hash.
    pub fn last_output_hashes(&self) -> std::collections::BTreeMap<String, String> {
        let run = self.last_run();
        let mut out = std::collections::BTreeMap::new();
        for stage in run["stages"].as_array().unwrap() {
            for (name, record) in stage["outputs"].as_object().unwrap() {
                out.insert(
                    format!("{}.{name}", stage["name"].as_str().unwrap()),
                    record["hash"].as_str().unwrap().to_string(),
                );
            }
        }
        out
    }
}

/// Sets a file's mtime to now without changing its bytes (a `touch`).
pub fn touch(path: &Path) {
    let file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now()).unwrap();
}

pub fn outcomes(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

impl TestContext {
    /// The manifest (key material, outputs, metrics) of a stage's newest result.
    pub fn manifest(&self, stage: &str) -> serde_json::Value {
        let run = self.run(&["show", stage, "--json"]).ok();
        serde_json::from_str(&run.stdout).expect("manifest json")
    }

    /// A stage's newest output table, read with polars.
    pub fn table(&self, stage: &str, output: &str) -> polars::prelude::DataFrame {
        let manifest = self.manifest(stage);
        let hash = manifest["outputs"][output]["hash"].as_str().expect("output hash").to_string();
        let path = self.store().join("objects").join(&hash[..2]).join(&hash[2..]);
        pipeline_artifacts::read_table(&path).expect("read table")
    }
}

/// The real-data folder, or `None` (with the reason printed) when `PIPELINE_REAL_DATA` is unset.
pub fn real_data() -> Option<PathBuf> {
    match std::env::var_os("PIPELINE_REAL_DATA") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            assert!(dir.join("README.md").is_file(), "PIPELINE_REAL_DATA={} holds no README.md", dir.display());
            Some(dir)
        }
        None => {
            assert!(
                std::env::var_os("PIPELINE_REQUIRE_OPTIONAL").is_none(),
                "PIPELINE_REAL_DATA is not set, and PIPELINE_REQUIRE_OPTIONAL says the real-data tests must run"
            );
            eprintln!("skipped: PIPELINE_REAL_DATA is not set (point it at shared/data to run the real-data tests)");
            None
        }
    }
}

/// The headless browser the report tests open pages in: `chromium` or `chromium-browser` on
/// PATH. `None` (and a printed reason) where there is none, unless `PIPELINE_REQUIRE_OPTIONAL`
/// says the browser tests must run (`.ci/run` sets it and installs Debian's `chromium`).
pub fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| std::process::Command::new(c).arg("--version").output().ok().is_some_and(|o| o.status.success()));
    if found.is_none() {
        assert!(
            std::env::var_os("PIPELINE_REQUIRE_OPTIONAL").is_none(),
            "no chromium on PATH, and PIPELINE_REQUIRE_OPTIONAL says the browser tests must run"
        );
        eprintln!("skipped: no chromium on PATH (.ci/run installs Debian's `chromium`)");
    }
    found
}

/// What a page became in a real headless Chromium: the DOM after parsing, and a screenshot
/// (PNG bytes, `width` x `height`). Fails the test on any console message (a script error, a
/// resource that did not load: the pages have neither scripts nor external resources).
pub fn open_in_chromium(chromium: &str, ctx: &TestContext, page: &Path, width: u32, height: u32) -> (String, Vec<u8>) {
    let profile = ctx.path("chromium-profile");
    let shot = ctx.path("page.png");
    let url = format!("file://{}", page.display());
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
    ];
    let browse = |extra: &[String]| {
        let output = std::process::Command::new(chromium)
            .args(common)
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let log = String::from_utf8_lossy(&output.stderr);
        let console: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("ERR_FILE_NOT_FOUND"))
            .collect();
        assert!(console.is_empty(), "console messages opening {}: {console:?}", page.display());
        output.stdout
    };
    let dom = String::from_utf8_lossy(&browse(&["--dump-dom".into()])).into_owned();
    browse(&[format!("--window-size={width},{height}"), format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a screenshot of {}", page.display());
    (dom, png)
}

/// Copies a shipped pipeline and the Stage 1 files it may include (`pipelines/stage1/`) into the
/// test workspace, where its relative paths work as in the repository.
pub fn shipped(ctx: &TestContext, file: &str) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    ctx.write(&format!("pipelines/{file}"), &std::fs::read_to_string(root.join(file)).unwrap());
    for entry in std::fs::read_dir(root.join("stage1")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        ctx.write(&format!("pipelines/stage1/{name}"), &std::fs::read_to_string(&path).unwrap());
    }
}
