"""Late fusion: timestamped Decisions from both modalities in, Events out.

Three kinds of outcome, all from the config:

- **rules**: "vision ``dog`` and audio ``stop`` within 1.5 s -> event ``dog_stop``";
- **weighted** score fusion over a shared label map: per event, the best recent
  score of each modality's label, weighted per modality, against a threshold;
- **passthrough**: each label on its own, at most once per cooldown.

Decisions are matched by their capture times, so a slow pipeline does not make
two things that happened together look apart. Each Event carries the Decisions
that caused it.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable

from .config import Condition, FusionConfig, RuleConfig
from .events import Decision, Event

NS = 1_000_000_000


class Fusion:
    def __init__(self, cfg: FusionConfig, clock: Callable[[], int] = time.monotonic_ns):
        self.cfg = cfg
        self.clock = clock
        self.horizon_ns = int(
            NS * max([r.within_s for r in cfg.rules] + [cfg.weighted.window_s if cfg.weighted else 0.0, 1.0])
        )
        self._recent: dict[tuple[str, str], deque[Decision]] = defaultdict(deque)
        self._last_event: dict[str, int] = {}

    def add(self, d: Decision) -> list[Event]:
        """Take one Decision; return the Events it completes (often none)."""
        key = (d.modality, d.label)
        recent = self._recent[key]
        recent.append(d)
        self._expire(d.t_capture)
        events = []
        for rule in self.cfg.rules:
            ev = self._rule(rule, d)
            if ev:
                events.append(ev)
        if self.cfg.weighted:
            events.extend(self._weighted(d))
        if self.cfg.passthrough:
            ev = self._emit(
                f"{d.modality}:{d.label}",
                d.label,
                d.score,
                (d,),
                "passthrough",
                int(self.cfg.passthrough_cooldown_s * NS),
            )
            if ev:
                events.append(ev)
        return events

    # --- internals -------------------------------------------------------------------
    def _expire(self, now_capture: int) -> None:
        limit = now_capture - self.horizon_ns
        for key in list(self._recent):
            q = self._recent[key]
            while q and q[0].t_capture < limit:
                q.popleft()
            if not q:
                del self._recent[key]

    def _best(self, cond: Condition, around: int, within_ns: int) -> Decision | None:
        best = None
        for d in self._recent.get((cond.modality, cond.label), ()):
            if abs(d.t_capture - around) <= within_ns and d.score >= cond.min_score:
                if best is None or d.score > best.score:
                    best = d
        return best

    def _rule(self, rule: RuleConfig, d: Decision) -> Event | None:
        if not any(c.modality == d.modality and c.label == d.label and d.score >= c.min_score for c in rule.all):
            return None
        within = int(rule.within_s * NS)
        matched = []
        for c in rule.all:
            if c.modality == d.modality and c.label == d.label and d.score >= c.min_score:
                matched.append(d)
                continue
            m = self._best(c, d.t_capture, within)
            if m is None:
                return None
            matched.append(m)
        score = min(m.score for m in matched)
        return self._emit(
            f"rule:{rule.name}", rule.name, score, tuple(matched), f"rule {rule.name}", int(rule.cooldown_s * NS)
        )

    def _weighted(self, d: Decision) -> list[Event]:
        w = self.cfg.weighted
        assert w is not None
        out = []
        window = int(w.window_s * NS)
        for name, per_modality in w.labels.items():
            if per_modality.get(d.modality) != d.label:
                continue
            total, used = 0.0, []
            for modality, label in per_modality.items():
                m = self._best(Condition(modality=modality, label=label), d.t_capture, window)
                if m is not None:
                    total += w.weights.get(modality, 0.0) * m.score
                    used.append(m)
            if total >= w.threshold and used:
                ev = self._emit(f"weighted:{name}", name, total, tuple(used), "weighted", int(w.cooldown_s * NS))
                if ev:
                    out.append(ev)
        return out

    def _emit(
        self, key: str, name: str, score: float, decisions: tuple[Decision, ...], rule: str, cooldown_ns: int
    ) -> Event | None:
        t = max(d.t_capture for d in decisions)
        last = self._last_event.get(key)
        if last is not None and t - last < cooldown_ns:
            return None
        self._last_event[key] = t
        return Event(name=name, score=float(score), t_event=self.clock(), decisions=decisions, rule=rule)
