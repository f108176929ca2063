"""The plain ``tumorlab`` subcommands, one module per package they call: ``data`` (synth, audit), ``evaluation``
(report, compare, cam, cv) and ``compression`` (prune, bench, export, predict-images).

Each module holds only argparse code and lazy imports, so ``tumorlab --help`` stays instant; ``tumorlab.cli``
builds the parser and dispatches.
"""
