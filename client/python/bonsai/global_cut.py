"""One global magnitude threshold over jobs that each hold part of a model.

With `exchange_global_cuts` (see compressor.proto) every shard job sends two
exact, additive summaries of its global groups and waits for a decision:

  phase 1  each group's weight count and the histogram of the high 16 bits
           of |w|. Summed over the jobs, the count gives k, the number of
           weights the target asks for (round-half-even of sparsity * n, as
           the server's PruneCount), and the histogram the bucket holding
           the k-th smallest |w|;
  phase 2  the histogram of the low 16 bits inside that bucket. Summed, it
           pins the threshold bits t (the k-th smallest |w| of the model)
           and T, how many weights equal to t the whole model prunes.

One job over the folder prunes every |w| below t and the first T weights
equal to t in its order: shards in name order, tensors in data order. The
jobs here are consecutive groups of shards in name order, so job j prunes
min(eq_j, max(0, T - eq_0 - ... - eq_{j-1})) ties, where eq_j is its count
of weights equal to t: the same weights, hence byte-identical output.
"""
from __future__ import annotations

import threading
from typing import Dict, List, Optional

import grpc

from bonsai.errors import BonsaiError
from bonsai.v1 import compressor_pb2 as pb


def prune_count(sparsity: float, n: int) -> int:
    """The server's PruneCount: nearbyint(sparsity * n) (half to even), clamped."""
    k = round(float(sparsity) * float(n))  # Python rounds half to even, as nearbyint does
    return 0 if k <= 0 else min(int(k), n)


def _merge(summaries: List[pb.GlobalSummary]) -> Dict[int, dict]:
    """rule -> {"sparsity", "weights", "hist": {value: count}} over every job."""
    groups: Dict[int, dict] = {}
    for summary in summaries:
        for group in summary.groups:
            merged = groups.setdefault(group.rule, {"sparsity": group.sparsity, "weights": 0, "hist": {}})
            if merged["sparsity"] != group.sparsity:
                raise BonsaiError(grpc.StatusCode.INTERNAL,
                                  f"the jobs disagree on the target of global group {group.rule}")
            merged["weights"] += group.weights
            if len(group.values) != len(group.counts):
                raise BonsaiError(grpc.StatusCode.INTERNAL, "a global summary's histogram is malformed")
            hist = merged["hist"]
            for value, count in zip(group.values, group.counts):
                hist[value] = hist.get(value, 0) + count
    return groups


def _kth(hist: Dict[int, int], rank: int):
    """The value holding the rank-th smallest element (1-based) and how many lie below it."""
    below = 0
    for value in sorted(hist):
        if below + hist[value] >= rank:
            return value, below
        below += hist[value]
    raise BonsaiError(grpc.StatusCode.INTERNAL, "the global summaries hold fewer weights than they count")


class GlobalCuts:
    """Collects every job's summaries and hands each job its decisions.

    Jobs are numbered in the model's order. A job that is retried elsewhere
    sends the same summaries again (they are exact): the stored ones are
    kept, checked equal, and the decisions already made are answered at once.
    """

    def __init__(self, jobs: int):
        self._jobs = jobs
        self._cond = threading.Condition()
        self._summaries: Dict[int, Dict[int, pb.GlobalSummary]] = {1: {}, 2: {}}
        self._decisions: Dict[int, Optional[List[pb.GlobalDecision]]] = {1: None, 2: None}
        self._aborted = False
        self._buckets: Dict[int, dict] = {}  # rule -> {"bucket", "rank", "k"}
        self.summary_bytes = {1: 0, 2: 0}  # what each phase moved, for the bench

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._cond.notify_all()

    def submit(self, job: int, summary: pb.GlobalSummary) -> None:
        phase = summary.phase
        if phase not in (1, 2):
            raise BonsaiError(grpc.StatusCode.INTERNAL, f"a global summary of unknown phase {phase}")
        with self._cond:
            stored = self._summaries[phase].get(job)
            if stored is not None:
                if stored != summary:
                    raise BonsaiError(grpc.StatusCode.INTERNAL,
                                      f"job {job} sent a different phase-{phase} summary on its retry")
                return
            self._summaries[phase][job] = summary
            self.summary_bytes[phase] += summary.ByteSize()
            if len(self._summaries[phase]) == self._jobs:
                self._decisions[phase] = self._decide(phase)
                self._cond.notify_all()

    def decision(self, job: int, phase: int, call_done: threading.Event) -> Optional[pb.GlobalDecision]:
        """Blocks until the decision is made; None if the call or the whole job ended."""
        with self._cond:
            while self._decisions[phase] is None:
                if self._aborted or call_done.is_set():
                    return None
                self._cond.wait(0.2)
            return self._decisions[phase][job]

    def _decide(self, phase: int) -> List[pb.GlobalDecision]:
        summaries = [self._summaries[phase][j] for j in range(self._jobs)]
        merged = _merge(summaries)
        if phase == 1:
            for rule, group in merged.items():
                k = prune_count(group["sparsity"], group["weights"])
                if k == 0:
                    self._buckets[rule] = {"k": 0, "bucket": 0, "rank": 0}
                    continue
                bucket, below = _kth(group["hist"], k)
                self._buckets[rule] = {"k": k, "bucket": bucket, "rank": k - below}
            return [pb.GlobalDecision(phase=1, groups=[
                pb.GlobalGroupDecision(rule=g.rule, bucket=self._buckets[g.rule]["bucket"])
                for g in s.groups]) for s in summaries]

        cuts: Dict[int, tuple] = {}  # rule -> (threshold bits, ties over the model)
        for rule, group in merged.items():
            chosen = self._buckets.get(rule)
            if chosen is None:
                raise BonsaiError(grpc.StatusCode.INTERNAL, f"global group {rule} appeared only in phase 2")
            if chosen["k"] == 0:
                continue
            low, below = _kth(group["hist"], chosen["rank"])
            cuts[rule] = ((chosen["bucket"] << 16) | low, chosen["rank"] - below)
        decisions = []
        ties_seen: Dict[int, int] = {rule: 0 for rule in cuts}  # equal weights in earlier jobs
        for summary in summaries:
            groups = []
            for g in summary.groups:
                if g.rule not in cuts:
                    groups.append(pb.GlobalGroupDecision(rule=g.rule, prune_nothing=True))
                    continue
                threshold, ties = cuts[g.rule]
                equal = dict(zip(g.values, g.counts)).get(threshold & 0xFFFF, 0)
                mine = min(equal, max(0, ties - ties_seen[g.rule]))
                ties_seen[g.rule] += equal
                groups.append(pb.GlobalGroupDecision(rule=g.rule, threshold_bits=threshold, ties_to_prune=mine))
            decisions.append(pb.GlobalDecision(phase=2, groups=groups))
        return decisions
