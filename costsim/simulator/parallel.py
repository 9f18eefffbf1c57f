"""Communication between devices: TP all-reduce, EP all-to-all, PP send/recv.

Formulas (per device, per occurrence):
- TP ring all-reduce of an [T, h] activation: sends 2*(TP-1)/TP * T*h*act bytes, with
  2*(TP-1) latency terms (Patarasuk & Yuan 2009; Megatron-LM, arXiv 1909.08053, §3: two
  all-reduces per layer in the forward pass), plus one after the vocab-parallel embedding
  (Megatron-LM §3: the input embedding is split along the vocabulary; 2 L + 1 per step).
- EP dispatch and combine (one-shot all-to-all as DeepEP does it): each token goes once to
  every remote rank holding one of its experts: T * D * h * bytes, where D is the expected
  number of distinct remote ranks (hypergeometric over expert placement). With attention
  TP > 1 the tp ranks of a group hold the same T tokens and each dispatches a 1/tp share, so
  a token is sent once (T / tp per rank). When EP spans
  nodes, the NIC carries one copy per remote *node* (DeepEP forwards inside the node over
  NVLink), capped at ``topk_group`` nodes when the model routes node-limited (DeepSeek-V3
  §2.1.2: each token to at most 4 nodes). The busiest rank's bytes scale with the load
  imbalance. That is DeepEP's normal (high-throughput) kernel. Its low-latency kernel
  (``dep.ep_kernel``; DeepEP README, arXiv 2505.09343 §4.3) sends one RDMA copy per
  token-expert pair held by another rank, k (EP - 1) / EP per token, with no node dedup and
  no NVLink forwarding (the Feb-2025 kernels DeepSeek's Day-6 deployment ran; every peer over
  the NIC, inside the node too): T k (EP - 1)/EP h bytes / NIC rate + one latency. On
  DeepEP's published H800 table (128 tokens, top-8, hidden 7168, FP8 dispatch, BF16 combine)
  that is within 12% at EP 8-256 (tests/test_ep_kernels.py).
- NVLink-aware low-latency kernels (``dep.deepep_nvlink``; DeepEP PR #173, merged
  2025-05-23, README table of 2025-06-05, commit de8cfca, unchanged at 0eee87b): a pair
  whose expert is on another rank of the same node is copied over NVLink by the sending
  warp (``nvshmemi_get_p2p_ptr`` non-null; ``csrc/kernels/internode_ll.cu``), the others
  are IBGDA puts the NIC carries. With r EP ranks per node, per token k (r - 1)/EP pairs
  go over NVLink and k (EP - r)/EP over the NIC, and the time is the slower link,
  max(NVLink bytes / NVLink rate + its latency, NIC bytes / NIC rate + its latency): the
  NIC's puts are asynchronous DMA that run while the warps copy the NVLink pairs, and the
  published figures agree: at EP 16-64 the H20 (NVLink 450 GB/s a direction, PR #173:
  119 / 157 / 176 us dispatch) and the H800 (200 GB/s: 118 / 155 / 173 us) take the same
  time behind the same 400 Gb/s NIC, so the NVLink share does not add. DeepEP's
  "bandwidth" column (``tests/test_low_latency.py``) counts every selected pair, the
  rank's own included, at 7,168 + 224 (scales) + 16 bytes (FP8 dispatch) or 14,336 bytes
  (BF16 combine) over the kernel's time: 128 x 8 x 7,408 B / 77 us = 98 GB/s at EP 8.
  Against that table (h800 profile) costsim is 11-25% low at EP 16-64 and 24-42% low at
  EP 8 (no NIC traffic; the warp copies reach about half the normal kernels' NVLink
  rate); each published figure is 12-32 us above the link model (the Feb-2025 ones 6-17 us).
- Experts split over ``moe_tp`` > TP devices: ring all-gather of the tokens and
  reduce-scatter of the outputs over the moe_tp / TP attention groups, per MoE layer.
- PP: each stage sends its [T, h] activation to the next once per step.
- One collective on its own (``collective_seconds``, what nccl-tests times): ring all-reduce
  sends 2 (n-1)/n x S bytes in 2 (n-1) latency steps; ring all-gather and reduce-scatter
  (n-1)/n x S in n-1 steps; all-to-all (n-1)/n x S in one step (every peer at once), where S
  is the per-rank buffer in bytes (nccl-tests' "size": the all-reduce buffer, the gathered
  output, the scattered input, the all-to-all send buffer).
Links: a group that fits in a node uses the intra-node link, else the NIC; the EP all-to-all
spans all devices of a pipeline stage.
"""

