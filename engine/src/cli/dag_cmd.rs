//! `dag`: the stage graph as text, Graphviz dot, Mermaid or a self-contained HTML page (SVG).
//!
//! Every format draws the same [`DagView`]: one box per node (or, with `--group`, one per stage
//! of the pipeline file, a matrix or fold stage standing for all its nodes), and one edge per
//! producer and consumer labelled with the consumer's input names (the role the data plays
//! there, `features` or `labels`, rather than the producer's output name, mostly `table`).

use std::collections::BTreeMap;
use std::process::ExitCode;

use super::CliResult;
use super::args::{DagArgs, DagFormat};
use crate::graph::Graph;
use crate::stage::Registry;

/// A box of the drawing.
struct ViewNode {
    /// The node's name, or the stage's name for a group.
    name: String,
    task: String,
    /// How many graph nodes it stands for (more than one: a grouped matrix or fold stage).
    count: usize,
    /// A group's matrix axes (`label × model × feature_set`).
    axes: Vec<String>,
    /// Ungrouped, a matrix or fold node: its stage, drawn as a frame around its nodes.
    stage: Option<String>,
    /// `name:kind` of each output.
    outputs: Vec<String>,
}

struct ViewEdge {
    from: usize,
    to: usize,
    /// The consumer's input names that this producer feeds, deduplicated.
    roles: Vec<String>,
}

struct DagView {
    nodes: Vec<ViewNode>,
    edges: Vec<ViewEdge>,
}

/// An input's role: its local name without a matrix fan-in suffix (`metrics[model=gbdt]`).
fn role(local: &str) -> String {
    local.split('[').next().unwrap_or(local).to_string()
}

