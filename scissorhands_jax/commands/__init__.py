"""One module per ``scissorhands`` subcommand: ``add_parser(sub)`` and ``run(args)``."""
