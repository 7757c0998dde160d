//! Timestamp parsing shared by the ingest stages: epoch numbers in a declared or detected unit,
//! and the text formats found in the wild, with a declared zone for values that carry none.

use chrono::{DateTime, Datelike, FixedOffset, LocalResult, Months, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
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

/// A length of time written the way traders write it: `"15m"`, `"4h"`, `"1d"`, `"1w"` are fixed
/// lengths; `"1mo"` is a calendar month (28 to 31 days), `"1y"` a calendar year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    Millis(i64),
    Months(u32),
}

impl Span {
    pub const MINUTE: Span = Span::Millis(60_000);

    /// Parses `"90s"`, `"15m"`, `"4h"`, `"1d"`, `"1w"`, `"1mo"`, `"1y"`.
    pub fn parse(text: &str) -> Result<Span, String> {
        let text = text.trim();
        let digits = text.chars().take_while(|c| c.is_ascii_digit()).count();
        let (number, unit) = text.split_at(digits);
        let number: i64 = number.parse().map_err(|_| {
            format!("`{text}` is not a length of time: write a whole number and a unit, e.g. \"15m\", \"4h\", \"1d\", \"1mo\"")
        })?;
        if number <= 0 {
            return Err(format!("`{text}`: the length must be at least 1"));
        }
        let ms =
            |unit_ms: i64| number.checked_mul(unit_ms).map(Span::Millis).ok_or_else(|| format!("`{text}` is too long"));
        match unit.trim() {
            "ms" => ms(1),
            "s" | "sec" => ms(1_000),
            "m" | "min" => ms(60_000),
            "h" => ms(3_600_000),
            "d" => ms(86_400_000),
            "w" => ms(7 * 86_400_000),
            "mo" | "mon" => Ok(Span::Months(number as u32)),
            "y" => Ok(Span::Months(12 * number as u32)),
            other => {
                Err(format!("`{text}`: unknown unit `{other}`; use s, m (minutes), h, d, w, mo (calendar months) or y"))
            }
        }
    }

    /// The length in ms, for fixed spans; a calendar span has none.
    pub fn fixed_ms(self) -> Option<i64> {
        match self {
            Span::Millis(ms) => Some(ms),
            Span::Months(_) => None,
        }
    }

    /// `t + self` (calendar arithmetic in UTC for months; the day is clamped: Jan 31 + 1mo = Feb 28/29).
    pub fn add_to(self, t: i64) -> i64 {
        match self {
            Span::Millis(ms) => t + ms,
            Span::Months(n) => shift_months(t, n as i32),
        }
    }

    /// `t - self`.
    pub fn sub_from(self, t: i64) -> i64 {
        match self {
            Span::Millis(ms) => t - ms,
            Span::Months(n) => shift_months(t, -(n as i32)),
        }
    }

    /// The start of the grid slot holding `t`: fixed spans count from the epoch (so "1d" slots
    /// start at 00:00 UTC and "1w" slots on Mondays), month spans from January 1970.
    pub fn slot_start(self, t: i64) -> i64 {
        match self {
            Span::Millis(ms) if ms % (7 * 86_400_000) == 0 => {
                // The epoch was a Thursday: weeks start 3 days later, on Monday.
                let monday = 3 * 86_400_000;
                (t - monday).div_euclid(ms) * ms + monday
            }
            Span::Millis(ms) => t.div_euclid(ms) * ms,
            Span::Months(n) => {
                let Some(dt) = DateTime::<Utc>::from_timestamp_millis(t) else { return t };
                let months = (dt.year() as i64 - 1970) * 12 + dt.month0() as i64;
                let slot = months.div_euclid(n as i64) * n as i64;
                let (year, month0) = (1970 + slot.div_euclid(12), slot.rem_euclid(12));
                NaiveDate::from_ymd_opt(year as i32, month0 as u32 + 1, 1)
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|d| d.and_utc().timestamp_millis())
                    .unwrap_or(t)
            }
        }
    }

    /// A short label for column names: `15m`, `4h`, `1d`, `1w`, `1mo`.
    pub fn label(self) -> String {
        match self {
            Span::Months(n) if n % 12 == 0 => format!("{}y", n / 12),
            Span::Months(n) => format!("{n}mo"),
            Span::Millis(ms) => {
                for (unit, size) in
                    [("w", 7 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)]
                {
                    if ms % size == 0 {
                        return format!("{}{unit}", ms / size);
                    }
                }
                format!("{ms}ms")
            }
        }
    }
}