fn dag_view(graph: &Graph, group: bool) -> DagView {
    let mut per_stage: BTreeMap<usize, usize> = BTreeMap::new();
    for node in &graph.nodes {
        *per_stage.entry(node.spec_index).or_default() += 1;
    }
    // Graph node -> view node.
    let mut position: Vec<usize> = vec![usize::MAX; graph.nodes.len()];
    let mut nodes: Vec<ViewNode> = Vec::new();
    let mut group_of: BTreeMap<usize, usize> = BTreeMap::new();
    for &idx in &graph.order {
        let node = &graph.nodes[idx];
        let stage = &graph.spec.stages[node.spec_index];
        let many = per_stage[&node.spec_index] > 1;
        if group && many {
            if let Some(&at) = group_of.get(&node.spec_index) {
                position[idx] = at;
                nodes[at].count += 1;
                continue;
            }
            group_of.insert(node.spec_index, nodes.len());
            position[idx] = nodes.len();
            nodes.push(ViewNode {
                name: stage.name.clone(),
                task: node.task.name().to_string(),
                count: 1,
                axes: node.matrix.iter().map(|(axis, _)| axis.clone()).collect(),
                stage: None,
                outputs: node.outputs.iter().map(|o| format!("{}:{}", o.name, o.kind)).collect(),
            });
        } else {
            position[idx] = nodes.len();
            nodes.push(ViewNode {
                name: node.name.clone(),
                task: node.task.name().to_string(),
                count: 1,
                axes: Vec::new(),
                stage: many.then(|| stage.name.clone()),
                outputs: node.outputs.iter().map(|o| format!("{}:{}", o.name, o.kind)).collect(),
            });
        }
    }
    let mut edges: BTreeMap<(usize, usize), Vec<String>> = BTreeMap::new();
    for &idx in &graph.order {
        for input in &graph.nodes[idx].inputs {
            let roles = edges.entry((position[input.producer], position[idx])).or_default();
            let role = role(&input.local);
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
    }
    let edges = edges.into_iter().map(|((from, to), roles)| ViewEdge { from, to, roles }).collect();
    DagView { nodes, edges }
}

pub fn dag(args: DagArgs, registry: &Registry) -> CliResult {
    let graph = super::load_graph(&args.pipeline, registry)?;
    let view = dag_view(&graph, args.group);
    let out = match args.format {
        DagFormat::Text => text(&view),
        DagFormat::Dot => dot(&view, &graph.spec.name),
        DagFormat::Mermaid => mermaid(&view),
        DagFormat::Html => html(&view, &graph.spec.name, &graph.spec.description),
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn title(node: &ViewNode) -> String {
    if node.count > 1 { format!("{} ×{}", node.name, node.count) } else { node.name.clone() }
}

fn subtitle(node: &ViewNode) -> String {
    if node.axes.is_empty() { node.task.clone() } else { format!("{} over {}", node.task, node.axes.join(" × ")) }
}

fn text(view: &DagView) -> String {
    let mut out = String::new();
    for (i, node) in view.nodes.iter().enumerate() {
        out.push_str(&format!("{} ({})", title(node), subtitle(node)));
        let inputs: Vec<String> = view
            .edges
            .iter()
            .filter(|e| e.to == i)
            .map(|e| {
                let producer = title(&view.nodes[e.from]);
                match e.roles.as_slice() {
                    [only] if *only == view.nodes[e.from].name => producer,
                    roles => format!("{}={producer}", roles.join(",")),
                }
            })
            .collect();
        if !inputs.is_empty() {
            out.push_str(&format!(" <- {}", inputs.join("; ")));
        }
        out.push_str(&format!(" -> {}\n", node.outputs.join(", ")));
    }
    out
}

/// Matrix or fold nodes by stage, in first-appearance order (ungrouped views only).
fn frames(view: &DagView) -> Vec<(String, Vec<usize>)> {
    let mut frames: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, node) in view.nodes.iter().enumerate() {
        if let Some(stage) = &node.stage {
            match frames.iter_mut().find(|(s, _)| s == stage) {
                Some((_, members)) => members.push(i),
                None => frames.push((stage.clone(), vec![i])),
            }
        }
    }
    frames
}

fn dot(view: &DagView, name: &str) -> String {
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box];\n", quote(name));
    let line =
        |i: usize, node: &ViewNode| format!("n{i} [label=\"{}\\n({})\"];", quote(&title(node)), quote(&subtitle(node)));
    let framed = frames(view);
    for (k, (stage, members)) in framed.iter().enumerate() {
        out.push_str(&format!("  subgraph cluster_{k} {{\n    label=\"{}\";\n    style=dashed;\n", quote(stage)));
        for &i in members {
            out.push_str(&format!("    {}\n", line(i, &view.nodes[i])));
        }
        out.push_str("  }\n");
    }
    for (i, node) in view.nodes.iter().enumerate().filter(|(_, n)| n.stage.is_none()) {
        out.push_str(&format!("  {}\n", line(i, node)));
    }
    for edge in &view.edges {
        out.push_str(&format!("  n{} -> n{} [label=\"{}\"];\n", edge.from, edge.to, quote(&edge.roles.join(", "))));
    }
    out.push_str("}\n");
    out
}

fn mermaid(view: &DagView) -> String {
    let quote = |s: &str| s.replace('"', "#quot;");
    let mut out = String::from("flowchart LR\n");
    let line =
        |i: usize, node: &ViewNode| format!("n{i}[\"{}<br/>({})\"]", quote(&title(node)), quote(&subtitle(node)));
    for (k, (stage, members)) in frames(view).iter().enumerate() {
        out.push_str(&format!("  subgraph g{k}[\"{}\"]\n", quote(stage)));
        for &i in members {
            out.push_str(&format!("    {}\n", line(i, &view.nodes[i])));
        }
        out.push_str("  end\n");
    }
    for (i, node) in view.nodes.iter().enumerate().filter(|(_, n)| n.stage.is_none()) {
        out.push_str(&format!("  {}\n", line(i, node)));
    }
    for edge in &view.edges {
        out.push_str(&format!("  n{} -->|{}| n{}\n", edge.from, quote(&edge.roles.join(", ")), edge.to));
    }
    out
}

/// A place in a column: a box, or the waypoint of an edge that crosses the column.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Node(usize),
    /// Where the long edges of one source (node index) cross a column (layer): they run
    /// bundled until they fan out to their targets.
    Waypoint(usize, usize),
}

