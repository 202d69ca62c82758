"""One self-contained HTML page of a run or a comparison (`sfprompt report DIR`).

The page is a list of sections, each a table (pandas' HTML) or an interactive plotly
figure: accuracy against round, cumulative traffic and simulated time (one line per
variant), traffic by kind, and where each tier's client-rounds spend their simulated
time. plotly.js is inlined once in the page's head, so the file opens offline (no CDN)
and can be mailed or archived as one file. A study's page (studies/report.py) is built
from the same sections, with optuna.visualization's figures.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from sfprompt.results.atomic import atomic_write_text
from sfprompt.results.plots import MB, cumulative
from sfprompt.results.summary import about, headline, in_order
from sfprompt.results.tables import CLIENTS, read_clients, read_rounds

REPORT_FILE = "report.html"
# Where a client-round's simulated seconds go (clients.parquet), in the order stacked.
TIME_PARTS = ("compute", "comm", "queue", "server", "idle")
ROUND_COLUMNS = ("round", "accuracy", "loss", "participants", "sampled", "bytes.up",
                 "bytes.down", "flops.client", "flops.server", "sim.round_seconds",
                 "sim.elapsed_seconds", "wall_seconds")
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f4f4f4; } .note { color: #666; font-style: italic; }
.wide { overflow-x: auto; }
pre { background: #f8f8f8; padding: 1em; overflow-x: auto; font-size: 0.8em; }
"""


@dataclass(frozen=True)
class Section:
    """One heading of the page and the HTML under it (and its figure, if it is one)."""

    title: str
    body: str
    figure: go.Figure | None = None


def figure(title: str, fig: go.Figure) -> Section:
    """A plotly figure; the page carries plotly.js, so the figure carries none."""
    fig.update_layout(template="plotly_white", margin={"t": 40})
    return Section(title, fig.to_html(full_html=False, include_plotlyjs=False,
                                      config={"displaylogo": False}), fig)


def table(title: str, df: pd.DataFrame, text: str = "") -> Section:
    body = f"<p>{html.escape(text)}</p>" if text else ""
    frame = df.to_html(index=False, na_rep="", border=0, float_format=lambda v: f"{v:.4g}")
    return Section(title, f'{body}<div class="wide">{frame}</div>')


def note(title: str, text: str) -> Section:
    """A section that cannot be drawn yet, and why (too few trials, no clients table)."""
    return Section(title, f'<p class="note">{html.escape(text)}</p>')


def preformatted(title: str, text: str) -> Section:
    return Section(title, f"<pre>{html.escape(text)}</pre>")


def write_page(path: Path, title: str, sections: Sequence[Section]) -> Path:
    """Write the page atomically: plotly.js once, then each section."""
    parts = [f"<h2>{html.escape(s.title)}</h2>\n{s.body}" for s in sections]
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n"
            f'<script type="text/javascript">{get_plotlyjs()}</script>\n</head><body>\n'
            f"<h1>{html.escape(title)}</h1>\n" + "\n".join(parts) + "\n</body></html>\n")
    atomic_write_text(path, page)
    return path


def accuracy_figures(rounds: pd.DataFrame, order: Sequence[str] | None = None) -> list[Section]:
    """Accuracy against round, cumulative MB and simulated time: one line per variant,
    the mean over seeds at each round (rounds without evaluation left out)."""
    mean = cumulative(rounds).groupby(["variant", "round"], as_index=False)[
        ["accuracy", "mb", "sim.elapsed_seconds"]].mean().dropna(subset=["accuracy"])
    sections = []
    for x, label, log in (("round", "round", False),
                          ("mb", "cumulative traffic (MB)", True),
                          ("sim.elapsed_seconds", "simulated time (s)", True)):
        fig = go.Figure()
        for name in in_order(mean["variant"], order):
            m = mean[mean["variant"] == name]
            fig.add_trace(go.Scatter(x=m[x], y=m["accuracy"], mode="lines+markers", name=name))
        fig.update_layout(xaxis_title=label, yaxis_title="test accuracy (mean over seeds)",
                          xaxis_type="log" if log and (mean[x] > 0).all() else "linear")
        if x == "round" and mean["round"].max() <= 20:
            fig.update_xaxes(dtick=1)
        sections.append(figure(f"Accuracy against {label}", fig))
    return sections