fn shift_months(t: i64, months: i32) -> i64 {
    let Some(dt) = DateTime::<Utc>::from_timestamp_millis(t) else { return t };
    let shifted = if months >= 0 {
        dt.checked_add_months(Months::new(months as u32))
    } else {
        dt.checked_sub_months(Months::new(months.unsigned_abs()))
    };
    shifted.map(|d| d.timestamp_millis()).unwrap_or(t)
}

/// A window or horizon: a number of bars (`15`), or a length of time (`"15m"`, `"4h"`, `"1d"`)
/// turned into bars on the input's grid. Column names say which: `ret_15` is 15 bars, `ret_15m`
/// 15 minutes, whatever the grid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Window {
    Bars(u32),
    Time(String),
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Window, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Window;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a whole number of bars >= 1, or a length of time such as \"15m\", \"4h\", \"1d\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Window, E> {
                match u32::try_from(v) {
                    Ok(n) if n >= 1 => Ok(Window::Bars(n)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Window, E> {
                match u64::try_from(v) {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Window, E> {
                match Span::parse(v) {
                    Ok(Span::Millis(_)) => Ok(Window::Time(v.trim().to_string())),
                    Ok(Span::Months(_)) => Err(E::custom(format!(
                        "`{v}`: a calendar month has no fixed number of bars; write the window in bars"
                    ))),
                    Err(e) => Err(E::custom(e)),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Window {
    /// The suffix of column names: `15` (bars) or `15m` (time).
    pub fn label(&self) -> String {
        match self {
            Window::Bars(n) => n.to_string(),
            Window::Time(text) => Span::parse(text).map(Span::label).unwrap_or_else(|_| text.clone()),
        }
    }

    /// The window in bars on a grid of `step_ms` (`None`: the input is not a regular grid). A
    /// length of time must be a whole number of steps.
    pub fn bars(&self, step_ms: Option<i64>) -> Result<usize, String> {
        match self {
            Window::Bars(n) => Ok(*n as usize),
            Window::Time(text) => {
                let ms = Span::parse(text)?.fixed_ms().ok_or_else(|| format!("`{text}` is not a fixed length"))?;
                let step = step_ms.ok_or_else(|| {
                    format!("`{text}` needs a regular time grid to count bars; put align_utc before this stage, or write the window in bars")
                })?;
                if ms % step != 0 || ms < step {
                    return Err(format!(
                        "`{text}` is not a whole number of {} bars; write a multiple of the grid step, or the window in bars",
                        Span::Millis(step).label()
                    ));
                }
                Ok((ms / step) as usize)
            }
        }
    }
}

/// The step of a regular grid: every gap between neighbouring times is the same (`None` when
/// they differ or there are fewer than two rows). Calendar grids (months) have no fixed step.
pub fn regular_step(times: &[i64]) -> Option<i64> {
    let step = times.get(1)? - times.first()?;
    (step > 0 && times.windows(2).all(|w| w[1] - w[0] == step)).then_some(step)
}

/// A parsed text time: an instant, or a calendar date with no time of day (whose instant depends
/// on what the source means by it: the start of that day, or its end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextTime {
    Instant(i64),
    Date(NaiveDate),
}

impl TextTime {
    /// The instant; a bare date is the start of the day in `zone`, or its end (the next midnight)
    /// when `date_is_end` (a close-stamped bar, a news date known by the end of the day).
    pub fn resolve(self, zone: Tz, date_is_end: bool) -> Result<i64, String> {
        match self {
            TextTime::Instant(ms) => Ok(ms),
            TextTime::Date(date) => {
                let day = if date_is_end { date.succ_opt().ok_or("date out of range")? } else { date };
                local_to_ms(day.and_hms_opt(0, 0, 0).expect("midnight exists"), zone)
            }
        }
    }
}

/// Parses a text time with an explicit strftime-style format (`%d.%m.%Y %H:%M:%S%.3f`). A
/// format with an offset (`%z`, `%:z`) gives an instant checked against `zone`; one without a
/// time of day gives a date.
pub fn parse_with_format(text: &str, format: &str, zone: Tz) -> Result<TextTime, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty timestamp".into());
    }
    if format.contains("%z") || format.contains("%:z") || format.contains("%#z") {
        return DateTime::parse_from_str(text, format)
            .map_err(|e| format!("`{text}` does not match timestamp_format `{format}` ({e})"))
            .and_then(|parsed| check_offset(parsed, zone))
            .map(TextTime::Instant);
    }
    match NaiveDateTime::parse_from_str(text, format) {
        Ok(naive) => local_to_ms(naive, zone).map(TextTime::Instant),
        Err(first) => match NaiveDate::parse_from_str(text, format) {
            Ok(date) => Ok(TextTime::Date(date)),
            Err(_) => Err(format!("`{text}` does not match timestamp_format `{format}` ({first})")),
        },
    }
}

/// Like [`parse_text_ms`], but a bare date stays a date.
pub fn parse_text_time(text: &str, zone: Tz, unit: EpochUnit) -> Result<TextTime, String> {
    let trimmed = text.trim();
    if let Ok(date) = NaiveDate::parse_from_str(trimmed, "%Y-%m-%d") {
        return Ok(TextTime::Date(date));
    }
    parse_text_ms(text, zone, unit).map(TextTime::Instant)
}

/// What a value that no reader took looks like, as a hint: a day-first or month-first date
/// (and which, when some value in the column tells), a header row read as data.
pub fn timestamp_hint(value: &str, column: &[&str]) -> String {
    let value = value.trim();
    let shape = |v: &str| -> Option<(u32, u32, char)> {
        // d?d SEP d?d SEP yyyy ...
        let mut parts = v.splitn(3, ['.', '/', '-']);
        let a: u32 = parts.next()?.parse().ok()?;
        let sep = v.chars().find(|c| matches!(c, '.' | '/' | '-'))?;
        let b: u32 = parts.next()?.parse().ok()?;
        let rest = parts.next()?;
        let year = rest.get(..4)?;
        if year.chars().all(|c| c.is_ascii_digit()) && a <= 31 && b <= 31 { Some((a, b, sep)) } else { None }
    };
    if let Some((_, _, sep)) = shape(value) {
        let time_part = value.split_once(' ').map(|(_, t)| t).unwrap_or("");
        let time_format = match time_part.len() {
            0 => "",
            5 => " %H:%M",
            8 => " %H:%M:%S",
            _ => " %H:%M:%S%.f",
        };
        let day_first = column.iter().filter_map(|v| shape(v)).any(|(a, _, _)| a > 12);
        let month_first = column.iter().filter_map(|v| shape(v)).any(|(_, b, _)| b > 12);
        let day = format!("%d{sep}%m{sep}%Y{time_format}");
        let month = format!("%m{sep}%d{sep}%Y{time_format}");
        return match (day_first, month_first) {
            (true, false) => format!(
                "the dates are day-first (a first number above 12 is seen): set params.timestamp_format = \"{day}\""
            ),
            (false, true) => format!(
                "the dates are month-first (a second number above 12 is seen): set params.timestamp_format = \"{month}\""
            ),
            _ => format!(
                "the date is day-first or month-first and no value tells which: set params.timestamp_format = \"{day}\" (day first) or \"{month}\" (month first)"
            ),
        };
    }
    if !value.is_empty() && value.chars().all(|c| c.is_alphabetic() || c == '_' || c == ' ') {
        return "this looks like a header row read as data: set params.has_header = true".into();
    }
    "declare params.timestamp_format (strftime, e.g. \"%d.%m.%Y %H:%M:%S\"), params.timestamp_unit or params.timezone, or map another column as timestamp".into()
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
