"""Query commands on specs alone: models, hardware, show, kv, import-hf.

Each command: parse flags -> engine (``costsim.simulator.scenario``) -> view
(``costsim.reports.views``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from costsim.errors import CostsimError

from costsim.cli import options as O
from costsim.cli.app import app


@app.command("models")
def models_cmd(fmt: O.Format = O.Fmt.table):
    """List the shipped model specs with their sources."""

    def go():
        from costsim.registry import load_model, model_names
        from costsim.reports import views
        from costsim.simulator.scenario import model_line

        views.models([model_line(load_model(n)).to_dict() for n in model_names()], fmt.value)

    O.run(go)


@app.command("hardware")
def hardware_cmd(fmt: O.Format = O.Fmt.table):
    """List the shipped hardware profiles (dense peaks, memory, links) with their sources."""

    def go():
        from costsim.registry import hardware_names, load_hardware
        from costsim.reports import views

        def val(q):
            return None if q is None else q.value

        recs = []
        for n in hardware_names():
            h = load_hardware(n)
            recs.append(dict(
                name=h.name, full_name=h.full_name, fp32_flops=val(h.peak_flops.fp32), bf16_flops=val(h.peak_flops.bf16),
                fp8_flops=val(h.peak_flops.fp8),
                memory_capacity=h.memory_capacity.value, memory_bandwidth=h.memory_bandwidth.value,
                intra_node_bandwidth=val(h.intra_node_bandwidth), inter_node_bandwidth=val(h.inter_node_bandwidth),
                devices_per_node=h.devices_per_node, price_per_device_hour=val(h.price_per_device_hour), source=h.source))
        views.hardware(recs, fmt.value)

    O.run(go)


@app.command("show")
def show_cmd(model: O.Model, context: O.Context = "4096", batch: O.Batch = "1", kv_dtype: O.KVDtype = "bf16",
             sets: O.Sets = None, fmt: O.Format = O.Fmt.table):
    """Parameter breakdown, KV cache per token and FLOPs per token of one model."""

    def go():
        from costsim.reports import views
        from costsim.simulator.scenario import show

        rec = show(O.model(model, sets), kv_dtype, O.count(context, "--context", minimum=1), O.count(batch, "--batch"))
        views.show(rec.to_dict(), fmt.value)
        return rec.warnings

    O.run(go)


@app.command("kv")
def kv_cmd(models: O.Models, context: O.Context = "4096", batch: O.Batch = "1", kv_dtype: O.KVDtype = "bf16",
           tp: int = typer.Option(1, "--tp", help="Tensor parallel degree: KV per device (heads split, MLA latent "
                                                   "replicated)."),
           block_size: O.BlockSize = None, sets: O.Sets = None, fmt: O.Format = O.Fmt.table):
    """KV cache per token and for a batch x context."""

    def go():
        from costsim.reports import views
        from costsim.simulator.scenario import context_warnings, kv

        ctx, b = O.count(context, "--context", minimum=1), O.count(batch, "--batch")
        recs, warnings = [], []
        for m in models:
            spec = O.model(m, sets)
            recs.append(kv(spec, kv_dtype, ctx, b, tp, block_size).to_dict())
            warnings += context_warnings(spec, ctx)
        views.kv(recs, fmt.value)
        return warnings

    O.run(go)


@app.command("import-hf")
def import_hf_cmd(config: Path = typer.Argument(..., help="HuggingFace config.json"),
                  output: Optional[Path] = typer.Option(None, "--out", "-o",
                                                        help="Spec YAML to write (default: stdout)."),
                  name: Optional[str] = typer.Option(None, "--name", help="Spec name (default from the config)."),
                  force: O.Force = False):
    """Convert a HuggingFace config.json into a costsim model spec YAML."""

    def go():
        from costsim.files import atomic_write_text
        from costsim.hf import spec_from_hf_config, spec_to_yaml
        from costsim.registry import read_json

        if output is not None:
            O.check_new(output, force, "spec YAML")
            if output.suffix.lower() not in (".yaml", ".yml"):
                raise CostsimError(f"{output}: a spec is written as YAML: give a .yaml or .yml name")
        spec = spec_from_hf_config(read_json(config), where=str(config), name=name)
        text = spec_to_yaml(spec)
        if output is None:
            sys.stdout.write(text)
            return
        atomic_write_text(output, text, "spec YAML")
        print(f"wrote {output} ({spec.name})", file=sys.stderr)

    O.run(go)
