//! Timestamp parsing shared by the ingest stages: epoch numbers in a declared or detected unit,
//! and the text formats found in the wild, with a declared zone for values that carry none.

use chrono::{DateTime, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone};
use chrono_tz::Tz;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Unit of numeric timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EpochUnit {
    /// Detected from the magnitude of each value (s, ms, us or ns since 1970).
    Auto,
    S,
    Ms,
    Us,
    Ns,
}

/// Parses an IANA zone name (`UTC`, `America/New_York`).
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!("`{name}` is not an IANA time zone name; write e.g. \"UTC\", \"Europe/London\", \"America/New_York\"")
    })
}

/// Milliseconds since the epoch from a number in `unit`.
pub fn epoch_to_ms(value: f64, unit: EpochUnit) -> Result<i64, String> {
    if !value.is_finite() {
        return Err(format!("`{value}` is not a time"));
    }
    let unit = match unit {
        EpochUnit::Auto => detect_unit(value.abs()),
        other => other,
    };
    let ms = match unit {
        EpochUnit::S => value * 1e3,
        EpochUnit::Ms => value,
        EpochUnit::Us => value / 1e3,
        EpochUnit::Ns => value / 1e6,
        EpochUnit::Auto => unreachable!("resolved above"),
    };
    Ok(ms.round() as i64)
}

/// Seconds until 5138 AD (1e11), milliseconds until then (1e14), and so on: the magnitudes do not
/// overlap for any date between 1973 and 5000.
fn detect_unit(value: f64) -> EpochUnit {
    if value < 1e11 {
        EpochUnit::S
    } else if value < 1e14 {
        EpochUnit::Ms
    } else if value < 1e17 {
        EpochUnit::Us
    } else {
        EpochUnit::Ns
    }
}

const OFFSET_FORMATS: &[&str] = &[
    "%Y-%m-%d %H:%M:%S%.f%:z",
    "%Y-%m-%dT%H:%M:%S%.f%:z",
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M%:z",
    "%Y-%m-%dT%H:%M%:z",
];

const NAIVE_FORMATS: &[&str] = &[
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y/%m/%d %H:%M:%S%.f",
    "%Y/%m/%d %H:%M",
];

/// Parses one text timestamp to milliseconds since the epoch (UTC).
///
/// Accepted: RFC 3339 / ISO 8601 with an offset or `Z` (space or `T`), RFC 2822
/// (`Tue, 14 Mar 2023 09:30:00 GMT`), naive date-times and dates (read in `zone`), and plain
/// numbers (epoch in `unit`). A value with an explicit offset must agree with a declared
/// non-UTC zone: a disagreement means the zone declaration is wrong, and is an error.
pub fn parse_text_ms(text: &str, zone: Tz, unit: EpochUnit) -> Result<i64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty timestamp".into());
    }
    if let Ok(number) = text.parse::<f64>() {
        return epoch_to_ms(number, unit);
    }
    let normalized = text.strip_suffix('Z').or_else(|| text.strip_suffix('z')).map(|t| format!("{t}+00:00"));
    let candidate = normalized.as_deref().unwrap_or(text);
    for format in OFFSET_FORMATS {
        if let Ok(parsed) = DateTime::parse_from_str(candidate, format) {
            return check_offset(parsed, zone);
        }
    }
    if let Ok(parsed) = DateTime::parse_from_rfc2822(text) {
        return check_offset(parsed, zone);
    }
    for format in NAIVE_FORMATS {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return local_to_ms(naive, zone);
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return local_to_ms(date.and_hms_opt(0, 0, 0).expect("midnight exists"), zone);
    }
    Err(format!("`{text}` is not a timestamp this reader knows (RFC 3339, RFC 2822, `YYYY-MM-DD HH:MM:SS`, or epoch)"))
}

