//! `gc`, `verify`, `pin`, `debug hash`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use pipeline_cache::{GcOptions, Store};

use super::args::{GcArgs, PinArgs, VerifyArgs};
use super::{CliError, CliResult, print_json};

pub fn gc(args: GcArgs, store: Store) -> CliResult {
    let report = store.gc(&GcOptions { keep_last: args.keep_last, dry_run: args.dry_run })?;
    let verb = if report.dry_run { "would remove" } else { "removed" };
    println!(
        "{verb} {} objects ({:.1} MB) and {} cache entries; kept {} objects and {} cache entries used by {} runs and the latest result of each stage",
        report.objects_removed,
        report.bytes_removed as f64 / 1e6,
        report.keys_removed,
        report.objects_kept,
        report.keys_kept,
        report.runs_kept.len()
    );
    if report.tmp_removed > 0 {
        println!("{verb} {} leftovers of interrupted runs", report.tmp_removed);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn verify(args: VerifyArgs, store: Store) -> CliResult {
    let report = store.verify()?;
    if args.json {
        print_json(&report)?;
    } else {
        println!(
            "checked {} objects ({:.1} MB) and {} cache entries",
            report.objects_checked,
            report.bytes_checked as f64 / 1e6,
            report.manifests_checked
        );
        for hash in &report.corrupt_objects {
            println!("corrupt object {hash}: moved to quarantine/");
        }
        for name in &report.damaged_manifests {
            println!("damaged cache entry {name}: moved to quarantine/");
        }
        if !report.incomplete_manifests.is_empty() {
            println!(
                "{} cache entries name objects that are gone; their stages will re-run",
                report.incomplete_manifests.len()
            );
        }
        if report.tmp_entries > 0 {
            println!("{} leftovers of interrupted runs in tmp/ ({} removed)", report.tmp_entries, report.tmp_removed);
        }
        if report.is_ok() {
            println!("ok: the store is consistent");
        } else {
            println!("the store had corrupt entries; they are quarantined and the stages that made them will re-run");
        }
    }
    Ok(if report.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn pin(args: PinArgs, store: Store, pinned: bool) -> CliResult {
    let id = store
        .resolve_run(&args.run)?
        .ok_or_else(|| CliError::usage(format!("no run `{}`\nhint: `pipeline runs` lists them", args.run)))?;
    store.pin_run(&id, pinned)?;
    println!("{} run {id}", if pinned { "pinned" } else { "unpinned" });
    Ok(ExitCode::SUCCESS)
}

pub fn debug_hash(file: &Path) -> CliResult {
    let size =
        std::fs::metadata(file).map_err(|e| CliError::usage(format!("cannot read {}: {e}", file.display())))?.len();
    let started = Instant::now();
    let hash = pipeline_cache::hash_file(file)
        .map_err(|e| CliError::failure(format!("cannot hash {}: {e}", file.display())))?;
    let secs = started.elapsed().as_secs_f64();
    println!("{hash}  {size} bytes  {:.3}s  {:.2} GB/s", secs, size as f64 / 1e9 / secs.max(1e-9));
    Ok(ExitCode::SUCCESS)
}
