"""The ``tumorlab`` command: ``main`` (the entry point and dispatch, ``tumorlab.cli.main``), the LightningCLI
subcommands (``lightning``), what the command adds to a config (``config``), one-line errors (``messages``),
the noise it silences (``quiet``) and one module per plain subcommand (``commands``).

Nothing is imported here: ``tumorlab --help`` must not pay for torch.
"""
