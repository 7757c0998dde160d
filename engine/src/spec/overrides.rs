//! `--set path=value` overrides.

/// Splits `stages.train.params.max_depth=6` into the dotted path and a TOML value. The value is
/// read as TOML (`6`, `true`, `[1, 2]`, `"text"`); anything that is not valid TOML is taken as a
/// bare string, so `--set params.symbol=BTCUSDT` works without quotes.
pub fn parse_override(arg: &str) -> Result<(Vec<String>, toml::Value), String> {
    let Some((path, value_text)) = arg.split_once('=') else {
        return Err(format!("`--set {arg}` has no `=`; write it as `--set stages.NAME.params.KEY=VALUE`"));
    };
    let path: Vec<String> = path.trim().split('.').map(|s| s.trim().to_string()).collect();
    if path.iter().any(|s| s.is_empty()) {
        return Err(format!("`--set {arg}`: the path has an empty segment"));
    }
    let value_text = value_text.trim();
    let value = match toml::from_str::<toml::Table>(&format!("v = {value_text}")) {
        Ok(mut table) => table.remove("v").unwrap_or_else(|| toml::Value::String(value_text.to_string())),
        Err(_) => toml::Value::String(value_text.to_string()),
    };
    Ok((path, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_and_bare_strings() {
        let (path, value) = parse_override("stages.train.params.max_depth=6").unwrap();
        assert_eq!(path, ["stages", "train", "params", "max_depth"]);
        assert_eq!(value, toml::Value::Integer(6));
        assert_eq!(parse_override("params.x=true").unwrap().1, toml::Value::Boolean(true));
        assert_eq!(parse_override("params.s=BTCUSDT").unwrap().1, toml::Value::String("BTCUSDT".into()));
        assert_eq!(parse_override("params.s=\"a b\"").unwrap().1, toml::Value::String("a b".into()));
        assert!(parse_override("params.x").is_err());
        assert!(parse_override("params..x=1").is_err());
    }
}
