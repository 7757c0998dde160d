//! Property tests across the bar stages: for any finite bars, features and labels hold no NaN
//! or infinity; with bad rows planted, `bad_rows = "drop"`/`"null"` counts them exactly and the
//! same holds downstream.

use polars::prelude::*;
use proptest::prelude::*;

use super::bar_checks::{BadRows, Cell, RawColumn, ValueRule, check_rows};
use super::features::{FeaturesParams, compute};
use super::labels::{LabelsParams, label_frame};

const T0: i64 = 1_677_628_800_000; // 2023-03-01 UTC

/// One valid bar from a random walk step: (log-return, wick up, wick down, volume).
fn bars(steps: &[(f64, f64, f64, f64)]) -> Vec<[f64; 5]> {
    let mut price = 100.0f64;
    steps
        .iter()
        .map(|&(ret, up, down, volume)| {
            let open = price;
            price *= ret.exp();
            let close = price;
            [open, open.max(close) * (1.0 + up), open.min(close) * (1.0 - down), close, volume]
        })
        .collect()
}

/// The features, and a failure if any formula produced a non-finite value on this input (the
/// stage would null it and say so in `sources`; on finite input that must never be needed).
fn features_of(df: &DataFrame) -> Result<DataFrame, String> {
    let (out, provenance) = compute(df, &small_features()).map_err(|e| e.to_string())?;
    match provenance.0.get("non_finite_nulled") {
        Some(which) => Err(format!("formulas gave non-finite values: {which}")),
        None => Ok(out),
    }
}

fn frame(rows: &[[Option<f64>; 5]]) -> DataFrame {
    let n = rows.len();
    let ts: Vec<i64> = (0..n as i64).map(|i| T0 + i * 60_000).collect();
    let mut columns: Vec<Column> = vec![
        Series::new("timestamp".into(), ts)
            .cast(&DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC)))
            .unwrap()
            .into(),
    ];
    for (c, name) in ["open", "high", "low", "close", "volume"].iter().enumerate() {
        let values: Vec<Option<f64>> = rows.iter().map(|r| r[c]).collect();
        columns.push(Series::new((*name).into(), values).into());
    }
    DataFrame::new(n, columns).unwrap()
}

/// Every float in the frame is finite or null.
fn no_non_finite(df: &DataFrame) -> Result<(), String> {
    for column in df.columns() {
        if column.dtype().is_float() {
            let series = column.as_materialized_series().cast(&DataType::Float64).unwrap();
            if let Some((row, v)) =
                series.f64().unwrap().iter().enumerate().find_map(|(i, v)| v.filter(|x| !x.is_finite()).map(|x| (i, x)))
            {
                return Err(format!("{} row {row} is {v}", column.name()));
            }
        }
    }
    Ok(())
}

fn small_features() -> FeaturesParams {
    let mut params: FeaturesParams = serde_json::from_value(serde_json::json!({
        "return_windows": [1, 5], "rv_windows": [5], "volume_window": 10, "slope_window": 5,
        "atr_window": 5, "whale_flip_window": 5, "liquidation_window": 5, "funding_window": 10, "oi_window": 5,
        "vpin_window": 5, "vpin_buckets_per_day": 10
    }))
    .unwrap();
    params.events = Vec::new();
    params
}

fn labels_of(df: &DataFrame) -> DataFrame {
    let params: LabelsParams =
        serde_json::from_value(serde_json::json!({ "horizons": [1, 3], "volume_window": 10 })).unwrap();
    let resolved = params.resolve(Some(60_000), 60_000).unwrap();
    let times = crate::learn::dataset::timestamps_ms(df).unwrap();
    label_frame(df, &times, Some(60_000), &resolved, &params).unwrap()
}

