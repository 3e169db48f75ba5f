"""``python -m transfer_probe.demo``."""

from transfer_probe.demo.app import main

raise SystemExit(main())
