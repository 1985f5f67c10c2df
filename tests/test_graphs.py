"""Tests of pyrovae.graphs: recorded functions replay the eager calls' values, bit for bit."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pyrovae.graphs import RecordedGraphs

aten = torch.ops.aten


def log_densities(_, varying):
    """A Normal log-density of draws from parameters broadcast over the particles, and a Bernoulli one summed
    over pixels, as torch's distributions and a site's sum give them, with a draw nothing reads and a
    statistic nothing reads."""
    loc, scale, x = varying
    torch.rand(3)  # drawn and unused: the replay must take these numbers too
    normal = torch.distributions.Normal(loc.expand(50, -1), scale.exp().expand(50, -1), validate_args=False)
    z = normal.rsample()
    logits = z @ torch.ones(z.shape[-1], x.shape[-1])
    logits.exp().mean()  # computed and unused
    log_lik = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
    return normal.log_prob(z).sum(-1) + log_lik.view(*logits.shape[:-1], -1).sum(-1)


def negated_sums(_, varying):
    """Negations summed where moving the negation after the sum would change a value: a strided tensor (the
    sum's order of reading), integers (promoted to int64 by the sum, not by the negation)."""
    x, counts = varying
    return (-x[:, ::3]).sum(-1), (-counts).sum(-1)


def replayed_and_eager(fn, inputs):
    """``fn``'s outputs eagerly and through a RecordedGraphs (two recordings, then replays) from the same
    random state, each followed by a draw (where the generator stands after the call); and the graph."""
    graphs = RecordedGraphs("graph", torch.device("cpu"), "eagerly")
    eager, replayed = [], []
    for out, recorded in ((eager, False), (replayed, True)):
        torch.manual_seed(1)
        for args in inputs:
            out.append(graphs("key", fn, [], args) if recorded else fn([], args))
            out.append(torch.rand(2))
    assert graphs.graphs == 1
    return eager, replayed, graphs._graphs["key"].graph  # the rewritten graph itself


def negated_after_sum(graph) -> bool:
    return any(n.target is aten.neg.default and n.args[0].target is aten.sum.dim_IntList for n in graph.nodes)


def same(a, b) -> bool:
    if isinstance(a, tuple):
        return all(same(x, y) for x, y in zip(a, b, strict=True))
    return a.dtype == b.dtype and a.stride() == b.stride() and torch.equal(a, b)


def test_a_replayed_graph_gives_the_eager_values_with_less_work():
    torch.manual_seed(0)
    inputs = [[torch.randn(1, 4), torch.randn(1, 4), torch.rand(1, 30).round()] for _ in range(4)]
    eager, replayed, graph = replayed_and_eager(log_densities, inputs)
    assert all(same(a, b) for a, b in zip(eager, replayed, strict=True))
    ops = [node.target for node in graph.nodes if node.op == "call_function"]
    assert aten.mean.dim not in ops and ops.count(aten.exp.default) == 1 and aten.rand.default in ops
    # the cross-entropy negated after summing: one pass less over the terms
    assert negated_after_sum(graph)


def test_a_negation_is_moved_after_a_sum_only_where_no_value_can_change():
    torch.manual_seed(0)
    inputs = [[torch.randn(7, 300), torch.randint(0, 256, (3, 5), dtype=torch.uint8)] for _ in range(4)]
    eager, replayed, graph = replayed_and_eager(negated_sums, inputs)
    assert all(same(a, b) for a, b in zip(eager, replayed, strict=True))
    assert not negated_after_sum(graph)
