//! File readers shared by the ingest stages.

use std::path::Path;

use anyhow::{Context, Result};
use polars::prelude::*;

/// Reads a delimited file with every column as text: numbers and times are parsed by the
/// caller, so that a bad value is reported with its row and column instead of becoming null.
pub fn read_csv_as_text(path: &Path, has_header: bool, separator: u8) -> Result<DataFrame> {
    CsvReadOptions::default()
        .with_has_header(has_header)
        .with_infer_schema_length(Some(0))
        .with_parse_options(CsvParseOptions::default().with_separator(separator))
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .and_then(|r| r.finish())
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot read CSV file {}", path.display()))
}

/// Reads a JSON array of objects (`lines = false`) or one object per line (`lines = true`).
pub fn read_json(path: &Path, lines: bool) -> Result<DataFrame> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let format = if lines { JsonFormat::JsonLines } else { JsonFormat::Json };
    JsonReader::new(file)
        .with_json_format(format)
        .finish()
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot read JSON from {}", path.display()))
}

/// Reads one Markdown item with YAML front matter (a Jekyll post): the `---` block at the top is
/// parsed with a YAML parser (folded and multi-line scalars, quotes, escapes), and every key
/// becomes a text column (lists joined by ", "); `body` holds the text after the front matter.
/// One row. A file without front matter, or with YAML that does not parse, is an error that
/// names the file and the line.
pub fn read_markdown_item(path: &Path) -> Result<DataFrame> {
    use serde_yaml_ng::Value as Yaml;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines = text.split_inclusive('\n');
    if lines.next().map(str::trim_end) != Some("---") {
        anyhow::bail!("{}:1: no YAML front matter (the file must start with a `---` line)", path.display());
    }
    let mut front = String::new();
    let mut closed = false;
    for line in lines.by_ref() {
        if line.trim_end() == "---" {
            closed = true;
            break;
        }
        front.push_str(line);
    }
    if !closed {
        anyhow::bail!("{}: the front matter opened on line 1 is never closed with `---`", path.display());
    }
    let body: String = lines.collect();
    let doc: Yaml = serde_yaml_ng::from_str(&front).map_err(|e| {
        // Lines count from the start of the front matter, after the opening `---` (line 1).
        let line = e.location().map_or(String::new(), |l| format!("{}:", l.line() + 1));
        anyhow::anyhow!("{}:{line} front matter is not valid YAML: {e}", path.display())
    })?;
    let Yaml::Mapping(map) = doc else {
        anyhow::bail!("{}: the front matter is not a `key: value` map", path.display());
    };
    fn scalar(value: &Yaml) -> Option<String> {
        match value {
            Yaml::String(s) => Some(s.clone()),
            Yaml::Number(n) => Some(n.to_string()),
            Yaml::Bool(b) => Some(b.to_string()),
            Yaml::Sequence(items) => Some(items.iter().filter_map(scalar).collect::<Vec<_>>().join(", ")),
            Yaml::Tagged(tagged) => scalar(&tagged.value),
            _ => None,
        }
    }
    let mut columns: Vec<Column> = Vec::new();
    for (key, value) in &map {
        let Some(name) = scalar(key) else { continue };
        if name == "body" || name == "file" || columns.iter().any(|c| c.name().as_str() == name) {
            continue;
        }
        columns.push(Series::new(name.into(), [scalar(value)]).into());
    }
    columns.push(Series::new("body".into(), [body.trim().to_string()]).into());
    columns.push(Series::new("file".into(), [path.display().to_string()]).into());
    Ok(DataFrame::new(1, columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_front_matter_is_yaml_not_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("post.md");
        std::fs::write(
            &path,
            "---\nlayout: post\ntitle:  \"Say \\\"hi\\\" to BTC\"\ndescription: >\n  folded over\n  two lines: with a colon\ndate: \"2023-03-11 05:08:35\"\nscore: 32\ntags: ['a', 'b']\n---\n\nBody text.\n\n---\nafter a rule\n",
        )
        .unwrap();
        let df = read_markdown_item(&path).unwrap();
        let get = |c: &str| df.column(c).unwrap().str().unwrap().get(0).unwrap().to_string();
        assert_eq!(get("title"), "Say \"hi\" to BTC");
        assert_eq!(get("description"), "folded over two lines: with a colon\n");
        assert_eq!(get("date"), "2023-03-11 05:08:35");
        assert_eq!(get("score"), "32");
        assert_eq!(get("tags"), "a, b");
        assert_eq!(get("body"), "Body text.\n\n---\nafter a rule");

        std::fs::write(&path, "no front matter\n").unwrap();
        assert!(read_markdown_item(&path).unwrap_err().to_string().contains("no YAML front matter"));
        std::fs::write(&path, "---\ntitle: [unclosed\n---\n").unwrap();
        let err = read_markdown_item(&path).unwrap_err().to_string();
        assert!(err.contains("not valid YAML"), "{err}");
    }
}
