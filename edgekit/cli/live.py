"""Live progress for long commands: progress lines on stderr, plus one transient rich status line (a spinner with
what is running now and for how long) while a conversion step, the variant search or a benchmark runs.

The status line exists only on a terminal and only inside `with progress:`; under --json, --quiet or when stderr
is not a terminal nothing transient is drawn (the permanent lines follow --quiet/--json as before). The harness's
own progress events (load, warm-up, idle, timed runs: runners/harness EDGEKIT-PROGRESS lines, streamed by the
local, ssh and adb runners) reach `harness()` and update the status line in place.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional


def describe_event(ev: Dict[str, Any]) -> Optional[str]:
    """A short status text for one harness progress event (None for events not worth showing)."""
    phase = ev.get("phase")
    where = f" on {ev['board']}" if ev.get("board") else ""
    if phase == "load":
        if ev.get("state") == "start":
            return f"benchmark{where}: loading the model with {ev.get('runtime', 'the runtime')}"
        return f"benchmark{where}: model loaded in {float(ev.get('load_ms', 0.0)):.0f} ms"
    if phase == "warmup":
        if ev.get("state") == "start":
            return f"benchmark{where}: warming up"
        return f"benchmark{where}: warm-up done ({ev.get('runs', '?')} runs)"
    if phase == "idle":
        return f"benchmark{where}: idle power baseline ({ev.get('seconds', '?')} s)"
    if phase == "timed":
        if ev.get("state") == "done":
            return f"benchmark{where}: {ev.get('runs', '?')} timed runs in {float(ev.get('elapsed_s', 0.0)):.1f} s"
        return f"benchmark{where}: timed runs {ev.get('runs', 0)} · {float(ev.get('elapsed_s', 0.0)):.1f} s"
    if ev.get("message"):
        return f"{phase or 'progress'}: {ev['message']}"
    return None


class _Elapsed:
    """The status text with the time since it was set; rich re-renders it on every refresh."""

    def __init__(self, live: "LiveProgress"):
        self.live = live

    def __rich__(self):
        from rich.text import Text

        if self.live.phase == "timed":  # the harness's own counts and seconds are in the text already
            return Text(self.live.text, style="dim")
        return Text(f"{self.live.text} · {time.monotonic() - self.live.since:.0f} s", style="dim")


class LiveProgress:
    """Callable progress sink: `progress(msg)` prints a permanent line and sets the status line; `progress.harness(ev)`
    (the runners' on_progress) updates the status line only. `with progress:` shows the status line on a terminal."""

    def __init__(self, enabled: bool, console: Any = None):
        self.enabled = enabled
        self.err = console  # progress_printer (cli.common) passes its stderr console: no import back into cli.common
        self.live = bool(enabled and self.err is not None and self.err.is_terminal)
        self.text = ""
        self.phase: Optional[str] = None
        self.since = time.monotonic()
        self._status = None

    def __call__(self, msg: str) -> None:
        if not self.enabled:
            return
        from rich.markup import escape

        self.err.print(f"[dim]›[/dim] {escape(msg)}", markup=True, highlight=False, soft_wrap=True)
        self._set(msg)

    def harness(self, ev: Dict[str, Any]) -> None:
        """A harness progress event (runner on_progress): shown in the status line, never as a permanent line."""
        if not self.enabled:
            return
        text = describe_event(ev)
        if text is not None:
            self._set(text, phase=str(ev.get("phase")))

    def _set(self, text: str, phase: Optional[str] = None) -> None:
        """New status text; the clock restarts unless it is the same harness phase going on (timed runs)."""
        self.text = text
        if phase is None or phase != self.phase:
            self.since = time.monotonic()
        self.phase = phase
        if self._status is not None:
            self._status.update(_Elapsed(self))

    @property
    def on_progress(self) -> Optional[Callable[[Dict[str, Any]], None]]:
        """What to hand a runner as on_progress (None when disabled: the runner then skips the callback)."""
        return self.harness if self.enabled else None

    def __enter__(self) -> "LiveProgress":
        if self.live and self._status is None:
            from rich.status import Status

            self._status = Status(_Elapsed(self), console=self.err, spinner="dots")
            self._status.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

