//! The `pipeline` binary: the engine's CLI with the built-in stages.

fn main() -> std::process::ExitCode {
    pipeline_engine::cli::main(pipeline_tasks::registry())
}
