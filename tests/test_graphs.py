"""Tests of pyrovae.graphs: recorded functions replay the eager calls' values, bit for bit."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pyrovae.graphs import RecordedGraphs


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


def test_a_replayed_graph_gives_the_eager_values_with_less_work():
    graphs = RecordedGraphs("graph", torch.device("cpu"), "eagerly")
    torch.manual_seed(0)
    inputs = [[torch.randn(1, 4), torch.randn(1, 4), torch.rand(1, 30).round()] for _ in range(4)]
    eager, replayed = [], []
    torch.manual_seed(1)
    for args in inputs:
        eager.append(log_densities([], args))
        eager.append(torch.rand(2))  # where the generator stands after the call
    torch.manual_seed(1)
    for args in inputs:  # two recordings, then replays
        replayed.append(graphs("key", log_densities, [], args))
        replayed.append(torch.rand(2))
    assert graphs.graphs == 1
    assert all(torch.equal(a, b) for a, b in zip(eager, replayed, strict=True))
    graph = graphs._graphs["key"].graph  # the rewritten graph itself
    ops = [node.target for node in graph.nodes if node.op == "call_function"]
    aten = torch.ops.aten
    assert aten.mean.dim not in ops and ops.count(aten.exp.default) == 1 and aten.rand.default in ops
    # the scale's log-density terms once per coordinate, not once per particle
    (log,) = (node for node in graph.nodes if node.target is aten.log.default)
    assert log.args[0].target is aten.exp.default and {u.target for u in log.users} == {aten.expand.default}
    # the cross-entropy negated after summing: one pass less over the terms
    assert any(n.target is aten.neg.default and n.args[0].target is aten.sum.dim_IntList for n in graph.nodes)


def copied_and_written(_, varying):
    (x,) = varying
    y = x.expand(5, -1).clone()  # a copy of an expanded tensor, then written to in place
    y[0].add_(1)
    return y.log().sum(-1), y.exp()


def test_a_graph_that_writes_in_place_or_returns_an_elementwise_result_keeps_its_dense_tensors():
    graphs = RecordedGraphs("graph", torch.device("cpu"), "eagerly")
    inputs = [[torch.rand(1, 3) + 1] for _ in range(4)]
    for x in inputs:
        out = graphs("key", copied_and_written, [], x)
        expected = copied_and_written([], x)
        assert all(torch.equal(a, b) for a, b in zip(out, expected, strict=True))
        assert out[1].stride() == expected[1].stride()
    assert graphs.graphs == 1