from __future__ import annotations

from math import comb

import numpy as np

from costsim.errors import CostsimError
from costsim.simulator.deployment import Deployment
from costsim.simulator.types import LayerType, Link, LinkKind, OpGroup, OpKind, Operator, StepShape
from costsim.specs import HardwareProfile, MoEFFN, ModelSpec


def _p_unit_missed(n_experts: int, per_unit: int, top_k: int) -> float:
    """Probability that a unit holding ``per_unit`` of ``n_experts`` gets none of a token's
    ``top_k`` experts (uniform routing without replacement)."""
    return comb(n_experts - per_unit, top_k) / comb(n_experts, top_k)


def _expected_units_hit(f: MoEFFN, units: int, slots: int | None = None) -> float:
    """Expected number of ``units`` (EP ranks or nodes, each holding E/units consecutive
    experts) that hold at least one of a token's experts.

    Uniform routing: hypergeometric over experts. Group-limited routing (DeepSeek-V2 §2.2.2
    device-limited, V3 §2.1.2 node-limited: top-k experts from ``topk_group`` of ``n_group``
    groups), when each unit holds whole groups: hypergeometric over groups, which is what
    caps a token at ``topk_group`` units.
    """
    E, k = f.n_routed_experts, f.num_experts_per_tok
    S = E if slots is None else slots  # with redundant copies: S slots, S / units per unit
    uniform = units * (1 - _p_unit_missed(S, S // units, k))
    if f.n_group and f.topk_group and f.n_group % units == 0:
        per = f.n_group // units
        grouped = units * (1 - _p_unit_missed(f.n_group, per, f.topk_group))
        return min(uniform, grouped)
    return uniform


def ep_destinations(spec: ModelSpec, dep: Deployment, devices_per_node: int) -> tuple[float, float]:
    """(remote ranks, remote nodes) a token is sent to, expected: the units holding its
    experts, less the token's own (with probability units_hit / units)."""
    f = spec.ffn
    assert isinstance(f, MoEFFN)
    ep = dep.ep
    hit = _expected_units_hit(f, ep, dep.expert_slots(spec))
    ranks = hit * (ep - 1) / ep
    # the EP group spans every device of the pipeline stage (ep groups of moe_tp devices)
    nodes_in_ep = max(1, (dep.devices // dep.pp) // devices_per_node)
    nodes = 0.0
    if nodes_in_ep > 1:
        hit_n = _expected_units_hit(f, nodes_in_ep, dep.expert_slots(spec))
        nodes = hit_n * (nodes_in_ep - 1) / nodes_in_ep
    return ranks, nodes


def ep_alltoall_seconds(tokens, destinations, hidden: int, bytes_per_elem: float, bandwidth: float,
                        latency: float = 0.0):
    """Seconds for one dispatch or combine: tokens * destinations * hidden * bytes / bandwidth
    + latency. ``bandwidth`` in bytes/s per device, one direction."""
    return np.asarray(tokens, dtype=float) * destinations * hidden * bytes_per_elem / bandwidth + latency


def low_latency_step(dep: Deployment, step: StepShape):
    """Whether the step's EP all-to-all uses DeepEP's low-latency kernel (``dep.ep_kernel``):
    False / True, or for "auto" a boolean array, True where the step computes at most
    1 + ``mtp_depth`` tokens per sequence (a decode or MTP verify step)."""
    if dep.ep_kernel == "normal":
        return False
    if dep.ep_kernel == "low_latency":
        return True
    return np.asarray(step.new_tokens, dtype=float) <= 1 + dep.mtp_depth


def comm_operators(spec: ModelSpec, dep: Deployment, step: StepShape, groups) -> list[Operator]:
    """Communication operators of one device for a step (see module docstring).

    ``groups``: (is_moe, window, layers, linear) of the device's pipeline stage
    (``operators.layer_groups``). The TP all-reduces are one operator per layer type, so each
    is counted in its own layer type.
    """
    ops: list[Operator] = []
    h, act = spec.hidden_size, dep.act_bytes
    b = dep.seqs_per_rank(step.batch)
    T = b * np.asarray(step.new_tokens, dtype=float)
    n = {LayerType.DENSE: sum(g[2] for g in groups if not g[0]), LayerType.MOE: sum(g[2] for g in groups if g[0])}
    n_moe = n[LayerType.MOE] if isinstance(spec.ffn, MoEFFN) else 0
    stage = dep.devices // dep.pp
    C = OpGroup.COMM

    def comm(name, layer, count, nbytes, link, hops, collective=None):
        # ``collective``: (NCCL collective, per-rank buffer bytes) for a calibrated intra-node model
        shape = dict(collective=collective[0], buffer_bytes=collective[1]) if collective else {}
        return Operator(name=name, kind=OpKind.COMM, group=C, layer=layer, count=count, comm_bytes=nbytes,
                        link=link, hops=hops, dtype="", shape=shape)

    if dep.tp > 1:
        both = n[LayerType.DENSE] and n[LayerType.MOE]
        for layer in (LayerType.DENSE, LayerType.MOE):
            if n[layer]:  # two all-reduces per layer: after attention and after the FFN
                ops.append(comm("comm.tp_allreduce" + (f"[{layer.value}]" if both else ""), layer, 2 * n[layer],
                                2 * (dep.tp - 1) / dep.tp * T * h * act, Link(LinkKind.GROUP, dep.tp),
                                2 * (dep.tp - 1), ("all_reduce", T * h * act)))
    if dep.tp > 1:  # vocab-parallel embedding: each rank looks up its vocabulary shard, then all-reduce
        ops.append(comm("comm.tp_allreduce[embedding]", LayerType.ONCE, 1, 2 * (dep.tp - 1) / dep.tp * T * h * act,
                        Link(LinkKind.GROUP, dep.tp), 2 * (dep.tp - 1), ("all_reduce", T * h * act)))
    if dep.ep > 1 and n_moe:
        # a token is dispatched once: the tp ranks of an attention group hold the same T tokens
        # and each sends its 1/tp share (then gathers the combined outputs back in the TP
        # all-reduce after the FFN)
        low = low_latency_step(dep, step)
        for name, nbytes in (("comm.ep_dispatch", dep.dispatch_bytes), ("comm.ep_combine", dep.combine_bytes)):
            op = comm(name, LayerType.MOE, n_moe, T / dep.tp * h * nbytes * dep.imbalance,
                      Link(LinkKind.ALL_TO_ALL, stage), 1)
            if low is not False:
                op.shape["low_latency"] = low
            ops.append(op)
    g = dep.moe_tp // dep.tp if dep.moe_tp > dep.tp else 1
    if g > 1 and n_moe:
        # Experts split over more devices (moe_tp) than attention's TP group: each device gathers
        # the tokens of the other g - 1 attention groups for its expert slice, then
        # reduce-scatters the outputs back (ring all-gather + reduce-scatter over g ranks).
        ops.append(comm("comm.moe_tp_gather_scatter", LayerType.MOE, n_moe, 2 * (g - 1) * T * h * act,
                        Link(LinkKind.GROUP, dep.moe_tp), 2 * (g - 1)))
    if dep.pp > 1:
        ops.append(comm("comm.pp_send", LayerType.ONCE, 1, T * h * act, Link(LinkKind.STAGE, stage), 1))
    return ops


def comm_seconds(op: Operator, spec: ModelSpec, dep: Deployment, hw: HardwareProfile) -> np.ndarray:
    """Seconds for a comm operator on ``hw`` (per occurrence), including latency terms.

    The link is chosen at timing time from the hardware's ``devices_per_node``
    (``Link.crosses_nodes``). A TP all-reduce inside a node is timed by ``collective_seconds``
    (the fastest protocol of a calibrated profile; the ring formula otherwise). An all-to-all sends each token once per remote rank holding its
    experts inside a node, or once per remote node across nodes (``ep_destinations``).
    Raises CostsimError when the profile lacks the link's bandwidth.
    """
    dpn = hw.devices_per_node
    inter = op.link.crosses_nodes(dpn)
    bw = hw.inter_node_bandwidth if inter else hw.intra_node_bandwidth
    if bw is None:
        raise CostsimError(f"hardware {hw.name} has no {'inter' if inter else 'intra'}_node_bandwidth for {op.name}")
    rate = bw.value * (hw.efficiency.inter_node.value if inter else hw.efficiency.intra_node.value)
    lat = hw.inter_node_latency.value if inter else hw.intra_node_latency.value
    base = hw.efficiency.comm_overhead.value  # per collective, 0 unless calibrated
    if op.shape.get("collective") and not inter:  # a TP all-reduce: the collective's protocol model
        return np.asarray(collective_seconds(hw, op.shape["collective"], op.shape["buffer_bytes"], op.link.span))
    if op.link.kind is LinkKind.ALL_TO_ALL:
        ranks, nodes = ep_destinations(spec, dep, dpn)
        # comm_bytes = tokens * h * bytes (* imbalance): one copy per destination
        t = ep_alltoall_seconds(1.0, nodes if inter else ranks, 1, op.comm_bytes, rate, lat) + base
        low = op.shape.get("low_latency", False)
        if low is False:
            return t
        t_low = low_latency_seconds(op.comm_bytes, spec, dep, hw) + base
        return np.where(low, t_low, t) if np.ndim(low) else (t_low if low else t)
    return np.asarray(op.comm_bytes, dtype=float) / rate + op.hops * lat + base


def low_latency_pairs(spec: ModelSpec, dep: Deployment, devices_per_node: int) -> tuple[float, float]:
    """(NVLink pairs, NIC pairs) per token of DeepEP's low-latency kernel: token-expert pairs
    whose expert is on another EP rank (k (EP - 1)/EP in all, uniform placement). The
    Feb-2025 kernel sends all of them over the NIC: (0, k (EP - 1)/EP). The NVLink-aware one
    (``dep.deepep_nvlink``) copies those on the r - 1 other ranks of the node over NVLink,
    r = EP ranks per node (EP over the nodes of a pipeline stage): (k (r - 1)/EP, k (EP - r)/EP)."""
    k, ep = spec.ffn.num_experts_per_tok, dep.ep
    if not dep.deepep_nvlink:
        return 0.0, k * (ep - 1) / ep
    nodes = max(1, (dep.devices // dep.pp) // devices_per_node)
    r = max(1.0, ep / nodes)
    return k * (r - 1) / ep, k * (ep - r) / ep


def low_latency_seconds(token_bytes, spec: ModelSpec, dep: Deployment, hw: HardwareProfile):
    """Seconds of one low-latency dispatch or combine (DeepEP, module docstring) of
    ``token_bytes`` bytes per rank (tokens x h x bytes per element x imbalance; array ok):
    pairs (``low_latency_pairs``) x ``token_bytes`` on each link at its rate x efficiency, plus
    that link's latency; with both links the slower one. The NIC is the inter-node link (the
    intra-node one for a profile without a NIC, as one node's ranks then have nothing else)."""
    nvl_pairs, nic_pairs = low_latency_pairs(spec, dep, hw.devices_per_node)
    b = np.asarray(token_bytes, dtype=float)
    ef = hw.efficiency
    t = np.zeros_like(b)
    if nic_pairs:
        inter = hw.inter_node_bandwidth is not None
        bw, e, lat = (hw.inter_node_bandwidth, ef.inter_node, hw.inter_node_latency) if inter else \
            (hw.intra_node_bandwidth, ef.intra_node, hw.intra_node_latency)
        t = ep_alltoall_seconds(b, nic_pairs, 1, 1.0, bw.value * e.value, lat.value)
    if nvl_pairs:
        if hw.intra_node_bandwidth is None:
            raise CostsimError(f"hardware {hw.name} has no intra_node_bandwidth for DeepEP's NVLink-aware kernels")
        t = np.maximum(t, ep_alltoall_seconds(b, nvl_pairs, 1, 1.0, hw.intra_node_bandwidth.value * ef.intra_node.value,
                                              hw.intra_node_latency.value))
    return t


# collective -> (bytes on the link as a fraction of the buffer, latency steps) for n ranks
COLLECTIVES = {
    "all_reduce": (lambda n: 2.0 * (n - 1) / n, lambda n: 2.0 * (n - 1)),
    "all_gather": (lambda n: (n - 1) / n, lambda n: n - 1.0),
    "reduce_scatter": (lambda n: (n - 1) / n, lambda n: n - 1.0),
    "all_to_all": (lambda n: (n - 1) / n, lambda n: np.ones_like(n)),
}


def collective_seconds(hw: HardwareProfile, collective: str, size_bytes, ranks):
    """Seconds for one ``collective`` of a ``size_bytes`` per-rank buffer over ``ranks``
    devices (arrays broadcast), on the intra-node link when ``ranks`` fits in a node, else
    the NIC: fraction(n) x size / (bandwidth x efficiency) + steps(n) x latency (``COLLECTIVES``;
    ring algorithms, Patarasuk & Yuan 2009; one-shot all-to-all) + ``efficiency.comm_overhead``
    (once per collective). Inside a node the fastest of the collective's protocols is taken,
    as NCCL's tuner does (``collective_protocols``: simple and, when calibrated, low-latency),
    or, where the collective's model gives ``ll_threshold``, low-latency up to that many bytes
    per peer and simple beyond (NCCL's point-to-point rule, which all-to-all follows).
    0 for one rank.

    Raises CostsimError for an unknown collective or a missing link bandwidth."""
    if collective not in COLLECTIVES:
        raise CostsimError(f"unknown collective {collective!r}: expected one of {', '.join(COLLECTIVES)}")
    n = np.asarray(ranks, dtype=float)
    inter = n > hw.devices_per_node
    out = np.zeros(np.broadcast(n, np.asarray(size_bytes, dtype=float)).shape)
    frac, steps = COLLECTIVES[collective]
    for cross in (False, True):
        mask = (inter == cross) & (n > 1)
        if not np.any(mask):
            continue
        bw = hw.inter_node_bandwidth if cross else hw.intra_node_bandwidth
        if bw is None:
            raise CostsimError(f"hardware {hw.name} has no {'inter' if cross else 'intra'}_node_bandwidth for {collective}")
        size = np.asarray(size_bytes, dtype=float)
        if cross:
            rate = bw.value * hw.efficiency.inter_node.value
            t = frac(n) * size / rate + steps(n) * hw.inter_node_latency.value + hw.efficiency.comm_overhead.value
        else:
            ts = [frac(n) * size / (bw.value * e) + steps(n) * lat + ov for e, lat, ov in collective_protocols(hw, collective)]
            thr = getattr(hw.efficiency.collectives, collective).ll_threshold
            if thr is not None and len(ts) == 2:
                # point-to-point sends (all-to-all): NCCL picks LL by a fixed size per peer, not by
                # speed (src/enqueue.cc: nBytes <= NCCL_P2P_LL_THRESHOLD, default 16 KiB)
                t = np.where(size / np.maximum(n, 1.0) <= thr.value, ts[1], ts[0])
            else:
                t = np.min(ts, axis=0)
        out = np.where(mask, t, out)
    return out if out.ndim else float(out)


def collective_protocols(hw: HardwareProfile, collective: str) -> list[tuple[float, float, float]]:
    """(bandwidth efficiency, per-step latency, per-collective overhead) of each intra-node
    protocol of ``collective`` on ``hw`` (``efficiency.collectives``, ``CollectiveModel``):
    the simple protocol, plus the low-latency one where the profile gives its ``ll_latency``
    (at half the simple efficiency unless ``ll_efficiency`` says otherwise). Absent fields take
    the profile-wide ``intra_node``, ``intra_node_latency`` and ``comm_overhead``."""
    m = getattr(hw.efficiency.collectives, collective)
    e = (m.efficiency or hw.efficiency.intra_node).value
    lat = (m.latency or hw.intra_node_latency).value
    ov = (m.overhead or hw.efficiency.comm_overhead).value
    out = [(e, lat, ov)]
    if m.ll_latency is not None:  # LL: half the payload per store unless calibrated otherwise
        out.append((m.ll_efficiency.value if m.ll_efficiency else e / 2, m.ll_latency.value, ov))
    return out