def traffic_figure(rounds: pd.DataFrame) -> Section:
    """One run's bytes per round, stacked by kind."""
    fig = go.Figure()
    for column in sorted(c for c in rounds.columns if c.startswith("bytes.")
                         and c not in ("bytes.up", "bytes.down") and rounds[c].sum() > 0):
        fig.add_trace(go.Bar(x=rounds["round"], y=rounds[column] / MB,
                             name=column[len("bytes."):]))
    fig.update_layout(barmode="stack", xaxis_title="round", yaxis_title="MB (all clients)")
    return figure("Traffic per round, by kind", fig)


def tier_time_figure(clients: pd.DataFrame) -> Section:
    """Mean simulated seconds of a client-round, by tier (and variant, in a comparison),
    split into the parts of TIME_PARTS."""
    if "profile.tier" not in clients.columns:
        return note("Time per client-round, by tier", "clients.parquet has no profile.tier")
    keys = ["variant", "profile.tier"] if "variant" in clients.columns else ["profile.tier"]
    columns = [f"sim.{p}_seconds" for p in TIME_PARTS if f"sim.{p}_seconds" in clients.columns]
    mean = clients.groupby(keys, as_index=False)[columns].mean()
    labels = mean[keys].astype(str).agg(" / ".join, axis=1)
    fig = go.Figure()
    for column in columns:
        fig.add_trace(go.Bar(y=labels, x=mean[column], orientation="h",
                             name=column[len("sim."):-len("_seconds")]))
    fig.update_layout(barmode="stack", xaxis_title="simulated seconds (mean per client-round)",
                      height=max(300, 60 + 30 * len(labels)))
    return figure("Time per client-round, by tier", fig)


def run_sections(run_dir: Path) -> list[Section]:
    rounds = read_rounds(run_dir).sort_values("round")
    shown = [c for c in ROUND_COLUMNS if c in rounds.columns]
    sections = [table("Rounds", rounds[shown]), *accuracy_figures(rounds),
                traffic_figure(rounds)]
    if (run_dir / CLIENTS.filename).is_file():
        sections.append(tier_time_figure(read_clients(run_dir)))
    else:
        sections.append(note("Time per client-round, by tier", "no clients.parquet"))
    config = run_dir / "config.toml"
    if config.is_file():
        sections.append(preformatted("Configuration", config.read_text()))
    return sections


def compare_sections(compare_dir: Path, rounds: pd.DataFrame, summary: pd.DataFrame,
                     order: Sequence[str] | None = None) -> list[Section]:
    """`rounds` is load_compare's frame of `compare_dir`, `summary` its summarise table."""
    clients = [read_clients(compare_dir / name).assign(variant=group["variant"].iloc[0])
               for name, group in rounds.groupby("run_dir")
               if (compare_dir / name / CLIENTS.filename).is_file()]
    tiers = (tier_time_figure(pd.concat(clients, ignore_index=True)) if clients
             else note("Time per client-round, by tier", "no run has clients.parquet"))
    return [table("Methods side by side", headline(summary), about(summary)),
            *accuracy_figures(rounds, order), tiers]


def write_run_report(run_dir: Path) -> Path:
    return write_page(run_dir / REPORT_FILE, f"Run {run_dir.name}", run_sections(run_dir))


def write_compare_report(compare_dir: Path, rounds: pd.DataFrame, summary: pd.DataFrame,
                         order: Sequence[str] | None = None) -> Path:
    return write_page(compare_dir / REPORT_FILE, f"Comparison {compare_dir.name}",
                      compare_sections(compare_dir, rounds, summary, order))
