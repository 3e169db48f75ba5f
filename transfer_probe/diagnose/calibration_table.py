"""The break test's thresholds for the default :class:`Thresholds`, simulated once and kept here.

Calibrating the thresholds simulates 4000 flat runs at every look (``tests.simulate_thresholds``):
0.4 s for a 20-probe horizon, 7 s for 60, in every process that diagnoses (the training process,
each ``transfer-probe diagnose`` or ``report``). The simulation is seeded, so its result is a fixed
table: the rungs of ``tests._calibration_horizon`` (20, 30, 40, 60 probes), noise recorded or not.
``tests/test_verdict_rules.py`` re-simulates some entries and fails when they no longer match, e.g.
after a change to the statistics; regenerate with ``python -m transfer_probe.diagnose.calibrate``.
Keys: (horizon, first look, peak window, errors recorded, alpha_run, alpha_suspect, simulated runs).
"""

TABLE = {
    (20, 4, 3, True, 0.05, 0.3, 4000): {'suspect': 2.637507050714214, 'confirm': 2.806486007248044, 'confirm_single': 3.372210747508077},
    (20, 4, 3, False, 0.05, 0.3, 4000): {'suspect': 4.061625337531382, 'confirm': 5.422961843255585, 'confirm_single': 7.665098421689599},
    (30, 4, 3, True, 0.05, 0.3, 4000): {'suspect': 2.937336674628846, 'confirm': 3.0812141357509937, 'confirm_single': 3.6460493740946203},
    (30, 4, 3, False, 0.05, 0.3, 4000): {'suspect': 4.190702730339944, 'confirm': 5.4638523710864515, 'confirm_single': 7.620901955584919},
    (40, 4, 3, True, 0.05, 0.3, 4000): {'suspect': 3.137200814786053, 'confirm': 3.243577961929017, 'confirm_single': 3.783481744285651},
    (40, 4, 3, False, 0.05, 0.3, 4000): {'suspect': 4.296312288585064, 'confirm': 5.484522239844577, 'confirm_single': 7.627119740634884},
    (60, 4, 3, True, 0.05, 0.3, 4000): {'suspect': 3.401080668829393, 'confirm': 3.5242918763718696, 'confirm_single': 4.039044362299782},
    (60, 4, 3, False, 0.05, 0.3, 4000): {'suspect': 4.358169943678304, 'confirm': 5.3562620408501065, 'confirm_single': 7.52771084589066},
}
