"""The command layer: ``sk-braintune`` and its subcommands.

Each command reads: parse the command line, resolve the settings, call library functions, write
the results folder. Only this layer prints.
"""
