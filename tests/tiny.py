"""The hand-made spec and hardware profile the formula tests derive their values from.

Round numbers so every expected value can be worked out in a comment: 1e10 FLOP/s bf16 (2e10
fp8) at efficiency 0.5, 1e9 B/s at 0.5 (so MEM = 5e8 B/s achievable), 1 us per kernel; links
1e8 B/s intra-node at 0.5 (INTRA) and 1e7 B/s inter-node at 0.25 (INTER), 2 devices per node.
The GQA spec: h = 8, vocab 100, 2 layers, 4 heads of 2, 2 KV heads, SwiGLU FFN of 16.
Not a test module: imported by the test files (tests/ is on sys.path under pytest).
"""

from costsim.specs import HardwareProfile, ModelSpec

MEM, OVH = 5e8, 1e-6  # achievable B/s, seconds per kernel
INTRA, INTRA_LAT = 1e8 * 0.5, 1e-6
INTER, INTER_LAT = 1e7 * 0.25, 5e-6


def hw(**kw) -> HardwareProfile:
    d = dict(
        name="tiny-hw", source="hand-made test profile",
        peak_flops=dict(bf16=1e10, fp8=2e10), memory_capacity=1e9, memory_bandwidth=1e9,
        intra_node_bandwidth=dict(value=1e8, direction="unidirectional"),
        inter_node_bandwidth=dict(value=1e7, direction="unidirectional"),
        intra_node_latency=1e-6, inter_node_latency=5e-6, devices_per_node=2,
        efficiency=dict(compute=0.5, memory=0.5, intra_node=0.5, inter_node=0.25, kernel_overhead=1e-6),
    )
    d.update(kw)
    return HardwareProfile.model_validate(d)


def gqa(**kw) -> ModelSpec:
    d = dict(name="tiny-gqa", source="hand-made test spec", vocab_size=100, hidden_size=8, num_hidden_layers=2,
             attention=dict(kind="gqa", num_attention_heads=4, num_key_value_heads=2, head_dim=2),
             ffn=dict(kind="dense", intermediate_size=16))
    d.update(kw)
    return ModelSpec.model_validate(d)
