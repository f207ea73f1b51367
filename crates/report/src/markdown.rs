//! The report's numbers as Markdown, for a README or a pull request: per benchmark, the table
//! model × headline metric with 95 % intervals, then the paired tests. The same computation
//! as the HTML page (nothing is recomputed here); the charts, runs and training curves stay on
//! the page.

use std::fmt::Write;

use crate::Report;
use crate::evals::Estimate;

fn pct(v: f64) -> String {
    format!("{:.1}", v * 100.0)
}

fn estimate(e: &Option<Estimate>) -> String {
    match e {
        None => "–".into(),
        Some(Estimate {
            value,
            interval: Some((lo, hi)),
        }) => format!("{} [{}, {}]", pct(*value), pct(*lo), pct(*hi)),
        Some(Estimate { value, .. }) => pct(*value),
    }
}

fn p_value(p: f64) -> String {
    if p < 0.001 {
        "<0.001".into()
    } else {
        format!("{p:.3}")
    }
}

/// Escapes the characters that would break a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

impl Report {
    /// Every benchmark's table (values in %, 95 % bootstrap intervals in brackets) and paired
    /// tests (difference in points with its interval, the paired-bootstrap p-value, McNemar's
    /// exact p where the metric is pass/fail per item).
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        for b in &self.benchmarks {
            let _ = writeln!(out, "#### {}\n", b.name);
            let _ = write!(out, "| metric |");
            for m in &b.models {
                let _ = write!(out, " {} ({} items) |", cell(&m.label), m.items);
            }
            let _ = write!(out, "\n|---|");
            for _ in &b.models {
                let _ = write!(out, "---|");
            }
            out.push('\n');
            for row in &b.metrics {
                let _ = write!(out, "| {} |", cell(&row.label));
                for c in &row.cells {
                    let _ = write!(out, " {} |", estimate(c));
                }
                out.push('\n');
            }
            if !b.pairs.is_empty() {
                out.push_str(
                    "\n| compared | metric | items | difference (points) [95 %] | p (bootstrap) | McNemar: only first / only second, p |\n|---|---|---|---|---|---|\n",
                );
                for p in &b.pairs {
                    let interval = p.interval.map_or(String::new(), |(lo, hi)| {
                        format!(" [{:+.1}, {:+.1}]", lo * 100.0, hi * 100.0)
                    });
                    let mcnemar = p.mcnemar.map_or("–".into(), |m| {
                        format!("{} / {}, {}", m.only_a, m.only_b, p_value(m.p_value))
                    });
                    let _ = writeln!(
                        out,
                        "| {} vs {} | {} | {} | {:+.1}{} | {} | {} |",
                        cell(&b.models[p.b].label),
                        cell(&b.models[p.a].label),
                        cell(&p.metric_label),
                        p.items,
                        p.diff * 100.0,
                        interval,
                        p.p_value.map_or("–".into(), p_value),
                        mcnemar
                    );
                }
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_show_percent_with_interval_and_escape_pipes() {
        assert_eq!(
            estimate(&Some(Estimate {
                value: 0.25,
                interval: Some((0.2, 0.3125))
            })),
            "25.0 [20.0, 31.2]"
        );
        assert_eq!(estimate(&None), "–");
        assert_eq!(cell("a|b\nc"), "a\\|b c");
        assert_eq!(p_value(0.0001), "<0.001");
        assert_eq!(p_value(0.5), "0.500");
    }
}
