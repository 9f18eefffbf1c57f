"""``costsim whatif``: one serving scenario before and after ``--set`` / ``--hw-set`` /
``--convert``, each headline metric with its change and elasticity
(``costsim.simulator.whatif``)."""

from __future__ import annotations

from typing import Optional

import typer

from costsim.cli import options as O
from costsim.cli.app import app


@app.command("whatif")
def whatif_cmd(model: O.Model, hardware: O.Hardware, devices: O.Devices = None, tp: O.TP = None, ep: O.EP = None,
               pp: O.PP = None, batch: O.RequestBatch = "1", input_len: O.InputLen = "4096",
               output_len: O.OutputLen = "1024", weight_dtype: O.WeightDtype = None, kv_dtype: O.KVDtype = "bf16",
               mla_form: O.MLAForm = "auto", imbalance: O.Imbalance = 1.0, overlap: O.Overlap = False,
               block_size: O.BlockSize = None, mtp: O.MTP = 0, mtp_acceptance: O.MTPAcceptance = None,
             prefix_hit: O.PrefixHit = 0.0, redundant: O.Redundant = 0, ep_kernel: O.EPKernel = "normal", tbo: O.TBO = False, draft: O.Draft = None,
             deepep_max_tokens: O.DeepEPMaxTokens = 128, deepep_nvlink: O.DeepEPNVLink = False, sets: O.Sets = None, hw_sets: O.HwSets = None,
               convert: Optional[str] = typer.Option(
                   None, "--convert", help="A named conversion applied before --set: mha-to-mla:d_c=512,d_h_r=64"
                                           "[,d_q=1536] (GQA/MQA too; per-head dims kept as the nope and value dims)."),
               fmt: O.Format = O.Fmt.table):
    """Headline metrics before and after a change of the model or the hardware: params, KV per
    token, FLOPs per token, TTFT, TPOT, tokens/s, max batch, memory per device; the change in
    % and the elasticity d log metric / d log knob when one numeric field changed. Relative
    values work: --set attention.kv_lora_rank=x0.5 --hw-set memory_bandwidth=+10%."""

    def go():
        from costsim.registry import conversion_sets, load_hardware, load_model
        from costsim.reports import views
        from costsim.simulator.scenario import Scenario
        from costsim.simulator.whatif import whatif

        spec0, hw0 = load_model(model), load_hardware(hardware)
        spec1 = O.model(model, conversion_sets(spec0, convert) + list(sets or []))
        hw1 = O.hardware(hardware, hw_sets)
        b, i, o = O.lengths(batch, input_len, output_len)
        req = O.layout(devices, tp, ep, pp, weight_dtype, kv_dtype, mla_form, imbalance, overlap, block_size, mtp,
                       mtp_acceptance, prefix_hit, redundant, ep_kernel, tbo, draft, deepep_max_tokens,
                       deepep_nvlink)
        rec = whatif(Scenario(spec0, hw0, req, b, i, o), Scenario(spec1, hw1, req, b, i, o))
        views.whatif(rec.to_dict(), fmt.value)
        return rec.warnings

    O.run(go)
