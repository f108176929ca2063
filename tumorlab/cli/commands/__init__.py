"""The plain ``tumorlab`` subcommands, one module per command: synth, audit, report, compare, cam, cv, prune,
bench (latency), export, predict-images, weights.

Each module holds only its argparse parser (``add_parser(sub)``) and a function that imports what it runs when it
runs, so ``tumorlab --help`` stays instant; ``tumorlab.cli.main`` builds the parser and dispatches.
"""
