//! `dag` and `tasks`.

use std::process::ExitCode;

use super::args::{DagArgs, DagFormat, TasksArgs};
use super::{CliError, CliResult, load_graph, table};
use crate::diag::did_you_mean;
use crate::stage::{Registry, Task};

pub fn dag(args: DagArgs, registry: &Registry) -> CliResult {
    let graph = load_graph(&args.pipeline, registry)?;
    let mut out = String::new();
    match args.format {
        DagFormat::Text => {
            for &idx in &graph.order {
                let node = &graph.nodes[idx];
                let inputs: Vec<String> =
                    node.inputs.iter().map(|i| format!("{}.{}", graph.nodes[i.producer].name, i.output)).collect();
                let outputs: Vec<String> = node.outputs.iter().map(|o| format!("{}:{}", o.name, o.kind)).collect();
                out.push_str(&format!("{} ({})", node.name, node.task.name()));
                if !inputs.is_empty() {
                    out.push_str(&format!(" <- {}", inputs.join(", ")));
                }
                out.push_str(&format!(" -> {}\n", outputs.join(", ")));
            }
        }
        DagFormat::Dot => {
            out.push_str(&format!("digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box];\n", graph.spec.name));
            for &idx in &graph.order {
                let node = &graph.nodes[idx];
                out.push_str(&format!(
                    "  n{idx} [label=\"{}\\n({})\"];\n",
                    node.name.replace('"', "\\\""),
                    node.task.name()
                ));
            }
            for &idx in &graph.order {
                for input in &graph.nodes[idx].inputs {
                    out.push_str(&format!("  n{} -> n{idx} [label=\"{}\"];\n", input.producer, input.output));
                }
            }
            out.push_str("}\n");
        }
        DagFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            for &idx in &graph.order {
                let node = &graph.nodes[idx];
                out.push_str(&format!(
                    "  n{idx}[\"{}<br/>({})\"]\n",
                    node.name.replace('"', "#quot;"),
                    node.task.name()
                ));
            }
            for &idx in &graph.order {
                for input in &graph.nodes[idx].inputs {
                    out.push_str(&format!("  n{} -->|{}| n{idx}\n", input.producer, input.output));
                }
            }
        }
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// One documented param, read from the params struct's JSON schema.
pub struct ParamDoc {
    pub name: String,
    pub ty: String,
    pub default: String,
    pub doc: String,
}

fn schema_type(schema: &serde_json::Value, root: &serde_json::Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(|r| r.as_str()) {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        let target = root.get("$defs").and_then(|d| d.get(name));
        if let Some(values) = target.and_then(|t| t.get("enum")).and_then(|e| e.as_array()) {
            let names: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            return names.join(" | ");
        }
        if let Some(one_of) = target.and_then(|t| t.get("oneOf")).and_then(|e| e.as_array()) {
            let mut names: Vec<String> = Vec::new();
            for variant in one_of {
                if let Some(value) = variant.get("const") {
                    names.push(value.to_string());
                }
                if let Some(values) = variant.get("enum").and_then(|e| e.as_array()) {
                    names.extend(values.iter().map(|v| v.to_string()));
                }
            }
            if !names.is_empty() {
                return names.join(" | ");
            }
        }
        // An untagged enum (a window: bars or a length of time) reads as its alternatives.
        if let Some(target) = target
            && (target.get("anyOf").is_some() || target.get("type").is_some())
        {
            return schema_type(target, root);
        }
        return name.to_string();
    }
    if let Some(any_of) = schema.get("anyOf").and_then(|a| a.as_array()) {
        let parts: Vec<String> = any_of.iter().map(|s| schema_type(s, root)).collect();
        return parts.join(" | ");
    }
    let base = match schema.get("type") {
        Some(serde_json::Value::String(t)) => t.clone(),
        Some(serde_json::Value::Array(types)) => {
            types.iter().filter_map(|t| t.as_str()).collect::<Vec<_>>().join(" | ")
        }
        _ => "any".into(),
    };
    if base == "array"
        && let Some(items) = schema.get("items")
    {
        return format!("array of {}", schema_type(items, root));
    }
    if base == "object"
        && let Some(values) = schema.get("additionalProperties")
        && values.is_object()
    {
        return format!("table of {}", schema_type(values, root));
    }
    base
}

pub fn param_docs(task: &dyn Task) -> Vec<ParamDoc> {
    let schema = task.params_schema();
    let required: Vec<&str> = schema
        .get("required")
        .and_then(|r| r.as_array())
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, prop)| ParamDoc {
            name: name.clone(),
            ty: schema_type(prop, &schema),
            default: match prop.get("default") {
                Some(value) => value.to_string(),
                None if required.contains(&name.as_str()) => "required".into(),
                None => "-".into(),
            },
            doc: prop.get("description").and_then(|d| d.as_str()).unwrap_or("").replace('\n', " "),
        })
        .collect()
}

fn summary(doc: &str) -> &str {
    doc.lines().next().unwrap_or("").trim()
}

pub fn tasks(args: TasksArgs, registry: &Registry) -> CliResult {
    let mut tasks: Vec<_> = registry.tasks().cloned().collect();
    tasks.sort_by_key(|t| t.name());
    if args.markdown {
        let mut out =
            String::from("# Stage reference\n\nGenerated by `pipeline tasks --markdown`; do not edit by hand.\n\n");
        for task in tasks.iter().filter(|t| args.kind.as_deref().is_none_or(|k| k == t.name())) {
            out.push_str(&format!("## `{}` (version {})\n\n{}\n\n", task.name(), task.version(), task.doc().trim()));
            out.push_str("| param | type | default | meaning |\n| --- | --- | --- | --- |\n");
            for p in param_docs(task.as_ref()) {
                let default = if p.default == "required" { "required".to_string() } else { format!("`{}`", p.default) };
                out.push_str(&format!(
                    "| `{}` | {} | {} | {} |\n",
                    p.name,
                    p.ty.replace('|', "\\|"),
                    default.replace('|', "\\|"),
                    p.doc
                ));
            }
            out.push_str(&format!("\nExample:\n\n```toml\n{}\n```\n\n", task.example().trim()));
        }
        print!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    match args.kind {
        None => {
            let rows: Vec<Vec<String>> = tasks
                .iter()
                .map(|t| vec![t.name().to_string(), format!("v{}", t.version()), summary(t.doc()).to_string()])
                .collect();
            print!("{}", table(&rows));
            println!("\n`pipeline tasks KIND` documents one kind: its params, types, defaults and an example");
        }
        Some(kind) => {
            let Some(task) = registry.get(&kind) else {
                let mut message = format!("no task kind `{kind}` in this build");
                if let Some(reason) = registry.unavailable_reason(&kind) {
                    message = format!("task `{kind}` is not available in this build\nhint: {reason}");
                } else if let Some(hint) = did_you_mean(&kind, registry.names()) {
                    message.push_str(&format!("\nhint: {hint}"));
                }
                return Err(CliError::usage(message));
            };
            println!("{} (version {})\n\n{}\n", task.name(), task.version(), task.doc().trim());
            let mut rows = vec![vec!["param".into(), "type".into(), "default".into(), "meaning".into()]];
            for p in param_docs(task.as_ref()) {
                rows.push(vec![p.name, p.ty, p.default, p.doc]);
            }
            println!("params:");
            print!("{}", table(&rows));
            println!("\nexample:\n{}", task.example().trim());
        }
    }
    Ok(ExitCode::SUCCESS)
}
