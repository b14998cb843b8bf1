"""Shrinks a failing case while it still fails with the same signature: first whole steps
(delta debugging), then the lines of each text, then the splits and pauses."""

import time

TEXT_FIELDS = ("data", "payload")


def ddmin(items, fails):
    """The classic delta-debugging loop: a smaller list for which fails(list) still holds
    (1-minimal when the budget lets it finish)."""
    n = 2
    while len(items) >= 2:
        chunk = -(-len(items) // n)
        for start in range(0, len(items), chunk):
            candidate = items[:start] + items[start + chunk:]
            if fails(candidate):
                items, n = candidate, max(n - 1, 2)
                break
        else:
            if n >= len(items):
                break
            n = min(len(items), 2 * n)
    return items


def lines_of(text):
    """`text` cut after each line end, so that joining the pieces gives it back."""
    pieces, start = [], 0
    for i, ch in enumerate(text):
        if ch == "\n":
            pieces.append(text[start:i + 1])
            start = i + 1
    if start < len(text):
        pieces.append(text[start:])
    return pieces


class Minimizer:
    """`reproduce(steps)` runs steps and returns the failure's signature, or None (the
    gateway is restarted after each failure); shrinking stops when `seconds` have passed."""

    def __init__(self, reproduce, signature, seconds):
        self.reproduce = reproduce
        self.signature = signature
        self.deadline = time.monotonic() + seconds
        self.tries = 0

    def fails(self, steps):
        if time.monotonic() > self.deadline:
            return False
        self.tries += 1
        return self.reproduce(steps) == self.signature

    def shrink(self, steps):
        steps = ddmin(list(steps), self.fails)
        for i in range(len(steps)):
            steps = self._shrink_texts(steps, i)
        return self._drop_timing(steps)

    def _shrink_texts(self, steps, i):
        for field in TEXT_FIELDS:
            if field not in steps[i]:
                continue

            def fails_with(pieces, field=field):
                step = dict(steps[i], **{field: "".join(pieces)})
                return self.fails(steps[:i] + [step] + steps[i + 1:])

            pieces = ddmin(lines_of(steps[i][field]), fails_with)
            steps = steps[:i] + [dict(steps[i], **{field: "".join(pieces)})] + steps[i + 1:]
        return steps

    def _drop_timing(self, steps):
        """Without splits and pauses, if it still fails: a reproducer that needs fewer
        conditions."""
        plain = [{k: v for k, v in s.items() if k not in ("splits", "delay_ms")} for s in steps]
        return plain if plain != steps and self.fails(plain) else steps
