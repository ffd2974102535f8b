"""Benchmarks behind ``flowstore bench-*`` (and ``benchmarks/*.py``): :mod:`.loader` (the
two-stream loader next to its decode limit and an mmaction2 rawframes tree, warm and cold;
:mod:`.pagecache` evicts and counts cached pages) and :mod:`.flow` (flow methods on
ground-truth pairs)."""
