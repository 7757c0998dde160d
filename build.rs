// The same build script as tasks/build.rs (the rpath to LibTorch with the `torch` feature; see
// there): cargo applies a package's link args to its own binaries and tests only, so the root
// package (the `pipeline` binary, tests/it) needs its own copy of the flags.
include!("tasks/build.rs");
