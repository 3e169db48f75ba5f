"""Regenerate :mod:`calibration_table`: ``python -m transfer_probe.diagnose.calibrate`` (~20 s).

Re-simulates the thresholds of every rung the default :class:`Thresholds` reach (20, 30, 40 and 60
probes; errors recorded or not) and rewrites the table module.
"""

from __future__ import annotations

from pathlib import Path

from transfer_probe.diagnose import calibration_table
from transfer_probe.diagnose.tests import simulate_thresholds
from transfer_probe.diagnose.verdict import Thresholds


def table_text(sims: int = 4000) -> str:
    th = Thresholds()
    lines = ["TABLE = {"]
    for h in (20, 30, 40, 60):
        for known in (True, False):
            key = (h, th.min_points - 1, th.peak_window, known, th.alpha_run, th.alpha_suspect, sims)
            values = simulate_thresholds(*key)
            lines.append(f"    {key!r}: {{{', '.join(f'{k!r}: {v!r}' for k, v in values.items())}}},")
    return "\n".join(lines + ["}"]) + "\n"


def main() -> None:
    path = Path(calibration_table.__file__)
    head = path.read_text().split("TABLE = {", 1)[0]
    path.write_text(head + table_text())


if __name__ == "__main__":
    main()
