//! Honest results across seeds: the walk-forward finds a planted news effect of 35 bps (the
//! pooled interval of with-news minus price-only AUC excludes 0) in at least 9 of 10 seeds, and
//! finds nothing beyond the intervals' own 5% when the plant is off or the labels are shuffled
//! within days (at most 3 of those 20 runs, at most 2 of 10 in each). Runs the shipped
//! `walk_forward.toml` up to `compare`, 30 runs in all (release mode: about 15 minutes on 2
//! cores). AUC is compared within each test day (docs/walk-forward.md, "Pooled
//! results").

use crate::support::TestContext;

/// (dAUC, interval excludes 0) of the pooled ablation of the newest `compare`.
fn pooled(ctx: &TestContext) -> (f64, bool) {
    let manifest = ctx.manifest("compare");
    let hash = manifest["outputs"]["summary"]["hash"].as_str().unwrap().to_string();
    let path = ctx.store().join("objects").join(&hash[..2]).join(&hash[2..]);
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let row = &summary["ablation"][0];
    (row["auc_delta"].as_f64().unwrap(), row["auc_significant"] == serde_json::Value::Bool(true))
}

/// About 15 minutes on 2 cores, so `cargo test` leaves it out and `.ci/run` runs it by name:
/// `cargo test --release --test it -- --ignored research_validity --nocapture` prints every seed.
/// Why 35 bps and not the demo's 25: at 25 bps the study's power is about 85%, so a 9-of-10 bar
/// is a coin flip that any change to a feature's last bits can tip. Measured on 2026-11-30: 9/10
/// at 25 bps with task versions features 7 / embed_news 2; 8/10 twice after the bounded-history
/// changes of the nightly issue (mean planted dAUC 0.031 before, 0.027 after; the missed seeds
/// at +0.007 to +0.012). A null hit counts whichever its sign: any claim of a difference where
/// none was planted.
///
/// The null bar is set by the intervals' own level: a 95% interval excludes 0 in about 1 null
/// run of 20 by construction, so "at most 1 of 10" fails 8.6% of the time with exact intervals
/// (2026-12-01, embed_news 4: shuffled labels 2/10, seeds 3 and 8 at +0.008 and -0.006, plant
/// off 0/10). The bar: at most 3 of the 20 null runs together (1.6% by chance at the nominal
/// 5%) and at most 2 of 10 in either condition (1.2% each).
#[test]
#[ignore = "15 minutes: .ci/run runs it (cargo test --release --test it -- --ignored research_validity)"]
fn the_planted_news_effect_is_found_across_seeds_and_nothing_without_it() {
    let ctx = TestContext::new();
    std::fs::create_dir_all(ctx.path("pipelines/walk_forward")).unwrap();
    for file in ["walk_forward.toml", "walk_forward/study.toml"] {
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/").to_string() + file,
            ctx.path(&format!("pipelines/{file}")),
        )
        .unwrap();
    }
    let (mut found, mut found_off, mut found_shuffled) = (0, 0, 0);
    let mut lines = Vec::new();
    for seed in 1..=10 {
        let seed_set = format!("params.seed={seed}");
        let shuffle = format!("stages.labels.params.shuffle_within_days={seed}");
        for (condition, extra) in [
            ("planted", vec!["--set", &seed_set, "--set", "params.news_effect_bps=35"]),
            ("shuffled labels", vec!["--set", &seed_set, "--set", "params.news_effect_bps=35", "--set", &shuffle]),
            ("plant off", vec!["--set", &seed_set, "--set", "params.news_effect_bps=0"]),
        ] {
            let mut args = vec!["run", "pipelines/walk_forward.toml", "--plain", "compare"];
            args.extend(extra);
            ctx.run(&args).ok();
            let (delta, significant) = pooled(&ctx);
            lines.push(format!(
                "seed {seed:2} {condition:<16} dAUC {delta:+.4} {}",
                if significant { "interval excludes 0" } else { "" }
            ));
            match condition {
                "planted" => found += (significant && delta > 0.0) as usize,
                "shuffled labels" => found_shuffled += significant as usize,
                _ => found_off += significant as usize,
            }
        }
    }
    let report = format!(
        "{}\nfound with the plant: {found}/10; with the plant off: {found_off}/10; with shuffled labels: {found_shuffled}/10",
        lines.join("\n")
    );
    eprintln!("{report}");
    assert!(found >= 9, "{report}");
    assert!(found_off + found_shuffled <= 3 && found_off <= 2 && found_shuffled <= 2, "{report}");
}
