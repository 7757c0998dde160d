// With the `torch` feature: an rpath to the LibTorch the build linked (torch-sys reports its
// folder as `DEP_TCH_LIBTORCH_LIB`), so the unit tests run without LD_LIBRARY_PATH, and that
// LibTorch's version (from the wheel's `version.py`) and folder for `pipeline doctor`.
// On Linux it also keeps `libtorch_cuda.so` linked where the install has it: rustc links with
// `--as-needed`, which drops it (no symbol of ours names it), and then LibTorch never registers
// its CUDA backend and `cuda` is silently unavailable (tch-rs issue #980).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else { return };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if linux && std::path::Path::new(&dir).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    let version_py = std::path::Path::new(&dir).join("../version.py");
    println!("cargo:rerun-if-changed={}", version_py.display());
    let version = std::fs::read_to_string(&version_py)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| l.strip_prefix("__version__ = ").map(|v| v.trim_matches(['\'', '"']).to_string()))
        })
        .unwrap_or_else(|| "unknown (no torch/version.py beside the library)".into());
    println!("cargo:rustc-env=PIPELINE_LIBTORCH_VERSION={version}");
    println!("cargo:rustc-env=PIPELINE_LIBTORCH_LIB={dir}");
}