fn check_offset(parsed: DateTime<FixedOffset>, zone: Tz) -> Result<i64, String> {
    let ms = parsed.timestamp_millis();
    if zone != Tz::UTC {
        let expected = zone.offset_from_utc_datetime(&parsed.naive_utc()).fix();
        if expected != *parsed.offset() {
            return Err(format!(
                "`{parsed}` carries offset {} but the declared zone {zone} is at {expected} then; the zone declaration looks wrong",
                parsed.offset()
            ));
        }
    }
    Ok(ms)
}

/// A naive local time in `zone`. In the hour repeated when clocks go back, the earlier instant
/// is taken; a time inside the hour skipped when clocks go forward does not exist and is an error.
pub fn local_to_ms(naive: NaiveDateTime, zone: Tz) -> Result<i64, String> {
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(t) => Ok(t.timestamp_millis()),
        LocalResult::Ambiguous(earliest, _) => Ok(earliest.timestamp_millis()),
        LocalResult::None => Err(format!("{naive} does not exist in {zone} (skipped by a daylight-saving change)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_677_628_800_000; // 2023-03-01 00:00:00 UTC

    #[test]
    fn formats_in_the_wild() {
        let utc = Tz::UTC;
        for text in [
            "2023-03-01 00:00:00+00:00",
            "2023-03-01T00:00:00Z",
            "2023-03-01T00:00:00.000+00:00",
            "2023-03-01 01:00:00+01:00",
            "Wed, 01 Mar 2023 00:00:00 GMT",
            "Wed, 01 Mar 2023 00:00:00 +0000",
            "2023-03-01 00:00:00",
            "2023-03-01",
            "1677628800",
            "1677628800000",
            "1677628800000000",
        ] {
            assert_eq!(parse_text_ms(text, utc, EpochUnit::Auto), Ok(T0), "{text}");
        }
        assert_eq!(parse_text_ms("2023-01-31 06:19:30.343000+00:00", utc, EpochUnit::Auto), Ok(1_675_145_970_343));
    }

    #[test]
    fn naive_times_take_the_declared_zone_and_dst_into_account() {
        let ny = parse_zone("America/New_York").unwrap();
        // 09:30 New York is 14:30 UTC in winter, 13:30 UTC in summer.
        assert_eq!(
            parse_text_ms("2023-03-10 09:30:00", ny, EpochUnit::Auto),
            Ok(T0 + (9 * 86_400 + 14 * 3600 + 1800) * 1000)
        );
        assert_eq!(
            parse_text_ms("2023-03-13 09:30:00", ny, EpochUnit::Auto),
            Ok(T0 + (12 * 86_400 + 13 * 3600 + 1800) * 1000)
        );
        assert!(parse_text_ms("2023-03-12 02:30:00", ny, EpochUnit::Auto).unwrap_err().contains("does not exist"));
    }

    #[test]
    fn an_offset_that_contradicts_the_declared_zone_is_an_error() {
        let berlin = parse_zone("Europe/Berlin").unwrap();
        assert_eq!(parse_text_ms("2023-03-01 01:00:00+01:00", berlin, EpochUnit::Auto), Ok(T0));
        let err = parse_text_ms("2023-03-01 00:00:00+00:00", berlin, EpochUnit::Auto).unwrap_err();
        assert!(err.contains("zone declaration looks wrong"), "{err}");
        assert!(parse_zone("Europe/Berln").unwrap_err().contains("not an IANA time zone"));
    }

    #[test]
    fn epoch_units() {
        assert_eq!(epoch_to_ms(1_677_628_800.0, EpochUnit::S), Ok(T0));
        assert_eq!(epoch_to_ms(1_677_628_800_000_000.0, EpochUnit::Us), Ok(T0));
        assert_eq!(epoch_to_ms(1_677_628_800_000_000_000.0, EpochUnit::Auto), Ok(T0));
        assert!(parse_text_ms("yesterday", Tz::UTC, EpochUnit::Auto).is_err());
    }
}
