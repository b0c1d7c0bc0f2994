#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""harvest-pool end to end, second half: a lapsed lease, raw nanocat/nngcat peers, a
worker pinned to another pool, cancel, the relay, TLS. The cases and what
they assert are in test_pool.py."""
import sys

import test_pool

if __name__ == "__main__":
    sys.exit(test_pool.main(test_pool.LINK_CASES))
