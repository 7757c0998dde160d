//! The `torch` feature against Python torch on the same inputs, one CPU thread each (the stages
//! pin LibTorch to one thread, docs/torch.md): MiniLM sentences per second (tokenisation
//! included), and TCN / Transformer training samples per second (windows of 32 rows x 16
//! features, batches of 256, Adam). Python's twin is bench/torch_same_inputs.py, which writes the
//! sentences this reads. Run (docs/benchmarks.md, "The torch feature"):
//!
//!   .venv-torch/bin/python bench/torch_same_inputs.py       # Python, and target/bench_sentences.txt
//!   cargo bench -p pipeline-tasks --features torch --bench torch

use std::time::Instant;

use pipeline_tasks::learn::sequence::{SequenceKind, SequenceParams, padded_matrix};
use pipeline_tasks::synth_table::SplitMix64;
use pipeline_tasks::torch::Device;
use pipeline_tasks::torch::minilm::MiniLm;
use pipeline_tasks::torch::sequence::{Rows, Windows, fit};

fn main() {
    let sentences_file = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench_sentences.txt");
    match (std::fs::read_to_string(sentences_file), std::env::var("PIPELINE_MINILM_DIR")) {
        (Ok(text), Ok(dir)) => {
            let sentences: Vec<String> = text.lines().map(String::from).collect();
            let model = MiniLm::load(std::path::Path::new(&dir), tch::Device::Cpu).unwrap();
            model.embed(&sentences[..64]).unwrap(); // warm-up
            let started = Instant::now();
            let out = model.embed(&sentences).unwrap();
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "minilm: {} sentences in {seconds:.2} s = {:.1} sentences/s",
                out.len(),
                out.len() as f64 / seconds
            );
        }
        _ => println!("minilm: skipped (run bench/torch_same_inputs.py first, with PIPELINE_MINILM_DIR set)"),
    }

    let (rows, k, window, steps) = (20_000usize, 16usize, 32usize, 200usize);
    let mut rng = SplitMix64::new(1);
    let columns: Vec<Vec<f64>> = (0..k).map(|_| (0..rows).map(|_| rng.next_normal()).collect()).collect();
    let label: Vec<bool> = (0..rows).map(|i| columns[0][i] > 0.0).collect();
    let flat = padded_matrix(&columns, &vec![0.0; k], &vec![0.0; k], &vec![1.0; k], window);
    let windows = Windows::new(&flat, k, window, tch::Device::Cpu);
    let train: Vec<usize> = (0..rows).collect();
    for kind in [SequenceKind::Tcn, SequenceKind::Transformer] {
        // No early stop inside the timed steps: evaluate once, at the end, on 256 rows.
        let p = SequenceParams {
            window,
            width: 32,
            batch_size: 256,
            max_steps: steps,
            eval_every: steps,
            patience: 1,
            device: Device::Cpu,
            ..SequenceParams::default()
        };
        let started = Instant::now();
        let rows = Rows { label: &label, train: &train, valid: &train[..256] };
        fit(kind, &p, &windows, k, rows, 1, &|| Ok(())).unwrap();
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{}: {steps} steps of 256 windows in {seconds:.2} s = {:.0} samples/s",
            kind.name(),
            (steps * 256) as f64 / seconds
        );
    }
}
