// Tier 1: NVMe through O_DIRECT (issue 5).