fn step() -> impl Strategy<Value = (f64, f64, f64, f64)> {
    // Zero volume and zero moves on purpose: flat minutes are where 0/0 hides.
    (
        prop_oneof![Just(0.0), -0.02f64..0.02],
        prop_oneof![Just(0.0), 0.0f64..0.01],
        prop_oneof![Just(0.0), 0.0f64..0.01],
        prop_oneof![Just(0.0), 0.0f64..1e6],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn finite_bars_give_finite_features_and_labels(steps in prop::collection::vec(step(), 30..200)) {
        let rows: Vec<[Option<f64>; 5]> = bars(&steps).iter().map(|r| r.map(Some)).collect();
        let df = frame(&rows);
        let features = features_of(&df);
        prop_assert!(features.is_ok(), "{:?}", features.err());
        prop_assert!(no_non_finite(&features.unwrap()).is_ok());
        let labels = labels_of(&df);
        prop_assert!(no_non_finite(&labels).is_ok(), "{:?}", no_non_finite(&labels));
        // A label is null exactly where its return is null: never "up" from nothing.
        for h in ["1", "3"] {
            let ret = labels.column(&format!("label_ret_{h}")).unwrap();
            let dir = labels.column(&format!("label_dir_{h}")).unwrap();
            for i in 0..labels.height() {
                if ret.get(i).unwrap().is_null() {
                    prop_assert!(dir.get(i).unwrap().is_null());
                }
            }
        }
    }

    #[test]
    fn planted_bad_rows_are_counted_exactly_and_never_reach_a_feature(
        steps in prop::collection::vec(step(), 40..160),
        plants in prop::collection::vec((0usize..1000, 0usize..6), 1..12),
        null_policy in any::<bool>(),
    ) {
        let good = bars(&steps);
        let mut cells: Vec<[Cell; 5]> = good.iter().map(|r| r.map(Cell::Number)).collect();
        let mut planted_rows = std::collections::BTreeSet::new();
        for (at, kind) in &plants {
            let row = at % cells.len();
            if !planted_rows.insert(row) {
                continue;
            }
            match kind {
                0 => cells[row][3] = Cell::Number(f64::NAN),
                1 => cells[row][3] = Cell::Number(f64::INFINITY),
                2 => cells[row][0] = Cell::Number(-1.0),
                3 => cells[row][4] = Cell::Number(-5.0),
                4 => cells[row][3] = Cell::Missing,
                _ => cells[row][2] = Cell::Number(good[row][0].max(good[row][3]) * 1.5),
            }
        }
        let names = ["open", "high", "low", "close", "volume"];
        let raw: Vec<RawColumn> = (0..5)
            .map(|c| RawColumn {
                canonical: names[c],
                source: names[c].into(),
                cells: cells.iter().map(|r| r[c].clone()).collect(),
                rule: if c == 4 { ValueRule::Quantity } else { ValueRule::Price },
            })
            .collect();
        let times: Vec<super::bar_checks::RowTime> = (0..cells.len() as i64).map(|i| Ok(T0 + i * 60_000)).collect();
        let policy = if null_policy { BadRows::Null } else { BadRows::Drop };
        let checked = check_rows(&times, "timestamp", (0, i64::MAX), &raw, policy).unwrap();
        let planted = planted_rows.len() as u64;
        if null_policy {
            // One nulled field per planted row (a low above the body is one problem, the others one each).
            prop_assert_eq!(checked.nulled.values().sum::<u64>(), planted);
            prop_assert!(checked.keep.iter().all(|k| *k));
        } else {
            prop_assert_eq!(checked.dropped.values().sum::<u64>(), planted);
            prop_assert_eq!(checked.keep.iter().filter(|k| !**k).count() as u64, planted);
        }
        let rows: Vec<[Option<f64>; 5]> = (0..cells.len())
            .filter(|&i| checked.keep[i])
            .map(|i| [0, 1, 2, 3, 4].map(|c| checked.values[c][i]))
            .collect();
        let mut df = frame(&rows);
        // An optional column with holes: taker volume missing on some bars (VPIN must not
        // carry a hole forward).
        let taker: Vec<Option<f64>> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| if i % 7 == 3 { None } else { r[4].map(|v| v * 0.5) })
            .collect();
        df.with_column(Series::new("taker_buy_volume".into(), taker).into()).unwrap();
        let features = features_of(&df);
        prop_assert!(features.is_ok(), "{:?}", features.err());
        let features = features.unwrap();
        prop_assert!(no_non_finite(&features).is_ok());
        // VPIN recovers after a hole: its last value is a number whenever it has one at all.
        let vpin = features.column("vpin_5").unwrap().f64().unwrap().clone();
        if vpin.iter().flatten().count() > 0 {
            prop_assert!(vpin.get(vpin.len() - 1).is_some(), "VPIN stuck null after a missing taker volume");
        }
        let labels = labels_of(&df);
        prop_assert!(no_non_finite(&labels).is_ok(), "{:?}", no_non_finite(&labels));
    }
}
