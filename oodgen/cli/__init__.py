"""What train.py and evaluate.py share: argument parsing (`arguments`), the up-front checks of the directories
(`directories`), and turning errors into one line + exit 2 (`reporting`)."""

from oodgen.cli.arguments import Invocation, parse_args
from oodgen.cli.reporting import EXIT_BAD_INPUT, main_wrapper, os_error_message

__all__ = ["EXIT_BAD_INPUT", "Invocation", "main_wrapper", "os_error_message", "parse_args"]
