"""The Python API: everything a CLI command does, as functions returning records.

Load specs, build a scenario, ask the engine; each CLI command is exactly one of these calls
plus a formatter, so the numbers are the same:

    from costsim.api import LayoutRequest, Scenario, load_hardware, load_model, perf
    r = perf(Scenario(load_model("deepseek-v2"), load_hardware("h800"),
                      LayoutRequest(weight_dtype="fp8"), batch=64, input_len=4096, output_len=1024))
    print(r.ttft_s, r.tpot_s, r.decode_tokens_per_s)   # seconds, seconds, tokens/s (all devices)

``whatif(Scenario, Scenario)`` diffs two scenarios (``costsim whatif``);
``claims("deepseek-v2", load_model, load_hardware)`` gives the rows of ``costsim reproduce``;
``plan(spec, [hw, ...], input_len, output_len, tpot_slo_s=..., ttft_slo_s=...)`` those of ``costsim plan``.

Errors are ``CostsimError``; those about one argument are ``FieldError`` with ``.field``.
"""

from costsim.errors import CostsimError, FieldError
from costsim.registry import apply_sets, hardware_names, load_hardware, load_model, model_names
from costsim.simulator.deployment import Deployment
from costsim.simulator.layout import LayoutRequest, resolve_deployment
from costsim.simulator.scenario import (Scenario, compare, decode_roofline, kv, max_throughput_record,
                                        max_throughput_search, model_line, perf, show, throughput_curve, train)
from costsim.simulator.planner import plan
from costsim.simulator.whatif import whatif
from costsim.simulator.reproduce import claims

__all__ = ["CostsimError", "FieldError", "Deployment", "LayoutRequest", "Scenario", "apply_sets", "compare",
           "decode_roofline", "hardware_names", "kv", "load_hardware", "load_model", "max_throughput_record",
           "max_throughput_search", "model_names", "model_line", "perf", "resolve_deployment", "show",
           "throughput_curve", "train", "whatif", "claims", "plan"]
