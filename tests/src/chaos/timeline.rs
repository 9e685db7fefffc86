//! The timeline picture an on-call engineer reads after an incident: one lane per identity,
//! coloured by the node that signed it; faults marked where they struck (storage faults
//! as a band across every lane, faults on a standby in a lane of their own); a tick where
//! each signing span ended. Drawn with `plotters` on a bitmap.
//!
//! Text needs a TrueType font, which `plotters` (with `ab_glyph`) does not bring: the
//! first DejaVu Sans (or any `.ttf`) under the usual font directories is used, or
//! `CHAOS_FONT` names one. Without a font the picture is drawn without text.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use super::analysis::Analysis;
use super::faults::Kind;
use super::world::Outcome;

const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Registers a font for text once; whether there is one.
fn font() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let Some(path) = find_font() else {
            return false;
        };
        let Ok(bytes) = std::fs::read(&path) else {
            return false;
        };
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    })
}

fn find_font() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHAOS_FONT") {
        return Some(PathBuf::from(p));
    }
    let roots = ["/usr/share/fonts", "/usr/local/share/fonts"];
    let mut found = Vec::new();
    for root in roots {
        walk(Path::new(root), &mut found, 0);
    }
    found.sort_by_key(|p| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (name != "DejaVuSans.ttf", !name.contains("Sans"), name)
    });
    found.into_iter().next()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 4 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out, depth + 1);
        } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("ttf")) {
            out.push(p);
        }
    }
}

/// Draws `o`'s timeline into `path` (PNG), `width` × `height` pixels: the whole run, or
/// only `window` (seconds from the start), where a long run's marks would crowd.
pub fn draw(
    o: &Outcome,
    a: &Analysis,
    title: &str,
    path: &Path,
    (width, height): (u32, u32),
    window: Option<(f64, f64)>,
) -> Result<(), String> {
    let text = font();
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let end = o.teardown.max(o.started + 1);
    let whole = (end - o.started) as f64 / 1e9;
    let (x_min, x_max) = match window {
        Some((from, to)) if from < to => (from.max(0.0), to.min(whole)),
        _ => (0.0, whole),
    };
    // An interval clipped to the window, if any of it shows.
    let clip = |from: f64, to: f64| {
        (to >= x_min && from <= x_max).then(|| (from.max(x_min), to.min(x_max)))
    };
    let lanes = o.identities.len() + 1;
    let y_max = lanes as f64;
    let node_colour = |node: &str| -> RGBColor {
        match o.nodes.iter().position(|n| n == node) {
            Some(i) => PALETTE[i % PALETTE.len()],
            None => BLACK,
        }
    };
    let x = |t: u64| (t.saturating_sub(o.started)) as f64 / 1e9;
    let (plot, legend) = root.split_horizontally(width.saturating_sub(150));
    let mut builder = ChartBuilder::on(&plot);
    builder.margin(8);
    if text {
        builder
            .caption(title, ("sans-serif", 16))
            .x_label_area_size(28)
            .y_label_area_size(110);
    }
    let mut chart = builder
        .build_cartesian_2d(x_min..x_max, 0f64..y_max)
        .map_err(|e| e.to_string())?;
    if text {
        let names: Vec<String> = o
            .identities
            .iter()
            .map(|(n, _)| n.clone())
            .chain(std::iter::once("standbys".to_string()))
            .collect();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(lanes * 2 + 1)
            .y_label_formatter(&|y: &f64| {
                let lane = y.floor() as usize;
                if (y - y.floor() - 0.5).abs() < 1e-6 && lane < names.len() {
                    names[lanes - 1 - lane].clone()
                } else {
                    String::new()
                }
            })
            .x_desc("seconds")
            .draw()
            .map_err(|e| e.to_string())?;
    }
    // Lane i from the top: identity i; the bottom lane: faults on standbys.
    let lane_of = |address: &str| {
        o.identities
            .iter()
            .position(|(_, a)| a == address)
            .map(|i| (lanes - 1 - i) as f64)
    };
    // Storage faults: a band across every lane.
    for f in o.faults.iter().filter(|f| f.kind.is_storage()) {
        let to = f.cleared.max(f.at + 200_000_000);
        let Some((from, to)) = clip(x(f.at), x(to)) else {
            continue;
        };
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(from, 0.0), (to, y_max)],
                RGBColor(255, 220, 220).filled(),
            )))
            .map_err(|e| e.to_string())?;
    }
    for s in &a.spans {
        let Some(y) = lane_of(&s.identity) else {
            continue;
        };
        let Some((from, to)) = clip(x(s.start), x(s.end)) else {
            continue;
        };
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(from, y + 0.2), (to, y + 0.8)],
                node_colour(&s.node).filled(),
            )))
            .map_err(|e| e.to_string())?;
        if s.end < o.teardown && x(s.end) <= x_max {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x(s.end), y + 0.1), (x(s.end), y + 0.9)],
                    BLACK.stroke_width(1),
                )))
                .map_err(|e| e.to_string())?;
        }
    }
    for f in &o.faults {
        if f.kind.is_storage() || clip(x(f.at), x(f.at)).is_none() {
            continue;
        }
        let y = match (&f.identity, f.holder || f.kind == Kind::Break) {
            (Some(a), true) => lane_of(a).unwrap_or(0.0),
            _ => 0.0,
        };
        let colour = match f.kind {
            Kind::DaemonKill | Kind::DaemonTerm | Kind::DaemonStop => RED,
            Kind::GuardKill | Kind::GuardTerm | Kind::GuardStop => MAGENTA,
            Kind::ClientKill | Kind::ClientTerm | Kind::ClientStop => RGBColor(0, 120, 0),
            Kind::Break => BLUE,
            _ => BLACK,
        };
        chart
            .draw_series(std::iter::once(TriangleMarker::new(
                (x(f.at), y + 0.95),
                5,
                colour.filled(),
            )))
            .map_err(|e| e.to_string())?;
    }
    if text {
        let mut y = 20;
        for node in &o.nodes {
            legend
                .draw(&Rectangle::new(
                    [(4, y), (18, y + 12)],
                    node_colour(node).filled(),
                ))
                .map_err(|e| e.to_string())?;
            legend
                .draw(&Text::new(node.clone(), (24, y), ("sans-serif", 13)))
                .map_err(|e| e.to_string())?;
            y += 18;
        }
        y += 8;
        let marks: [(&str, RGBColor); 5] = [
            ("daemon fault", RED),
            ("guard fault", MAGENTA),
            ("client fault", RGBColor(0, 120, 0)),
            ("leased break", BLUE),
            ("bad config", BLACK),
        ];
        for (label, colour) in marks {
            legend
                .draw(&TriangleMarker::new((11, y + 6), 5, colour.filled()))
                .map_err(|e| e.to_string())?;
            legend
                .draw(&Text::new(label, (24, y), ("sans-serif", 13)))
                .map_err(|e| e.to_string())?;
            y += 18;
        }
        legend
            .draw(&Rectangle::new(
                [(4, y), (18, y + 12)],
                RGBColor(255, 220, 220).filled(),
            ))
            .map_err(|e| e.to_string())?;
        legend
            .draw(&Text::new("storage fault", (24, y), ("sans-serif", 13)))
            .map_err(|e| e.to_string())?;
        y += 18;
        legend
            .draw(&PathElement::new(vec![(11, y), (11, y + 12)], BLACK))
            .map_err(|e| e.to_string())?;
        legend
            .draw(&Text::new(
                "span ended (fence)",
                (24, y),
                ("sans-serif", 13),
            ))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