/// Where each box goes: a column per layer (the longest path from a source, so every edge
/// points right), an edge that spans several columns passing through a waypoint in each (so it
/// runs between boxes, not across them), and, within a column, an order that lowers crossings
/// (sweeps of the barycenter heuristic of Sugiyama et al.). Written here because no maintained
/// Rust crate lays out a layered graph with frames around groups into plain SVG.
fn layout(view: &DagView) -> (Vec<usize>, Vec<Vec<Slot>>) {
    let n = view.nodes.len();
    let mut layer = vec![0usize; n];
    // View nodes are in topological order (they follow the graph's order), so one pass does.
    for to in 0..n {
        for edge in view.edges.iter().filter(|e| e.to == to) {
            layer[to] = layer[to].max(layer[edge.from] + 1);
        }
    }
    let depth = layer.iter().copied().max().map_or(0, |d| d + 1);
    let mut columns: Vec<Vec<Slot>> = vec![Vec::new(); depth];
    for (i, &l) in layer.iter().enumerate() {
        columns[l].push(Slot::Node(i));
    }
    // Each edge as a chain of slots, one per column it touches.
    let mut chains: Vec<Vec<(usize, Slot)>> = Vec::new();
    for edge in &view.edges {
        let mut chain = vec![(layer[edge.from], Slot::Node(edge.from))];
        let (first, last) = (layer[edge.from] + 1, layer[edge.to]);
        for (l, column) in columns.iter_mut().enumerate().take(last).skip(first) {
            let waypoint = Slot::Waypoint(edge.from, l);
            if !column.contains(&waypoint) {
                column.push(waypoint);
            }
            chain.push((l, waypoint));
        }
        chain.push((layer[edge.to], Slot::Node(edge.to)));
        chains.push(chain);
    }
    let frame = |slot: Slot| match slot {
        Slot::Node(i) => view.nodes[i].stage.clone(),
        Slot::Waypoint(..) => None,
    };
    for sweep in 0..8 {
        let mut rank: BTreeMap<(usize, Slot), f64> = BTreeMap::new();
        for (l, column) in columns.iter().enumerate() {
            for (r, &slot) in column.iter().enumerate() {
                rank.insert((l, slot), r as f64);
            }
        }
        let forward = sweep % 2 == 0;
        for (l, column) in columns.iter_mut().enumerate() {
            let mut keyed: Vec<(f64, usize, Slot)> = column
                .iter()
                .enumerate()
                .map(|(r, &slot)| {
                    let mut neighbours: Vec<f64> = Vec::new();
                    for chain in &chains {
                        for pair in chain.windows(2) {
                            let (a, b) = (pair[0], pair[1]);
                            if forward && b == (l, slot) {
                                neighbours.push(rank[&a]);
                            } else if !forward && a == (l, slot) {
                                neighbours.push(rank[&b]);
                            }
                        }
                    }
                    let key = if neighbours.is_empty() {
                        r as f64
                    } else {
                        neighbours.iter().sum::<f64>() / neighbours.len() as f64
                    };
                    (key, r, slot)
                })
                .collect();
            // Members of one frame stay together, in their own order: a frame sorts by its
            // members' mean key (one key per frame keeps the order total).
            let mut frame_keys: BTreeMap<String, (f64, usize)> = BTreeMap::new();
            for (key, _, slot) in &keyed {
                if let Some(name) = frame(*slot) {
                    let entry = frame_keys.entry(name).or_insert((0.0, 0));
                    entry.0 += key;
                    entry.1 += 1;
                }
            }
            let sort_key = |(key, r, slot): &(f64, usize, Slot)| match frame(*slot) {
                Some(name) => {
                    let (sum, count) = frame_keys[&name];
                    (sum / count as f64, name, *r)
                }
                None => (*key, String::new(), *r),
            };
            keyed.sort_by(|a, b| {
                let (ka, na, ra) = sort_key(a);
                let (kb, nb, rb) = sort_key(b);
                ka.total_cmp(&kb).then(na.cmp(&nb)).then(ra.cmp(&rb))
            });
            *column = keyed.into_iter().map(|(_, _, slot)| slot).collect();
        }
    }
    (layer, columns)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn html(view: &DagView, name: &str, description: &str) -> String {
    const CHAR: f64 = 7.0;
    const BOX_H: f64 = 44.0;
    const ROW: f64 = 62.0;
    const GAP: f64 = 150.0;
    let (layers, columns) = layout(view);
    let width_of = |i: usize| {
        let node = &view.nodes[i];
        (title(node).chars().count().max(subtitle(node).chars().count()) as f64 * CHAR + 20.0).max(90.0)
    };
    // Top-left corner and width of each box; each waypoint's height and its column's span.
    let (mut x, mut y, mut w) = (vec![0.0; view.nodes.len()], vec![0.0; view.nodes.len()], vec![0.0; view.nodes.len()]);
    let mut waypoints: BTreeMap<(usize, usize), (f64, f64, f64)> = BTreeMap::new();
    let tallest = columns.iter().map(|c| c.len()).max().unwrap_or(0) as f64 * ROW;
    let mut left = 30.0;
    for column in &columns {
        let column_width = column
            .iter()
            .map(|slot| match *slot {
                Slot::Node(i) => width_of(i),
                Slot::Waypoint(..) => 0.0,
            })
            .fold(40.0, f64::max);
        let top = 60.0 + (tallest - column.len() as f64 * ROW) / 2.0;
        for (r, slot) in column.iter().enumerate() {
            match *slot {
                Slot::Node(i) => {
                    x[i] = left;
                    y[i] = top + r as f64 * ROW;
                    w[i] = column_width;
                }
                Slot::Waypoint(source, l) => {
                    waypoints.insert((source, l), (left, left + column_width, top + r as f64 * ROW + BOX_H / 2.0));
                }
            }
        }
        left += column_width + GAP;
    }
    // Each edge's points: out of its source, through its waypoints, into its target.
    let path_of = |e: usize| -> Vec<(f64, f64, f64)> {
        let edge = &view.edges[e];
        let mut points: Vec<(f64, f64, f64)> = waypoints
            .range((edge.from, 0)..(edge.from, usize::MAX))
            .filter(|((_, l), _)| *l < layers[edge.to])
            .map(|(_, &(a, b, h))| (a, b, h))
            .collect();
        let start = x[edge.from] + w[edge.from];
        points.insert(0, (start, start, y[edge.from] + BOX_H / 2.0));
        points.push((x[edge.to], x[edge.to], y[edge.to] + BOX_H / 2.0));
        points
    };
    // Ports: the edges leaving (entering) a box spread along its right (left) side, in the
    // order of where they go (come from), so that their labels do not sit on each other.
    let mut out_port = vec![0.0; view.edges.len()];
    let mut in_port = vec![0.0; view.edges.len()];
    for (i, &top) in y.iter().enumerate() {
        for (outgoing, ports) in [(true, &mut out_port), (false, &mut in_port)] {
            let mut ends: Vec<(f64, usize)> = (0..view.edges.len())
                .filter(|&e| if outgoing { view.edges[e].from == i } else { view.edges[e].to == i })
                .map(|e| {
                    let points = path_of(e);
                    (if outgoing { points[1].2 } else { points[points.len() - 2].2 }, e)
                })
                .collect();
            ends.sort_by(|a, b| a.0.total_cmp(&b.0));
            let m = ends.len() as f64;
            for (k, &(_, e)) in ends.iter().enumerate() {
                ports[e] = top + BOX_H * (k as f64 + 1.0) / (m + 1.0);
            }
        }
    }
    let (width, height) = (left - GAP + 60.0, tallest + 100.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" aria-label=\"stage graph of {}\">\n",
        escape(name)
    );
    svg.push_str("<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#667\"/></marker></defs>\n");
    for (stage, members) in frames(view) {
        let top = members.iter().map(|&i| y[i]).fold(f64::INFINITY, f64::min) - 22.0;
        let bottom = members.iter().map(|&i| y[i] + BOX_H).fold(0.0, f64::max) + 8.0;
        let lo = members.iter().map(|&i| x[i]).fold(f64::INFINITY, f64::min) - 8.0;
        let hi = members.iter().map(|&i| x[i] + w[i]).fold(0.0, f64::max) + 8.0;
        svg.push_str(&format!(
            "<g class=\"frame\"><rect x=\"{lo:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"8\" fill=\"#f4f6fb\" stroke=\"#99a\" stroke-dasharray=\"5 4\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"frame-label\">{} ×{}</text></g>\n",
            hi - lo,
            bottom - top,
            lo + 8.0,
            top + 15.0,
            escape(&stage),
            members.len()
        ));
    }
    let mut labelled: std::collections::BTreeSet<(usize, String)> = std::collections::BTreeSet::new();
    for (e, edge) in view.edges.iter().enumerate() {
        let mut points = path_of(e);
        points[0].2 = out_port[e];
        let last = points.len() - 1;
        points[last].2 = in_port[e];
        // A curve from each point's right end to the next one's left end; straight through a
        // waypoint's column.
        let mut d = format!("M{:.1},{:.1}", points[0].1, points[0].2);
        for pair in points.windows(2) {
            let ((_, x1, y1), (x2, x3, y2)) = (pair[0], pair[1]);
            let bend = (x2 - x1) / 2.0;
            d.push_str(&format!(" C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}", x1 + bend, x2 - bend));
            if x3 > x2 {
                d.push_str(&format!(" L{x3:.1},{y2:.1}"));
            }
        }
        let label = edge.roles.join(", ");
        // Many edges into one box with the same roles (a fan-in) are labelled once.
        let text = if labelled.insert((edge.to, label.clone())) {
            format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" class=\"role\">{}</text>",
                points[last].0 - 9.0,
                points[last].2 - 2.0,
                escape(&label)
            )
        } else {
            String::new()
        };
        svg.push_str(&format!(
            "<g class=\"edge\"><title>{} → {}: {}</title><path d=\"{d}\" fill=\"none\" stroke=\"#667\" stroke-width=\"1.2\" marker-end=\"url(#arrow)\"/>{text}</g>\n",
            escape(&title(&view.nodes[edge.from])),
            escape(&title(&view.nodes[edge.to])),
            escape(&label),
        ));
    }
    for (i, node) in view.nodes.iter().enumerate() {
        svg.push_str(&format!(
            "<g class=\"node\"><title>{}</title><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{BOX_H}\" rx=\"5\" fill=\"#fff\" stroke=\"#334\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"name\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" class=\"task\">{}</text></g>\n",
            escape(&node.name),
            x[i],
            y[i],
            w[i],
            x[i] + 10.0,
            y[i] + 18.0,
            escape(&title(node)),
            x[i] + 10.0,
            y[i] + 34.0,
            escape(&subtitle(node))
        ));
    }
    svg.push_str("</svg>\n");
    let stages = view.nodes.len();
    let nodes: usize = view.nodes.iter().map(|n| n.count).sum();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}: stage graph</title>\n<style>\nbody {{ font-family: system-ui, sans-serif; margin: 24px; color: #223; }}\n.name {{ font: 600 12px ui-monospace, monospace; }}\n.task {{ font: 11px ui-monospace, monospace; fill: #556; }}\n.role {{ font: 9px system-ui, sans-serif; fill: #445; text-anchor: end; paint-order: stroke; stroke: #fff; stroke-width: 3px; }}\n.frame-label {{ font: italic 11px system-ui, sans-serif; fill: #556; }}\n</style></head>\n<body>\n<h1>{title}</h1>\n<p>{description}</p>\n<p>{stages} boxes for {nodes} nodes and {edges} edges; each edge is labelled with the input it feeds. Dashed frames hold the nodes of one matrix or fold stage (<code>pipeline dag --group</code> draws each as one box).</p>\n{svg}</body></html>\n",
        title = escape(name),
        description = escape(description),
        edges = view.edges.len(),
    )
}
