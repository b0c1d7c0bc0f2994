#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""harvesterd as a pool worker, second half: goodbye at stop, nothing fetched while paused, a
daemon pinned to another pool's key, forged tasks. The cases and what they
assert are in test_daemon_pool.py."""
import sys

import test_daemon_pool

if __name__ == "__main__":
    sys.exit(test_daemon_pool.main(test_daemon_pool.TRUST_CASES))
